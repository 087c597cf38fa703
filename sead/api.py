"""sead from Python: compose a config and run a job, as the `sead` command does.

    from sead import api

    cfg = api.compose(["experiment=demo"])  # the config `sead --cfg job experiment=demo` prints
    result = api.run(["experiment=demo", "train.epochs=1"])  # what `sead experiment=demo ...` does
    result.metrics["validation"]["accuracy"], result.run_dir, result.student_dir
    result.cache_hits, result.cache_misses

The same code path as the command: the same config search path (sead's `conf/`, then
`config_dir` as `--config-dir` adds it, then any `hydra.searchpath`), the same check of the
config names asked for, and Hydra's own run of one job (its run folder, `.hydra/`, log file)
around the same job function, `sead.run.run_job`. No `@hydra.main` and no change of working
directory: relative paths are relative to the current one, as on the command line.

A call leaves the process as it found it: logging (Hydra sets it up for the job's log file,
for the length of the call), the random generators (python, numpy, torch), Hydra's global
state; each run draws its own run id. A config that cannot be composed raises `ConfigError`
(a ValueError) instead of exiting; an error in the job is recorded in its run folder, as
the command records it, and raised as it is.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hydra._internal.hydra import Hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.version import VersionBase, setbase
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

import sead
from sead import searchpath
from sead.run import EarlierRun, RunRefused, config_name_errors, run_job
from sead.searchpath import ConfigError

__all__ = ["ConfigError", "Result", "compose", "run"]

# What Hydra names the job of `sead` and `python -m sead.run` (after the module sead.run):
# hydra.job.name, and so the log file <run_dir>/run.log.
JOB_NAME = "run"
CONFIG_NAME = "config"


@dataclass(frozen=True)
class Result:
    """What one job did. `results` is the file its stage saved, as a dict: `results.json`
    (stage=all), `teachers.json` (stage=teachers), `ensemble_comparison.json`."""

    stage: str  # all | teachers | ensemble
    run_dir: Path  # the run folder: results, .hydra/ (the configs), run.log
    results: dict
    config: DictConfig  # the job's config as it ran, resolved
    # stage=all: the student's metrics per eval split, and the folder it was saved in
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    student_dir: Path | None = None
    teacher_metrics: dict[str, dict] = field(default_factory=dict)  # teacher -> split -> metrics
    main_metric: str | None = None  # the task's main metric (e.g. accuracy, matthews_correlation)
    cache_hits: int = 0  # teacher-logit cache entries read
    cache_misses: int = 0  # ... and computed

    @property
    def score(self) -> float | None:
        """The student's main metric on the first eval split (what `sead -m` sweepers optimise);
        None for a stage that trains no student."""
        if not self.metrics or self.main_metric is None:
            return None
        return next(iter(self.metrics.values()))[self.main_metric]


def compose(
    overrides: Sequence[str] = (),
    *,
    config_dir: str | Path | None = None,
    return_hydra_config: bool = False,
) -> DictConfig:
    """The config `sead --cfg job <overrides>` prints (with `hydra:` if asked for).

    `config_dir`: a folder of configs of your own, searched after sead's (`--config-dir`).
    Interpolations are left as they are; `paths.output_dir` resolves only inside a run.
    """
    overrides = list(overrides)
    _check_names(overrides, config_dir)
    with _hydra(config_dir) as hydra, _as_config_error():
        cfg = hydra.compose_config(
            CONFIG_NAME, overrides, run_mode=RunMode.RUN, with_log_configuration=False
        )
    if not return_hydra_config:
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
    return cfg


def run(
    overrides: Sequence[str] = (),
    *,
    stage: str | None = None,
    config_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
) -> Result | None:
    """Run one job, as `sead <overrides>` does, and return what it did.

    `stage`: all (default), teachers or ensemble (the override `stage=`); `run_dir`: the run
    folder (`hydra.run.dir`; default outputs/<date>/<time>...). None on the ranks > 0 of a
    multi-process run, as the command, rank 0 reports.
    """
    overrides = [
        *overrides,
        *([f"stage={stage}"] if stage is not None else []),
        *([f"hydra.run.dir={_quoted(Path(run_dir).resolve())}"] if run_dir is not None else []),
    ]
    _check_names(overrides, config_dir)
    jobs: list[Result | None] = []

    def job(cfg: DictConfig) -> None:
        jobs.append(None)  # started: any error from here on is the job's, not the config's
        stage_run, results = run_job(cfg)
        if results is not None:
            run_folder = Path(HydraConfig.get().runtime.output_dir)
            jobs[-1] = _result(stage_run, results, run_folder, cfg)

    sead.new_run_id()  # as each command draws one: no two runs share a folder
    with _process_state_kept(), _hydra(config_dir) as hydra:
        try:
            hydra.run(CONFIG_NAME, task_function=job, overrides=overrides)
        except RunRefused as refused:  # the folder holds a run: refused before Hydra wrote
            raise EarlierRun(str(refused)) from None
        except EarlierRun:  # found by the job itself
            raise
        except (HydraException, ValueError) as error:
            if jobs or isinstance(error, ConfigError):  # the job's own error, as it is
                raise
            raise ConfigError(_message(error)) from error
    return jobs[0]


def _check_names(overrides: list[str], config_dir) -> None:
    """The command's own check of the config names asked for (`sead.run`), as an exception."""
    where = ["--config-dir", str(config_dir)] if config_dir is not None else []
    errors = config_name_errors([*where, *overrides])
    if errors:
        raise ConfigError("\n".join(errors))


def _quoted(path: Path) -> str:
    """A path as a quoted override value (Hydra's grammar): spaces, commas, `=` and quotes
    in it stay part of the value."""
    return "'" + str(path).replace("'", "\\'") + "'"


def _result(stage: str, results: dict, run_dir: Path, cfg: DictConfig) -> Result:
    """A `Result` from what the stage returned (see `sead.pipeline`)."""
    teachers = results.get("teachers", {})
    cache = results.get("cache", {})
    student = results.get("student")
    return Result(
        stage=stage,
        run_dir=run_dir,
        results=results,
        config=OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)),
        metrics=dict(student["metrics"]) if student else {},
        student_dir=run_dir / "student" if student else None,
        teacher_metrics={name: record.get("metrics", {}) for name, record in teachers.items()},
        main_metric=results.get("main_metric"),
        cache_hits=int(cache.get("hits", 0)),
        cache_misses=int(cache.get("misses", 0)),
    )


@contextmanager
def _hydra(config_dir) -> Iterator[Hydra]:
    """A Hydra app over sead's search path, as the command creates one (version base 1.3:
    no change of directory); Hydra's global state is put back afterwards."""
    path = searchpath.search_path(config_dir)
    global_hydra, version = GlobalHydra.instance(), VersionBase.instance().version_base
    previous = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    setbase("1.3")
    try:
        yield Hydra.create_main_hydra2(task_name=JOB_NAME, config_search_path=path)
    finally:
        global_hydra.clear()
        if previous is not None:
            global_hydra.initialize(previous)
        VersionBase.instance().version_base = version


@contextmanager
def _as_config_error() -> Iterator[None]:
    try:
        yield
    except ConfigError:
        raise
    except (HydraException, ValueError) as error:  # Hydra's own, or e.g. `train=null`'s
        raise ConfigError(_message(error)) from error


def _message(error: Exception) -> str:
    cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
    return f"{type(error).__name__}: {error}{cause}"


@contextmanager
def _process_state_kept() -> Iterator[None]:
    """Put back what a job changes in the process: every logger's handlers and level (the
    handlers Hydra added, the job's log file among them, are closed), the random generators,
    and Hydra's record of the running job."""
    import torch

    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]  # fmt: skip
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    disabled_below = logging.root.manager.disable
    rng = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    hydra_config = HydraConfig.instance().cfg
    try:
        yield
    finally:
        HydraConfig.instance().cfg = hydra_config
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.random.set_rng_state(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        for logger, handlers, level, propagate, disabled in saved:
            for handler in set(logger.handlers) - set(handlers):
                handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled
        logging.disable(disabled_below)
