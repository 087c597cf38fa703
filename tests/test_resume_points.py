"""Killed at any moment: Trainer checkpoints count only once complete and verified
(`sead.resume`), a full disk is one line, and a rerun ends equal to a run never interrupted."""

import hashlib
import logging
from pathlib import Path

import pytest

from sead import pipeline, teachers
from tests.helpers import Killed, compose, stop_save

SAVE_EVERY_2 = "+teachers.toy_bert.finetune_args.save_steps=2"  # 8 steps: saves at 2, 4, 6, 8


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _bert_cfg(tiny_assets, tmp_path, cache="cache"):
    return compose(
        [
            "experiment=demo",
            f"paths.demo_dir={tiny_assets}",
            f"paths.cache_dir={tmp_path / cache}",
            "teachers=[toy_bert]",
            "teachers.toy_bert.finetune_args.epochs=1",
            "teacher_gate=false",
            SAVE_EVERY_2,
        ],
        output_dir=str(tmp_path / "run"),
    )


def _prepare_bert(cfg):
    inputs = pipeline.check_inputs(cfg)
    cache = pipeline.soft_label_cache(cfg)
    (spec,) = inputs.specs
    return teachers.prepare(
        spec, inputs.task, inputs.splits, cfg.paths.teachers_dir, cache.file_hashes, cache
    )


def _outcome(teacher) -> dict:
    """What must not depend on a kill: the store key (entry name), weights and metrics."""
    return {
        "entry": teacher.model_dir.name,
        "weights": _sha(teacher.model_dir / "model.safetensors"),
        "metrics": {s: r["metrics"] for s, r in teacher.store_record["evaluation"].items()},
    }


@pytest.fixture(scope="module")
def uninterrupted(tiny_assets, tmp_path_factory):
    return _outcome(_prepare_bert(_bert_cfg(tiny_assets, tmp_path_factory.mktemp("whole"))))


@pytest.mark.slow
@pytest.mark.parametrize(
    "cut",
    [
        100,  # inside the first file written: a folder holding a bit of config.json
        0.5,  # inside the weights or optimizer
        0.95,  # every file but the last few (trainer_state.json)
        1.0,  # every file written, killed before the manifest
    ],
)
def test_a_teacher_killed_while_saving_a_checkpoint_resumes_to_the_uninterrupted_teacher(
    tiny_assets, tmp_path, monkeypatch, caplog, uninterrupted, cut
):
    cfg = _bert_cfg(tiny_assets, tmp_path)
    saved = stop_save(monkeypatch, cut, at_save=2)
    with pytest.raises(Killed):
        _prepare_bert(cfg)
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING):
        teacher = _prepare_bert(cfg)
    (line,) = [r.getMessage() for r in caplog.records if "not a resume point" in r.getMessage()]
    assert str(saved[1]) in line and "interrupted" in line and "\n" not in line
    assert teacher.store_record["resumed_from_step"] == 2
    assert _outcome(teacher) == uninterrupted
