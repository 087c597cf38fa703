"""Which process am I: rank helpers for runs under `torchrun` / `accelerate launch`.

The Trainer already trains with DDP when a launcher starts several processes; what it does not
know is sead's own work around training. These helpers let every rank fill its share of the
teachers' cache entries (`sead.chunks.Shard`, a barrier after each) and let only rank 0 write
results. A plain `sead` is one process: every helper is then a no-op
and `accelerate` is never initialised, so the single-process path is unchanged.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch


def world_size() -> int:
    """Number of processes the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def _state(timeout_s: int | None = None):
    """accelerate's process state, a singleton shared with the Trainer.

    The first call creates the process group and fixes its timeout: a rank at a barrier must
    outlast the slowest rank's share of a teacher's cache fill, or the teachers' fine-tuning
    that runs first, which can take longer than torch's default.
    """
    from accelerate import PartialState

    timeout = timedelta(seconds=timeout_s) if timeout_s else None
    return PartialState(cpu=not torch.cuda.is_available(), timeout=timeout)


def init(timeout_s: int | None = None) -> None:
    """Join the process group (no-op in a single process); call before any other helper."""
    if is_distributed():
        _state(timeout_s)


def rank() -> int:
    return _state().process_index if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        _state().wait_for_everyone()


def describe() -> dict:
    """What results.json records about the processes that trained the student."""
    if not is_distributed():
        return {"world_size": 1}
    state = _state()
    return {"world_size": state.num_processes, "backend": state.backend}
