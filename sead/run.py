"""The Hydra entry point, for the full run and for each stage run on its own.

    sead task=sst2 'teachers=[bert,roberta]'                  # stage=all
    sead stage=teachers task=rte 'teachers=[bert,roberta]'    # teachers.json
    sead stage=ensemble task=sst2 'teachers=[bert,roberta]'   # every ensembler

`sead` (sead.cli) and `python -m sead.run` are this module's `cli()`. Thin on purpose: the
work is in `sead.pipeline`, which tests call directly. Every stage gets the same checks
here: a config name (teacher, task, student...) that no folder on the search path holds
stops the command line before Hydra composes it, naming the folders searched; a job that
raises is recorded as failed (in the file its stage writes) and, in a sweep, lets the sweep
go on. A full run returns the student's main metric so that Hydra sweepers (e.g. Optuna)
can optimise it.

Light to import, so that `--help`, `--cfg` and `--info` answer at once: the pipeline (torch,
transformers, every stage) is imported only when a job runs.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sead import models, searchpath
from sead.config import CONF_DIR
from sead.files import DiskFull, write_atomic

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble_comparison.json"


def _teachers_stage(cfg: DictConfig) -> dict:
    from sead import pipeline, report

    results = pipeline.prepare_teachers(cfg)  # saves teachers.json
    print(report.teacher_table(results))
    return results


def _ensemble_stage(cfg: DictConfig) -> dict:
    from sead import pipeline

    table, results = pipeline.compare_ensembles(cfg)
    write_atomic(Path(cfg.paths.output_dir) / ENSEMBLE_FILE, json.dumps(results, indent=2) + "\n")
    print(table)
    return results


# What a run leaves in its folder: a folder holding any of these is an earlier run's
# (report.RESULTS_FILE, pipeline.TEACHERS_FILE, ENSEMBLE_FILE, tracking.METRICS_FILE, the
# student, export.ONNX_DIR, export.INT8_DIR, export.EXPORT_FILE), written out here so that
# importing this module stays light; tests/test_reliability.py checks them against those.
RUN_OUTPUTS = (
    "results.json",
    "teachers.json",
    ENSEMBLE_FILE,
    "metrics.jsonl",
    "student",
    "onnx",
    "onnx-int8",
    "export.json",
)
OVERWRITE = "overwrite_run"  # the option (conf/config.yaml) that lets a run replace an earlier one


def stages() -> dict:
    """stage -> (what runs it, the file its results, or its failure, are written to).

    Imported only when a job runs: the pipeline brings torch, transformers and every stage,
    which `--help`, `--cfg` and `--info` never need.
    """
    from sead import pipeline, report

    return {
        "all": (pipeline.run, report.RESULTS_FILE),
        "teachers": (_teachers_stage, pipeline.TEACHERS_FILE),
        "ensemble": (_ensemble_stage, ENSEMBLE_FILE),
    }


def _read_settings(cfg: DictConfig) -> None:
    """What runs for a stage that does not exist: reading the settings stops it, naming the
    stage and the ones there are (`sead.settings.RunSettings`)."""
    from sead.settings import read_settings

    read_settings(cfg)


def run_job(cfg: DictConfig) -> tuple[str, dict | None]:
    """One job, as `sead` and `sead.api` run it: `(stage, results)`.

    A job that raises is recorded as failed (in the file its stage writes) and the error
    re-raised, except in a sweep, which goes on (results None). Results are None too on the
    ranks > 0 of a multi-process run (rank 0 reports).
    """
    _keep_earlier_run(cfg)
    stage = OmegaConf.select(cfg, "stage")  # checked with every other setting by the job
    known = stages()
    # An unknown stage: reading the settings names it (and what is allowed), as any bad key.
    run_stage, results_file = known.get(stage, (_read_settings, known["all"][1]))
    try:
        with _in_launch_directory():
            results = run_stage(cfg)
    except Exception as error:
        _record_failure(cfg, error, results_file)  # re-raises unless a sweep should go on
        results = None
    if results is None:  # failed, or a rank > 0 of a multi-process run (rank 0 reports)
        # Out of the except block, the failed job's traceback and the tensors it kept alive
        # are gone: free them now, so that the next job of the sweep has the memory.
        gc.collect()
        _empty_cuda_cache()
    return stage, results


@contextlib.contextmanager
def _in_launch_directory():
    """Relative paths (`data.dir`, `paths.*`, teacher folders, prediction files) are the
    launch directory's, as conf/paths says, also with `hydra.job.chdir=true` (Hydra's own
    `to_absolute_path` convention): the job reads from there, and writes into its run folder
    (`paths.output_dir`, absolute) either way."""
    launch, here = HydraConfig.get().runtime.cwd, os.getcwd()
    if launch == here:
        yield
        return
    os.chdir(launch)
    try:
        yield
    finally:
        os.chdir(here)


# An absolute path: the same configs whether this runs as `sead`, `python -m sead.run` or
# imported, from a checkout or an installed wheel (sead.config.conf_dir).
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """The student's main metric on the first eval split; None when the job failed, or for a
    stage that trains no student.

    None (not NaN) because the Optuna sweeper marks a trial whose value is not a float as
    failed and goes on, while a NaN makes it raise.
    """
    try:
        stage, results = run_job(cfg)
    except Exception as error:
        # the fix is one command, free space, a new folder: said in one line (a model not
        # installed may come wrapped by OmegaConf, from the resolver of its path)
        cause = error if isinstance(error, DiskFull | EarlierRun) else _not_installed(error)
        if cause is None:
            raise
        sys.exit(f"Error: {cause}")
    if results is None or stage != "all":
        return None
    first_split = results["eval_splits"][0]
    return results["student"]["metrics"][first_split][results["main_metric"]]


def _not_installed(error: BaseException | None) -> BaseException | None:
    while error is not None and not isinstance(error, models.ModelNotInstalledError):
        error = error.__cause__ or error.__context__
    return error


def earlier_run(folder) -> list[str]:
    """What an earlier run left in `folder` (results, student, metrics...), if anything."""
    return [name for name in RUN_OUTPUTS if (Path(folder) / name).exists()]


def _refusal(folder, found: list[str], option: str = "hydra.run.dir") -> str:
    return (
        f"{option}={folder} holds an earlier run ({', '.join(found)}): a new run there "
        f"would overwrite it. Leave {option} unset (every run gets its own folder) or "
        f"pick a new one; to replace that run, pass {OVERWRITE}=true."
    )


class EarlierRun(searchpath.ConfigError):
    """The run folder holds an earlier run: the command exits saying so, `sead.api` raises."""


class RunRefused(BaseException):  # noqa: N818 (a stop, not an error class of its own)
    """`EarlierRunCheck`'s refusal. A BaseException: Hydra turns an Exception raised by a
    callback into a warning and goes on; this one stops the run before Hydra writes, and
    `cli` exits with its message (`sead.api.run` raises EarlierRun)."""


class EarlierRunCheck(Callback):
    """Hydra's callback (conf/config.yaml `hydra.callbacks`) that refuses a run or sweep
    folder holding an earlier run before Hydra writes `.hydra/`, a log or `multirun.yaml`
    into it, wherever the folder was set: a command line, `sead.api.run(run_dir=)`, a config
    file, an interpolation. With `overwrite_run=true` a run folder's earlier outputs (and log)
    are removed first, so that what it holds afterwards is the new run's alone."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        folder = Path(str(config.hydra.run.dir))
        found = earlier_run(folder)
        if not found or _launch_rank() > 0:  # rank 0 checks (the others share its folder)
            return
        if OmegaConf.select(config, OVERWRITE) is not True:
            raise RunRefused(_refusal(folder, found))
        log.warning("%s=true: replacing the earlier run in %s (%s)", OVERWRITE, folder, found)
        _remove([*(folder / name for name in found), *folder.glob("*.log")])

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        jobs = [job for job in folder.iterdir() if job.is_dir()] if folder.is_dir() else []
        found = sorted({name for job in jobs for name in earlier_run(job)})
        if found and OmegaConf.select(config, OVERWRITE) is not True and _launch_rank() == 0:
            raise RunRefused(_refusal(folder, found, option="hydra.sweep.dir"))


class FailedJobs(Callback):
    """Hydra's callback (conf/config.yaml) that ends a sweep whose jobs went on past a
    failure with exit status 1, naming the failed jobs: scripts and schedulers see it. (An
    Optuna study that ends has had its failed trials judged by max_failure_rate.)"""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if _optuna(config.hydra):
            return
        sweep = Path(str(config.hydra.sweep.dir))
        records = [sweep.glob(f"*/{name}") for name in RUN_OUTPUTS[:3]]  # each stage's results
        failed = sorted(
            {path.parent.name for found in records for path in found if _failed(path)},
            key=lambda name: (len(name), name),
        )
        if failed:
            raise SystemExit(
                f"Error: {len(failed)} job(s) of the sweep failed: {', '.join(failed)} (each "
                f"job folder's results say why; `sead report {sweep}` lists them)."
            )


def _optuna(hydra_config) -> bool:
    return "optuna" in str(OmegaConf.select(hydra_config, "sweeper._target_", default=""))


def _failed(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "failed"
    except (OSError, ValueError, AttributeError):
        return False


def _launch_rank() -> int:
    from sead import distributed  # only here: it imports torch

    return distributed.launch_rank()


def _keep_earlier_run(cfg: DictConfig) -> None:
    """The job's own check of its folder (`EarlierRunCheck` has checked the run's or the
    sweep's before Hydra wrote into it): a sweep's job folder that holds an earlier run, with
    overwrite_run=true, is emptied of that run's outputs first; without it, refused."""
    runtime = Path(HydraConfig.get().runtime.output_dir)
    try:  # where the job writes: Hydra's folder, unless paths.output_dir points elsewhere
        out_dir = Path(OmegaConf.select(cfg, "paths.output_dir") or runtime)
    except Exception:  # a config too broken to resolve: the job's own check names it
        out_dir = runtime
    found = earlier_run(out_dir)
    if not found or _launch_rank() > 0:
        return
    option = "hydra.sweep.dir" if HydraConfig.get().mode == RunMode.MULTIRUN else "hydra.run.dir"
    option = option if out_dir.resolve() == runtime.resolve() else "paths.output_dir"
    if OmegaConf.select(cfg, OVERWRITE) is not True:
        raise EarlierRun(_refusal(out_dir, found, option))
    log.warning("%s=true: replacing the earlier run in %s (%s)", OVERWRITE, out_dir, found)
    _remove([out_dir / name for name in found])


def _remove(paths) -> None:
    """An earlier run's outputs, folders and files alike (overwrite_run=true)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def exit_if_earlier_run(args: list[str]) -> None:
    """Stop a command line whose `hydra.run.dir` holds an earlier run (unless it passes
    `overwrite_run=true`), before Hydra writes its `.hydra/` and log into that folder."""
    overrides, flags = command_line_overrides(args)
    if flags is not None and flags.experimental_rerun is not None:
        _exit_if_rerun_over_its_run(Path(flags.experimental_rerun))
    if flags is None or any((flags.multirun, flags.cfg, flags.info, flags.help, flags.hydra_help)):
        return  # a sweep's folders (EarlierRunCheck), or nothing run at all
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
        from sead import distributed  # only here: it imports torch

        if distributed.launch_rank() == 0:  # rank 0 checks: the others may start after it wrote
            sys.exit(_refusal(folder, found))


def _exit_if_rerun_over_its_run(pickled: Path) -> None:
    """`--experimental-rerun <run>/.hydra/config.pickle` runs the job again in `<run>`, and
    Hydra takes no overrides with it, so overwrite_run cannot be passed: refused by name."""
    run_folder = pickled.resolve().parent.parent
    found = earlier_run(run_folder)
    if found:
        sys.exit(
            f"--experimental-rerun {pickled} would run the job again in {run_folder}, which "
            f"holds its results ({', '.join(found)}), and Hydra takes no overrides with a "
            "rerun, so overwrite_run=true cannot be given. Run it again in a new folder with "
            f"the same overrides: sead $(sed -n 's/^- //p' {run_folder}/.hydra/overrides.yaml)"
        )


def _record_failure(cfg: DictConfig, error: Exception, results_file: str) -> None:
    """Write the stage's results file with status failed, then re-raise unless a sweep
    should go on."""
    from sead import distributed, report

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
    fail_fast = OmegaConf.select(cfg, "fail_fast")  # not a bool: too broken to go on
    # The Optuna sweeper counts a raised job as a failed trial and stops the study once
    # hydra.sweeper.max_failure_rate is passed (per batch of n_jobs trials): it decides.
    sweep_goes_on = HydraConfig.get().mode == RunMode.MULTIRUN and fail_fast is False
    if not sweep_goes_on or _optuna(HydraConfig.get()):
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

    quiet = io.StringIO()  # `--version`, `--help` or an error print once: Hydra's own parse
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            parsed = get_args_parser().parse_args(args)
    except SystemExit:  # argparse's own error; Hydra prints it again with its usage
        return [], None
    return list(parsed.overrides), parsed


def _searched(args: list[str]):
    """The overrides and the config options Hydra will find for this command line (sead's
    conf/, an absolute `-cp`, `-cd`, `hydra.searchpath`); None where Hydra checks on its own
    (a `-cp` relative to sead's package, a rerun) or will refuse the command line."""
    overrides, flags = command_line_overrides(args)
    if flags is None or flags.experimental_rerun:
        return None
    if flags.config_path and not Path(flags.config_path).is_absolute():
        return None
    try:
        path = searchpath.search_path(flags.config_dir, flags.config_path)
        return overrides, searchpath.options(path, overrides, flags.config_name or "config")
    except (HydraException, searchpath.ConfigError):  # Hydra says what is wrong, in its words
        return None


def teacher_lists(args: list[str]) -> list[list[str]]:
    """Each list of teacher names that `teachers=[...]` on the command line asks for (one per
    choice of a sweep), read with Hydra's own parsers; none for a rerun or a command line
    Hydra will refuse."""
    overrides, flags = command_line_overrides(args)
    if flags is not None and flags.experimental_rerun:
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


def unknown_choices(args: list[str]) -> tuple[dict[str, list[str]], object]:
    """`{group: [names]}` the command line asks for (`teachers=[...]`, `task=`, `student=`,
    sweeps of them) that no folder on the search path holds, and the options searched."""
    searched = _searched(args)
    if searched is None:
        return {}, None
    overrides, found = searched
    try:
        return searchpath.unknown_choices(found, overrides), found
    except HydraException:
        return {}, found


def unknown_teachers(args: list[str]) -> list[str]:
    """Teacher names on the command line with no `teachers/<name>.yaml` on the search path.

    Hydra reports a missing member of a config *list* without listing the
    choices, so sead checks `teachers=[...]` (and sweeps of such lists) itself.
    """
    return unknown_choices(args)[0].get("teachers", [])


def repeated_teachers(args: list[str]) -> list[str]:
    """Teachers named twice in one `teachers=[...]`: Hydra merges them into one teacher."""
    return sorted({n for names in teacher_lists(args) for n in names if names.count(n) > 1})


def config_name_errors(args: list[str]) -> list[str]:
    """What is wrong with the config names a command line asks for: a teacher named twice
    (which would silently run once), or options no folder on the search path holds (each
    message lists the folders searched and the options there are). `sead.api` checks its
    overrides here too."""
    repeated = repeated_teachers(args)
    if repeated:
        return [
            f"Teacher(s) {repeated} are listed twice in teachers=[...]: a teacher runs once. "
            "For several copies of one base model with their own seeds use "
            f"teachers.{repeated[0]}.seeds=[1,2] (finetune: true)."
        ]
    unknown, found = unknown_choices(args)
    errors = [searchpath.unknown_message(group, names, found) for group, names in unknown.items()]
    if found is None:
        return errors
    missing = unknown.get("teachers", [])
    named = [n for names in teacher_lists(args) for n in names if n not in missing]
    return errors + searchpath.misplaced_teachers(found, named)


def exit_on_unknown_configs(args: list[str]) -> None:
    """Stop a command line whose config names are wrong (`config_name_errors`)."""
    errors = config_name_errors(args)
    if errors:
        sys.exit("\n".join(errors))


def cli() -> None:
    """`sead ...` and `python -m sead.run ...`: sead's check of the config names asked for,
    then Hydra's main."""
    exit_on_unknown_configs(sys.argv[1:])
    exit_if_earlier_run(sys.argv[1:])
    from sead.run import RunRefused  # the class Hydra's callback raises, also when this
    # module runs as __main__ (`python -m sead.run`) and Hydra imports it again as sead.run

    try:
        main()
    except RunRefused as refused:
        sys.exit(f"Error: {refused}")


if __name__ == "__main__":
    cli()
