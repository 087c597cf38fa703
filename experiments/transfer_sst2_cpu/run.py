"""Does an unlabelled transfer set help? Real SST-2, MiniLM teachers, a 2-layer student, CPU.

Four conditions, each over three student seeds, all with the same labelled slice of the
train split (`transfer.labeled`, slice seed 0) and the same two teachers (all-MiniLM-L6-v2
fine-tuned by sead on that slice alone, seeds 1 and 2):

  a_hard_labels   the slice alone, hard labels only (train.alpha=0)
  b_distil        the slice alone, distilled (alpha 0.5, T 2)
  c_transfer      the slice + the rest of the train split as an unlabelled transfer set
                  (labels hidden, a fixed random subset of `--unlabeled` examples)
  d_augment       c + augmented copies of the slice (word dropout + random swap)

Each job's summary is saved to `runs/<condition>_s<seed>.json` as it finishes (a unit of
`experiments/harness.py`); a rerun skips the jobs already there, so the study resumes after a
kill. Then `results.json` and `table.md` are rebuilt from every saved job.

Run from the repository root, under the CPU lock:
    flock /tmp/sead-cpu.lock python experiments/transfer_sst2_cpu/run.py
`--quick` runs a tiny version (a few minutes) into work-quick/, to check the plumbing;
`--report-only` rebuilds results.json and table.md from runs/ (no computation).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sead, whatever is installed

from experiments import harness  # noqa: E402
from sead import pipeline  # noqa: E402
from sead.files import write_atomic  # noqa: E402

log = logging.getLogger("transfer_sst2_cpu")
SST2 = harness.SHARED_DATA / "glue" / "sst2"
SEEDS = (1, 2, 3)
CONDITIONS = {
    "a_hard_labels": ["transfer=none", "train.alpha=0"],
    "b_distil": ["transfer=none"],
    "c_transfer": ["transfer=unlabeled_split"],
    "d_augment": [
        "transfer=augment",
        "transfer.multiplier=1",
        "transfer.word_dropout=0.1",
        "transfer.swap=0.1",
    ],
}
DESCRIPTIONS = {
    "a_hard_labels": "labelled slice, hard labels only",
    "b_distil": "labelled slice, distilled",
    "c_transfer": "+ rest of train as unlabelled transfer set",
    "d_augment": "+ transfer set + augmented slice (x1)",
}


def overrides(args, condition: str, seed: int, work: Path) -> list[str]:
    common = [
        "experiment=sst2_cpu",  # MiniLM teachers, 2-layer student, length 64, no speed stage
        f"data.dir={SST2}",
        "teachers.minilm.seeds=[1,2]",
        f"teachers.minilm.finetune_args.epochs={args.teacher_epochs}",
        f"train.epochs={args.epochs}",
        f"train.lr={args.lr}",
        f"transfer.labeled={args.labeled}",
        f"seed={seed}",
        f"paths.cache_dir={work / 'cache'}",
        f"paths.output_dir={work / 'outputs' / f'{condition}_s{seed}'}",
    ]
    if condition in ("c_transfer", "d_augment"):
        common.append(f"transfer.max_unlabeled={args.unlabeled}")
    if args.quick:
        common.append("data.max_eval_samples=200")
    return common + CONDITIONS[condition]


def run_job(args, condition: str, seed: int, work: Path) -> dict:
    cfg = harness.compose(overrides(args, condition, seed, work))
    started = time.perf_counter()
    results = pipeline.run(cfg)
    wall = time.perf_counter() - started
    transfer = results["transfer"]
    return {
        "condition": condition,
        "seed": seed,
        "accuracy": results["student"]["metrics"]["validation"]["accuracy"],
        "wall_s": round(wall, 1),
        "timings_s": results["timings_s"],
        "student_train_examples": transfer["labeled"] + transfer["unlabeled"],
        "transfer": {
            k: transfer[k] for k in ("source", "size", "parts", "labeled", "labels_hidden")
        }
        | {"ensemble_agreement": transfer["ensemble_agreement"]},
        "teachers": {
            name: {
                "accuracy": t["metrics"]["validation"]["accuracy"],
                "train_examples": t["finetune"]["train_examples"],
                "train_seconds": t["finetune"]["train_seconds"],
                "finetuned_now": t["finetuned_now"],
            }
            for name, t in results["teachers"].items()
        },
        "ensemble_accuracy": results["ensemble"]["metrics"]["validation"]["accuracy"],
        "overrides": overrides(args, condition, seed, work),
        "commit": args.commit,
        "load_average_1_5_15min_after": os.getloadavg(),
    }


def summarise(jobs: list[dict], record: dict) -> dict:
    """The study's results: `record` (settings, machine, commit), then its conditions."""
    rows = {}
    for condition in CONDITIONS:
        done = [j for j in jobs if j["condition"] == condition]
        if not done:
            continue
        accuracy = [j["accuracy"] for j in done]
        mean, std = harness.mean_std(accuracy)
        rows[condition] = {
            "what": DESCRIPTIONS[condition],
            "seeds": [j["seed"] for j in done],
            "accuracy": accuracy,
            "mean": mean,
            "std": std,
            "train_examples": done[0]["student_train_examples"],
            "distill_s": [j["timings_s"]["distill"] for j in done],
            "wall_s": [j["wall_s"] for j in done],
        }
    first = jobs[0] if jobs else {}
    return {
        **record,
        "teachers": first.get("teachers"),
        "ensemble_accuracy": first.get("ensemble_accuracy"),
        "conditions": rows,
        "jobs": jobs,
    }


def markdown(summary: dict) -> str:
    header = ["condition", "student trains on", "val. accuracy (mean ± std, 3 seeds)"]
    header += ["per seed", "student training s (per seed)", "job wall s (per seed)"]
    rows = [
        [
            f"{name}: {row['what']}",
            f"{row['train_examples']:,}",
            *harness.seed_cells(row["mean"], row["std"], row["accuracy"]),
            ", ".join(f"{s:.0f}" for s in row["distill_s"]),
            ", ".join(f"{s:.0f}" for s in row["wall_s"]),
        ]
        for name, row in summary["conditions"].items()
    ]
    return harness.markdown_table(header, rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labeled", type=int, default=2000)
    parser.add_argument("--unlabeled", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--teacher-epochs", type=float, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--quick", action="store_true", help="a tiny run into work-quick/")
    harness.report_only(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.labeled, args.unlabeled, args.epochs, args.teacher_epochs = 200, 300, 1, 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = HERE / ("work-quick" if args.quick else "work")
    units = harness.Units(work / "runs" if args.quick else HERE / "runs")
    out = work if args.quick else HERE
    if args.report_only:  # the run's own record, kept; the tables, from the units
        record = harness.kept(out / "results.json", ["settings", "machine", "commit"])
    else:
        args.commit = harness.code_commit()
        args.load_average_at_start = os.getloadavg()  # other processes distort the wall times
        settings = {k: v for k, v in vars(args).items() if k not in ("commit", "quick")}
        settings.pop("report_only")
        # the commit is that of the code the jobs ran (taken at the start)
        record = {"settings": settings, "machine": harness.machine(), "commit": args.commit}
        for seed in SEEDS:  # seed by seed: a study cut short still has every condition
            for condition in CONDITIONS:
                name = f"{condition}_s{seed}"
                log.info("=== %s seed %d%s ===", condition, seed, " (saved)" * units.done(name))
                units.get(name, lambda c=condition, s=seed: run_job(args, c, s, work))
    summary = summarise(units.all(), record)
    harness.write_json(out / "results.json", summary)
    write_atomic(out / "table.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
