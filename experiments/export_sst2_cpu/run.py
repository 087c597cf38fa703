"""Real SST-2 students shipped on this CPU: PyTorch fp32 vs ONNX fp32 vs ONNX int8.

    flock /tmp/sead-cpu.lock python experiments/export_sst2_cpu/run.py   # make bench-export

Two students, each made by sead itself (`sead.pipeline.run`, one all-MiniLM-L6-v2 teacher
fine-tuned by sead on 4,000 SST-2 examples, 2 epochs of distillation on them):

* `minilm_l2`: the 2-layer student cut from all-MiniLM-L6-v2 (`student=minilm_l2`);
* `minilm_l6`: all six layers (`student.keep_layers=null`).

Each is then exported by `sead.export` (the same code as `python -m sead.export <run dir>`)
twice, back to back: the graph as exported, then fused (`export.fuse`). PyTorch dynamic int8
is timed beside the ONNX formats, on all 872 validation examples and with every core of the
machine for every format. Results: `results.json` beside this file
(the export records, the machine) and the tables on stdout; README.md reports them.

Resumable: a student whose run folder (`<cache>/export_sst2_cpu/<name>/`) has an ok
results.json is reused; the teacher and its logits are in the cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sead, whatever the cwd

from omegaconf import OmegaConf  # noqa: E402

from experiments import harness  # noqa: E402
from sead import export, pipeline  # noqa: E402
from sead.card import deployment_table  # noqa: E402

log = logging.getLogger("export_sst2_cpu")

DATA = harness.SHARED_DATA / "glue" / "sst2"
COMMON = [
    "task=sst2",
    "teachers=[minilm]",
    "student=minilm_l2",
    "data.max_train_samples=4000",
    "train.epochs=2",
]
STUDENTS = {
    "minilm_l2": [],
    "minilm_l6": ["student.keep_layers=null"],  # all six layers of all-MiniLM-L6-v2
}
EXPORT = {"torch_int8": True, "speed_samples": 1000, "passes": 5}  # 1000 > 872: all of them
# Each student is exported twice, back to back: the graph as exported (issue 18's rows), then
# fused by ONNX Runtime's transformer optimizer before quantizing (issue 27, export.fuse).
VARIANTS = {"unfused": {"fuse": False}, "fused": {"fuse": True}}


def student_run(name: str, cache: Path) -> Path:
    """The student's run folder, trained now unless an earlier run finished there."""
    run_dir = cache / "export_sst2_cpu" / name
    results = run_dir / "results.json"
    if results.is_file() and json.loads(results.read_text()).get("status") == "ok":
        log.info("%s: reusing %s", name, run_dir)
        return run_dir
    overrides = [
        *COMMON,
        *STUDENTS[name],
        f"data.dir={DATA}",
        f"paths.cache_dir={cache}",
        f"paths.output_dir={run_dir}",
    ]
    log.info("%s: training (%s)", name, " ".join(overrides))
    pipeline.run(harness.compose(overrides))
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("SEAD_CACHE", "cache")))
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="for every format")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    previous = HERE / "results.json"  # students not run now keep their earlier records
    records = json.loads(previous.read_text())["students"] if previous.is_file() else {}
    for name in args.students:
        run_dir = student_run(name, args.cache.resolve())
        cfg = OmegaConf.load(run_dir / "config.yaml")
        records[name] = {"run_dir": str(run_dir)}
        for variant, changes in VARIANTS.items():
            settings = {**EXPORT, **changes, "threads": args.threads}
            try:
                record = export.export_finished_run(run_dir, cfg, settings)
            except export.ExportError as error:  # recorded, and the rest still runs
                log.error("%s (%s): export refused: %s", name, variant, error)
                records[name][variant] = {"refused": str(error)}
                continue
            records[name][variant] = record
            print(f"\n## {name}, {variant}\n\n{deployment_table(record)}\n", flush=True)
    out = {
        "machine": harness.machine(
            processor=platform.processor() or platform.machine(),
            timing_threads=args.threads,
            **{p: metadata.version(p) for p in ("onnx", "onnxruntime")},
        ),
        "command": " ".join(["python", *sys.argv]),
        "students": records,
    }
    harness.write_json(HERE / "results.json", out)


if __name__ == "__main__":
    main()
