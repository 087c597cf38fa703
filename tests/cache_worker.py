"""A separate process for the cache tests: `python -m tests.cache_worker MODE ...`.

race ROOT BARRIER: wait until two processes have checked in under the folder BARRIER,
    then ask ROOT for one entry whose compute is slow and appends a line to
    $SEAD_TEST_COUNTER; print {"hit", "logits"} as json.
fill MODEL DATA ROOT CHUNK BATCH DELAY: fill the train logits of the teacher
    checkpoint MODEL on the task folder DATA into ROOT through the real teacher
    path, sleeping DELAY s after each saved chunk (so a test can SIGKILL it mid-way).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from sead.cache import PartialEntry, SoftLabelCache

RACE_KEY = {"model": "m@1", "task": "sst2", "split": "train", "data": "d"}


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


def fill(model_dir, data_dir, root, chunk_size: int, batch_size: int) -> np.ndarray:
    """A teacher's logits on an sst2-shaped train split, via `cached_logits`."""
    from omegaconf import OmegaConf  # heavy imports here, so that `race` starts fast

    from sead import data, teachers
    from sead.tasks import get_task

    task = get_task("sst2")
    data_cfg = OmegaConf.create({"dir": str(data_dir)})
    splits = data.load_splits(task, data_cfg, ["train"])
    spec = teachers.TeacherSpec(
        name="toy_bert",
        source=str(model_dir),
        finetune=False,
        tokenizer=None,
        max_length=64,
        revision=None,
        trust_remote_code=False,
        batch_size=batch_size,
    )
    cache = SoftLabelCache(root, chunk_size=chunk_size)
    teacher = teachers.prepare(spec, task, splits, Path(root) / "teachers", cache.file_hashes)
    return teachers.cached_logits(teacher, task, splits, cache)["train"].logits


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mode, *args = argv
    if mode == "race":
        race(*args)
    elif mode == "fill":
        model_dir, data_dir, root, chunk_size, batch_size, delay = args
        save = PartialEntry.save

        def save_slowly(self, *a, **kw):
            save(self, *a, **kw)
            time.sleep(float(delay))

        PartialEntry.save = save_slowly
        fill(model_dir, data_dir, root, int(chunk_size), int(batch_size))
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
