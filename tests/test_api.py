"""`sead.api`: compose and run from Python, as the `sead` command does, leaking nothing."""

import json
import logging
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from sead import api, models
from sead.config import CONF_DIR

README = Path(__file__).resolve().parents[1] / "README.md"


def _process_state() -> dict:
    root = logging.getLogger()
    return {
        "cwd": os.getcwd(),
        "root handlers": root.handlers[:],
        "root level": root.level,
        "sead level": logging.getLogger("sead").level,
        "python rng": random.getstate(),
        "numpy rng": np.random.get_state()[1].tolist(),
        "torch rng": torch.random.get_rng_state().tolist(),
        "hydra": (GlobalHydra.instance().is_initialized(), HydraConfig.initialized()),
    }


@pytest.mark.slow
def test_two_runs_in_one_process_share_nothing_but_the_cache(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random.seed(1234), np.random.seed(1234), torch.manual_seed(1234)
    before = _process_state()

    first = api.run(tiny_overrides)
    after_first = _process_state()
    log_after_first = (first.run_dir / "run.log").read_text()
    second = api.run(tiny_overrides)

    # What the caller had is what it has: logging, random generators, cwd, Hydra's state.
    assert after_first == before
    assert _process_state() == before
    # Each run its own folder (relative to the cwd, as on the command line) and run id.
    assert first.run_dir != second.run_dir
    assert first.run_dir.parent.parent == tmp_path / "outputs"
    assert first.run_dir.name[-6:] != second.run_dir.name[-6:]
    # ... and its own log: the first run's file got nothing of the second run.
    assert "== distill ==" in log_after_first
    assert (first.run_dir / "run.log").read_text() == log_after_first
    assert (first.run_dir / ".hydra" / "overrides.yaml").is_file()
    # The same seed, the same student, whether the teachers ran or came from the cache.
    assert first.cache_misses == 4 and first.cache_hits == 0  # 2 teachers x 2 splits
    assert second.cache_misses == 0 and second.cache_hits == 4
    assert first.metrics == second.metrics
    weights = [(r.student_dir / "model.safetensors").read_bytes() for r in (first, second)]
    assert weights[0] == weights[1]
    assert set(first.metrics) == {"validation"} and first.main_metric == "accuracy"
    assert first.score == first.metrics["validation"]["accuracy"]
    saved = json.loads((second.run_dir / "results.json").read_text())
    assert saved["student"]["metrics"] == second.metrics and saved["cache"]["hits"] == 4
    assert first.config.paths.output_dir == str(first.run_dir)  # resolved, as it ran


@pytest.mark.slow
def test_a_stage_runs_alone(tiny_overrides, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "my runs, 1" / "teachers"  # any folder name: quoted for Hydra
    teachers = api.run(tiny_overrides, stage="teachers", run_dir=run_dir)
    assert teachers.stage == "teachers" and teachers.run_dir == run_dir
    assert (teachers.run_dir / "teachers.json").is_file()
    assert teachers.student_dir is None and teachers.metrics == {} and teachers.score is None
    assert set(teachers.teacher_metrics) == {"toy_bert", "toy_roberta"}
    assert 0 <= teachers.teacher_metrics["toy_bert"]["validation"]["accuracy"] <= 1
    assert teachers.cache_misses == 4  # every split of both teachers, for the runs to come

    ensemble = api.run(tiny_overrides, stage="ensemble", run_dir=tmp_path / "ensemble")
    assert ensemble.stage == "ensemble" and "mean_logits" in ensemble.results["rows"]
    assert (ensemble.cache_hits, ensemble.cache_misses) == (2, 0)  # the eval split's logits


def test_config_errors_raise_instead_of_exiting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(api.ConfigError, match=r"Unknown teacher\(s\) \['nope'\]") as error:
        api.run(["teachers=[bert,nope]"])
    assert str(CONF_DIR) in str(error.value) and "roberta" in str(error.value)
    with pytest.raises(api.ConfigError, match=r"\['bert'\] are listed twice"):
        api.run(["teachers=[bert,bert]"])
    with pytest.raises(api.ConfigError, match=r"Unknown task option\(s\) \['nope'\]"):
        api.compose(["task=nope"])
    with pytest.raises(api.ConfigError, match="train.no_such_setting"):
        api.run(["train.no_such_setting=1"])
    with pytest.raises(api.ConfigError, match="OverrideParseException"):
        api.compose(["teachers=[bert"])
    with pytest.raises(api.ConfigError, match="no such folder"):
        api.compose([], config_dir=tmp_path / "missing")
    for call in (api.compose, api.run):  # Hydra's own error for it is a plain ValueError
        with pytest.raises(api.ConfigError, match="train=null: a config group takes the name"):
            call(["train=null"])
    assert not list(tmp_path.iterdir())  # refused before any run folder was made
    assert not GlobalHydra.instance().is_initialized()


def test_a_bad_setting_is_refused_by_the_job_and_recorded(tiny_overrides, tmp_path):
    """A value the config accepts but the job's check refuses: its own error, raised as is
    (not an exit), after the run folder recorded it, as the command does."""
    with pytest.raises(ValueError, match=r"train.temperature=0 is not allowed"):
        api.run([*tiny_overrides, "train.temperature=0"], run_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["status"] == "failed"


def test_a_run_folder_holding_an_earlier_run_raises_a_config_error(tiny_overrides, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text('{"status": "ok"}')
    with pytest.raises(api.ConfigError, match=r"holds an earlier run \(results.json\)"):
        api.run(tiny_overrides, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "results.json").read_text() == '{"status": "ok"}'
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["results.json"]  # no .hydra/, log


def test_a_model_not_installed_raises_its_error_where_the_command_exits(
    tiny_assets, tmp_path, monkeypatch
):
    monkeypatch.setenv("SEAD_MODELS", str(tmp_path / "models"))
    overrides = ["experiment=demo", f"paths.demo_dir={tiny_assets}", "teachers=[mpnet]"]
    with pytest.raises(models.ModelNotInstalledError, match="make models"):
        api.run([*overrides, f"paths.cache_dir={tmp_path}"], run_dir=tmp_path / "run")


def test_compose_is_what_the_command_prints():
    cfg = api.compose(["task=cb", "teachers=[minilm]"])
    assert cfg.task.name == "cb" and list(cfg.teachers) == ["minilm"] and "hydra" not in cfg
    full = api.compose(["task=cb"], return_hydra_config=True)
    assert full.hydra.job.name == "run" and full.hydra.help.app_name == "sead"


def test_a_config_dir_of_ones_own(tmp_path):
    mine = tmp_path / "my_conf" / "teachers"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("mine:\n  checkpoints: {cb: /models/mine-cb}\n")
    cfg = api.compose(["task=cb", "teachers=[mine,mpnet]"], config_dir=tmp_path / "my_conf")
    assert list(cfg.teachers) == ["mine", "mpnet"]
    assert cfg.teachers.mine.checkpoints.cb == "/models/mine-cb"
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"
    assert list(api.compose([searchpath, "teachers=[mine]"]).teachers) == ["mine"]
    with pytest.raises(api.ConfigError, match=r"\['mine2'\]") as error:
        api.compose(["teachers=[mine2]"], config_dir=tmp_path / "my_conf")
    assert str(tmp_path / "my_conf") in str(error.value)  # the folders searched are named
    assert "mine, minilm" in str(error.value)  # ... and what they hold


def _readme_python_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    text = README.read_text()
    section = text[text.index("\n## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(demo_assets, tmp_path):
    """As a user runs it: a script of its own, in a folder with the demo's assets."""
    (tmp_path / "demo_assets").symlink_to(demo_assets)
    script = tmp_path / "example.py"
    script.write_text(_readme_python_example())
    env = {**os.environ, "PYTHONPATH": str(README.parent)}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validation" in proc.stdout
    assert len(list((tmp_path / "outputs").glob("*/*/results.json"))) == 1
