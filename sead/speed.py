"""How much faster the student is than its teachers, measured, not assumed.

Cheap where it can be: a teacher whose logits were computed in this run already had its
forward passes timed (`Teacher.examples_per_second`), so only the student is timed now.
Otherwise the student and every teacher predict the same eval examples with the same batch
size on the same device, in interleaved passes (student, teacher 1, ..., student, ...), so
that a burst of load from elsewhere hits every model alike; each model's best pass counts,
as `timeit` does. The machine's load average is recorded, and a model whose passes disagree
by more than `NOISY_MARGIN` is marked noisy: compare such speedups with care, and only
across runs of one machine.
"""

from __future__ import annotations

import logging
import os
import time

from datasets import Dataset, DatasetDict

from sead import data
from sead.inference import ForwardTimer, predict_logits
from sead.tasks import TaskSpec
from sead.teachers import PredictionsTeacher, Teacher

log = logging.getLogger(__name__)

PASSES = 5  # interleaved passes per model; the best one counts
REUSED = "forward passes: the teachers' while computing logits, the student's on the sample"
NOISY_MARGIN = 0.25  # slowest pass over fastest pass - 1 above this: the figure is noisy


MIN_PASSES = 3
MAX_PASSES = 10
MIN_SECONDS = 1.0


def throughput(
    model, tokenizer, dataset: Dataset, task: TaskSpec, max_length: int, batch_size: int
) -> float:
    """Examples per second of one model on `dataset` (tokenization excluded), timed alone.

    The best of `MIN_PASSES` to `MAX_PASSES` passes, until `MIN_SECONDS` of timing, as
    `timeit` does (the experiments time models one at a time with it).
    """
    timed = _Timed(model, tokenizer, dataset, task, max_length, batch_size)
    while len(timed.seconds) < MIN_PASSES or (
        sum(timed.seconds) < MIN_SECONDS and len(timed.seconds) < MAX_PASSES
    ):
        timed.one_pass()
    return timed.per_second


class _Timed:
    """One model ready to be timed on the sample: inputs tokenized once, one warm-up batch.

    `forward_only`: a pass counts its forward passes' time alone, as a teacher's is measured
    while it labels (`inference.ForwardTimer`), so the two compare; else its wall time.
    """

    def __init__(
        self, model, tokenizer, dataset: Dataset, task, max_length, batch_size, forward_only=False
    ):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.encoded = data.tokenize(dataset, tokenizer, task, max_length)
        warmup = self.encoded.select(range(min(batch_size, len(self.encoded))))
        predict_logits(model, tokenizer, warmup, batch_size, "Speed warm-up")
        self.seconds: list[float] = []
        self.forward_only = forward_only

    def one_pass(self) -> None:
        timer = ForwardTimer(self.model) if self.forward_only else None
        began = time.perf_counter()
        try:
            predict_logits(self.model, self.tokenizer, self.encoded, self.batch_size, "Speed")
        finally:
            if timer is not None:
                timer.detach()
        self.seconds.append(timer.seconds if timer else time.perf_counter() - began)

    @property
    def per_second(self) -> float:
        return len(self.encoded) / min(self.seconds)

    @property
    def spread(self) -> float:
        """How much the slowest pass took longer than the fastest (0.1: 10%)."""
        return max(self.seconds) / min(self.seconds) - 1


def compare(
    student,
    tokenizer,
    *,
    max_length: int,
    task: TaskSpec,
    teachers: dict[str, Teacher | PredictionsTeacher],
    splits: DatasetDict,
    n: int,
    batch_size: int,
    measured: dict[str, float | None] | None = None,
    passes: int = PASSES,
) -> dict:
    """Student and each teacher on the first `n` examples of the task's first eval split.

    `teachers`: the run's prepared teachers, by name (`sead.teachers.prepare`), loaded again
    here to be timed. `measured`: each teacher's throughput already measured in this run
    (None where its logits came from the cache); when every teacher has one, only the student
    is timed. `max_length` is the student's; each teacher keeps its own.
    """
    split = task.eval_splits[0]
    sample = splits[split].select(range(min(n, len(splits[split]))))
    load_before = _load_average()
    measured = measured or {}
    # A teacher read from files has no model here to time.
    skipped = {
        name: "predictions file: no model to time"
        for name, teacher in teachers.items()
        if isinstance(teacher, PredictionsTeacher)
    }
    specs = [t.spec for name, t in teachers.items() if name not in skipped]
    for name, why in skipped.items():
        log.info("Speed: teacher %s skipped (%s).", name, why)
    reuse = bool(specs) and all(measured.get(spec.name) for spec in specs)
    timed = {"student": _Timed(student, tokenizer, sample, task, max_length, batch_size, reuse)}
    if reuse:
        log.info("Speed: teachers' throughput as measured while computing their logits")
    else:
        names = ", ".join(spec.name for spec in specs)
        log.info(
            "Speed: timing the student and %s on %d examples, %d passes", names, len(sample), passes
        )
        for spec in specs:
            model, teacher_tokenizer = teachers[spec.name].load()
            timed[spec.name] = _Timed(
                model, teacher_tokenizer, sample, task, spec.max_length, batch_size
            )
    for _ in range(passes):
        for model in timed.values():
            model.one_pass()
    per_second = {name: model.per_second for name, model in timed.items()}
    if reuse:
        per_second |= {spec.name: float(measured[spec.name]) for spec in specs}
    spread = {name: round(model.spread, 3) for name, model in timed.items()}
    noisy = sorted(name for name, value in spread.items() if value > NOISY_MARGIN)
    result = {
        "split": split,
        "examples": len(sample),
        "batch_size": batch_size,
        "device": str(next(student.parameters()).device),
        # reused: every model's forward passes alone, the teachers' while they labelled
        "method": REUSED if reuse else "interleaved",
        "passes": passes,
        "examples_per_second": {name: round(v, 1) for name, v in per_second.items()},
        "speedup": {
            spec.name: round(per_second["student"] / per_second[spec.name], 2) for spec in specs
        },
        "spread": spread,
        "noisy_margin": NOISY_MARGIN,
        "noisy": noisy,
        "load_average": {"before": load_before, "after": _load_average()},
        "cpus": os.cpu_count(),
        **({"skipped": skipped} if skipped else {}),
    }
    if noisy:
        log.warning(
            "Speed figures for %s are noisy: their %d passes differ by more than %.0f%% "
            "(spread %s; load average %s on %s CPUs). Compare these speedups with care.",
            ", ".join(noisy),
            passes,
            100 * NOISY_MARGIN,
            {name: spread[name] for name in noisy},
            result["load_average"]["after"],
            result["cpus"],
        )
    return result


def _load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None
