"""Sweep plumbing composes: Optuna search, joblib and SLURM launchers, the SEAD experiments."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.helpers import CONF


def _compose_with_hydra(overrides):
    """The full config, `hydra:` node included, as `python -m sead.run -m <overrides>` gets it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_optuna_search_tunes_temperature_alpha_and_lr_for_the_student_metric():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = _compose_with_hydra(["hparams_search=optuna", "task=rte"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize"
    assert set(sweeper.params) == {"train.temperature", "train.alpha", "train.lr"}
    assert sweeper.study_name == "sead_rte"
    assert sweeper.sampler._target_.endswith("TPESampler")
    assert cfg.hydra.mode.name == "MULTIRUN"


def test_local_parallel_launcher_is_joblib():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    cfg = _compose_with_hydra(["hydra/launcher=local_parallel"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2


def test_slurm_launcher_composes_with_submitit():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    OmegaConf.to_container(launcher, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize(
    ("name", "student"),
    [
        ("sead_glue_l6_h256", "microsoft/xtremedistil-l6-h256-uncased"),
        ("sead_glue_l6_h384", "microsoft/xtremedistil-l6-h384-uncased"),
    ],
)
def test_sead_glue_experiments_use_the_paper_students_and_hub_teachers(name, student):
    cfg = _compose_with_hydra([f"experiment={name}", "task=mrpc"])
    assert cfg.student.model == student
    assert list(cfg.teachers) == ["bert", "roberta", "electra"]
    assert cfg.teachers.bert.checkpoints.mrpc == "JeremiahZ/bert-base-uncased-mrpc"
    assert cfg.data.dir is None  # the Hub's GLUE
