"""Every setting of a run, typed and checked once, before any work: `read_settings(cfg)`.

Each config group becomes the frozen dataclass of the stage that reads it (`sead.config.build`
refuses an unknown or a missing key, naming the group and the key, and checks types and
ranges); the pipeline hands each stage its own object, never the raw config. Defaults live in
`conf/` only. `GROUPS` says which class each group becomes, for the tests that compose every
option of every group.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from sead.cache import CacheSettings
from sead.card import ReportSettings
from sead.config import build, container, setting
from sead.data import DataSettings
from sead.distill import StudentSettings, TrainSettings
from sead.ensemble import EnsembleSettings
from sead.export import ExportSettings
from sead.tasks import TaskSpec, check_trainable, get_task
from sead.teachers import PredictionsSpec, TeacherSpec, teacher_specs
from sead.transfer import TransferSettings

STAGES = ("all", "teachers", "ensemble")  # what `python -m sead.run` does (`stage=`)


@dataclass(frozen=True)
class RunSettings:
    """The main config's own keys (conf/config.yaml)."""

    stage: str  # all | teachers | ensemble
    seed: int = setting(low=0, high=2**32 - 1)  # python, numpy, torch and the Trainer
    teacher_gate: bool  # false: no teacher is checked against its floor
    fail_fast: bool  # in a sweep, a failed job ends the sweep

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r}: expected one of {', '.join(STAGES)}.")


@dataclass(frozen=True)
class TaskSettings:
    """`cfg.task` (conf/task/<name>.yaml): the name; the task itself is `sead.tasks`'."""

    name: str


@dataclass(frozen=True)
class Paths:
    """`cfg.paths` (conf/paths/default.yaml): where things live."""

    cache_dir: str  # shared by every run and sweep
    logits_dir: str  # teacher logits, by fingerprint
    teachers_dir: str  # teachers fine-tuned by sead
    demo_dir: str  # the offline demo's assets
    output_dir: str  # this run: results.json, student/, config


@dataclass(frozen=True)
class Settings:
    """A run's settings, one typed object per config group."""

    run: RunSettings
    task: TaskSpec
    teachers: tuple[TeacherSpec | PredictionsSpec, ...]
    ensemble: EnsembleSettings
    student: StudentSettings
    train: TrainSettings
    data: DataSettings
    transfer: TransferSettings
    paths: Paths
    cache: CacheSettings
    report: ReportSettings
    export: ExportSettings


def _task(node) -> TaskSpec:
    task = get_task(build(TaskSettings, node, "task").name)
    check_trainable(task)
    return task


# group -> how its config node becomes its settings (given the run's task, where it matters)
GROUPS = {
    "task": lambda node, task: _task(node),
    "teachers": lambda node, task: tuple(teacher_specs(node, task)),
    "ensemble": lambda node, task: EnsembleSettings.from_config(node),
    "student": lambda node, task: build(StudentSettings, node, "student"),
    "train": lambda node, task: build(TrainSettings, node, "train"),
    "data": lambda node, task: build(DataSettings, node, "data"),
    "transfer": lambda node, task: TransferSettings.from_config(node, task),
    "paths": lambda node, task: build(Paths, node, "paths"),
    "cache": lambda node, task: build(CacheSettings, node, "cache"),
    "report": lambda node, task: build(ReportSettings, node, "report"),
    "export": lambda node, task: build(ExportSettings, node, "export"),
}


def read_settings(cfg: DictConfig) -> Settings:
    """The composed config as typed settings, every group checked; nothing is loaded."""
    raw = container(cfg, "config")
    top = {key: value for key, value in raw.items() if key not in GROUPS}
    run = build(RunSettings, top, "")  # the main config's own keys: seed=..., stage=...
    task = _task(raw.get("task"))
    groups = {
        group: make(raw.get(group), task) for group, make in GROUPS.items() if group != "task"
    }
    made = Settings(run=run, task=task, **groups)
    if made.cache.shard is not None and run.stage != "teachers":
        raise ValueError(
            f"cache.shard={made.cache.shard} fills one chunk set of each teacher-logit entry, "
            f"for stage=teachers jobs that share a cache; stage={run.stage} needs every entry "
            "whole. Run the shards with stage=teachers, then this job without cache.shard."
        )
    return made
