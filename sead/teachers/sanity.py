"""Evaluation and the sanity gate: a teacher must beat a floor before a student learns from it.

A wrong checkpoint or label order makes a teacher silently wrong; right after its
eval-split logits, its main metric must beat the floor (by default the best score of a
constant prediction), or the run stops before the teacher labels anything else.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from sead import choices, metrics
from sead.tasks import TaskSpec
from sead.teachers.spec import PredictionsSpec, TeacherSpec

log = logging.getLogger(__name__)


def evaluate(task: TaskSpec, logits: dict[str, np.ndarray], splits) -> dict[str, dict]:
    """The task's official metrics for logits of each split in `logits`."""
    return {
        split: metrics.score_split(task, splits[split], metrics.hard_predictions(task, scores))
        for split, scores in logits.items()
    }


def constant_baseline(task: TaskSpec, gold: np.ndarray) -> float:
    """The best main metric of any constant prediction: each label in turn, always.

    For accuracy that is the majority class; for F1 of the positive class (MRPC, QQP, MultiRC)
    always predicting it, even where it is the minority (a teacher collapsed onto "True" must
    not pass a floor of 0). Regression (stsb): 0, the correlation of any constant predictor
    (pearson of a constant is undefined; it carries no signal).
    """
    if task.is_regression:
        return 0.0
    if task.is_multiple_choice:
        return choices.constant_choice_baseline(task, gold)
    with warnings.catch_warnings():  # f1/mcc of a constant predictor warn about zero division
        warnings.simplefilter("ignore")
        return max(
            float(metrics.compute(task.name, np.full(len(gold), label), gold)[task.main_metric])
            for label in range(task.num_labels)
        )


class TeacherBelowFloor(ValueError):
    """A teacher too weak to learn from: a wrong checkpoint, label order or fine-tune."""


def gate(
    spec: TeacherSpec, task: TaskSpec, scores: dict[str, dict], splits, enabled: bool = True
) -> dict:
    """Check a teacher's main metric on every eval split against its floor.

    The floor is `min_metric` (score >= floor) when set, else the best constant
    prediction's score (score > baseline, strictly). Raises `TeacherBelowFloor` when enabled
    and a split falls short; returns what was checked, for the results.
    """
    metric = task.main_metric
    checked = {}
    for split, split_scores in scores.items():
        baseline = constant_baseline(task, metrics.references(task, splits[split]))
        score = float(split_scores[metric])
        if spec.min_metric is None:
            passed = bool(score > baseline)
        else:
            passed = bool(score >= spec.min_metric)
        noise = metrics.noise_check(metric, score, baseline, len(splits[split]))
        checked[split] = {"score": score, "baseline": baseline, "passed": passed, "noise": noise}
        if passed and noise and noise["within_noise"]:
            log.warning(
                metrics.noise_message(f"Teacher {spec.name}", split, metric, noise, score, baseline)
            )
    floor = "constant baseline" if spec.min_metric is None else spec.min_metric
    record = {"metric": metric, "floor": floor, "enabled": enabled, "splits": checked}
    failed = {split: c for split, c in checked.items() if not c["passed"]}
    if failed and enabled:
        raise TeacherBelowFloor(_gate_message(spec, task, metric, failed))
    if failed:
        log.warning("Teacher %s is below its floor (%s); gate disabled, kept.", spec.name, failed)
    return record


def _gate_message(spec: TeacherSpec, task: TaskSpec, metric: str, failed: dict) -> str:
    name = spec.name
    lines = [f"Teacher {name!r} ({spec.source}) fails the sanity gate on task {task.name!r}:"]
    for split, c in failed.items():
        if spec.min_metric is None:
            floor = f"above the constant baseline {c['baseline']:.4f} (one label always)"
        else:
            floor = f"at least teachers.{name}.min_metric={spec.min_metric} (constant "
            floor += f"baseline: {c['baseline']:.4f})"
        lines.append(f"  {split}: {metric}={c['score']:.4f}, needs to be {floor}")
    if isinstance(spec, PredictionsSpec):
        lines.append(
            f"Its files' columns in another order, or files for another split? Check "
            f"teachers.{name}.labels ({list(spec.labels or ())}) and teachers.{name}.predictions."
        )
    elif spec.finetune:
        lines.append(
            f"It was fine-tuned by sead: try other teachers.{name}.finetune_args "
            f"(lr, epochs, seed) or more training data."
        )
    else:
        lines.append(
            f"A wrong checkpoint, or its labels in another order? Check "
            f"teachers.{name}.checkpoints.{task.name} and teachers.{name}.label_map."
        )
    lines.append(
        f"To use it anyway: teachers.{name}.gate=false (or teacher_gate=false for every "
        f"teacher); another floor: teachers.{name}.min_metric=<value>."
    )
    return "\n".join(lines)
