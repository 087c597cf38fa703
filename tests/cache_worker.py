"""A separate process for the cache tests: `python -m tests.cache_worker MODE ...`.

race ROOT BARRIER: wait until two processes have checked in under the folder BARRIER,
    then ask ROOT for one entry whose compute is slow and appends a line to
    $SEAD_TEST_COUNTER; print {"hit", "logits"} as json.
fill MODEL DATA ROOT CHUNK BATCH DELAY [SHARD]: fill the train logits of the teacher
    checkpoint MODEL on the task folder DATA into ROOT through the real teacher
    path, sleeping DELAY s after each saved chunk (so a test can SIGKILL it mid-way);
    with SHARD ('i/n'), only that chunk set, as a `cache.shard=i/n` job does. Prints
    {"computed": [chunks this process computed], "pending": [saved, in all] or null} as json.
fill-vectors ...: the same, asking for representations too (`cache.representations`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sead.cache import SoftLabelCache
from sead.chunks import PartialEntry

REPO = Path(__file__).resolve().parents[1]
RACE_KEY = {"model": "m@1", "task": "sst2", "split": "train", "data": "d"}


def spawn(mode: str, *args, stdout=subprocess.PIPE, env=None) -> subprocess.Popen:
    """`python -m tests.cache_worker MODE ARGS...` started in the background from the
    repository root, its stderr (and `stdout`) captured as text."""
    command = [sys.executable, "-m", "tests.cache_worker", mode, *map(str, args)]
    return subprocess.Popen(
        command, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env
    )


def race(root: str, barrier: str) -> None:
    def slow_compute(partial):
        with open(os.environ["SEAD_TEST_COUNTER"], "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1)  # the other process asks meanwhile and finds the lock taken
        return np.arange(8, dtype=np.float32).reshape(4, 2) / 3

    Path(barrier, str(os.getpid())).touch()
    while len(list(Path(barrier).iterdir())) < 2:  # both ask at the same moment
        time.sleep(0.01)
    entry = SoftLabelCache(root).get_or_compute(RACE_KEY, np.arange(4), slow_compute)
    print(json.dumps({"hit": entry.hit, "logits": entry.logits.tolist()}))


def fill(
    model_dir, data_dir, root, chunk_size: int, batch_size: int, shard=None, representations=False
):
    """A teacher's train-split cache entry on an sst2-shaped task, via `cached_logits`
    (its logits; with `shard` or `representations`, the entry, which has no logits while other
    shards are missing). `representations`: ask for the vectors `cache.representations` (conf/)
    configures, as a run that learns from them does."""
    from sead import data, teachers  # heavy imports here, so that `race` starts fast
    from sead.inference import torch_threads
    from sead.tasks import get_task
    from tests.helpers import settings, teacher_spec

    task = get_task("sst2")
    splits = data.load_splits(task, settings("data", dir=str(data_dir)), ["train"])
    spec = teacher_spec("toy_bert", model_dir, batch_size=batch_size)
    cache = SoftLabelCache(root, chunk_size=chunk_size, shard=shard)
    teacher = teachers.prepare(spec, task, splits, Path(root) / "teachers", cache.file_hashes)
    vectors = settings("cache").representations if representations else None
    # One thread in every process, this one included, whatever OMP_NUM_THREADS the shell set:
    # float sums taken with another thread count differ in the last bit, and the shard tests
    # compare a spawned job's logits bitwise with a fill in the test's own process.
    with torch_threads(1):
        entries = teachers.cached_logits(
            teacher, task, splits, cache, sharded=True, representations=vectors
        )
    return entries["train"] if shard or representations else entries["train"].logits


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mode, *args = argv
    if mode == "race":
        race(*args)
    elif mode in ("fill", "fill-vectors"):
        model_dir, data_dir, root, chunk_size, batch_size, delay, *shard = args
        save, computed = PartialEntry.save, []

        def save_slowly(self, index, *a, **kw):
            save(self, index, *a, **kw)
            computed.append(index)
            time.sleep(float(delay))

        PartialEntry.save = save_slowly
        vectors = mode == "fill-vectors"
        entry = fill(
            model_dir,
            data_dir,
            root,
            int(chunk_size),
            int(batch_size),
            *shard,
            representations=vectors,
        )
        pending = getattr(entry, "pending", None)
        print(json.dumps({"computed": computed, "pending": pending and list(pending)}))
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
