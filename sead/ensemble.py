"""Ensemblers: combine the teachers' cached logits into the student's soft targets.

Every strategy is a small class in `ENSEMBLERS`, selected by `conf/ensemble/<name>.yaml`.
`combine` takes stacked logits `[n_teachers, n_examples, n_labels]` and returns
targets `[n_examples, n_labels]`: class probabilities at temperature T for
classification, the predicted score (one column) for regression.
"""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf
from scipy.special import softmax

from sead.tasks import TaskSpec

ENSEMBLERS: dict[str, type[Ensembler]] = {}


def register(name: str):
    def add(cls):
        cls.name = name
        ENSEMBLERS[name] = cls
        return cls

    return add


class Ensembler:
    """Base class: an unweighted combination that needs no fitting."""

    name = "base"

    def __init__(self, task: TaskSpec, teacher_names: list[str], **options):
        if options:
            raise ValueError(
                f"Ensemble {self.name!r} got unknown option(s) {sorted(options)}; "
                f"it takes {self.options() or 'none'}."
            )
        self.task = task
        self.teacher_names = list(teacher_names)

    @classmethod
    def options(cls) -> list[str]:
        return []

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> Ensembler:
        """Learn from held-out teacher logits and gold labels (no-op by default)."""
        return self

    def weights(self) -> np.ndarray:
        n = len(self.teacher_names)
        return np.full(n, 1.0 / n)

    average_probs = False  # average logits (then soften) or probabilities at T

    def combine(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        logits = check_logits(logits, self.task, self.teacher_names)
        w = self.weights()[:, None, None]
        if self.task.is_regression:
            return (w * logits).sum(axis=0)
        if self.average_probs:
            return (w * softmax(logits / temperature, axis=-1)).sum(axis=0)
        return softmax((w * logits).sum(axis=0) / temperature, axis=-1)

    def predict(self, logits: np.ndarray) -> np.ndarray:
        """Hard predictions (label ids, or scores for regression) at T = 1."""
        targets = self.combine(logits, 1.0)
        return targets[:, 0] if self.task.is_regression else targets.argmax(-1)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "weights": dict(zip(self.teacher_names, map(float, self.weights()), strict=True)),
        }


@register("mean_logits")
class MeanLogits(Ensembler):
    """Average the logits, then soften: the classic multi-teacher KD target."""


@register("mean_probs")
class MeanProbs(Ensembler):
    """Average each teacher's probabilities at temperature T."""

    average_probs = True


@register("weighted")
class Weighted(Ensembler):
    """Static weights from the config, one per teacher: `{bert: 2, roberta: 1}`."""

    def __init__(self, task, teacher_names, weights=None, over="logits"):
        super().__init__(task, teacher_names)
        if over not in ("logits", "probs"):
            raise ValueError(f"ensemble.over must be 'logits' or 'probs', got {over!r}.")
        self.over = over
        self.average_probs = over == "probs"
        self._weights = _validated_weights(weights, self.teacher_names)

    @classmethod
    def options(cls):
        return ["weights", "over"]

    def weights(self) -> np.ndarray:
        return self._weights

    def describe(self) -> dict:
        return {**super().describe(), "over": self.over}


def _validated_weights(weights, teacher_names: list[str]) -> np.ndarray:
    if weights is None:
        raise ValueError(
            f"ensemble=weighted needs ensemble.weights, one per teacher: e.g. "
            f"'ensemble.weights={{{','.join(f'{n}:1' for n in teacher_names)}}}'."
        )
    if OmegaConf.is_config(weights):
        weights = OmegaConf.to_container(weights, resolve=True)
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(teacher_names))
        missing = sorted(set(teacher_names) - set(weights))
        if unknown or missing:
            raise ValueError(
                f"ensemble.weights must name each teacher {teacher_names} once: "
                f"missing {missing}, unknown {unknown}."
            )
        values = [weights[name] for name in teacher_names]
    else:
        values = list(weights)
        if len(values) != len(teacher_names):
            raise ValueError(
                f"ensemble.weights has {len(values)} value(s) for {len(teacher_names)} "
                f"teachers {teacher_names}."
            )
    w = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"ensemble.weights must be non-negative numbers with a positive sum, got {values}."
        )
    return w / w.sum()


def check_logits(logits, task: TaskSpec, teacher_names: list[str]) -> np.ndarray:
    """Stack per-teacher logits and check they agree with each other and the task."""
    if isinstance(logits, (list, tuple)) and len(logits) == len(teacher_names):
        shapes = {name: np.shape(x) for name, x in zip(teacher_names, logits, strict=True)}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"Teacher logits differ in shape: {shapes}.")
        logits = np.stack(logits)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[0] != len(teacher_names):
        raise ValueError(
            f"Expected logits [n_teachers={len(teacher_names)}, n_examples, n_labels], "
            f"got shape {logits.shape}."
        )
    if logits.shape[-1] != task.num_labels:
        raise ValueError(
            f"Teacher logits have {logits.shape[-1]} columns; task {task.name!r} needs "
            f"{task.num_labels}."
        )
    return logits


def nll(targets: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of gold labels under target probabilities."""
    p = np.clip(targets[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.log(p).mean())


def build(cfg, task: TaskSpec, teacher_names: list[str]) -> Ensembler:
    """The ensembler named by `cfg.name`, with the rest of `cfg` as its options."""
    options = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    name = options.pop("name", None)
    if name not in ENSEMBLERS:
        raise ValueError(f"Unknown ensemble {name!r}: expected one of {sorted(ENSEMBLERS)}.")
    return ENSEMBLERS[name](task, teacher_names, **options)
