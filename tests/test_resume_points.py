"""Killed at any moment: Trainer checkpoints count only once complete and verified
(`sead.resume`), a full disk is one line, and a rerun ends equal to a run never interrupted."""

import errno
import hashlib
import io
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedModel, Trainer

import sead.cache
import sead.files
from sead import export, manifest, pipeline, resume
from sead.cache import SoftLabelCache
from sead.files import DiskFull
from tests.helpers import (
    Killed,
    compose,
    cut_after,
    folder_bytes,
    prepare_teacher,
    settings,
    stop_save,
)

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


def _outcome(teacher) -> dict:
    """What must not depend on a kill: the store key (entry name), weights and metrics."""
    return {
        "entry": teacher.model_dir.name,
        "weights": _sha(teacher.model_dir / "model.safetensors"),
        "metrics": {s: r["metrics"] for s, r in teacher.store_record["evaluation"].items()},
    }


@pytest.fixture(scope="module")
def uninterrupted(tiny_assets, tmp_path_factory):
    return _outcome(prepare_teacher(_bert_cfg(tiny_assets, tmp_path_factory.mktemp("whole"))))


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
        prepare_teacher(cfg)
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING):
        teacher = prepare_teacher(cfg)
    (line,) = [r.getMessage() for r in caplog.records if "not a resume point" in r.getMessage()]
    assert str(saved[1]) in line and "interrupted" in line and "\n" not in line
    assert teacher.store_record["resumed_from_step"] == 2
    resumed = _outcome(teacher)
    print(f"cut {cut}: resumed {resumed['weights']}, uninterrupted {uninterrupted['weights']}")
    assert resumed == uninterrupted


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, reason",
    [
        ("model.safetensors", "model.safetensors fails its content hash"),  # flipped bytes
        ("optimizer.pt", r"optimizer.pt is [\d,]+ bytes, the manifest says [\d,]+"),  # truncated
    ],
)
def test_a_damaged_checkpoint_is_reported_and_never_resumed(
    tiny_assets, tmp_path, monkeypatch, caplog, uninterrupted, damage, reason
):
    cfg = _bert_cfg(tiny_assets, tmp_path)
    saved = stop_save(monkeypatch, 0.5, at_save=3)  # checkpoint-6 half written, 4 complete
    with pytest.raises(Killed):
        prepare_teacher(cfg)
    monkeypatch.undo()
    complete = saved[1] / damage
    if damage == "model.safetensors":
        payload = bytearray(complete.read_bytes())
        payload[len(payload) // 2 : len(payload) // 2 + 64] = bytes(64)
        complete.write_bytes(bytes(payload))
    else:
        os.truncate(complete, complete.stat().st_size // 2)
    with caplog.at_level(logging.WARNING):
        teacher = prepare_teacher(cfg)
    lines = [r.getMessage() for r in caplog.records if "not a resume point" in r.getMessage()]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert str(saved[2]) in lines[0] and "interrupted" in lines[0]
    assert str(saved[1]) in lines[1] and re.search(reason, lines[1])
    assert teacher.store_record["resumed_from_step"] is None  # nothing left to trust: anew
    assert _outcome(teacher) == uninterrupted


@pytest.mark.slow
def test_a_full_disk_while_fine_tuning_is_one_line_and_the_rerun_goes_on(
    tiny_assets, tmp_path, monkeypatch, uninterrupted
):
    cfg = _bert_cfg(tiny_assets, tmp_path)
    real_save = torch.save
    saves = []

    def disk_fills_up(obj, f, *args, **kwargs):  # the second optimizer.pt meets a full disk
        if str(f).endswith("optimizer.pt"):
            saves.append(f)
            if len(saves) == 2:
                buffer = io.BytesIO()
                real_save(obj, buffer)
                Path(f).write_bytes(buffer.getvalue()[:1000])
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_up)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(sead.files.shutil, "disk_usage", lambda _: usage._replace(free=4096))
    with pytest.raises(DiskFull) as refused:
        prepare_teacher(cfg)
    message = str(refused.value)
    work = Path(saves[-1]).parents[1]
    assert message.startswith(f"No space left on device in {work}: a checkpoint of teacher ")
    assert "needed about " in message and "(4.0 KB free)" in message and "\n" not in message
    assert "point SEAD_CACHE (or paths.teachers_dir) at a bigger disk" in message
    monkeypatch.undo()  # space freed
    teacher = prepare_teacher(cfg)
    assert teacher.store_record["resumed_from_step"] == 2
    resumed = _outcome(teacher)
    print(f"full disk: resumed {resumed['weights']}, uninterrupted {uninterrupted['weights']}")
    assert resumed == uninterrupted


def test_a_full_disk_in_the_logit_cache_leaves_no_half_entry(tmp_path, monkeypatch):
    cache = SoftLabelCache(tmp_path / "logits", chunk_size=4)
    idx = np.arange(10)

    def compute(partial):
        return np.ones((10, 2), dtype=np.float32)

    def no_space(*args, **kwargs):
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(sead.cache, "save_file", no_space)
    with pytest.raises(DiskFull, match=rf"No space left on device in {tmp_path / 'logits'}: "):
        cache.get_or_compute({"teacher": "t"}, idx, compute)
    assert [p.name for p in (tmp_path / "logits").iterdir()] == [".locks"]  # no half entry
    monkeypatch.undo()
    assert cache.get_or_compute({"teacher": "t"}, idx, compute).logits.shape == (10, 2)


def _student_sha(cfg) -> str:
    return _sha(Path(cfg.paths.output_dir) / "student" / "model.safetensors")


@pytest.mark.slow
def test_a_run_killed_or_out_of_space_while_saving_the_student_leaves_no_student(
    tiny_cfg, tmp_path, monkeypatch
):
    whole = tiny_cfg(output="whole")
    expected = pipeline.run(whole)
    assert manifest.verify(Path(whole.paths.output_dir) / "student") is None  # as saved

    cfg = tiny_cfg(output="killed")
    run_dir = Path(cfg.paths.output_dir)
    real = PreTrainedModel.save_pretrained

    def save_then_stop(error):
        def save(self, save_directory, *args, **kwargs):
            real(self, save_directory, *args, **kwargs)
            if "checkpoint-" in str(save_directory):  # the Trainer's epoch checkpoints go on
                return
            cut_after(Path(save_directory), folder_bytes(Path(save_directory)) // 2)
            raise error

        return save

    monkeypatch.setattr(
        PreTrainedModel, "save_pretrained", save_then_stop(Killed("killed mid-save"))
    )
    with pytest.raises(Killed):
        pipeline.run(cfg)
    assert not (run_dir / "student").exists()  # never a half-written student/
    with pytest.raises(SystemExit, match=r"this run has no student/ to export"):
        export.main([str(run_dir)])

    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_then_stop(full))
    with pytest.raises(DiskFull, match=rf"in {run_dir}: saving the student needed about .* free"):
        pipeline.run(cfg)
    assert sorted(p.name for p in run_dir.iterdir() if "student" in p.name) == []

    monkeypatch.undo()
    results = pipeline.run(cfg)
    print(f"student: rerun {_student_sha(cfg)}, uninterrupted {_student_sha(whole)}")
    assert _student_sha(cfg) == _student_sha(whole)
    assert results["student"]["metrics"] == expected["student"]["metrics"]


def test_a_full_run_folder_is_one_line_and_keeps_its_files_whole(tmp_path, monkeypatch):
    """results.json (any atomic write) and metrics.jsonl on a disk with room for 10 bytes."""
    import sead.tracking

    results = tmp_path / "results.json"
    results.write_text('{"status": "ok"}')
    metrics = sead.tracking.MetricsLog(tmp_path)
    metrics.write("config", mode="w", config={})
    whole = metrics.path.read_bytes()

    class TenBytesLeft:
        """A file on a disk that takes 10 more bytes: then a short write, or ENOSPC."""

        def __init__(self, raw, raise_error):
            self.raw, self.raise_error = raw, raise_error

        def write(self, data):
            written = self.raw.write(bytes(data[:10]))
            if written < len(data) and self.raise_error:
                raise OSError(errno.ENOSPC, "No space left on device")
            return written

        def __getattr__(self, name):
            return getattr(self.raw, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.raw.close()

    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: TenBytesLeft(real_fdopen(*a, **k), True))
    with pytest.raises(DiskFull, match=rf"No space left on device in {tmp_path}: results.json"):
        sead.files.write_atomic(results, '{"status": "ok", "more": "%s"}' % ("x" * 100))
    assert results.read_text() == '{"status": "ok"}'  # the old file, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file

    def short_writes(*args, **kwargs):  # an unbuffered file: a short write, no error
        return TenBytesLeft(open(*args, **kwargs), False)  # noqa: SIM115 (closed on exit)

    monkeypatch.setattr(sead.tracking, "open", short_writes, raising=False)
    with pytest.raises(DiskFull, match=rf"No space left on device in {tmp_path}: metrics.jsonl"):
        metrics.write("train", loss=0.5)
    monkeypatch.undo()
    assert metrics.path.read_bytes() == whole  # no half line


# --- the API any Trainer uses (issue 28's student stages will) --------------------------------


def _student_trainer(tiny_assets, output_dir: Path, callbacks, limit=None) -> Trainer:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

    from sead import data
    from sead.tasks import get_task

    task = get_task("sst2")
    source = tiny_assets / "models" / "student"
    tokenizer = AutoTokenizer.from_pretrained(source)
    folder = str(tiny_assets / "data" / "sst2_toy")
    train = data.load_splits(task, settings("data", dir=folder, max_train_samples=64), ["train"])
    train = train["train"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        max_steps=8,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=limit,
        report_to="none",
        use_cpu=True,
        seed=1,
    )
    encoded = data.tokenize(train, tokenizer, task, 32).remove_columns("idx")
    return Trainer(
        model=model, args=args, train_dataset=encoded, processing_class=tokenizer,
        callbacks=callbacks,
    )  # fmt: skip


def test_resume_points_for_any_trainer(tiny_assets, tmp_path, caplog):
    out = tmp_path / "student-stage"
    assert resume.latest(out, "Student") is None  # no folder yet: start
    with pytest.raises(ValueError, match="no ResumePoints callback"):
        resume.train(_student_trainer(tiny_assets, out, []), None, "the student")
    with pytest.raises(ValueError, match=r"save_total_limit=2 with ResumePoints: set it to None"):
        resume.train(_student_trainer(tiny_assets, out, [resume.ResumePoints()], 2), None, "s")

    trainer = _student_trainer(tiny_assets, out, [resume.ResumePoints(keep=2)])
    resume.train(trainer, resume.latest(out, "Student"), "the student")
    kept = resume.checkpoints(out)
    assert [step for step, _ in kept] == [8, 6]  # the newest two, each complete
    assert all(manifest.verify(path) is None for _, path in kept)
    assert resume.latest(out, "Student") == kept[0][1]
    assert resume.global_step(kept[0][1]) == 8

    (kept[0][1] / "trainer_state.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert resume.latest(out, "Student") == kept[1][1]  # falls back to the previous one
    (line,) = [r.getMessage() for r in caplog.records if r.name == "sead.resume"]
    assert line.startswith(f"Student: checkpoint {kept[0][1]} is not a resume point (")
    assert "trainer_state.json is missing" in line and not kept[0][1].exists()


def test_a_damaged_best_checkpoint_is_never_restored_the_stage_starts_over(tmp_path, caplog):
    """The end of training restores the best checkpoint (load_best_model_at_end), which
    rotation keeps behind the newest: it is verified too, or nothing is resumed."""
    from transformers import TrainerState

    out = tmp_path / "stage"
    for step in (6, 8):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(bytes(range(64)))
        state = TrainerState(global_step=step, best_model_checkpoint=str(out / "checkpoint-6"))
        state.save_to_json(str(folder / "trainer_state.json"))
        manifest.write(folder)
    assert resume.latest(out, "Student") == out / "checkpoint-8"
    damaged = bytearray(range(64))
    damaged[3] ^= 1
    (out / "checkpoint-6" / "model.safetensors").write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING):
        assert resume.latest(out, "Student") is None
    assert "the best checkpoint" in caplog.text and "training starts over" in caplog.text
    assert resume.checkpoints(out) == []
