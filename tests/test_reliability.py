"""Nothing silent, nothing lost: settings and data checked before any teacher runs,
reproducible teachers, a verified teacher store, one folder per run, a read-only cache."""

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import filelock
import numpy as np
import pytest
import torch

import sead.distill
import sead.manifest
import sead.teachers.logits
import sead.teachers.store
from sead import cache as cache_module
from sead import data, distill, pipeline, run, teachers
from tests.helpers import compose


def _forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started before the bad input was caught")

    monkeypatch.setattr(sead.teachers.store, "finetune", fail)
    monkeypatch.setattr(sead.distill, "distill", fail)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cfg(tiny_assets, tmp_path, teacher_list, *overrides, cache="cache"):
    """`tiny_cfg` for any list of teachers: quick (1 epoch each), gate off, in tmp dirs."""
    names = teacher_list.strip("[]").split(",")
    return compose(
        [
            "experiment=demo",
            f"paths.demo_dir={tiny_assets}",
            f"paths.cache_dir={tmp_path / cache}",
            f"teachers={teacher_list}",
            "train.epochs=1",
            *(f"teachers.{name}.finetune_args.epochs=1" for name in names),
            "teacher_gate=false",
            *overrides,
        ],
        output_dir=str(tmp_path / "run"),
    )


def _store_entries(cfg) -> list[Path]:
    root = Path(cfg.paths.teachers_dir)
    return sorted(p for p in root.glob("sst2-*") if p.is_dir() and not p.name.endswith(".work"))


# --- 1. settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "train.temperature=0",
            r"train.temperature=0 is not allowed: expected a number in \(0, inf\)",
        ),
        ("train.temperature=-2", r"train.temperature=-2 is not allowed"),
        ("train.temperature=abc", r"train.temperature='abc' is not allowed"),
        ("train.alpha=1.5", r"train.alpha=1.5 is not allowed: expected a number in \[0, 1\]"),
        ("train.epochs=0", r"train.epochs=0 is not allowed"),
        ("train.lr=-1", r"train.lr=-1 is not allowed"),
        ("train.batch_size=0", r"train.batch_size=0 is not allowed: expected an integer in \[1"),
        ("data.max_train_samples=-5", r"data.max_train_samples=-5 is not allowed"),
        ("teachers.toy_bert.max_length=-1", r"teachers.toy_bert.max_length=-1 is not allowed"),
        ("teachers.toy_bert.finetune_args.lr=0", r"finetune_args.lr=0 is not allowed"),
        ("cache.chunk_size=abc", r"cache.chunk_size='abc' is not allowed"),
        ("student.max_length=0", r"student.max_length=0 is not allowed"),
    ],
)
def test_bad_settings_stop_the_run_in_the_check_stage(tiny_cfg, monkeypatch, override, message):
    _forbid_training(monkeypatch)
    with pytest.raises(ValueError, match=message):
        pipeline.run(tiny_cfg(override))


def test_no_teachers_gets_seads_own_message(tiny_assets, tmp_path, monkeypatch):
    _forbid_training(monkeypatch)
    cfg = compose(
        ["experiment=demo", f"paths.demo_dir={tiny_assets}", "teachers=[]"], str(tmp_path)
    )
    with pytest.raises(ValueError, match=r"No teachers configured: pass e.g. 'teachers=\[bert"):
        pipeline.run(cfg)


def test_a_non_finite_loss_stops_training_naming_the_step(tiny_cfg, tmp_path):
    settings = pipeline.read_settings(tiny_cfg())
    task = settings.task
    model, tokenizer = distill.load_student(settings.student, task)
    train = data.load_splits(task, settings.data, ["train"])["train"].select(range(16))
    with pytest.raises(FloatingPointError, match="loss is nan at step 1 .*nothing was saved"):
        distill.distill(
            model,
            tokenizer,
            train,
            np.full((16, 2), np.nan),
            task=task,
            settings=settings.train,
            max_length=32,
            output_dir=tmp_path / "trainer",
            seed=1,
        )
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite weights"):
        distill.check_finite(model, "The student")


# --- 2. reproducible teachers ---------------------------------------------------------------


@pytest.mark.slow
def test_a_teachers_weights_do_not_depend_on_the_teachers_trained_before_it(tiny_assets, tmp_path):
    both = _cfg(tiny_assets, tmp_path, "[toy_bert,toy_roberta]", cache="both")
    alone = _cfg(tiny_assets, tmp_path, "[toy_roberta]", cache="alone")
    pipeline.prepare_teachers(both)
    pipeline.prepare_teachers(alone)
    (roberta,) = _store_entries(alone)
    assert [p.name for p in _store_entries(both)].count(roberta.name) == 1  # one key...
    same_key = Path(both.paths.teachers_dir) / roberta.name
    assert _sha(same_key / "model.safetensors") == _sha(
        roberta / "model.safetensors"
    )  # ...one model


class Killed(Exception):
    pass


@pytest.mark.slow
def test_a_run_killed_during_logits_resumes_to_the_uninterrupted_result(
    tiny_cfg, tmp_path, monkeypatch
):
    whole = tiny_cfg(f"paths.cache_dir={tmp_path / 'whole'}", output="whole")
    expected = pipeline.run(whole)

    cfg = tiny_cfg(f"paths.cache_dir={tmp_path / 'killed'}", output="resumed")
    real = sead.teachers.logits.predict

    def killed_on_bert_train(*args, **kwargs):
        if "toy_bert on train" in str(args[4]):
            raise Killed  # toy_bert is fine-tuned and stored, toy_roberta not started
        return real(*args, **kwargs)

    monkeypatch.setattr(sead.teachers.logits, "predict", killed_on_bert_train)
    with pytest.raises(Killed):
        pipeline.run(cfg)
    monkeypatch.setattr(sead.teachers.logits, "predict", real)
    resumed = pipeline.run(cfg)

    assert resumed["teachers"]["toy_bert"]["origin"] == teachers.STORE
    assert resumed["teachers"]["toy_roberta"]["origin"] == teachers.FINETUNED
    for name in ("toy_bert", "toy_roberta"):
        assert resumed["teachers"][name]["metrics"] == expected["teachers"][name]["metrics"]
    assert resumed["ensemble"]["metrics"] == expected["ensemble"]["metrics"]
    assert resumed["student"]["metrics"] == expected["student"]["metrics"]
    student = Path("student") / "model.safetensors"
    assert _sha(Path(cfg.paths.output_dir) / student) == _sha(
        Path(whole.paths.output_dir) / student
    )


# --- 3. one folder per run ------------------------------------------------------------------


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_folders(tiny_assets, tmp_path):
    command = [
        sys.executable,
        "-m",
        "sead.run",
        "experiment=demo",
        f"paths.demo_dir={tiny_assets}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "train.temperature=0",  # fails in the check stage: quick, and still writes results.json
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    jobs = [subprocess.Popen(command, cwd=tmp_path, env=env, **quiet) for _ in range(2)]
    assert [job.wait(timeout=300) for job in jobs] == [1, 1]
    folders = sorted(p.parent for p in (tmp_path / "outputs").glob("*/*/results.json"))
    assert len(folders) == 2
    for folder in folders:
        assert re.fullmatch(r"\d\d-\d\d-\d\d\.\d{6}-[0-9a-f]{6}", folder.name)
        assert json.loads((folder / "results.json").read_text())["status"] == "failed"


# --- 4. the teacher store -------------------------------------------------------------------


def _prepare_bert(cfg):
    inputs = pipeline.check_inputs(pipeline.read_settings(cfg))
    cache = pipeline.soft_label_cache(inputs.settings)
    (spec,) = inputs.specs
    return teachers.prepare(
        spec, inputs.task, inputs.splits, cfg.paths.teachers_dir, cache.file_hashes, cache
    )


@pytest.mark.slow
def test_a_damaged_store_entry_is_reported_in_one_line_and_rebuilt(
    tiny_assets, tmp_path, caplog, capsys
):
    cfg = _cfg(tiny_assets, tmp_path, "[toy_bert]")
    first = _prepare_bert(cfg)
    weights = first.model_dir / "model.safetensors"
    digest = _sha(weights)
    root = Path(cfg.paths.logits_dir)
    assert cache_module.main(["--root", str(root), "verify"]) == 0
    assert f"ok   teacher {first.model_dir.name}" in capsys.readouterr().out

    payload = bytearray(weights.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # a flipped byte, same size
    weights.write_bytes(bytes(payload))
    assert cache_module.main(["--root", str(root), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"BAD  teacher {first.model_dir.name}: model.safetensors fails its content hash" in out
    cache_module.main(["--root", str(root), "list"])
    assert first.model_dir.name in capsys.readouterr().out

    with caplog.at_level(logging.WARNING):
        rebuilt = _prepare_bert(cfg)
    (line,) = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert "model.safetensors fails its content hash" in line and "\n" not in line
    assert rebuilt.origin == teachers.FINETUNED and _sha(weights) == digest  # rebuilt, the same

    caplog.clear()
    (first.model_dir / "tokenizer.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert _prepare_bert(cfg).origin == teachers.FINETUNED
    assert any("tokenizer.json is missing" in r.getMessage() for r in caplog.records)
    assert _prepare_bert(cfg).origin == teachers.STORE  # intact again: reused


@pytest.mark.slow
def test_a_teacher_that_fails_the_gate_is_not_kept(tiny_assets, tmp_path):
    gate = ["teacher_gate=true", "teachers.toy_bert.min_metric=1.0"]
    cfg = _cfg(tiny_assets, tmp_path, "[toy_bert]", *gate)
    with pytest.raises(teachers.TeacherBelowFloor):
        pipeline.prepare_teachers(cfg)
    assert _store_entries(cfg) == []
    assert not list(Path(cfg.paths.teachers_dir).glob("*.work"))


# --- 5. bad data and paths ------------------------------------------------------------------


def _data_copy(tiny_assets, tmp_path) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(tiny_assets / "data" / "sst2_toy", folder)
    return folder


def test_a_row_without_text_in_validation_is_named_before_any_training(
    tiny_assets, tiny_cfg, tmp_path, monkeypatch
):
    _forbid_training(monkeypatch)
    folder = _data_copy(tiny_assets, tmp_path)
    path = folder / "validation.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[7]["sentence"]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    message = rf"split 'validation' \({re.escape(str(path))}\): row 7 .* field 'sentence'"
    with pytest.raises(ValueError, match=message):
        pipeline.run(tiny_cfg(f"data.dir={folder}"))


def test_an_empty_train_file_says_so(tiny_assets, tiny_cfg, tmp_path, monkeypatch):
    _forbid_training(monkeypatch)
    folder = _data_copy(tiny_assets, tmp_path)
    (folder / "train.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"train.jsonl is empty: expected one JSON object"):
        pipeline.run(tiny_cfg(f"data.dir={folder}"))


def test_every_teachers_folder_is_checked_before_the_first_is_trained(
    tiny_assets, tiny_cfg, tmp_path, monkeypatch
):
    _forbid_training(monkeypatch)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"teachers.toy_roberta.model=.* has no config.json"
    ):
        pipeline.run(tiny_cfg(f"teachers.toy_roberta.model={empty}"))
    no_config = tmp_path / "no_config"
    shutil.copytree(tiny_assets / "models" / "teacher_roberta", no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"not a checkpoint folder: it has no config.json\."
    ):
        pipeline.run(tiny_cfg(f"teachers.toy_roberta.model={no_config}"))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00\x01\x02binary", "is binary"),
        ("caf\u00e9 bien\n".encode("latin-1"), "is not UTF-8 text"),
        (b"", "is empty"),
        (b"\n  \n", "is empty"),
    ],
)
def test_bad_transfer_files_are_named(tiny_cfg, tmp_path, monkeypatch, content, message):
    _forbid_training(monkeypatch)
    path = tmp_path / "extra.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"Transfer file {re.escape(str(path))} {message}"):
        pipeline.run(tiny_cfg("transfer=files", f"transfer.paths=[{path}]"))


def test_a_teacher_listed_twice_is_refused():
    assert run.repeated_teachers(["teachers=[toy_bert,toy_bert]"]) == ["toy_bert"]
    assert run.repeated_teachers(["-m", "teachers=[toy_bert],[toy_bert,toy_roberta]"]) == []
    with pytest.raises(SystemExit, match=r"\['toy_bert'\] are listed twice"):
        run.exit_on_unknown_configs(["teachers=[toy_bert,toy_bert]"])


# --- 6. a read-only cache -------------------------------------------------------------------


@pytest.mark.slow
def test_a_read_only_cache_with_every_entry_is_usable(tiny_cfg, monkeypatch):
    cfg = tiny_cfg()
    pipeline.prepare_teachers(cfg)
    cache_root = Path(cfg.paths.logits_dir)
    (cache_root / cache_module.FILE_HASHES).unlink()  # as a chmod does: every stat stamp changes

    class ReadOnlyLock(filelock.FileLock):  # what a lock file in a read-only folder gives
        def acquire(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied", self.lock_file)

    for module in (cache_module, sead.manifest, sead.teachers.store):
        monkeypatch.setattr(module, "FileLock", ReadOnlyLock)
    results = pipeline.prepare_teachers(cfg)
    assert results["cache"]["misses"] == 0 and results["cache"]["hits"] == 4

    victim = next(p for p in cache_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    shutil.rmtree(victim)
    with pytest.raises(PermissionError, match=r"teacher-logit cache .* Point SEAD_CACHE"):
        pipeline.prepare_teachers(cfg)
