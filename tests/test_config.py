"""Every config composes, and conf/ agrees with the registries it selects from."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from sead.ensemble import ENSEMBLERS
from sead.run import unknown_teachers
from sead.tasks import TASKS
from tests.helpers import CONF, compose


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_config_composes():
    cfg = compose()
    assert cfg.task.name == "sst2"
    assert list(cfg.teachers) == ["bert", "roberta"]
    assert cfg.ensemble.name == "mean_logits"
    assert cfg.student.model == "microsoft/xtremedistil-l6-h256-uncased"


@pytest.mark.parametrize("task", _names("task"))
def test_every_task_composes_and_is_registered(task):
    cfg = compose([f"task={task}"])
    assert cfg.task.name == task in TASKS


def test_every_registered_task_has_a_config():
    assert set(TASKS) <= set(_names("task"))


@pytest.mark.parametrize("group", ["ensemble", "student", "train", "data", "paths", "experiment"])
def test_every_option_of_a_group_composes(group):
    for name in _names(group):
        cfg = compose([f"{group}={name}"])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_every_ensemble_config_names_a_registered_ensembler():
    for name in _names("ensemble"):
        assert compose([f"ensemble={name}"]).ensemble.name in ENSEMBLERS


def test_teachers_is_a_list_keyed_by_teacher_name():
    names = _names("teachers")
    cfg = compose([f"teachers=[{','.join(names)}]"])
    assert list(cfg.teachers) == names
    for name in names:
        teacher = cfg.teachers[name]
        # a checkpoint, a model sead fine-tunes, or prediction files (conf/teachers/files.yaml)
        assert teacher.get("checkpoints") or teacher.get("finetune") or "predictions" in teacher


def test_hub_teachers_name_real_checkpoints_per_task():
    cfg = compose(["teachers=[bert,roberta]"])
    assert cfg.teachers.bert.checkpoints.sst2 == "JeremiahZ/bert-base-uncased-sst2"
    assert cfg.teachers.roberta.checkpoints.mnli == "JeremiahZ/roberta-base-mnli"


def test_unknown_teacher_is_named_before_composing():
    with pytest.raises(MissingConfigException, match="no_such_teacher"):
        compose(["teachers=[bert,no_such_teacher]"])
    # Hydra's message does not list the choices, so the CLI checks names itself:
    args = ["task=sst2", "teachers=[bert,no_such_teacher]"]
    assert unknown_teachers(args) == ["no_such_teacher"]
    assert unknown_teachers(["-m", "teachers=[bert],[bert,nope]"]) == ["nope"]
    assert unknown_teachers(["teachers=[bert,roberta]", "task=rte"]) == []


def test_cli_rejects_unknown_teacher_listing_the_available_ones():
    proc = subprocess.run(
        [sys.executable, "-m", "sead.run", "teachers=[bert,no_such_teacher]"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "no_such_teacher" in proc.stderr and "roberta" in proc.stderr


def test_demo_experiment_points_at_the_demo_assets():
    cfg = compose(["experiment=demo", "paths.demo_dir=/x"])
    assert list(cfg.teachers) == ["toy_bert", "toy_roberta"]
    assert cfg.data.dir == "/x/data/sst2_toy"
    assert Path(cfg.student.model) == Path("/x/models/student")
