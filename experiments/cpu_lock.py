"""The team's CPU lock, held by a benchmark one timed unit at a time (shared by the studies)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

LOCK = "/tmp/sead-cpu.lock"  # the one `flock /tmp/sead-cpu.lock <command>` takes


@contextmanager
def cpu_lock(path: str | None = LOCK) -> Iterator[None]:
    """Hold `path` (`flock /tmp/sead-cpu.lock`) for one unit, so that test suites run between
    units but never during one. A blocking flock(2), as flock(1) takes it: waiters queue in
    the kernel alike (a polling lock would lose every race). `path` '' or None: no lock (the
    whole command already runs under `flock`)."""
    if not path:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
