"""sead.metrics: hand-computed GLUE metrics, loaded by path through `evaluate` with no network."""

import math
import os
import socket
import subprocess
import sys

import evaluate
import numpy as np
import pytest

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
    with pytest.raises(ValueError, match=r"'boolq'.*cola.*mnli_mismatched.*wnli"):
        metrics.compute("boolq", [1], [1])
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
