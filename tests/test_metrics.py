"""sead.metrics: hand-computed GLUE metrics, loaded by path through `evaluate` with no network."""

import math
import os
import socket
import subprocess
import sys

import evaluate
import numpy as np
import pytest
from datasets import Dataset

from sead import metrics


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Make any connection attempt fail at once, so a Hub lookup is an error, not a hang."""

    def refuse(*args, **kwargs):
        raise RuntimeError("sead.metrics tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_accuracy_from_lists_and_arrays():
    # 3 of 4 right.
    assert metrics.compute("sst2", [1, 0, 1, 1], [1, 0, 0, 1]) == {"accuracy": 0.75}
    result = metrics.compute("rte", np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1]))
    assert result == {"accuracy": 0.75}
    assert type(result["accuracy"]) is float


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_of_positive_class_differs_from_accuracy(task):
    # TP=1 (idx 0), FP=2 (idx 1, 2), FN=1 (idx 5), TN=2: accuracy 3/6, F1 = 2*1 / (2*1 + 2 + 1).
    result = metrics.compute(task, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 1])
    assert result == pytest.approx({"accuracy": 0.5, "f1": 0.4})
    assert all(type(v) is float for v in result.values())


def test_cola_matthews_correlation():
    # TP=3 (idx 0, 1, 6), FP=1 (idx 2), TN=3 (idx 3, 4, 7), FN=1 (idx 5):
    # MCC = (3*3 - 1*1) / sqrt((3+1) * (3+1) * (3+1) * (3+1)) = 8 / 16.
    result = metrics.compute("cola", [1, 1, 1, 0, 0, 0, 1, 0], [1, 1, 0, 0, 0, 1, 1, 0])
    assert result == pytest.approx({"matthews_correlation": 0.5})


def test_stsb_pearson_and_spearman_differ():
    # Same order, so Spearman is 1. Pearson: deviations (-1.5, -.5, .5, 1.5) and (-3, -2, -1, 6),
    # sum of products 14, sums of squares 5 and 50, so r = 14 / sqrt(250).
    result = metrics.compute("stsb", [1.0, 2.0, 3.0, 4.0], np.array([1.0, 2.0, 3.0, 10.0]))
    # Scores are stored as float32, as in HF's glue metric, hence the tolerance.
    assert result == pytest.approx({"pearson": 14 / math.sqrt(250), "spearmanr": 1.0}, rel=1e-6)
    assert all(type(v) is float for v in result.values())


@pytest.mark.parametrize("task", ["mnli", "mnli_matched", "mnli_mismatched"])
def test_mnli_configs_are_three_way_accuracy(task):
    # 3 of 5 right over the three labels.
    assert metrics.compute(task, [0, 1, 2, 2, 1], [0, 1, 2, 0, 0]) == {"accuracy": 0.6}


def test_unknown_task_names_it_and_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'squad'.*cola.*mnli_mismatched.*wnli.*axg"):
        metrics.compute("squad", [1], [1])
    with pytest.raises(ValueError, match="'default'"):
        evaluate.load(metrics.METRIC_PATH)


def test_compute_loads_this_file_by_path_once_per_task(monkeypatch):
    calls = []
    real_load = evaluate.load

    def spy(path, *args, **kwargs):
        calls.append((path, kwargs.get("config_name")))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(evaluate, "load", spy)
    metrics.load_metric.cache_clear()
    metrics.compute("qnli", [1, 0], [1, 1])
    metrics.compute("qnli", [1, 1], [1, 1])

    assert calls == [(metrics.METRIC_PATH, "qnli")]
    assert os.path.isabs(metrics.METRIC_PATH) and metrics.METRIC_PATH.endswith("metrics.py")
    module = metrics.load_metric("qnli")
    assert (module.name, module.config_name) == ("sead_metric", "qnli")
    # evaluate imported its own copy from the module cache, not sead.metrics itself.
    assert type(module).__module__.startswith("evaluate_modules.metrics.metrics.")


def test_loads_with_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    # evaluate reads its offline flag once at import time, so set the parsed flag as well.
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    metrics.load_metric.cache_clear()
    assert metrics.compute("wnli", [0, 1], [0, 1]) == {"accuracy": 1.0}


def test_fresh_interpreter_with_hub_offline_loads_without_network():
    """The offline env vars only count when set before `import evaluate`: check in a new process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise RuntimeError('network')\n"
        "socket.socket.connect = refuse\n"
        "from sead import metrics\n"
        "print(metrics.compute('mrpc', [1, 0], [1, 0]))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'accuracy': 1.0, 'f1': 1.0}"


# ---------------------------------------------------------------------------------------------
# SuperGLUE: the definitions of HF's `super_glue` metric and SuperGLUE's scorer, by hand.


@pytest.mark.parametrize("task", ["boolq", "copa", "superglue_rte", "wic", "wsc"])
def test_superglue_accuracy_tasks(task):
    # 2 of 5 right.
    assert metrics.compute(task, [1, 1, 0, 0, 1], [1, 0, 1, 1, 1]) == {"accuracy": 0.4}


def test_cb_reports_accuracy_and_macro_f1():
    # preds  0 0 1 2 2 1, gold 0 1 1 2 0 1: 4 of 6 right.
    # class 0: TP 1, FP 1, FN 1 -> F1 1/2; class 1: TP 2, FP 0, FN 1 -> 4/5;
    # class 2: TP 1, FP 1, FN 0 -> 2/3. Macro = (1/2 + 4/5 + 2/3) / 3 (not the positive class).
    result = metrics.compute("cb", [0, 0, 1, 2, 2, 1], [0, 1, 1, 2, 0, 1])
    assert result == pytest.approx({"accuracy": 4 / 6, "f1": (1 / 2 + 4 / 5 + 2 / 3) / 3})


def test_axb_is_matthews_correlation():
    # TP 2, TN 1, FP 1, FN 0 (label 1 positive): (2*1 - 1*0) / sqrt(3 * 2 * 1 * 2).
    result = metrics.compute("axb", [1, 1, 0, 1], [1, 1, 0, 0])
    assert result == pytest.approx({"matthews_correlation": 2 / math.sqrt(12)})


# Three questions: q1 (paragraph 0) has answers with gold T F T, q2 (paragraph 0) T F, and q3
# (paragraph 1) F F. Predictions get q1 fully right, q2 wrong on its F answer, q3 wrong on one.
MULTIRC_GOLD = [1, 0, 1, 1, 0, 0, 0]
MULTIRC_PREDS = [1, 0, 1, 1, 1, 1, 0]
MULTIRC_IDX = [
    {"paragraph": 0, "question": 0, "answer": 0},
    {"paragraph": 0, "question": 0, "answer": 1},
    {"paragraph": 0, "question": 0, "answer": 2},
    {"paragraph": 0, "question": 1, "answer": 3},
    {"paragraph": 0, "question": 1, "answer": 4},
    {"paragraph": 1, "question": 2, "answer": 5},
    {"paragraph": 1, "question": 2, "answer": 6},
]
# f1_a over all 7 answers (True positive): TP 3, FP 2, FN 0 -> 6 / 8.
# exact_match: only q1 of 3 questions. f1_m: q1 macro F1 1; q2 (gold T F, pred T T): class T
# F1 2/3, class F 0 -> 1/3; q3 (gold F F, pred T F): class F F1 2/3, class T 0 -> 1/3.
MULTIRC_EXPECTED = {"f1_a": 6 / 8, "exact_match": 1 / 3, "f1_m": (1 + 1 / 3 + 1 / 3) / 3}


def test_multirc_groups_answers_by_question():
    groups = [f"{i['paragraph']}-{i['question']}" for i in MULTIRC_IDX]
    result = metrics.compute("multirc", MULTIRC_PREDS, MULTIRC_GOLD, groups=groups)
    assert result == pytest.approx(MULTIRC_EXPECTED)
    # Without the questions only f1_a can be computed: what the ensembler's scoring uses.
    assert metrics.compute("multirc", MULTIRC_PREDS, MULTIRC_GOLD) == pytest.approx({"f1_a": 6 / 8})


def test_score_split_reads_multirc_questions_from_the_dict_idx():
    split = Dataset.from_list(
        [
            {"paragraph": "p", "question": "q", "answer": "a", "idx": idx, "label": label}
            for idx, label in zip(MULTIRC_IDX, MULTIRC_GOLD, strict=True)
        ]
    )
    assert metrics.score_split("multirc", split, np.array(MULTIRC_PREDS)) == pytest.approx(
        MULTIRC_EXPECTED
    )
    # A question is (paragraph, question): the same question id in another paragraph is another.
    rows = [dict(idx, question=0) for idx in MULTIRC_IDX]
    assert metrics._multirc_questions({"idx": _Column(rows)}) == ["0-0"] * 5 + ["1-0"] * 2


class _Column(list):
    """A list that answers `[:]` like a datasets Column."""


def _axg_split(**extra) -> Dataset:
    # Two pairs (idx 0-1, 2-3), each pair sharing its hypothesis.
    rows = [
        {"premise": "... his taxes", "hypothesis": "h0", "idx": 0, "label": 0},
        {"premise": "... her taxes", "hypothesis": "h0", "idx": 1, "label": 0},
        {"premise": "... his job", "hypothesis": "h1", "idx": 2, "label": 1},
        {"premise": "... her job", "hypothesis": "h1", "idx": 3, "label": 1},
    ]
    return Dataset.from_list(
        [{**row, **{k: v[i] for k, v in extra.items()}} for i, row in enumerate(rows)]
    )


def test_axg_gender_parity_is_the_share_of_pairs_predicted_alike():
    # Pair 0 predicted 0, 0 (alike, both right); pair 1 predicted 1, 0 (differ): parity 1/2,
    # accuracy 3/4.
    result = metrics.score_split("axg", _axg_split(), np.array([0, 0, 1, 0]))
    assert result == pytest.approx({"accuracy": 0.75, "gender_parity": 0.5})
    # A pair predicted alike but wrong still counts for parity (it measures consistency).
    result = metrics.score_split("axg", _axg_split(), np.array([1, 1, 1, 1]))
    assert result == pytest.approx({"accuracy": 0.5, "gender_parity": 1.0})


def test_axg_pairs_come_from_pair_id_when_the_file_has_it():
    # pair_id pairs rows 0+3 and 1+2: predictions 0 1 1 0 are alike within both pairs.
    split = _axg_split(pair_id=[7, 8, 8, 7])
    assert metrics.score_split("axg", split, np.array([0, 1, 1, 0]))["gender_parity"] == 1.0


def test_axg_rejects_broken_pairs():
    split = _axg_split(hypothesis=["h0", "h9", "h1", "h1"])
    with pytest.raises(ValueError, match="idx 1 does not share its hypothesis with idx 0"):
        metrics.score_split("axg", split, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"both rows of every pair.*\[1\]"):
        metrics.score_split("axg", _axg_split().select([0, 1, 2]), np.zeros(3, dtype=int))


def test_groups_are_refused_where_the_metric_has_none():
    with pytest.raises(ValueError, match="'cb' takes no groups"):
        metrics.compute("cb", [0], [0], groups=["a"])
