"""Does a cheap, different teacher read from a file help? Real SST-2, CPU, 3 student seeds.

Two conditions, the same labelled slice (`data.max_train_samples`, slice seed 0) and the same
2-layer student (`student=minilm_l2`, cut from all-MiniLM-L6-v2) over three seeds:

  minilm        teachers=[minilm]: all-MiniLM-L6-v2 fine-tuned by sead on the slice
  minilm_tfidf  + a TF-IDF logistic regression (scikit-learn), run by `tfidf_teacher.py` and
                read by sead as a predictions teacher from its jsonl files (format probs)

Both use the unfitted `mean_logits` ensembler, so nothing is tuned on validation, the split
reported. The stage=ensemble table (`ensemble.json`) adds the other unfitted strategies.
Each job's summary is saved to `runs/<condition>_s<seed>.json` (a unit of
`experiments/harness.py`); a rerun skips jobs done.

Run from the repository root, under the CPU lock:
    flock /tmp/sead-cpu.lock python experiments/predictions_sst2_cpu/run.py
    python experiments/predictions_sst2_cpu/run.py --report-only   # results.json, table.md
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sead, whatever is installed
sys.path.insert(0, str(HERE))

import tfidf_teacher  # noqa: E402

from experiments import harness  # noqa: E402
from sead import pipeline  # noqa: E402
from sead.files import write_atomic  # noqa: E402

log = logging.getLogger("predictions_sst2_cpu")
SST2 = harness.SHARED_DATA / "glue" / "sst2"
SEEDS = (1, 2, 3)
UNFITTED = ("mean_logits", "mean_probs", "vote")  # strategies that learn nothing on validation


def tfidf_override(files: Path) -> str:
    """The predictions teacher, given on the command line with no yaml file."""
    return (
        f"+teachers.tfidf={{predictions: {{train: {files / 'train.jsonl'}, "
        f"validation: {files / 'validation.jsonl'}}}, format: probs, "
        f"labels: [negative, positive]}}"
    )


def overrides(args, teachers: str, work: Path, seed: int = 1) -> list[str]:
    common = [
        "experiment=sst2_cpu",  # MiniLM teacher, 2-layer student, length 64, no speed stage
        f"data.dir={SST2}",
        f"data.max_train_samples={args.train}",
        f"teachers.minilm.finetune_args.epochs={args.teacher_epochs}",
        f"train.epochs={args.epochs}",
        f"train.lr={args.lr}",
        f"seed={seed}",
        f"paths.cache_dir={work / 'cache'}",
    ]
    return common + ([tfidf_override(work / "tfidf")] if teachers == "minilm_tfidf" else [])


def config(args, teachers: str, work: Path, seed: int = 1, extra=()):
    return harness.compose([*overrides(args, teachers, work, seed), *extra])


def run_job(args, condition: str, seed: int, work: Path) -> dict:
    out = f"paths.output_dir={work / 'outputs' / f'{condition}_s{seed}'}"
    cfg = config(args, condition, work, seed, [out])
    started = time.perf_counter()
    results = pipeline.run(cfg)
    return {
        "condition": condition,
        "seed": seed,
        "student": results["student"]["metrics"]["validation"]["accuracy"],
        "ensemble": results["ensemble"]["metrics"]["validation"]["accuracy"],
        "teachers": {
            name: t["metrics"]["validation"]["accuracy"] for name, t in results["teachers"].items()
        },
        "teacher_sources": {
            name: t.get("predictions") or t["source"] for name, t in results["teachers"].items()
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "timings_s": results["timings_s"],
        "overrides": [*overrides(args, condition, work, seed), out],
        "commit": args.commit,
    }


def ensemble_table(args, work: Path) -> dict:
    """Every unfitted strategy on both teachers' validation logits (read from the cache)."""
    out = f"paths.output_dir={work / 'outputs' / 'ensemble'}"
    _, result = pipeline.compare_ensembles(
        config(args, "minilm_tfidf", work, extra=["stage=ensemble", out])
    )
    return {
        name: row["metrics"]["validation"]["accuracy"]
        for name, row in result["rows"].items()
        if name.startswith("teacher ") or name in UNFITTED
    }


def markdown(summary: dict) -> str:
    header = ["teachers", "teachers' val. accuracy", "ensemble (mean_logits)"]
    header += ["student, mean ± std (3 seeds)", "student per seed"]
    rows = [
        [
            name,
            ", ".join(f"{t} {a:.4f}" for t, a in row["teachers"].items()),
            f"{row['ensemble']:.4f}",
            *harness.seed_cells(row["mean"], row["std"], row["student"]),
        ]
        for name, row in summary["conditions"].items()
    ]
    strategies = [[name, f"{acc:.4f}"] for name, acc in summary["ensemble_strategies"].items()]
    return (
        harness.markdown_table(header, rows)
        + "\n"
        + harness.markdown_table(["unfitted strategy, minilm + tfidf", "val. accuracy"], strategies)
    )


def summarise(jobs: list[dict], record: dict) -> dict:
    """`record` (settings, commit, the tfidf teacher, the strategy table) and the conditions."""
    conditions = {}
    for condition in ("minilm", "minilm_tfidf"):
        done = sorted((j for j in jobs if j["condition"] == condition), key=lambda j: j["seed"])
        if not done:
            continue
        accuracy = [j["student"] for j in done]
        mean, std = harness.mean_std(accuracy)
        conditions[condition] = {
            "seeds": [j["seed"] for j in done],
            "student": accuracy,
            "mean": mean,
            "std": std,
            "ensemble": done[0]["ensemble"],
            "teachers": done[0]["teachers"],
            "wall_s": [j["wall_s"] for j in done],
        }
    return {
        "settings": record["settings"],
        "commit": record["commit"],
        "tfidf": record["tfidf"],
        "conditions": conditions,
        "ensemble_strategies": record["ensemble_strategies"],
        "jobs": jobs,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=4000, help="data.max_train_samples")
    parser.add_argument("--epochs", type=float, default=1, help="student epochs")
    parser.add_argument("--teacher-epochs", type=float, default=1)
    parser.add_argument("--lr", type=float, default=1e-4, help="student learning rate")
    parser.add_argument("--work", type=Path, default=HERE / "work")
    harness.report_only(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    units = harness.Units(HERE / "runs")
    names = [f"{condition}_s{seed}" for condition in ("minilm", "minilm_tfidf") for seed in SEEDS]
    if args.report_only:  # the run's own record, kept; the tables, from the units
        keys = ["settings", "commit", "tfidf", "ensemble_strategies"]
        record = harness.kept(HERE / "results.json", keys)
    else:
        args.commit = harness.code_commit()
        work = args.work.resolve()
        args.work = str(args.work)
        tfidf = tfidf_teacher.main(["--out", str(work / "tfidf"), "--train", str(args.train)])
        for name in names:
            condition, seed = name.rsplit("_s", 1)
            units.get(name, lambda c=condition, s=int(seed): run_job(args, c, s, work))
        settings = {k: v for k, v in vars(args).items() if k not in ("commit", "report_only")}
        record = {"settings": settings, "commit": args.commit, "tfidf": tfidf}
        record["ensemble_strategies"] = ensemble_table(args, work)
    summary = summarise([units.load(name) for name in names], record)
    harness.write_json(HERE / "results.json", summary)
    write_atomic(HERE / "table.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
