"""`metrics.jsonl`: every run's config, training log and final metrics as plain JSON lines.

Tracking services (tensorboard, wandb, mlflow) are opt-in through `train.report_to`, which
goes straight to the Trainer. This file is always written, so a run's curves and numbers can
be read back with nothing but `json` (or `pandas.read_json(path, lines=True)`).
Each line is one object with an `event`: `config`, `train` (one per Trainer log: loss,
learning rate, epoch, step) or `results`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from omegaconf import OmegaConf
from transformers import TrainerCallback

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


def _finite(value):
    """JSON has no NaN/Infinity: write them as null so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
