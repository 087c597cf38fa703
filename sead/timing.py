"""Timing and sizing a student's formats for `sead.export`: the same pre-padded batches for
every format, latency at batch 1 and throughput over length-sorted batches, sizes on disk;
and the wall time of a run's stages (`stage_timer`)."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding

from sead import choices
from sead.choices import MODEL_INPUTS

log = logging.getLogger(__name__)


def stage_timer(timings: dict):
    """`with stage(name):` logs `== name ==` and records the stage's seconds in `timings`
    (and their running `total`): a run's `timings_s`."""

    @contextmanager
    def stage(name: str):
        log.info("== %s ==", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            timings[name] = round(time.perf_counter() - start, 3)
            timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 3)

    return stage


@dataclass
class Batches:
    """Pre-tokenized, pre-padded batches: tokenization and padding are not timed."""

    single: list[dict]  # one example each (latency)
    sorted32: list[dict]  # length-sorted batches of `batch_size` (throughput)
    n_examples: int


def make_batches(encoded: Dataset, tokenizer, n: int, batch_size: int) -> Batches:
    multiple_choice = "n_choices" in encoded.column_names
    encoded = encoded.select(range(min(n, len(encoded))))
    columns = [c for c in MODEL_INPUTS if c in encoded.column_names]
    features = {c: encoded[c][:] for c in columns}  # plain lists: fast row access
    rows = [{c: features[c][i] for c in columns} for i in range(len(encoded))]
    collate = (
        choices.ChoiceCollator(tokenizer)
        if multiple_choice
        else DataCollatorWithPadding(tokenizer, return_tensors="pt")
    )

    def batch(indices) -> dict:
        out = collate([rows[i] for i in indices])
        return {k: v for k, v in out.items() if k in MODEL_INPUTS}

    if multiple_choice:  # padded size: choices x longest choice
        size = np.asarray(encoded[choices.CHOICE_TOKENS][:])
    else:
        size = np.asarray([len(row["input_ids"]) for row in rows])
    order = np.argsort(-size, kind="stable")  # longest first, as sead's inference runs
    sorted32 = [batch(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    return Batches([batch([i]) for i in range(len(rows))], sorted32, len(rows))


def time_models(models: dict, batches: Batches, passes: int) -> dict[str, dict]:
    """Per model: p50/p95 latency (ms) at batch 1 and throughput (examples/s, the best of
    `passes` passes over the sorted batches), after a warm-up.

    The models take turns (example by example for latency, pass by pass for throughput), so
    a burst of other work on the machine slows them all alike instead of one format.
    """
    latencies = {name: [] for name in models}
    best = dict.fromkeys(models, float("inf"))
    with torch.inference_mode():
        for model in models.values():
            model.eval()
            for batch in batches.single[:5] + batches.sorted32[:1]:
                model(**batch)
        for batch in batches.single:
            for name, model in models.items():
                started = time.perf_counter()
                model(**batch)
                latencies[name].append(1000 * (time.perf_counter() - started))
        for _ in range(passes):
            for name, model in models.items():
                started = time.perf_counter()
                for batch in batches.sorted32:
                    model(**batch)
                best[name] = min(best[name], time.perf_counter() - started)
    return {
        name: {
            "latency_ms": {
                "p50": round(float(np.percentile(latencies[name], 50)), 3),
                "p95": round(float(np.percentile(latencies[name], 95)), 3),
            },
            "throughput": round(batches.n_examples / best[name], 1),
        }
        for name in models
    }


def size_on_disk(*paths: Path) -> int:
    return sum(Path(p).stat().st_size for p in paths if Path(p).is_file())


def weight_files(student_dir: Path) -> list[Path]:
    return sorted(Path(student_dir).glob("*.safetensors")) or sorted(
        Path(student_dir).glob("*.bin")
    )


def torch_int8_size(model) -> int:
    """Bytes of the quantized model's state dict, serialized (it is quantized at load time)."""
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
