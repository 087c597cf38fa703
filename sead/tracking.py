"""`metrics.jsonl`: every run's config, training log and final metrics as plain JSON lines.

Tracking services (tensorboard, wandb, mlflow) are opt-in through `train.report_to`, which
goes straight to the Trainer. This file is always written, so a run's curves and numbers can
be read back with nothing but `json` (or `pandas.read_json(path, lines=True)`).
Each line is one object with an `event`: `config`, `train` (one per Trainer log: loss,
learning rate, epoch, step) or `results`.

Also the one evaluation loop (`evaluate`: tokenize, predict, score) and the per-epoch report
that uses it while a model trains.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from transformers import TrainerCallback

from sead import data, metrics
from sead.inference import predict_logits

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends one JSON object per line; each line is flushed, so a crash loses nothing."""

    def __init__(self, out_dir, enabled: bool = True):
        self.path = Path(out_dir) / METRICS_FILE
        self.enabled = enabled

    def write(self, event: str, mode: str = "a", **fields) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, mode, encoding="utf-8") as f:
            f.write(json.dumps(_finite(record), default=str) + "\n")

    def config(self, cfg) -> None:
        """The first line of a run: starts the file afresh (a rerun in the same folder)."""
        self.write("config", mode="w", config=OmegaConf.to_container(cfg, resolve=True))

    def callback(self) -> TrainerCallback:
        return _TrainerLogCallback(self)


class _TrainerLogCallback(TrainerCallback):
    """Copies each Trainer log (loss, learning_rate, epoch, ...) into metrics.jsonl."""

    def __init__(self, log: MetricsLog):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.log.write("train", step=state.global_step, **logs)


@dataclass(frozen=True)
class Evaluation:
    """A model's official metrics on one split, and the forward pass they came from."""

    metrics: dict
    logits: np.ndarray
    seconds: float  # the forward pass alone (not tokenizing)

    @property
    def examples_per_second(self) -> float:
        return len(self.logits) / max(self.seconds, 1e-9)


def evaluate(
    model,
    tokenizer,
    task,
    ds,
    max_length: int,
    batch_size: int,
    desc: str,
    *,
    encoded=None,
    autocast: str | None = None,
) -> Evaluation:
    """Tokenize `ds` (unless `encoded` is given), predict, and score with the task's metrics:
    the one evaluation loop of sead (epoch reports, the student, diagnostic sets)."""
    if encoded is None:
        encoded = data.tokenize(ds, tokenizer, task, max_length)
    started = time.perf_counter()
    logits = predict_logits(model, tokenizer, encoded, batch_size, desc, autocast=autocast)
    seconds = time.perf_counter() - started
    scores = metrics.score_split(task, ds, metrics.hard_predictions(task, logits))
    return Evaluation(scores, logits, seconds)


Scorer = Callable[[object], dict[str, Evaluation]]  # model -> {split: its evaluation}


def eval_scorer(
    task, splits, tokenizer, max_length: int, batch_size: int, autocast: str | None = None
) -> Scorer:
    """Scores a model being trained on `splits` (the task's eval splits) with the task's
    official metrics; the splits are tokenized once, up front. `batch_size` and `autocast` as
    the final model's own evaluation uses them, so that the last epoch's pass can stand for it
    bit for bit (`final_evaluations`)."""
    encoded = {name: data.tokenize(ds, tokenizer, task, max_length) for name, ds in splits.items()}

    def score(model) -> dict[str, Evaluation]:
        return {
            split: evaluate(
                model, tokenizer, task, splits[split], max_length, batch_size,
                f"Epoch eval {split}", encoded=inputs, autocast=autocast,
            )
            for split, inputs in encoded.items()
        }  # fmt: skip

    return score


def epoch_report(trainer) -> EpochReport | None:
    """The trainer's `EpochReport`: each epoch's time, and its last evaluation."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, EpochReport):
            return callback
    return None


def final_evaluations(trainer) -> dict[str, Evaluation]:
    """The eval splits as the trainer's `EpochReport` scored them on its final weights (the
    last epoch's pass), or {} when training ended without one (e.g. a resumed run that had
    nothing left to train): the caller then runs its own pass. Reusing them saves running
    the same model over the same data twice."""
    report = epoch_report(trainer)
    return report.final if report else {}


class EpochReport(TrainerCallback):
    """At least one line per epoch, however few steps it has: the training loss (the Trainer
    logs at each epoch's end, not only every `logging_steps`) and, with a `scorer`, the eval
    metrics, as the Trainer does with `eval_strategy="epoch"`. Metrics go into that epoch's
    log too, so metrics.jsonl and the trackers get them (`eval_<split>_<metric>`)."""

    def __init__(self, who: str, scorer: Scorer | None = None):
        self.who = who
        self.scorer = scorer
        self.pending = False
        self.final: dict[str, Evaluation] = {}  # the last epoch's: see `final_evaluations`
        self.epoch_seconds: list[float] = []  # each epoch's training steps, evaluation aside
        self._epoch_started = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch_seconds.append(round(time.perf_counter() - self._epoch_started, 3))
        control.should_log = True  # the Trainer logs now, unless it just did at this step
        last = state.log_history[-1] if state.log_history else {}
        if last.get("step") == state.global_step and "loss" in last:
            self._report(state, kwargs.get("model"), last)  # no new log is coming: report now
        else:
            self.pending = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.pending and logs and "loss" in logs:
            self.pending = False
            scores = self._report(state, kwargs.get("model"), logs)
            flat = {f"eval_{split}_{k}": v for split, m in scores.items() for k, v in m.items()}
            logs.update(flat)  # the callbacks after this one (metrics.jsonl) see them
            if state.log_history:
                state.log_history[-1].update(flat)

    def _report(self, state, model, logs: dict) -> dict[str, dict]:
        evaluations = {}
        if self.scorer is not None and model is not None and state.is_world_process_zero:
            was_training = model.training
            evaluations = self.scorer(model)
            model.train(was_training)
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            self.final = evaluations  # the weights training ends with
        scores = {split: evaluation.metrics for split, evaluation in evaluations.items()}
        epochs = f"{round(state.epoch or 0)}/{math.ceil(state.num_train_epochs or 0)}"
        shown = "".join(
            f"; {split} " + " ".join(f"{k}={v:.4f}" for k, v in split_scores.items())
            for split, split_scores in scores.items()
        )
        seconds = f" ({self.epoch_seconds[-1]:.0f}s)" if self.epoch_seconds else ""
        log.info("%s, epoch %s: loss %.4f%s%s", self.who, epochs, logs["loss"], seconds, shown)
        return scores


def _finite(value):
    """JSON has no NaN/Infinity: write them as null so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def optimiser_args(recipe) -> dict:
    """The Trainer's optimiser and schedule settings from a recipe with `lr`, `epochs`,
    `batch_size`, `weight_decay` and `warmup_ratio`: the student's `train.*` and a teacher's
    `finetune_args` alike."""
    return {
        "learning_rate": recipe.lr,
        "num_train_epochs": recipe.epochs,
        "per_device_train_batch_size": recipe.batch_size,
        "weight_decay": recipe.weight_decay,
        "warmup_steps": recipe.warmup_ratio,  # transformers 5: a float < 1 is a ratio of steps
    }
