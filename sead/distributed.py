"""Which process am I: rank helpers for runs under `torchrun` / `accelerate launch`.

The Trainer already trains with DDP when a launcher starts several processes; what it does not
know is sead's own work around training. These helpers let the pipeline run the teachers on
rank 0 while the other ranks wait (then every rank reads the same cache entries) and let only
rank 0 write results. A plain `python -m sead.run` is one process: every helper is then a no-op
and `accelerate` is never initialised, so the single-process path is unchanged.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

import torch


def world_size() -> int:
    """Number of processes the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def _state(timeout_s: int | None = None):
    """accelerate's process state, a singleton shared with the Trainer.

    The first call creates the process group and fixes its timeout: waiting ranks must
    outlast rank 0's teacher inference, which can take longer than torch's default.
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


@contextmanager
def main_process_first():
    """Rank 0 runs the block first while the others wait, then the others run it.

    Used for work whose result rank 0 writes to a shared place (the logit cache): the other
    ranks then find it there instead of computing it again.
    """
    if not is_distributed():
        yield
        return
    with _state().main_process_first():
        yield


def describe() -> dict:
    """What results.json records about the processes that trained the student."""
    if not is_distributed():
        return {"world_size": 1}
    state = _state()
    return {"world_size": state.num_processes, "backend": state.backend}
