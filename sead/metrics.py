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

import functools
from collections.abc import Callable
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
}
_REGRESSION = {"stsb"}


class SeadMetric(evaluate.Metric):
    """The metric of the task named by `config_name`, as in HF's official `glue` metric."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in CONFIGS:
            raise ValueError(
                f"Unknown metric config {self.config_name!r}: expected one of {', '.join(CONFIGS)}."
            )
        dtype = "float32" if self.config_name in _REGRESSION else "int64"
        return evaluate.MetricInfo(
            description="GLUE metrics for sead, loaded by path because the Hub is unreachable.",
            citation="",
            inputs_description="predictions, references: one label (or score for stsb) each.",
            features=datasets.Features(
                {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}
            ),
            format="numpy",
        )

    def _compute(self, predictions, references) -> dict[str, float]:
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
    """The metrics of `task` (keys as in HF's `glue`), from arrays or lists of labels/scores."""
    return load_metric(task).compute(predictions=predictions, references=references)
