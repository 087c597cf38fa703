"""SEAD's table on real data: MPNet-base and MiniLM teachers, a small student, 2 CPU cores.

Per task (SST-2, MRPC, RTE first; then CoLA, STS-B, CB), with the settings in design.py:
  teachers    all-mpnet-base-v2 (109M) and all-MiniLM-L6-v2 (22.7M), each fine-tuned by sead
              on the task's train rows (minus a held-out slice, below)
  ensembles   every ensembler, 5-fold cross-fitted on validation (sead's ensemble comparison)
  students    the same student and settings for every condition, 3 seeds each:
                hard      gold labels only (train.alpha=0)
                best      KD from the single teacher with the best held-out score
                ensemble  KD from the `learned` ensemble (weights + temperature fitted on the
                          held-out slice, never on validation)
              and, where the task has unlabelled text (SST-2: the rest of the train split),
                transfer      KD from the ensemble on train + a transfer set
                transfer_l6   the same with the 6-layer all-MiniLM-L6-v2 student
                transfer_l6_full  the same on all the unlabelled rest of train (SST-2: 62,349
                              sentences, 1 epoch): the SEAD setting, and the row that the
                              "within 1 point of MPNet" target is judged on (fixed before
                              its result was known; transfer_l6 is the smaller budget)
  speed       inference ex/s of each student and teacher on validation (`--speed`)

The held-out slice (`heldout`, a fixed random part of the train file) is what the best teacher
is picked on and what the learned ensemble is fitted on, so validation, the reported split,
tunes nothing. The study writes its own data folders (train minus heldout, heldout, validation)
under work/, from ../shared/data, and never commits them.

Resumable: each unit (task, condition, seed) is saved to runs/<task>/<unit>.json as it ends
(`experiments/harness.py`), and a rerun skips the units there; commit runs/ as tasks
complete. The teacher store and logit cache live in work/cache: on a fresh machine a task's
teachers are fine-tuned again (one task's cost), and finished units are never redone.

Run from the repository root, under the CPU lock:
    make models   # all-mpnet-base-v2, once
    flock /tmp/sead-cpu.lock python experiments/sead_glue_cpu/run.py --tasks sst2
    flock /tmp/sead-cpu.lock python experiments/sead_glue_cpu/run.py --tasks rte,mrpc --seeds 1
    flock /tmp/sead-cpu.lock python experiments/sead_glue_cpu/run.py --tasks sst2 --seeds 3 \
        --conditions transfer_l6_full   # one row's last seed before the rest
    flock /tmp/sead-cpu.lock python experiments/sead_glue_cpu/run.py --speed
    python experiments/sead_glue_cpu/run.py --report-only   # rebuild RESULTS.md, results.*
    flock /tmp/sead-cpu.lock python experiments/sead_glue_cpu/run.py --check-cpu  # a new CPU
    flock /tmp/sead-cpu.lock python experiments/sead_glue_cpu/run.py --tasks rte --seeds 2 \
        --block avx512 --conditions staged_augment_l6   # into runs/rte/avx512/, an earlier CPU
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sead, whatever is installed

from experiments import harness  # noqa: E402
from experiments.sead_glue_cpu import tables  # noqa: E402
from experiments.sead_glue_cpu.design import (  # noqa: E402
    CONDITIONS,
    DESCRIPTIONS,
    ISSUE_28,
    STUDENT_LR,
    STUDENTS,
    TASKS,
    TEACHER_LR,
    TEACHERS,
)
from sead import metrics, pipeline  # noqa: E402
from sead.files import write_atomic  # noqa: E402

log = logging.getLogger("sead_glue_cpu")
SHARED = harness.SHARED_DATA
WORK = HERE / "work"
RUNS = HERE / "runs"
SEEDS = tables.SEEDS
EXTRA: list[str] = []  # overrides for every job (--quick: the gate is off for its tiny teachers)

# ------------------------------------------------------------------------------ data


def data_dir(task: str) -> Path:
    """work/data/<task>: train minus heldout, heldout, validation (HF schema, made once)."""
    settings = TASKS[task]
    folder = WORK / "data" / task
    if (folder / "validation.jsonl").exists():
        return folder
    source = SHARED / settings["source"]
    rows = (source / "train.jsonl").read_text(encoding="utf-8").splitlines()
    held = set(random.Random(0).sample(range(len(rows)), settings["heldout"]))
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, keep in (("train", False), ("heldout", True)):
        lines = [row for i, row in enumerate(rows) if (i in held) == keep]
        (tmp / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp / "validation.jsonl").write_bytes((source / "validation.jsonl").read_bytes())
    os.replace(tmp, folder)
    return folder


# ------------------------------------------------------------------------------ jobs


def output_dir(task: str, condition: str, seed: int, block: str | None = None) -> Path:
    """work/outputs/<task>[/<block>]/<unit>: the unit's run directory (student, checkpoints)."""
    return WORK / "outputs" / task / (block or "") / f"{condition}_s{seed}"


def overrides(task: str, condition: str, seed: int, used=TEACHERS, block=None) -> list[str]:
    settings, (student, extra) = TASKS[task], CONDITIONS[condition]
    out = [
        f"task={task}",
        f"data.dir={data_dir(task)}",
        f"teachers=[{','.join(used)}]",
        "ensemble=learned" if len(used) > 1 else "ensemble=mean_logits",
        "ensemble.fit_split=heldout",
        f"student={STUDENTS[student]}",
        f"student.max_length={settings['max_length']}",
        f"train.epochs={settings['student_epochs']}",
        f"train.lr={STUDENT_LR[student]}",
        "train.logging_steps=100",
        "report.speed_samples=0",  # timed apart, on a quiet machine (--speed)
        # Random batches, as every committed row was measured (before issue 27 made grouped
        # batches the default): a rerun gives the same teachers and students, bit for bit.
        "train.group_by_length=false",
        f"seed={seed}",
        f"paths.cache_dir={WORK / 'cache'}",
        f"paths.output_dir={output_dir(task, condition, seed, block)}",
    ]
    for name in used:
        out += [
            f"teachers.{name}.max_length={settings['max_length']}",
            f"teachers.{name}.finetune_args.epochs={settings[name + '_epochs']}",
            f"teachers.{name}.finetune_args.lr={TEACHER_LR[name]}",
            f"teachers.{name}.finetune_args.seed=1",
            f"teachers.{name}.finetune_args.group_by_length=false",
        ]
    if "transfer=unlabeled_split" in extra:
        # transfer.labeled picks the same rows as data.max_train_samples (seed 0 both), so the
        # teachers and the labelled part are those of the other conditions.
        out += [
            f"transfer.labeled={settings['train']}",
            f"transfer.max_unlabeled={settings['transfer']}",
            f"train.epochs={settings['transfer_epochs']}",  # 5x the rows: fewer passes
        ]
    elif settings["train"]:
        out.append(f"data.max_train_samples={settings['train']}")
    return out + extra + EXTRA


def student_job(task: str, condition: str, seed: int, used=TEACHERS, block=None) -> dict:
    args = overrides(task, condition, seed, used, block)
    started = time.perf_counter()
    results = pipeline.run(harness.compose(args))
    split, main = results["eval_splits"][0], results["main_metric"]
    return {
        "task": task,
        "condition": condition,
        "seed": seed,
        "metric": main,
        "score": results["student"]["metrics"][split][main],
        "metrics": results["student"]["metrics"][split],
        "student": {"model": results["student"]["model"], "params": results["student"]["params"]},
        "train_examples": results["n_examples"]["train"]
        + (results.get("transfer") or {}).get("unlabeled", 0),
        "teachers_used": list(used),
        "teachers": {
            name: {
                "metrics": t["metrics"][split],
                "params": t["params"],
                "finetune": t.get("finetune"),
                "origin": t["origin"],
            }
            for name, t in results["teachers"].items()
        },
        "ensemble": {
            "strategy": results["ensemble"].get("name"),
            "metrics": results["ensemble"]["metrics"][split],
            "weights": results["ensemble"].get("weights"),
            "temperature": results["ensemble"].get("temperature"),
        },
        "transfer": {
            k: (results.get("transfer") or {}).get(k)
            for k in ("size", "labeled", "unlabeled", "ensemble_agreement")
        },
        "timings_s": results["timings_s"],
        # per stage: epochs run, the epoch kept and its held-out score, seconds per epoch
        "recipe": results.get("recipe"),
        "wall_s": round(time.perf_counter() - started, 1),
        "overrides": args,
        "student_dir": str(output_dir(task, condition, seed, block) / "student"),
        "load_average_after": os.getloadavg(),
    }


def teacher_unit(task: str) -> dict:
    """Every ensembler against each teacher (cached logits), cross-fitted on validation; and
    each teacher's held-out score, which picks the best single teacher."""
    cfg = harness.compose(overrides(task, "ensemble", 1) + ["ensemble.fit_split=validation"])
    table, comparison = pipeline.compare_ensembles(cfg)
    print(table)
    held = pipeline.read_settings(harness.compose(overrides(task, "ensemble", 1)))
    inputs = pipeline.check_inputs(held)
    cache = pipeline.soft_label_cache(held)
    per_teacher, _, _ = pipeline.teacher_logits(inputs, cache, logit_splits=["heldout"])
    task_spec, heldout = inputs.task, inputs.splits["heldout"]
    held_scores = {
        name: metrics.score_split(
            task_spec, heldout, metrics.hard_predictions(task_spec, logits["heldout"])
        )
        for name, logits in per_teacher.items()
    }
    main = task_spec.main_metric
    best = max(held_scores, key=lambda n: held_scores[n][main])
    return {
        "task": task,
        "comparison": harness.plain(comparison),
        "table": table,
        "heldout_scores": held_scores,
        "best_teacher": best,
    }


def units(task: str, seeds=SEEDS, conditions=tuple(CONDITIONS)) -> list[tuple[str, int]]:
    names = ["ensemble", "best", "hard", "ensemble_l6", "best_l6", "hard_l6"]
    if TASKS[task]["transfer"]:  # the costliest last
        names += ["transfer", "transfer_l6", "transfer_l6_full"]
    names += ISSUE_28["sst2" if TASKS[task]["transfer"] else "other"]
    # seed 1 of every condition first: a partial study already has a full row per condition
    return [(name, seed) for seed in seeds for name in names if name in conditions]


def run_task(
    task: str, commit: str, seeds=SEEDS, conditions=tuple(CONDITIONS), block: str | None = None
) -> None:
    """Run the task's missing units. `block` adds them to an earlier CPU's block instead, in
    runs/<task>/<block>/ (only where the README's "Machines" rule says that CPU may)."""
    first = harness.Units(RUNS / task)
    # the first unit fine-tunes both teachers and caches their logits
    first.get("ensemble_s1", lambda: student_job(task, "ensemble", 1) | {"commit": commit})
    best = first.get("teachers", lambda: teacher_unit(task) | {"commit": commit})["best_teacher"]
    saved = harness.Units(RUNS / task / block) if block else first
    for condition, seed in units(task, seeds, conditions):
        if saved.done(f"{condition}_s{seed}"):
            continue
        log.info("== %s: %s, seed %d (into %s) ==", task, condition, seed, saved.folder)
        used = (best,) if condition.startswith("best") else TEACHERS
        job = student_job(task, condition, seed, used, block)
        saved.save(f"{condition}_s{seed}", job | {"commit": commit})
    try:
        render()
    except Exception:  # the saved units are what matters; --report-only redoes this
        log.exception("Could not render the report; the units are saved in %s", saved.folder)


# ------------------------------------------------------------------------------ speed


def measure_speed(task: str = "sst2", n: int = 512) -> dict:
    """Each student's inference speedup over each teacher, with sead's own speed stage.

    `speed.compare` times the student and the teachers on the same validation examples in
    interleaved passes (best of 5), and records the machine load and which figures are noisy.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sead import speed, teachers

    settings = pipeline.read_settings(harness.compose(overrides(task, "ensemble", 1)))
    inputs = pipeline.check_inputs(settings)
    prepared = {  # from the teacher store: fine-tuned by the study's first unit
        spec.name: teachers.prepare(spec, inputs.task, inputs.splits, settings.paths.teachers_dir)
        for spec in inputs.specs
    }
    out = {}
    for key, condition in (("l2", "ensemble"), ("l6", "transfer_l6")):
        run = RUNS / task / f"{condition}_s1.json"
        if not run.exists():
            continue
        folder = json.loads(run.read_text())["student_dir"]
        student = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        out[key] = speed.compare(
            student,
            AutoTokenizer.from_pretrained(folder),
            max_length=TASKS[task]["max_length"],
            task=inputs.task,
            teachers=prepared,
            splits=inputs.splits,
            n=n,
            batch_size=128,
        ) | {"student_params": sum(p.numel() for p in student.parameters())}
    return {"task": task, "torch_threads": torch.get_num_threads(), "students": out}


# ------------------------------------------------------------------------------ report


def collect() -> dict:
    tasks = {}
    for task in TASKS:
        folder = RUNS / task
        if not (folder / "teachers.json").exists():
            continue
        teacher_unit_record = json.loads((folder / "teachers.json").read_text())
        jobs = harness.Units(folder).all("*_s*.json")
        first = next(j for j in jobs if j["condition"] == "ensemble" and j["seed"] == 1)
        block_rows = ISSUE_28["sst2" if TASKS[task]["transfer"] else "other"]
        rows = {}
        for condition in CONDITIONS:
            done = [j for j in jobs if j["condition"] == condition]
            if done:
                rows[condition] = tables.scores(done) | {
                    "params": done[0]["student"]["params"],
                    "train_examples": done[0]["train_examples"],
                    "teachers_used": done[0]["teachers_used"],
                }
        comparison = teacher_unit_record["comparison"]["rows"]
        tasks[task] = {
            "metric": first["metric"],
            "teachers": {n: t["metrics"][first["metric"]] for n, t in first["teachers"].items()},
            "teacher_params": {n: t["params"] for n, t in first["teachers"].items()},
            "best_teacher": teacher_unit_record["best_teacher"],
            "heldout_scores": teacher_unit_record["heldout_scores"],
            "ensembles": {  # cross-fitted on validation
                name: row["metrics"]["validation"][first["metric"]]
                for name, row in comparison.items()
                if not name.startswith("teacher ")
            },
            "student_ensemble_fit_on_heldout": first["ensemble"],
            "students": rows,
            "block": tables.block(jobs, block_rows),
            "block_rows": block_rows,
            "settings": TASKS[task],
        }
        # A block rerun on another CPU leaves its first CPU's units in runs/<task>/<label>/:
        # reported beside the live block, and judged beside it only once complete (README,
        # "Machines"; tables.verdicts).
        earlier = {
            sub.name: tables.block(harness.Units(sub).all("*_s*.json"), block_rows)
            for sub in sorted(folder.iterdir())
            if sub.is_dir()
        }
        if earlier:
            tasks[task]["earlier_blocks"] = earlier
    speed_file = HERE / "speed.json"
    return {
        "tasks": tasks,
        "speed": json.loads(speed_file.read_text()) if speed_file.exists() else None,
    }


RESULTS_START, RESULTS_END = "<!-- results: run.py --report-only -->", "<!-- /results -->"


def render(report_only: bool = False) -> None:
    """results.json, RESULTS.md (and the README's copy) and the plot, from the saved units;
    with `report_only`, the machine is the one results.json records (the units' machine)."""
    machine = harness.kept(HERE / "results.json", ["machine"]) if report_only else {}
    summary = collect() | {"machine": machine.get("machine") or harness.machine()}
    summary["verdicts"] = verdicts(summary)
    harness.write_json(HERE / "results.json", summary)
    table = markdown(summary)
    write_atomic(HERE / "RESULTS.md", table)
    readme = HERE / "README.md"
    if readme.exists():  # the same table in the README, between its two markers
        text = readme.read_text(encoding="utf-8")
        if RESULTS_START not in text or RESULTS_END not in text.split(RESULTS_START, 1)[1]:
            raise ValueError(f"{readme}: expected the lines {RESULTS_START} then {RESULTS_END}")
        head, rest = text.split(RESULTS_START, 1)
        _, tail = rest.split(RESULTS_END, 1)
        write_atomic(readme, f"{head}{RESULTS_START}\n{table}{RESULTS_END}{tail}")
    plot(summary, HERE / "results.png")
    log.info("wrote %s and the table in %s", HERE / "RESULTS.md", readme)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def speedups(summary: dict) -> dict[str, dict[str, float]]:
    """Each student's measured inference speedup over each teacher (--speed)."""
    students = (summary.get("speed") or {}).get("students", {})
    return {f"student {key}": record["speedup"] for key, record in students.items()}


def markdown(summary: dict) -> str:
    """The GLUE-style table (models x tasks, params, speedup, average) and the verdicts.

    A row's average is over every task, once each of its cells has all its seeds.
    """
    tasks, names = summary["tasks"], list(summary["tasks"])
    fast = speedups(summary)
    head = (
        "| model | params | speedup vs "
        + " | vs ".join(TEACHERS)
        + " | "
        + " | ".join(f"{t} ({tasks[t]['metric']})" for t in names)
    )
    lines = [head + " | average |", "|---" * (len(names) + 3 + len(TEACHERS)) + "|"]

    def row(label: str, params: str, speedup: list[str], cells: list, means: list) -> None:
        known = [m for m in means if m is not None]
        average = _fmt(statistics.mean(known)) if known and len(known) == len(means) else "-"
        lines.append(
            f"| {label} | {params} | {' | '.join(speedup)} | "
            + " | ".join(cells)
            + f" | {average} |"
        )

    first = tasks[names[0]] if names else {}
    for teacher in TEACHERS:
        params = first.get("teacher_params", {}).get(teacher)
        values = [tasks[t]["teachers"].get(teacher) for t in names]
        speedup = ["1.0x" if other == teacher else "-" for other in TEACHERS]
        row(f"teacher {teacher}", f"{params / 1e6:.1f}M" if params else "-", speedup,
            [_fmt(v) for v in values], values)  # fmt: skip
    for strategy in ("mean_logits", "learned"):
        values = [tasks[t]["ensembles"].get(strategy) for t in names]
        row(
            f"ensemble {strategy} (5-fold cross-fitted)",
            "-",
            ["-"] * len(TEACHERS),
            [_fmt(v) for v in values],
            values,
        )
    for condition in CONDITIONS:
        done = [tasks[t]["students"].get(condition) for t in names]
        if not any(done):
            continue
        params = next(f"{r['params'] / 1e6:.1f}M" for r in done if r)
        student = f"student {CONDITIONS[condition][0]}"
        measured = fast.get(student, {})
        speedup = [f"{measured[t]:.1f}x" if measured.get(t) else "-" for t in TEACHERS]
        row(DESCRIPTIONS[condition], params, speedup,
            [tables.spread(r) if r else "-" for r in done],
            [r["mean"] if tables.every_seed(r) else None for r in done])  # fmt: skip
    lines += ["", "Every ensembler, 5-fold cross-fitted on validation:", ""]
    strategies = list(dict.fromkeys(k for t in names for k in tasks[t]["ensembles"]))
    lines += ["| ensembler | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for strategy in strategies:
        cells = [_fmt(tasks[t]["ensembles"].get(strategy)) for t in names]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    lines += tables.markdown(tasks, DESCRIPTIONS)
    lines += ["", "Targets (as measured):", ""]
    lines += [f"- **{v['target']}**: {v['verdict']}. {v['detail']}" for v in summary["verdicts"]]
    return "\n".join(lines) + "\n"


MOST = len(TASKS) // 2 + 1  # "most tasks": 4 of the 6


def verdicts(summary: dict) -> list[dict]:
    """The issue's five targets, each met or not, from the numbers as they stand."""
    tasks = summary["tasks"]
    out = []

    def add(target: str, met: bool | None, detail: str) -> None:
        out.append(tables.verdict(target, met, detail))

    ens = {
        t: r["ensembles"].get("learned") >= max(r["teachers"].values()) for t, r in tasks.items()
    }
    add("Learned ensemble >= best teacher on most tasks",
        tables.at_least(ens, MOST, len(TASKS)),
        "Cross-fitted on validation: " + tables.count(ens))  # fmt: skip

    def both(t, a, b):
        """Rows a and b of task t once each has every seed: a seed spread needs them all."""
        rows = tasks[t]["students"]
        pair = rows.get(a), rows.get(b)
        return pair if all(map(tables.every_seed, pair)) else None

    def compare(a: str, b: str, holds) -> dict[str, dict[str, bool]]:
        """Per student (l6 first: the verdict's), the tasks where row a vs row b holds."""
        out = {}
        for student, suffix in (("6-layer", "_l6"), ("2-layer", "")):
            pairs = {t: both(t, a + suffix, b + suffix) for t in tasks}
            out[student] = {t: holds(*pair) for t, pair in pairs.items() if pair}
        return out

    def detail(per_student: dict[str, dict[str, bool]]) -> str:
        counts = " ".join(f"{name} student: {tables.count(m)}" for name, m in per_student.items())
        return f"A task counts once both rows have {len(SEEDS)} seeds. {counts}"

    kd = compare("ensemble", "hard", lambda e, h: e["mean"] - h["mean"] > max(e["std"], h["std"]))
    l6 = kd["6-layer"]
    add("Ensemble-KD student beats hard labels by more than the larger seed std on >= 4 of 6 tasks",
        tables.at_least(l6, 4, len(TASKS)),
        detail(kd))  # fmt: skip
    single = compare("ensemble", "best", lambda e, b: e["mean"] >= b["mean"])
    l6 = single["6-layer"]
    add("Ensemble-KD student >= best-single-teacher-KD student on most tasks",
        tables.at_least(l6, MOST, len(TASKS)),
        detail(single))  # fmt: skip
    sst2 = tasks.get("sst2", {})
    students, mpnet = sst2.get("students", {}), sst2.get("teachers", {}).get("mpnet")
    full, budget = students.get("transfer_l6_full"), students.get("transfer_l6")
    grid = [f"{label} {tables.spread(r)}" for label, r in (("whole transfer set", full),
            ("16,000-sentence transfer set", budget)) if r]  # fmt: skip
    add(
        "SST-2: the 6-layer student with the transfer set within 1 point of MPNet "
        "(judged on the whole transfer set)",
        full["mean"] >= mpnet - 0.01 if tables.every_seed(full) else None,
        f"student: {'; '.join(grid)}; MPNet {mpnet:.4f}." if grid else "",
    )
    fast = speedups(summary).get("student l6", {}).get("mpnet")
    add(
        "6-layer student's inference speedup over MPNet >= 5x",
        None if fast is None else fast >= 5,
        f"{fast:.2f}x measured." if fast else "",
    )
    return out + tables.verdicts(tasks)  # issue 28's block


def plot(summary: dict, path: Path) -> None:
    """One panel per task: teachers, ensembles and students (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = summary["tasks"]
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4), squeeze=False)
    for ax, (task, r) in zip(axes[0], tasks.items(), strict=True):
        labels, means, stds = [], [], []
        for name, value in r["teachers"].items():
            labels, means, stds = [*labels, f"T {name}"], [*means, value], [*stds, 0.0]
        for name in ("mean_logits", "learned"):
            if r["ensembles"].get(name) is not None:
                labels += [f"E {name}"]
                means += [r["ensembles"][name]]
                stds += [0.0]
        for name, row in r["students"].items():
            labels, means, stds = [*labels, f"S {name}"], [*means, row["mean"]], [*stds, row["std"]]
        ax.bar(range(len(means)), means, yerr=stds, color=["#888"] * len(r["teachers"])
               + ["#6a9"] * (len(means) - len(r["teachers"]) - len(r["students"]))
               + ["#369"] * len(r["students"]))  # fmt: skip
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        low = min(means) - 0.05
        ax.set_ylim(max(0.0, low), min(1.0, max(means) + 0.03))
        ax.set_title(f"{task} ({r['metric']}, validation)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ which CPU


def check_cpu() -> dict:
    """The README's test of a new CPU ("Machines"): fine-tune RTE's MiniLM teacher (seed 1, the
    block's settings; read from this machine's teacher store once it holds it) and compare its
    training loss, every digit, with the one each CPU recorded in runs/rte. An equal loss means
    the same kernels and the same numbers: the block CPU it names is the one units may join."""
    recorded: dict[float, set[str]] = {}
    for path in sorted((RUNS / "rte").rglob("*_s[0-9].json")):
        unit = json.loads(path.read_text(encoding="utf-8"))
        finetune = ((unit.get("teachers") or {}).get("minilm") or {}).get("finetune") or {}
        loss = (finetune.get("train_metrics") or {}).get("train_loss")
        if loss is not None:
            recorded.setdefault(loss, set()).add(harness.cpu_label(unit.get("cpu")))
    cfg = harness.compose(overrides("rte", "hard_l6_g", 1, used=("minilm",)))
    settings = pipeline.read_settings(cfg)
    inputs = pipeline.check_inputs(settings)
    cache = pipeline.soft_label_cache(settings)
    _, records, _ = pipeline.teacher_logits(inputs, cache, logit_splits=["validation"])
    loss = records["minilm"]["finetune"]["train_metrics"]["train_loss"]
    return {
        "cpu": harness.cpu_label(harness.cpu()),
        "train_loss": loss,
        "same_numbers_as": sorted(recorded.get(loss, ())),
        "recorded": {repr(value): sorted(cpus) for value, cpus in recorded.items()},
    }


def quick() -> None:
    """Plumbing check: tiny slices, one epoch, into work-quick/ and runs-quick/."""
    global WORK, RUNS, HERE
    HERE = HERE / "quick"
    WORK, RUNS = HERE / "work", HERE / "runs"
    for settings in TASKS.values():
        settings.update(train=200, heldout=100, transfer=200 if settings["transfer"] else 0)
        settings.update(mpnet_epochs=1, minilm_epochs=1, student_epochs=1, transfer_epochs=1)
    EXTRA.append("teacher_gate=false")


def parse_seeds(parser: argparse.ArgumentParser, text: str) -> tuple[int, ...]:
    """`--seeds 1,3` as a tuple of the study's seeds; anything else is a usage error."""
    parts = text.split(",")
    if not all(part.strip().isdigit() and int(part) in SEEDS for part in parts):
        parser.error(f"--seeds {text!r}: each one of {', '.join(map(str, SEEDS))}")
    return tuple(int(part) for part in parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="sst2,mrpc,rte,cola,stsb,cb")
    parser.add_argument("--speed", action="store_true", help="time students and teachers")
    parser.add_argument(
        "--seeds", default="1,2,3", help="run these seeds only (seed 1 of every task first)"
    )
    parser.add_argument(
        "--conditions",
        default=",".join(CONDITIONS),
        help="run these rows only, in the study's order (e.g. one row's last seed first)",
    )
    parser.add_argument(
        "--block",
        help="add the units to an earlier CPU's block, runs/<task>/<BLOCK>/ (README, Machines)",
    )
    harness.report_only(parser)
    parser.add_argument("--quick", action="store_true", help="a tiny run into work-quick/")
    parser.add_argument(
        "--check-cpu",
        action="store_true",
        help="which block CPU this one computes like (RTE's MiniLM fine-tune, ~7-10 min)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        quick()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.report_only:
        return render(report_only=True)
    if args.check_cpu:
        return print(json.dumps(check_cpu(), indent=1))
    if args.speed:
        harness.write_json(HERE / "speed.json", measure_speed())
        return render()
    head = harness.code_commit()
    for task in args.tasks.split(","):
        if task not in TASKS:
            parser.error(f"unknown task {task!r}: one of {', '.join(TASKS)}")
        blocks = sorted(sub.name for sub in (RUNS / task).glob("*/"))
        if args.block and args.block not in blocks:
            parser.error(f"--block {args.block!r} for {task}: one of {blocks} (runs/{task}/)")
    seeds = parse_seeds(parser, args.seeds)
    conditions = [part.strip() for part in args.conditions.split(",")]
    for condition in conditions:
        if condition not in CONDITIONS:
            parser.error(f"unknown condition {condition!r}: one of {', '.join(CONDITIONS)}")
    for task in args.tasks.split(","):
        run_task(task, head, seeds, conditions, args.block)


if __name__ == "__main__":
    main()
