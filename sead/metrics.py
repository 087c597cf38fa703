"""GLUE and SuperGLUE metrics as a local `evaluate` module, loaded by path.

The Hugging Face Hub is unreachable here, so `evaluate.load("glue")` cannot fetch the official
script. This file reimplements HF's `glue` and `super_glue` metrics (same config names, keys and
definitions; the config name is sead's task name) and is loaded with
`evaluate.load(METRIC_PATH, config_name=task)`, which never touches the network for a path to an
existing `.py` file.

Two SuperGLUE metrics score groups of rows, not rows: MultiRC's exact_match and f1_m group the
candidate answers by question, and AX-g's gender_parity compares the two gender variants of each
example. `score_split` reads those groups from the split itself; `compute` takes them as
`groups=` and, without them, returns the metrics that need no grouping (multirc: f1_a; axg:
accuracy), which is what the ensembler's numpy-only scoring uses.

evaluate copies this file into its module cache and imports it standalone, so it must not import
anything from `sead`. Its main class is found by scanning the module for the first concrete
`EvaluationModule` subclass, so use `evaluate.Metric` through the module, never import the name.
"""

from __future__ import annotations

import collections
import functools
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import evaluate
import numpy as np
from scipy.stats import binom, pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

METRIC_PATH = str(Path(__file__).resolve())


def _accuracy(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"accuracy": float((preds == labels).mean())}


def _accuracy_and_f1(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    # mrpc and qqp are imbalanced, so GLUE also reports F1 of the positive class (label 1).
    return {**_accuracy(preds, labels), "f1": float(f1_score(labels, preds))}


def _accuracy_and_macro_f1(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    # cb: 3 classes, neutral rare; SuperGLUE reports F1 averaged over the classes (macro).
    return {**_accuracy(preds, labels), "f1": float(f1_score(labels, preds, average="macro"))}


def _multirc(preds: np.ndarray, labels: np.ndarray, groups=None) -> dict[str, float]:
    """f1_a: F1 of the True class over all answers; per question (groups): exact_match, f1_m.

    As SuperGLUE's scorer: a question is exactly matched when all its answers are; f1_m is the
    mean over questions of each question's macro F1.
    """
    out = {"f1_a": float(f1_score(labels, preds))}
    if groups is None:
        return out
    exact, macro_f1 = [], []
    for rows in _group_rows(groups).values():
        exact.append(float((preds[rows] == labels[rows]).all()))
        macro_f1.append(f1_score(labels[rows], preds[rows], average="macro", zero_division=0))
    return {**out, "exact_match": float(np.mean(exact)), "f1_m": float(np.mean(macro_f1))}


def _axg(preds: np.ndarray, labels: np.ndarray, groups=None) -> dict[str, float]:
    """accuracy; with the pairs (groups): gender_parity, the share of the pairs (same example,
    male and female pronoun) that get the same prediction (Rudinger et al., 2018)."""
    out = _accuracy(preds, labels)
    if groups is None:
        return out
    pairs = list(_group_rows(groups).items())
    odd = [key for key, rows in pairs if len(rows) != 2]
    if odd:
        raise ValueError(
            f"axg gender_parity needs both rows of every pair; pair(s) {odd[:5]} have "
            f"{[len(rows) for key, rows in pairs if key in odd[:5]]} rows (was the split "
            f"subsampled?)."
        )
    same = [preds[rows[0]] == preds[rows[1]] for _, rows in pairs]
    return {**out, "gender_parity": float(np.mean(same))}


def _group_rows(groups) -> dict:
    """Group key -> row numbers, in order of first appearance."""
    rows: dict = {}
    for row, key in enumerate(groups):
        rows.setdefault(key, []).append(row)
    return rows


def _matthews(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"matthews_correlation": float(matthews_corrcoef(labels, preds))}


def _pearson_and_spearman(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "pearson": float(pearsonr(preds, labels)[0]),
        "spearmanr": float(spearmanr(preds, labels)[0]),
    }


# ReCoRD, as scored by its official script (SQuAD's answer normalisation): a predicted entity
# earns, over all gold answers, the best token F1 and exact match after normalisation.


@functools.lru_cache(maxsize=1 << 16)  # a passage's entities recur in each of its queries
def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower().translate(_NO_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _token_f1(prediction: str, answer: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    same = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def record_credit(candidates: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """`[len(candidates), 2]`: each candidate's best F1 and exact match over the gold answers.

    A ReCoRD prediction is always one of the candidates, so scoring a chosen candidate by its
    row is exactly the official metric; the table is computed once per split, and every
    later scoring (teachers, ensembles, permutation tests, the student) is a numpy lookup.
    """
    gold = [normalize_answer(answer) for answer in answers]
    table = np.zeros((len(candidates), 2), dtype=np.float64)
    for row, candidate in enumerate(candidates):
        if gold:
            table[row, 0] = max(_token_f1(candidate, answer) for answer in answers)
            table[row, 1] = float(normalize_answer(candidate) in gold)
    return table


def record_metrics(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict:
    """The official ReCoRD metric from predicted entity texts and each query's gold answers."""
    credit = [record_credit([p], a)[0] for p, a in zip(predictions, answers, strict=True)]
    f1, exact = np.mean(credit, axis=0) if credit else (0.0, 0.0)
    return {"f1": float(f1), "exact_match": float(exact)}


def _record_from_credit(choices: np.ndarray, credit: np.ndarray) -> dict[str, float]:
    """`record_metrics` from chosen candidate ids and the `[n, max_candidates, 2]` credit table."""
    chosen = credit[np.arange(len(choices)), np.asarray(choices, dtype=np.int64)]
    return {"f1": float(chosen[:, 0].mean()), "exact_match": float(chosen[:, 1].mean())}


# One entry per config name (sead's task name).
CONFIGS: dict[str, Callable[..., dict[str, float]]] = {
    "cola": _matthews,
    "sst2": _accuracy,
    "mrpc": _accuracy_and_f1,
    "stsb": _pearson_and_spearman,
    "qqp": _accuracy_and_f1,
    "mnli": _accuracy,
    "mnli_matched": _accuracy,
    "mnli_mismatched": _accuracy,
    "qnli": _accuracy,
    "rte": _accuracy,
    "wnli": _accuracy,
    # SuperGLUE; multiple choice (copa, record): predictions are choice ids.
    "boolq": _accuracy,
    "cb": _accuracy_and_macro_f1,
    "copa": _accuracy,
    "superglue_rte": _accuracy,
    "wic": _accuracy,
    "wsc": _accuracy,
    "multirc": _multirc,
    "axb": _matthews,
    "axg": _axg,
    "record": _record_from_credit,  # references: the credit table (see record_credit)
}
_REGRESSION = {"stsb"}
# Configs whose `evaluate` interface is the official one on texts (predicted entity, gold answers),
# while `compute` and CONFIGS take choice ids and the credit table the pipeline holds.
_TEXT_CONFIGS = {"record": record_metrics}


def _multirc_questions(split) -> list[str]:
    """A MultiRC row's question: paragraph and question of its dict `idx`, as SuperGLUE's scorer."""
    return [f"{i['paragraph']}-{i['question']}" for i in split["idx"][:]]


def _axg_pairs(split) -> list:
    """AX-g's pairs: `pair_id` when the file has it (the original jsonl), else rows idx 2k and
    2k+1, the order of the official file and of HF's copy; a pair shares its hypothesis."""
    if "pair_id" in split.column_names:
        return split["pair_id"][:]
    pairs = [i // 2 for i in split["idx"][:]]
    hypotheses: dict = {}
    for pair, idx, hypothesis in zip(pairs, split["idx"][:], split["hypothesis"][:], strict=True):
        if hypotheses.setdefault(pair, hypothesis) != hypothesis:
            raise ValueError(
                f"axg row idx {idx} does not share its hypothesis with idx {2 * pair}: AX-g rows "
                f"2k and 2k+1 must be the two gender variants of one example (or give the file "
                f"a pair_id field)."
            )
    return pairs


# Tasks whose split-level metrics need a group per row, read from the split by these...
GROUP_KEYS: dict[str, Callable] = {"multirc": _multirc_questions, "axg": _axg_pairs}
# ...and those metrics, absent from a `compute` without groups.
GROUPED_METRICS: dict[str, tuple[str, ...]] = {
    "multirc": ("exact_match", "f1_m"),
    "axg": ("gender_parity",),
}


class SeadMetric(evaluate.Metric):
    """The metric of the task named by `config_name`, as in HF's official `glue` metric."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in CONFIGS:
            raise ValueError(
                f"Unknown metric config {self.config_name!r}: expected one of {', '.join(CONFIGS)}."
            )
        dtype = "float32" if self.config_name in _REGRESSION else "int64"
        features = {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}
        if self.config_name in _TEXT_CONFIGS:
            text = datasets.Value("string")
            features = {"predictions": text, "references": datasets.Sequence(text)}
        return evaluate.MetricInfo(
            description="GLUE metrics for sead, loaded by path because the Hub is unreachable.",
            citation="",
            inputs_description="predictions, references: one label (or score for stsb) each.",
            features=datasets.Features(features),
            format=None if self.config_name in _TEXT_CONFIGS else "numpy",
        )

    def _compute(self, predictions, references, groups=None) -> dict[str, float]:
        if self.config_name in _TEXT_CONFIGS:
            return _TEXT_CONFIGS[self.config_name](predictions, references)
        if groups is None:
            return CONFIGS[self.config_name](predictions, references)
        if self.config_name not in GROUP_KEYS:
            raise ValueError(f"Metric {self.config_name!r} takes no groups.")
        if len(groups) != len(predictions):
            raise ValueError(f"{len(groups)} groups for {len(predictions)} predictions.")
        return CONFIGS[self.config_name](predictions, references, groups=list(groups))


@functools.cache
def load_metric(task: str) -> evaluate.EvaluationModule:
    """Load once per task: each `evaluate.load` re-hashes and re-imports the script.

    The path must be the `.py` file itself: a bare name or a directory without a same-named script
    makes evaluate try the Hub. `keep_in_memory` avoids an Arrow cache file and file lock under
    ~/.cache per call, which also keeps concurrent runs from contending for the same file.
    """
    return evaluate.load(METRIC_PATH, config_name=task, keep_in_memory=True)


def compute(task: str, predictions, references, groups=None) -> dict[str, float]:
    """The metrics of `task` (keys as in HF's `glue` / `super_glue`), from arrays or lists of
    labels/scores; `groups` (one key per row) adds multirc's and axg's grouped metrics.

    record: choice ids and the `[n, max_candidates, 2]` credit table (not a flat feature the
    `evaluate` machinery can hold), scored by the same functions as its official text interface.
    """
    if task in _TEXT_CONFIGS:
        return CONFIGS[task](np.asarray(predictions), np.asarray(references))
    extra = {} if groups is None else {"groups": groups}
    return load_metric(task).compute(predictions=predictions, references=references, **extra)


def references(task, split) -> np.ndarray:
    """What `task`'s metric compares predictions with: the split's labels, or for record the
    per-candidate credit table built from its entities and gold answers."""
    name = getattr(task, "name", task)
    if name != "record":
        return np.asarray(split["label"][:])
    entities, answers = split["entities"][:], split["answers"][:]
    credit = np.zeros((len(entities), max(map(len, entities), default=1), 2))
    for row, (candidates, gold) in enumerate(zip(entities, answers, strict=True)):
        credit[row, : len(candidates)] = record_credit(candidates, gold)
    return credit


def hard_predictions(task, logits: np.ndarray) -> np.ndarray:
    """Label ids (classification, multiple choice) or scores (regression) from logits or
    targets `[n_examples, n_labels]`: what a task's metrics compare with the gold labels."""
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def score_split(task, split, predictions) -> dict[str, float]:
    """Every official metric of `task` (a TaskSpec or its name) for predictions on `split`.

    The references, and the groups that multirc and axg score by, come from the split itself.
    """
    name = getattr(task, "name", task)
    groups = GROUP_KEYS[name](split) if name in GROUP_KEYS else None
    return compute(name, predictions, references(name, split), groups=groups)


NOISE_LEVEL = 0.95  # the binomial interval that "within noise of the floor" refers to


def noise_check(metric: str, score: float, baseline: float, n: int) -> dict | None:
    """Is `score` within noise of the majority baseline on `n` examples?

    A model no better than the baseline (right with the baseline's rate, independently per
    example) scores inside the `NOISE_LEVEL` binomial interval on `n` examples; a score
    inside it is no evidence that the model learned anything. Accuracy only: other metrics
    (F1, MCC, correlations) have no binomial interval. None when it does not apply.
    """
    if metric != "accuracy" or n <= 0 or not 0.0 <= baseline <= 1.0:
        return None
    tail = (1 - NOISE_LEVEL) / 2
    low, high = (float(v) / n for v in binom.ppf([tail, 1 - tail], n, baseline))
    return {
        "n": n,
        "level": NOISE_LEVEL,
        "interval": [round(low, 4), round(high, 4)],
        "margin_examples": int(round((score - baseline) * n)),
        "within_noise": bool(score <= high),
    }


def noise_message(who: str, split: str, metric: str, check: dict, score, baseline) -> str:
    """One line for a model that may have learned nothing (results.json and the table)."""
    low, high = check["interval"]
    return (
        f"{who} may have learned nothing on {split}: {metric}={score:.4f} vs majority baseline "
        f"{baseline:.4f}, a margin of {check['margin_examples']:+d} of {check['n']} examples; a "
        f"model no better than the baseline scores in [{low:.4f}, {high:.4f}] "
        f"{check['level']:.0%} of the time."
    )
