"""How much faster the student is than its teachers, measured, not assumed.

Every model predicts the same eval examples with the same batch size on the same device,
after one warm-up batch, so the ratio of throughputs is a fair inference speedup. It is
measured on the machine the run used: compare speedups across runs of one machine only.
"""

from __future__ import annotations

import logging
import time

from datasets import Dataset, DatasetDict

from sead import data, teachers
from sead.inference import predict_logits
from sead.tasks import TaskSpec

log = logging.getLogger(__name__)

MIN_PASSES = 3
MAX_PASSES = 10
MIN_SECONDS = 1.0


def throughput(
    model, tokenizer, dataset: Dataset, task: TaskSpec, max_length: int, batch_size: int
) -> float:
    """Examples per second of `model` on `dataset` (tokenization excluded).

    The best of `MIN_PASSES` to `MAX_PASSES` passes, until `MIN_SECONDS` of timing, as
    `timeit` does: slower passes measure whatever else the machine was doing, not the model,
    and a pass of a few milliseconds (tiny models) is mostly noise on its own.
    """
    encoded = data.tokenize(dataset, tokenizer, task, max_length)
    warmup = encoded.select(range(min(batch_size, len(encoded))))
    predict_logits(model, tokenizer, warmup, batch_size, "Speed warm-up")
    best, passes, spent = float("inf"), 0, 0.0
    while passes < MIN_PASSES or (spent < MIN_SECONDS and passes < MAX_PASSES):
        started = time.perf_counter()
        predict_logits(model, tokenizer, encoded, batch_size, "Speed")
        elapsed = time.perf_counter() - started
        best, passes, spent = min(best, elapsed), passes + 1, spent + elapsed
    return len(encoded) / best


def compare(
    student,
    tokenizer,
    *,
    max_length: int,
    task: TaskSpec,
    specs: list[teachers.TeacherSpec],
    splits: DatasetDict,
    store_dir,
    n: int,
    batch_size: int,
) -> dict:
    """Student and each teacher on the first `n` examples of the task's first eval split.

    `max_length` is the student's; each teacher keeps its own. `specs` and `splits` are the
    checked teachers and data; `store_dir` is where fine-tuned teachers are stored.
    """
    split = task.eval_splits[0]
    sample = splits[split].select(range(min(n, len(splits[split]))))
    per_second = {"student": throughput(student, tokenizer, sample, task, max_length, batch_size)}
    # A teacher read from files has no model here to time.
    skipped = {s.name: "predictions file: no model to time" for s in specs if _from_files(s)}
    specs = [spec for spec in specs if not _from_files(spec)]
    for name, why in skipped.items():
        log.info("Speed: teacher %s skipped (%s).", name, why)
    for spec in specs:
        teacher, teacher_tokenizer = teachers.prepare(spec, task, splits, store_dir).load()
        per_second[spec.name] = throughput(
            teacher, teacher_tokenizer, sample, task, spec.max_length, batch_size
        )
        del teacher
    return {
        "split": split,
        "examples": len(sample),
        "batch_size": batch_size,
        "device": str(next(student.parameters()).device),
        "examples_per_second": {name: round(v, 1) for name, v in per_second.items()},
        "speedup": {
            spec.name: round(per_second["student"] / per_second[spec.name], 2) for spec in specs
        },
        **({"skipped": skipped} if skipped else {}),
    }


def _from_files(spec) -> bool:
    return isinstance(spec, teachers.PredictionsSpec)
