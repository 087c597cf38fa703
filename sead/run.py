"""The Hydra entry point, for the full run and for each stage run on its own.

    python -m sead.run task=sst2 'teachers=[bert,roberta]'                  # stage=all
    python -m sead.run stage=teachers task=rte 'teachers=[bert,roberta]'    # teachers.json
    python -m sead.run stage=ensemble task=sst2 'teachers=[bert,roberta]'   # every ensembler

Thin on purpose: the work is in `sead.pipeline`, which tests call directly. Every stage
gets the same checks here: a teacher with no config stops the command line before Hydra
composes it, and a job that raises is recorded as failed (in the file its stage writes)
and, in a sweep, lets the sweep go on. A full run returns the student's main metric so
that Hydra sweepers (e.g. Optuna) can optimise it.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig

from sead import distributed, export, models, pipeline, report, tracking
from sead.config import CONF_DIR
from sead.files import DiskFull, write_atomic

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble_comparison.json"


def _teachers_stage(cfg: DictConfig) -> dict:
    results = pipeline.prepare_teachers(cfg)  # saves teachers.json
    print(report.teacher_table(results))
    return results


def _ensemble_stage(cfg: DictConfig) -> dict:
    table, results = pipeline.compare_ensembles(cfg)
    write_atomic(Path(cfg.paths.output_dir) / ENSEMBLE_FILE, json.dumps(results, indent=2) + "\n")
    print(table)
    return results


# What a run leaves in its folder: a folder holding any of these is an earlier run's.
RUN_OUTPUTS = (
    report.RESULTS_FILE,
    pipeline.TEACHERS_FILE,
    ENSEMBLE_FILE,
    tracking.METRICS_FILE,
    "student",
    export.ONNX_DIR,
    export.INT8_DIR,
    export.EXPORT_FILE,
)
OVERWRITE = "overwrite_run"  # the option (conf/config.yaml) that lets a run replace an earlier one

# stage -> (what runs it, the file its results, or its failure, are written to)
STAGES = {
    "all": (pipeline.run, report.RESULTS_FILE),
    "teachers": (_teachers_stage, pipeline.TEACHERS_FILE),
    "ensemble": (_ensemble_stage, ENSEMBLE_FILE),
}


# An absolute path: the same configs whether this runs as `python -m sead.run` or imported.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """The student's main metric on the first eval split; None when the job failed, or for a
    stage that trains no student.

    None (not NaN) because the Optuna sweeper marks a trial whose value is not a float as
    failed and goes on, while a NaN makes it raise.
    """
    _keep_earlier_run(cfg)
    stage = str(cfg.get("stage", "all"))
    run_stage, results_file = STAGES.get(stage, (None, report.RESULTS_FILE))
    try:
        if run_stage is None:
            raise ValueError(f"stage={stage!r}: expected one of {', '.join(STAGES)}.")
        results = run_stage(cfg)
    except Exception as error:
        _record_failure(cfg, error, results_file)  # re-raises unless a sweep should go on
        results = None
    if results is None:  # failed, or a rank > 0 of a multi-process run (rank 0 reports)
        # Out of the except block, the failed job's traceback and the tensors it kept alive
        # are gone: free them now, so that the next job of the sweep has the memory.
        gc.collect()
        _empty_cuda_cache()
        return None
    if stage != "all":
        return None
    first_split = results["eval_splits"][0]
    return results["student"]["metrics"][first_split][results["main_metric"]]


def earlier_run(folder) -> list[str]:
    """What an earlier run left in `folder` (results, student, metrics...), if anything."""
    return [name for name in RUN_OUTPUTS if (Path(folder) / name).exists()]


def _refusal(folder, found: list[str]) -> str:
    return (
        f"hydra.run.dir={folder} holds an earlier run ({', '.join(found)}): a new run there "
        "would overwrite it. Leave hydra.run.dir unset (every run gets its own folder) or "
        f"pick a new one; to replace that run, pass {OVERWRITE}=true."
    )


def _keep_earlier_run(cfg: DictConfig) -> None:
    """Refuse to write a run into a folder that holds an earlier one, unless overwrite_run.

    `cli` refuses a command line's `hydra.run.dir` before Hydra writes anything; this catches
    the rest (a run folder set in a config file, a sweep folder reused), before any results.
    With `overwrite_run=true` the earlier run's outputs are removed first, so that what the
    folder holds afterwards is the new run's alone.
    """
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    found = earlier_run(out_dir)
    if not found or distributed.launch_rank() > 0:  # rank 0 checks (the others share its folder)
        return
    if not cfg.get(OVERWRITE, False):
        sys.exit(_refusal(out_dir, found))
    log.warning("%s=true: replacing the earlier run in %s (%s)", OVERWRITE, out_dir, found)
    for name in found:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def exit_if_earlier_run(args: list[str]) -> None:
    """Stop a command line whose `hydra.run.dir` holds an earlier run (unless it passes
    `overwrite_run=true`), before Hydra writes its `.hydra/` and log into that folder."""
    overrides, flags = command_line_overrides(args)
    if flags is None or any((flags.multirun, flags.cfg, flags.info, flags.help, flags.hydra_help)):
        return  # a sweep's folders, or nothing run at all
    if distributed.launch_rank() > 0:  # rank 0 checks: the others may start after it wrote
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:  # Hydra reports a malformed override in its own words
        return
    given = {o.key_or_group: o.value() for o in parsed if not o.is_sweep_override()}
    folder = given.get("hydra.run.dir")
    if folder is None or "${" in str(folder) or str(given.get(OVERWRITE)).lower() == "true":
        return
    found = earlier_run(folder)
    if found:
        sys.exit(_refusal(folder, found))


def _record_failure(cfg: DictConfig, error: Exception, results_file: str) -> None:
    """Write the stage's results file with status failed, then re-raise unless a sweep
    should go on."""
    try:
        out_dir = Path(cfg.paths.output_dir)
    except Exception:  # the config itself may be what is wrong
        out_dir = Path(HydraConfig.get().runtime.output_dir)
    recorded = f"recorded in {out_dir}"
    if distributed.is_main_process():
        try:
            report.save_failure(cfg, error, out_dir, name=results_file)
        except OSError as unrecorded:  # e.g. the disk that stopped the job is full
            recorded = f"not recorded: {unrecorded}"
    log.error("Job failed (%s: %s); %s", type(error).__name__, error, recorded)
    if HydraConfig.get().mode != RunMode.MULTIRUN or cfg.get("fail_fast", False):
        if isinstance(error, models.ModelNotInstalledError | DiskFull):
            sys.exit(f"Error: {error}")  # the fix is one command or free space: no traceback
        raise error


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def command_line_overrides(args: list[str]) -> tuple[list[str], object]:
    """The overrides on a command line, and Hydra's other flags, parsed by Hydra's own parser.

    Flags that take a value (`--cfg job`, `-p task`, `--info defaults`, `-cn`, `-cd`...) are
    read exactly as Hydra reads them, so their values are never taken for overrides. A
    command line Hydra would refuse gives no overrides here: Hydra then says what is wrong.
    """
    from hydra._internal.utils import get_args_parser

    try:
        parsed = get_args_parser().parse_args(args)
    except SystemExit:  # argparse's own error; Hydra prints it again with its usage
        return [], None
    return list(parsed.overrides), parsed


def teacher_lists(args: list[str]) -> list[list[str]]:
    """Each list of teacher names that `teachers=[...]` on the command line asks for (one per
    choice of a sweep), read with Hydra's own parsers; none where Hydra checks on its own
    (another config folder with `-cp`/`-cd`, a rerun) or will refuse the command line."""
    overrides, flags = command_line_overrides(args)
    if flags is not None and (flags.config_path or flags.config_dir or flags.experimental_rerun):
        return []
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:  # Hydra reports a malformed override in its own words
        return []
    lists = []
    for override in parsed:
        if override.key_or_group != "teachers" or override.get_key_element() != "teachers":
            continue
        values = override.value()
        choices = list(override.sweep_iterator()) if override.is_sweep_override() else [values]
        lists += [[str(n) for n in c] if isinstance(c, list) else [str(c)] for c in choices]
    return lists


def unknown_teachers(args: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """Teacher names on the command line with no `conf/teachers/<name>.yaml`.

    Hydra reports a missing member of a config *list* without listing the
    choices, so sead checks `teachers=[...]` (and sweeps of such lists) itself.
    """
    known = {p.stem for p in (conf_dir / "teachers").glob("*.yaml")}
    return sorted({name for names in teacher_lists(args) for name in names} - known)


def repeated_teachers(args: list[str]) -> list[str]:
    """Teachers named twice in one `teachers=[...]`: Hydra merges them into one teacher."""
    return sorted({n for names in teacher_lists(args) for n in names if names.count(n) > 1})


def exit_if_unknown_teachers(args: list[str]) -> None:
    """Stop a command line that names a teacher with no config, listing the ones there are,
    or names one twice (which would silently run it once)."""
    repeated = repeated_teachers(args)
    if repeated:
        sys.exit(
            f"Teacher(s) {repeated} are listed twice in teachers=[...]: a teacher runs once. "
            "For several copies of one base model with their own seeds use "
            f"teachers.{repeated[0]}.seeds=[1,2] (finetune: true)."
        )
    missing = unknown_teachers(args)
    if missing:
        available = sorted(p.stem for p in (CONF_DIR / "teachers").glob("*.yaml"))
        sys.exit(
            f"Unknown teacher(s) {missing}: no conf/teachers/<name>.yaml. "
            f"Available teachers: {', '.join(available)}."
        )


def cli() -> None:
    """`python -m sead.run ...`: sead's own check of the teacher names, then Hydra's main."""
    exit_if_unknown_teachers(sys.argv[1:])
    exit_if_earlier_run(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
