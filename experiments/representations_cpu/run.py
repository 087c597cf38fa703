"""Labelling with and without teacher representations: what the vectors cost (issue 28).

The issue's cost target: labelling with representations costs at most 1.1x labelling without
them (one forward pass: the hidden states are pooled from the pass that gives the logits);
and each teacher's cache size is reported. Settings, fixed before any number was measured:

  data      the sead_glue_cpu study's SST-2 train split (train minus its held-out slice,
            work/data/sst2 there: the transfer set's source), a fixed random slice of N
            sentences (`data.max_train_samples`, subsample seed 0), max_length 64 as there
  teachers  sead's shipped `minilm` (all-MiniLM-L6-v2, hidden 384) and `mpnet`
            (all-mpnet-base-v2, hidden 768) configs, batch size 128 as shipped, each with a
            seeded fresh 2-label head on top (labelling cost does not depend on what the head
            learnt); made once under work/models/
  vectors   `cache.representations` as shipped: last layer, mean over real tokens, float16
  unit      one teacher labelling the slice through `sead.teachers.cached_logits` into an
            empty cache, with or without `representations` (tokenize, load, forward, store):
            what a run pays on a miss. Its wall time, and the forward pass's own time
            (`compute_seconds` in the entry's manifest)
  order     per repeat and teacher, without then with, then the other way round on the next
            repeat (alternating, so drift in machine load does not favour one side); one
            untimed warm-up unit per teacher first (file cache, allocator)
  threads   torch's default (OMP_NUM_THREADS), or --threads; recorded with the results
  lock      each unit holds /tmp/sead-cpu.lock (the team's CPU lock, `harness.cpu_lock`) while
            it runs, so other jobs interleave between units and none runs during one (--lock ''
            when the whole command already runs under `flock`)

Reported per teacher: the median wall and forward seconds of each side, their ratio, each
repeat's ratio, whether the logits of both sides are bitwise equal (they must be: one pass;
compared by their SHA-256), and the entry sizes in bytes (logits tensor, vectors tensor, the
whole entry file), also per 1,000 examples and for the study's whole SST-2 transfer source.

Resumable: each timed unit (teacher, side, repeat) is saved to runs/<unit>.json as it ends (a
unit of `experiments/harness.py`); a rerun redoes only the missing ones (after the teacher's
warm-up unit). Remove runs/ to measure again.

    OMP_NUM_THREADS=2 python experiments/representations_cpu/run.py   # N=2000, 5 repeats
    python experiments/representations_cpu/run.py --n 4000 --repeats 7
    python experiments/representations_cpu/run.py --quick         # 64 sentences, 2 repeats
    python experiments/representations_cpu/run.py --task stsb --n 1000   # into tasks/stsb/
    python experiments/representations_cpu/run.py --report-only   # the table from runs/

It takes the CPU lock itself, unit by unit: do not wrap it in `flock` (or pass --lock '').

`--task` measures the same on another task of the study (its data folder, max_length and
output layer: sentence pairs at 128 tokens for STS-B), into tasks/<task>/ (runs/, results.json;
work/ not committed). SST-2 stays where it was measured first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sead, whatever is installed

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import DatasetDict  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from experiments import harness  # noqa: E402
from experiments.sead_glue_cpu import run as study  # noqa: E402
from sead import pipeline, tasks, teachers  # noqa: E402
from sead.cache import LOGITS_FILE, MANIFEST_FILE, SoftLabelCache  # noqa: E402

log = logging.getLogger("representations_cpu")
WORK = HERE / "work"
RUNS = HERE / "runs"
RESULTS = HERE / "results.json"
LOCK = harness.CPU_LOCK  # --lock; "" when the whole command runs under `flock` already
TEACHERS = ("minilm", "mpnet")
SIDES = {"without": False, "with": True}
TARGET = 1.1  # with / without, at most
TASK = "sst2"  # --task: the study's task whose data is labelled
# the run's record in results.json, which --report-only keeps while it re-renders the units
RECORD = ["task", "n_examples", "repeats", "full_split_examples", "max_length", "batch_size"]
RECORD += ["teacher_models", "representations", "code", "machine", "finished"]


def labelling_checkpoint(name: str, base: str) -> Path:
    """`base` with a seeded fresh head for TASK, saved once under work/models/<name>."""
    folder = WORK / "models" / name
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    head = tasks.head_config(tasks.get_task(TASK))
    model = AutoModelForSequenceClassification.from_pretrained(base, **head)
    tmp = folder.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def settings(n: int):
    """The run's typed settings: the study's TASK data, both teachers as ready checkpoints."""
    args = [
        f"task={TASK}",
        f"data.dir={study.data_dir(TASK)}",
        f"data.max_train_samples={n}",
        f"teachers=[{','.join(TEACHERS)}]",
        f"paths.cache_dir={WORK / 'cache'}",
        f"paths.output_dir={WORK / 'outputs'}",
    ]
    bases = harness.compose(args).teachers
    for name in TEACHERS:
        checkpoint = labelling_checkpoint(name, str(bases[name].model))
        args += [
            f"teachers.{name}.finetune=false",
            f"+teachers.{name}.checkpoints={{{TASK}: '{checkpoint}'}}",
            f"teachers.{name}.max_length={study.TASKS[TASK]['max_length']}",
        ]
    return pipeline.read_settings(harness.compose(args))


def unit(teacher, task, split, cache_settings, vectors: bool, name: str) -> dict:
    """One labelling into an empty cache, under the CPU lock: its times, entry sizes and the
    logits' SHA-256."""
    root = WORK / "units" / name
    with harness.cpu_lock(LOCK):
        shutil.rmtree(root, ignore_errors=True)
        cache = SoftLabelCache.from_settings(root, cache_settings)
        spec = cache_settings.representations if vectors else None
        started = time.perf_counter()
        entry = teachers.cached_logits(teacher, task, split, cache, representations=spec)["train"]
        wall = time.perf_counter() - started
    manifest = json.loads((root / entry.fingerprint / MANIFEST_FILE).read_text())
    stored = manifest.get("representations")
    record = {
        "vectors": vectors,
        "wall_s": round(wall, 3),
        "forward_s": manifest["compute_seconds"],
        "n_examples": manifest["n_examples"],
        "logits_bytes": int(np.prod(manifest["shape"])) * np.dtype(manifest["dtype"]).itemsize,
        "logits_sha256": hashlib.sha256(np.ascontiguousarray(entry.logits).tobytes()).hexdigest(),
        "vectors_bytes": stored["size_bytes"] if stored else 0,
        "vectors_shape": stored["shape"] if stored else None,
        "entry_file_bytes": (root / entry.fingerprint / LOGITS_FILE).stat().st_size,
        "load_average_after": os.getloadavg(),
    }
    shutil.rmtree(root, ignore_errors=True)
    return record


def unit_name(teacher: str, side: str, repeat: int) -> str:
    return f"{teacher}-{side}-{repeat}"


def measure(n: int, repeats: int, threads: int | None) -> dict:
    """Every missing unit, each saved as it ends; the run's record (settings, machine, code)."""
    if threads:
        torch.set_num_threads(threads)
    run = settings(n)
    inputs = pipeline.check_inputs(run)
    task = inputs.task
    split = DatasetDict({"train": inputs.splits["train"]})
    saved = harness.Units(RUNS)
    for spec in inputs.specs:
        names = [unit_name(spec.name, side, r) for r in range(repeats) for side in SIDES]
        if all(saved.done(name) for name in names):
            continue
        teacher = teachers.prepare(spec, task, inputs.splits, run.paths.teachers_dir)
        warm = DatasetDict({"train": split["train"].select(range(min(64, n)))})
        unit(teacher, task, warm, run.cache, True, f"{spec.name}-warmup")
        for repeat in range(repeats):
            order = list(SIDES) if repeat % 2 == 0 else list(SIDES)[::-1]
            for side in order:
                name = unit_name(spec.name, side, repeat)
                if saved.done(name):
                    continue
                record = unit(teacher, task, split, run.cache, SIDES[side], name)
                saved.save(name, {"teacher": spec.name, "repeat": repeat, **record})
                log.info(
                    "%s: %.2fs wall, %.2fs forward", name, record["wall_s"], record["forward_s"]
                )
    return {
        "task": TASK,
        "n_examples": n,
        "repeats": repeats,
        "full_split_examples": sum(1 for _ in (study.data_dir(TASK) / "train.jsonl").open()),
        "max_length": study.TASKS[TASK]["max_length"],
        "batch_size": {spec.name: spec.batch_size for spec in inputs.specs},
        "teacher_models": {spec.name: spec.source for spec in inputs.specs},
        "representations": asdict(run.cache.representations),
        "code": harness.code_commit(),
        "machine": harness.machine(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def summary(runs: list[dict], full: int) -> dict:
    side = {v: [r for r in runs if r["vectors"] == v] for v in (False, True)}

    def median(vectors: bool, field: str) -> float:
        return statistics.median(r[field] for r in side[vectors])

    pairs, hashes = {}, {}
    for r in runs:
        pairs.setdefault(r["repeat"], {})[r["vectors"]] = r["wall_s"]
        hashes.setdefault(r["repeat"], set()).add(r["logits_sha256"])
    ratio = median(True, "wall_s") / median(False, "wall_s")
    with_vectors, without = side[True][0], side[False][0]
    n = with_vectors["n_examples"]
    per_example = {
        "logits": without["logits_bytes"] / n,
        "vectors": with_vectors["vectors_bytes"] / n,
        "entry_without": without["entry_file_bytes"] / n,
        "entry_with": with_vectors["entry_file_bytes"] / n,
    }
    return {
        "median_wall_s": {"without": median(False, "wall_s"), "with": median(True, "wall_s")},
        "median_forward_s": {
            "without": median(False, "forward_s"),
            "with": median(True, "forward_s"),
        },
        "ratio_wall": round(ratio, 4),
        "ratio_forward": round(median(True, "forward_s") / median(False, "forward_s"), 4),
        "ratio_each_repeat": [
            round(p[True] / p[False], 4) for _, p in sorted(pairs.items()) if len(p) == 2
        ],
        "target": TARGET,
        "target_met": ratio <= TARGET,
        "logits_identical": all(len(pair) == 1 for pair in hashes.values()),  # per repeat
        "hidden_size": with_vectors["vectors_shape"][1],
        "bytes": {
            "logits": without["logits_bytes"],
            "vectors": with_vectors["vectors_bytes"],
            "entry_without": without["entry_file_bytes"],
            "entry_with": with_vectors["entry_file_bytes"],
        },
        "bytes_per_1000_examples": {k: round(v * 1000) for k, v in per_example.items()},
        "bytes_full_split": {k: round(v * full) for k, v in per_example.items()},
        "runs": runs,
    }


def collect(record: dict) -> dict:
    """The run's record and, per teacher with both sides saved, its summary of the units."""
    by_teacher: dict[str, list[dict]] = {}
    for saved in harness.Units(RUNS).all():
        by_teacher.setdefault(saved["teacher"], []).append(saved)
    out = {}
    for name, runs in by_teacher.items():
        if {r["vectors"] for r in runs} == {False, True}:
            model = record["teacher_models"].get(name)
            out[name] = summary(runs, record["full_split_examples"]) | {"model": model}
    return {**record, "teachers": out}


def report(results: dict) -> str:
    head = (
        f"{results['n_examples']:,} examples of {results.get('task', 'sst2')}'s train split, "
        f"max_length {results['max_length']}, {results['repeats']} repeats, "
        f"{results['machine']['torch_threads']} thread(s), code {results['code']}\n\n"
    )
    header = [
        "teacher", "hidden", "median s without", "median s with", "with / without (wall)",
        "forward ratio", f"target <= {TARGET}", "logits equal", "logits B/1k ex",
        "vectors B/1k ex",
        f"entry with vectors, whole split ({results['full_split_examples']:,} ex)",
    ]  # fmt: skip
    rows = []
    for name, t in results["teachers"].items():
        wall, per_k = t["median_wall_s"], t["bytes_per_1000_examples"]
        each = ", ".join(f"{r:.3f}" for r in t["ratio_each_repeat"])
        rows.append([
            name, t["hidden_size"], f"{wall['without']:.2f}", f"{wall['with']:.2f}",
            f"{t['ratio_wall']:.3f} ({each})", f"{t['ratio_forward']:.3f}",
            "met" if t["target_met"] else "missed", t["logits_identical"],
            f"{per_k['logits']:,}", f"{per_k['vectors']:,}",
            f"{t['bytes_full_split']['entry_with'] / 2**20:.1f} MiB",
        ])  # fmt: skip
    return head + harness.markdown_table(header, rows)


def main(argv=None) -> None:
    global WORK, RUNS, RESULTS, LOCK, TASK
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="examples of train to label")
    parser.add_argument("--task", default=TASK, choices=list(study.TASKS), help="the study's task")
    parser.add_argument("--repeats", type=int, default=5, help="pairs of units per teacher")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--lock", default=LOCK, help="CPU lock taken per unit ('': none)")
    parser.add_argument("--quick", action="store_true", help="64 sentences, 2 repeats, quick/")
    harness.report_only(parser)
    args = parser.parse_args(argv)
    LOCK, TASK = args.lock, args.task
    if TASK != "sst2":
        WORK, RUNS, RESULTS = (HERE / "tasks" / TASK / x for x in ("work", "runs", "results.json"))
    if args.quick:
        quick = HERE / "quick" if TASK == "sst2" else HERE / "quick" / TASK
        WORK, RUNS, RESULTS = quick / "work", quick / "runs", quick / "results.json"
        args.n, args.repeats = 64, 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.report_only:
        record = harness.kept(RESULTS, RECORD)
        if not record:
            parser.error(f"--report-only: no {RESULTS} yet (run the benchmark first)")
    else:
        record = measure(args.n, args.repeats, args.threads)
    results = collect(record)
    harness.write_json(RESULTS, results)
    print(report(results))


if __name__ == "__main__":
    main()
