"""What runs leave behind, and the report over many of them.

One run: `results.json` (status ok or failed, with its Hydra overrides and settings), the
resolved config, the student's model card (`sead.card`) and a summary table.
Many runs: `sead report <multirun dir or run dirs>` reads every `results.json` and
writes `report.md`, `report.csv` and PNG plots (see `build_report`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from sead import metrics
from sead.ensemble import FitPlan, loss_name
from sead.files import format_table, write_atomic

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
TRACEBACK_LINES = 30  # of a failed job's traceback, kept in its results.json


def save_run(results: dict, cfg, out_dir: Path, name: str = RESULTS_FILE) -> None:
    """Write a successful run's results (adding its status, settings and overrides) and its
    resolved config (the student's card is `sead.card`'s).

    `name`: another file than `results.json` for a stage run on its own (`stage=teachers`
    writes `teachers.json`), so that a sweep report does not take it for a full run.
    """
    results.update({"status": "ok", **job_context(cfg)})
    write_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_atomic(out_dir / name, json.dumps(results, indent=2) + "\n")


def save_failure(cfg, error: BaseException, out_dir: Path, name: str = RESULTS_FILE) -> dict:
    """Record a job that raised, so that a sweep's report lists it as failed, with why.

    `name`: the file the job's stage writes its results to (`results.json` for a full run).
    """
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    results = {
        "status": "failed",
        "error": {
            "type": type(error).__name__,
            "message": str(error),
            "traceback": "".join(lines).splitlines()[-TRACEBACK_LINES:],
        },
        **job_context(cfg),
    }
    try:
        config_text = OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # the failure may be the config itself: keep it unresolved
        config_text = OmegaConf.to_yaml(cfg)
    write_atomic(Path(out_dir) / "config.yaml", config_text)
    write_atomic(Path(out_dir) / name, json.dumps(results, indent=2) + "\n")
    return results


def job_context(cfg) -> dict:
    """What identifies a job in a sweep: its Hydra overrides and the settings a report groups by.

    Read leniently (`None` where a value does not resolve), because a failed job's config
    may be the very thing that is wrong.
    """
    return {"overrides": hydra_overrides(), "settings": run_settings(cfg)}


def hydra_overrides() -> list[str] | None:
    """The job's command-line overrides (`task=sst2`, `train.temperature=2`...), under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


SETTINGS = {  # report column -> config key
    "task": "task.name",
    "ensembler": "ensemble.name",
    "student_model": "student.model",
    "temperature": "train.temperature",
    "alpha": "train.alpha",
    "lr": "train.lr",
    "epochs": "train.epochs",
    "transfer": "transfer.source",
    "labeled": "transfer.labeled",
    "seed": "seed",
}


def run_settings(cfg) -> dict:
    """The settings a sweep report shows, groups and plots by (`SETTINGS`, and the teachers)."""

    def select(key):
        try:
            value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except Exception:
            return None
        return value if isinstance(value, str | int | float | bool) or value is None else str(value)

    settings = {column: select(key) for column, key in SETTINGS.items()}
    teachers = "+".join(str(name) for name in OmegaConf.select(cfg, "teachers") or {})
    return {"task": settings.pop("task"), "teachers": teachers, **settings}


def summary_table(results: dict) -> str:
    """One row per model: each eval split's metrics, parameters, and where logits came from."""
    rows = []
    for name, teacher in results["teachers"].items():
        source = "cache" if all(teacher["cache_hit"].values()) else "computed"
        rows.append((f"teacher {name}", teacher["metrics"], teacher["params"], source))
    ensemble = results["ensemble"]
    rows.append((f"ensemble {ensemble['name']}", ensemble["metrics"], None, ""))
    student = results["student"]
    rows.append(("student", student["metrics"], student["params"], _student_targets(results)))
    header = ["model", *[f"{split}" for split in results["eval_splits"]], "params", "logits"]
    lines = [header]
    for label, split_metrics, params, note in rows:
        cells = [_metrics(split_metrics[split]) for split in results["eval_splits"]]
        lines.append([label, *cells, f"{params:,}" if params else "-", note])
    diagnostics = student.get("diagnostics") or {}
    notes = [f"student on diagnostic {name}: {_metrics(m)}" for name, m in diagnostics.items()]
    notes += [f"WARNING: {w}" for w in results.get("warnings", []) if w.startswith("The student")]
    return "\n".join([format_table(lines), *notes])


def _student_targets(results: dict) -> str:
    """What the student learned from: the ensemble's soft labels, or gold labels alone."""
    alpha = (results.get("train") or {}).get("alpha")
    if alpha is None or float(alpha) > 0:
        return "distilled"
    transfer = results.get("transfer") or {}
    if transfer.get("size"):  # unlabelled transfer rows are learned from soft labels only
        return "gold labels (alpha=0); transfer set distilled"
    return "gold labels only (alpha=0)"


def warnings(results: dict) -> list[str]:
    """Models that may have learned nothing: teachers that passed their floor by no more
    than noise, and a student at or below the constant baseline or within noise of it; and an
    export refused at the run's end."""
    found = []
    metric = results["main_metric"]
    for name, teacher in results["teachers"].items():
        for split, check in ((teacher.get("gate") or {}).get("splits") or {}).items():
            noise = check.get("noise")
            if check["passed"] and noise and noise["within_noise"]:
                found.append(
                    metrics.noise_message(
                        f"Teacher {name}", split, metric, noise, check["score"], check["baseline"]
                    )
                )
    for split, floor in ((results.get("student") or {}).get("floor") or {}).items():
        if floor["below"] or (floor["noise"] and floor["noise"]["within_noise"]):
            found.append(student_warning(split, metric, floor))
    export = results.get("export") or {}
    if export.get("status") == "refused":
        found.append(f"Export refused: {export['reason']}")
    return found


def student_warning(split: str, metric: str, floor: dict) -> str:
    """The student at or below the constant baseline, or within noise of it."""
    if floor["noise"] and not floor["below"]:
        return metrics.noise_message("The student", split, metric, floor["noise"], **_scored(floor))
    return (
        f"The student learned nothing usable on {split}: {metric}={floor['score']:.4f}, not "
        f"above the constant baseline {floor['baseline']:.4f} (the best score of always "
        "predicting one label)."
    )


def _scored(floor: dict) -> dict:
    return {"score": floor["score"], "baseline": floor["baseline"]}


def transfer_summary(results: dict) -> str:
    """One line on the transfer set (empty without one): where from, how big, how right."""
    record = results.get("transfer")
    if not record or (record["source"] == "none" and not record["labels_hidden"]):
        return ""
    agreement = "; ".join(
        f"{part} ({scores['labels']}, {scores['n_examples']:,}): "
        + " ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float))
        for part, scores in record["ensemble_agreement"].items()
    )
    return (
        f"transfer set: {record['source']}, {record['size']:,} unlabelled examples "
        f"{record['parts']}; student's gold labels: {record['labeled']:,} "
        f"({record['labels_hidden']:,} hidden)"
        + (f", held-out: {results['heldout']['rows']:,}" if results.get("heldout") else "")
        + (f"; ensemble agreement with known labels: {agreement}" if agreement else "")
    )


ORIGINS = {
    "checkpoint": "loaded checkpoint",
    "finetuned": "fine-tuned now",
    "store": "from store",
    "predictions": "predictions file",
}


def teacher_table(results: dict) -> str:
    """One row per teacher: where it came from, its size, scores, speed and fine-tuning."""
    splits = results["eval_splits"]
    header = ["teacher", "source", "params", *splits, "gate", "ex/s", "fine-tune", "origin"]
    lines = [header]
    for name, teacher in results["teachers"].items():
        finetune = teacher.get("finetune")
        speed = teacher.get("examples_per_second")
        lines.append(
            [
                name,
                _source(teacher),
                _millions(teacher["params"]),
                *[_metrics(teacher["metrics"][split]) for split in splits],
                _gate(teacher.get("gate")),
                f"{speed:,.1f}" if speed else "cached",
                _finetune(finetune, teacher.get("finetune_settings")) if finetune else "-",
                ORIGINS.get(teacher.get("origin"), teacher.get("origin", "-")),
            ]
        )
    notes = [f"WARNING: {w}" for w in results.get("warnings", []) if w.startswith("Teacher")]
    return "\n".join([format_table(lines), *notes])


def comparison_table(task, rows: dict[str, dict], plan: FitPlan, notes=()) -> str:
    """`stage=ensemble`'s table: per teacher or strategy, the main metric and NLL (MSE for
    regression) on each eval split, and the weights and temperatures it uses."""
    loss, metric = loss_name(task), task.main_metric
    header = ["model"]
    for split in task.eval_splits:
        mark = "*" if split == plan.split else ""
        header += [f"{split}{mark} {metric}", f"{split}{mark} {loss}"]
    header.append("weights / temperatures")
    lines = [header]
    for label, row in rows.items():
        cells = [label]
        for split in task.eval_splits:
            cells += [f"{row['metrics'][split][metric]:.4f}", f"{row[loss][split]:.4f}"]
        cells.append(_describe_short(row))
        lines.append(cells)
    text = format_table(lines)
    if plan.split in task.eval_splits:
        footer = [
            f"* {plan.split} is the fit split: fitted strategies are scored by {plan.folds}-fold "
            f"cross-fitting (fold_seed={plan.seed}); weights shown are fitted on all of it."
        ]
    else:
        footer = [
            f"Fitted strategies learned on {plan.split}, which no column scores; weights shown "
            f"are fitted on all of it."
        ]
    return "\n".join([text, "", *footer, *notes])


def _describe_short(row: dict) -> str:
    parts = []
    weights = row.get("mean_weights") or row.get("weights")
    if isinstance(weights, dict):
        parts.append("w " + " ".join(f"{k}={v:.2f}" for k, v in weights.items()))
    temperatures = row.get("temperatures", {})
    if any(t != 1.0 for t in temperatures.values()):
        parts.append("T " + " ".join(f"{k}={v:.2f}" for k, v in temperatures.items()))
    if row.get("temperature", 1.0) != 1.0:
        parts.append(f"T={row['temperature']:.2f}")
    return "; ".join(parts)


def _metrics(split_metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in split_metrics.items())


def _gate(gate: dict | None) -> str:
    if not gate:
        return "-"
    passed = all(split["passed"] for split in gate["splits"].values())
    return ("pass" if passed else "FAIL") + ("" if gate["enabled"] else " (off)")


def _finetune(record: dict, settings: dict | None = None) -> str:
    """Train time and the settings in effect: data (and slice), epochs, lr, batch, seed."""
    if settings:
        return f"{record['train_seconds']:.0f}s, {settings['summary']}"
    args = record["finetune_args"]
    return (
        f"{record['train_seconds']:.0f}s, {record['train_examples']:,} ex x {args['epochs']:g} ep, "
        f"seed {args['seed']}"
    )


def _source(teacher: dict) -> str:
    """The checkpoint; for a predictions teacher, its first eval split's file and hash."""
    files = (teacher.get("predictions") or {}).get("files")
    if not files:
        return _shorten(teacher["source"], 40)
    split = next((s for s in teacher["metrics"] if s in files), next(iter(files)))
    name, sha = Path(files[split]["path"]).name, files[split]["sha256"] or "?"
    return f"predictions {_shorten(name, 24)} {sha[:8]}"


def _millions(params: int | None) -> str:
    return f"{params / 1e6:.1f}M" if params else "-"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]


# --------------------------------------------------------------------------------------------
# The report over many runs: `sead report <multirun dir or run dirs> [-o OUT]`.
# --------------------------------------------------------------------------------------------

# Overrides that `SETTINGS` (or the teacher list) already show as a column of their own.
_SHOWN_AS_SETTINGS = {*SETTINGS.values(), "teachers", "task", "ensemble", "student"}
_SKIPPED_OVERRIDE_PREFIXES = ("hydra.", "paths.", "hydra/")
_SETTING_COLUMNS = ("teachers", *SETTINGS)


def find_results(paths: Iterable) -> list[Path]:
    """Every `results.json` under the given run dirs, multirun dirs or files, each once; and,
    for a job folder (`.hydra/`) with none beside jobs that have one, the `results.json` it
    lacks (a job killed by the OS or a scheduler, or still running: `job_rows` says so)."""
    found: dict[Path, None] = {}
    skipped = []
    for path in map(Path, paths):
        if path.is_file() and path.name != RESULTS_FILE:  # a shell glob's multirun.yaml, a plot
            skipped.append(path.name)
        elif path.is_file():
            found[path.resolve()] = None
        elif path.is_dir():
            results = [p.resolve() for p in path.rglob(RESULTS_FILE)]
            sweeps = {p.parent.parent for p in results}
            jobs = [h.parent.resolve() for h in path.rglob(".hydra") if h.is_dir()]
            results += [j / RESULTS_FILE for j in jobs if j.parent in sweeps]
            found.update((p, None) for p in sorted(set(results), key=_job_order))
        else:
            raise FileNotFoundError(f"{path} is neither a run directory nor a {RESULTS_FILE}.")
    if skipped:
        log.info("Skipped %d file(s) that are not a %s: %s", len(skipped), RESULTS_FILE, skipped)
    if not found:
        raise FileNotFoundError(
            f"No {RESULTS_FILE} under {', '.join(map(str, paths))}: expected a multirun "
            f"directory (multirun/<date>/<time>) or run directories (outputs/<date>/<time>)."
        )
    return list(found)


def _job_order(path: Path) -> list:
    """multirun/2 before multirun/10: numbered job folders in numeric order."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def job_rows(result_files: Sequence[Path]) -> list[dict]:
    """One flat row per job: its settings, overrides, each model's main metric, params, speed."""
    root = Path(os.path.commonpath([p.parent for p in result_files]))
    rows = []
    for path in result_files:
        job = str(path.parent.relative_to(root)) if path.parent != root else path.parent.name
        if not path.exists():
            error = f"no {RESULTS_FILE}: killed (out of memory, a time limit) or still running"
            rows.append({"job": job, "status": "missing", "error": error})
            continue
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"{path} is not a {RESULTS_FILE} that sead wrote: {err}") from None
        row = {"job": job, "status": results.get("status", "ok"), **_settings(results)}
        if row["status"] == "ok":
            row.update(_scores(results))
        else:
            error = results.get("error") or {}
            message = str(error.get("message", "")).strip().splitlines() or [""]
            row["error"] = f"{error.get('type', 'Error')}: {message[0][:200]}"
        rows.append(row)
    return rows


def _settings(results: dict) -> dict:
    settings = dict(results.get("settings") or {})
    if not settings:  # results.json written before settings were recorded
        settings = {"task": results.get("task"), "seed": results.get("seed")}
    for override in results.get("overrides") or []:
        key, _, value = override.lstrip("+~").partition("=")
        if key not in _SHOWN_AS_SETTINGS and not key.startswith(_SKIPPED_OVERRIDE_PREFIXES):
            settings[key] = value
    return settings


def _scores(results: dict) -> dict:
    split, metric = results["eval_splits"][0], results["main_metric"]
    row = {"metric": f"{metric} ({split})"}
    for name, teacher in results["teachers"].items():
        row[f"teacher {name}"] = teacher["metrics"][split][metric]
    row["ensemble"] = results["ensemble"]["metrics"][split][metric]
    row["student"] = results["student"]["metrics"][split][metric]
    for name, scores in (results["student"].get("diagnostics") or {}).items():
        row[f"student {name}"] = next(iter(scores.values()))  # the diagnostic's main metric
    row["params student"] = results["student"].get("params")
    for name, teacher in results["teachers"].items():
        row[f"params {name}"] = teacher.get("params")
    for name, speedup in (results.get("speed") or {}).get("speedup", {}).items():
        row[f"speedup vs {name}"] = speedup
    # sead.export: each exported format's main metric and speedup over PyTorch fp32
    for name, entry in ((results.get("export") or {}).get("formats") or {}).items():
        if name != "pytorch fp32":
            row[f"student {name}"] = entry["metrics"][metric]
            row[f"speedup {name}"] = entry["speedup"]
    return row


def swept_columns(table) -> list[str]:
    """The settings that differ between jobs (what the sweep varied), in a stable order."""
    results = {"job", "status", "metric", "error", "ensemble", "student"}
    candidates = [
        c
        for c in table.columns
        if c not in results and not c.startswith(("teacher ", "params ", "speedup ", "student "))
    ]
    return [c for c in candidates if table[c].astype(str).nunique(dropna=False) > 1]


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """A metric over seeds: its mean and sample standard deviation (n - 1; 0 for one seed).

    The studies in experiments/ report their seeds with it, as this report does its sweeps.
    """
    values = [float(v) for v in values]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def add_seed_statistics(table, swept: list[str]):
    """Per job, the mean and std of the student's metric over the seeds of its configuration."""
    group = _group_columns(swept)
    ok = table[table["status"] == "ok"]
    if ok.empty or "student" not in ok:
        return table
    stats = ok.groupby(group, dropna=False)["student"].agg(["mean", "std", "count"])
    stats.columns = ["student mean", "student std", "seeds"]
    table = table.merge(stats.reset_index(), on=group, how="left")
    table.loc[table["status"] != "ok", list(stats.columns)] = float("nan")
    return table.astype({"seeds": "Int64"})


def _group_columns(swept: list[str]) -> list[str]:
    return ["task", *[c for c in swept if c not in ("task", "seed")]]


def build_report(paths: Sequence, out_dir) -> dict[str, Path]:
    """Write report.md, report.csv and the plots for the runs under `paths` into `out_dir`."""
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = find_results(paths)
    table = pd.DataFrame(job_rows(files))
    swept = swept_columns(table)
    seeds_swept = "seed" in swept
    if seeds_swept:
        table = add_seed_statistics(table, swept)
    written = {"csv": out_dir / "report.csv"}
    write_atomic(written["csv"], table.to_csv(index=False))
    plots = _plots(table, swept, out_dir)
    written.update(plots)
    markdown = _markdown(table, swept, seeds_swept, plots, [str(p) for p in paths])
    written["md"] = out_dir / "report.md"
    write_atomic(written["md"], markdown)
    log.info("Report of %d job(s) written to %s", len(table), out_dir)
    return written


def _markdown(table, swept, seeds_swept, plots, sources) -> str:
    n_failed = int((table["status"] != "ok").sum())
    fixed = {c: table[c].iloc[0] for c in _SETTING_COLUMNS if c in table and c not in swept}
    lines = [
        "# sead sweep report",
        "",
        f"{len(table)} job(s), {n_failed} failed, from {', '.join(sources)}. "
        "Scores are the task's main metric on its first eval split, x100.",
        "",
        "Same in every job: " + ", ".join(f"`{k}={v}`" for k, v in fixed.items()),
        "",
        "## Jobs",
        "",
    ]
    score_columns = [c for c in table.columns if c.startswith("teacher ")] + [
        c for c in ("ensemble", "student") if c in table
    ]
    score_columns += [c for c in table.columns if c.startswith(("student onnx", "student pytorch"))]
    other = [c for c in table.columns if c.startswith(("params ", "speedup "))]
    columns = ["job", "status", *swept, "metric", *score_columns, *other]
    columns += ["error"] if "error" in table else []
    lines += _md_table(table, [c for c in columns if c in table], score_columns)
    if seeds_swept and "student mean" in table:
        group = _group_columns(swept)
        summary = table[table["status"] == "ok"].drop_duplicates(group)
        summary = summary.assign(
            **{
                "student (mean ± std)": [
                    f"{100 * m:.2f} ± {100 * (0 if math.isnan(s) else s):.2f}"
                    for m, s in zip(summary["student mean"], summary["student std"], strict=True)
                ]
            }
        )
        lines += ["", "## Over seeds", ""]
        lines += _md_table(summary, [*group, "student (mean ± std)", "seeds"], [])
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path.name})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def _md_table(table, columns: list[str], percent: list[str]) -> list[str]:
    import pandas as pd

    def cell(column, value):
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return ""
        if column in percent:
            return f"{100 * value:.2f}"
        if column.startswith("params ") and isinstance(value, int | float):
            return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{int(value):,}"
        if column.startswith("speedup ") and isinstance(value, float):
            return f"{value:.2f}x"
        return _short(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in columns) + " |")
    return lines


def _plots(table, swept: list[str], out_dir: Path) -> dict[str, Path]:
    """student_vs_<setting>.png per swept setting; models_<task>.png per task."""
    import pandas as pd

    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "The sweep report's plots need matplotlib: pip install 'sead[report]'"
        ) from err
    matplotlib.use("Agg")  # files only: no display needed (clusters, CI)
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"]
    plots: dict[str, Path] = {}
    if ok.empty:
        return plots
    for column in [c for c in swept if c not in ("task", "seed")]:
        fig, ax = plt.subplots(figsize=(6, 4))
        numbers = pd.to_numeric(ok[column], errors="coerce")
        x = numbers if numbers.notna().all() else ok[column].astype(str)
        for task, rows in ok.groupby("task"):
            stats = rows.groupby(x[rows.index])["student"].agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index, 100 * stats["mean"], yerr=100 * stats["std"].fillna(0),
                        marker="o", capsize=4, label=str(task))  # fmt: skip
            ax.scatter(x[rows.index], 100 * rows["student"], alpha=0.3, s=12)
        if x is numbers and numbers.min() > 0 and numbers.max() / numbers.min() >= 20:
            ax.set_xscale("log")  # e.g. learning rates
        ax.set_xlabel(column)
        ax.set_ylabel(f"student {ok['metric'].iloc[0]} x100")
        ax.set_title(f"Student against {column} (mean ± std over the other settings)")
        ax.legend(title="task")
        plots[f"student vs {column}"] = _save(fig, out_dir / f"student_vs_{_slug(column)}.png")
    group = _group_columns(swept)
    for task, rows in ok.groupby("task"):
        labels, means, stds = [], [], []
        for column in [c for c in rows.columns if c.startswith("teacher ")]:
            if rows[column].notna().any():
                labels.append(column)
                means.append(rows[column].mean())
                stds.append(0.0)
        configs = rows.groupby(group[1:], dropna=False) if group[1:] else [((), rows)]
        for key, config in configs:
            name = ", ".join(f"{c}={_short(v)}" for c, v in zip(group[1:], key, strict=True))
            for model in ("ensemble", "student"):
                labels.append(f"{model} {name}".strip())
                means.append(config[model].mean())
                stds.append(config[model].std() if len(config) > 1 else 0.0)
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(labels) + 1.5))
        colors = [_COLORS[label.split()[0]] for label in labels]
        values = [100 * m for m in means]
        ax.barh(labels, values, xerr=[100 * s for s in stds], capsize=3, color=colors)
        left = min(values) - 10  # show the differences, not 0..100
        ax.set_xlim(max(0.0, left) if min(values) >= 0 else left, max(values) + 5)
        ax.invert_yaxis()
        ax.set_xlabel(f"{rows['metric'].iloc[0]} x100")
        ax.set_title(f"{task}: teachers, ensembles and students")
        plots[f"models {task}"] = _save(fig, out_dir / f"models_{_slug(str(task))}.png")
    return plots


_COLORS = {"teacher": "tab:gray", "ensemble": "tab:orange", "student": "tab:blue"}


def _short(value) -> str:
    """Sampled floats (Optuna: 0.00012057126287443777) as 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120, bbox_inches="tight")  # room for long labels
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None, prog: str = "python -m sead.report") -> None:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Tabulate and plot the results.json of a sweep (or of several runs).",
    )
    parser.add_argument("paths", nargs="+", help="multirun dir(s), run dir(s) or results.json")
    parser.add_argument(
        "-o", "--out", help="output folder (default: the directory given, or ./report)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    single_dir = len(args.paths) == 1 and Path(args.paths[0]).is_dir()
    out = args.out or (args.paths[0] if single_dir else "report")
    try:
        written = build_report(args.paths, out)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(str(err))
    print(written["md"].read_text())


if __name__ == "__main__":
    main()
