"""GLUE metrics as a local `evaluate` module, loaded by path.

The Hugging Face Hub is unreachable here, so `evaluate.load("glue")` cannot fetch the official
script. This file reimplements it (same config names, keys and definitions) and is loaded with
`evaluate.load(METRIC_PATH, config_name=task)`, which never touches the network for a path to an
existing `.py` file.

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
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

METRIC_PATH = str(Path(__file__).resolve())


def _accuracy(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"accuracy": float((preds == labels).mean())}


def _accuracy_and_f1(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    # mrpc and qqp are imbalanced, so GLUE also reports F1 of the positive class (label 1).
    return {**_accuracy(preds, labels), "f1": float(f1_score(labels, preds))}


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


# One entry per config name; SuperGLUE tasks are meant to be added here.
CONFIGS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
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
    # SuperGLUE multiple choice: predictions are choice ids.
    "copa": _accuracy,
    "record": _record_from_credit,  # references: the credit table (see record_credit)
}
_REGRESSION = {"stsb"}
# Configs whose `evaluate` interface is the official one on texts (predicted entity, gold answers),
# while `compute` and CONFIGS take choice ids and the credit table the pipeline holds.
_TEXT_CONFIGS = {"record": record_metrics}


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

    def _compute(self, predictions, references) -> dict[str, float]:
        if self.config_name in _TEXT_CONFIGS:
            return _TEXT_CONFIGS[self.config_name](predictions, references)
        return CONFIGS[self.config_name](predictions, references)


@functools.cache
def load_metric(task: str) -> evaluate.EvaluationModule:
    """Load once per task: each `evaluate.load` re-hashes and re-imports the script.

    The path must be the `.py` file itself: a bare name or a directory without a same-named script
    makes evaluate try the Hub. `keep_in_memory` avoids an Arrow cache file and file lock under
    ~/.cache per call, which also keeps concurrent runs from contending for the same file.
    """
    return evaluate.load(METRIC_PATH, config_name=task, keep_in_memory=True)


def compute(task: str, predictions, references) -> dict[str, float]:
    """The metrics of `task` (keys as in HF's `glue`), from arrays or lists of labels/scores.

    record: choice ids and the `[n, max_candidates, 2]` credit table (not a flat feature the
    `evaluate` machinery can hold), scored by the same functions as its official text interface.
    """
    if task in _TEXT_CONFIGS:
        return CONFIGS[task](np.asarray(predictions), np.asarray(references))
    return load_metric(task).compute(predictions=predictions, references=references)
