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
import sead.files
import sead.manifest
import sead.teachers.logits
import sead.teachers.store
import sead.transfer
from sead import api, data, distill, pipeline, run, teachers
from sead import cache as cache_module
from sead.cache import tool as cache_tool
from sead.tasks import get_task
from tests.helpers import compose, prepare_teacher


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
            r"train.temperature=0 is not allowed: expected a number in \[0.1, 100\]",
        ),
        ("train.temperature=1e-30", r"train.temperature=1e-30 is not allowed"),
        ("train.temperature=1000", r"train.temperature=1000 is not allowed"),
        ("teachers.toy_bert.seeds=[1,1]", r"teachers.toy_bert.seeds=\[1, 1\] repeats seed"),
        (
            "teachers.toy_bert.seeds=[1,1.5]",
            r"teachers.toy_bert.seeds\[1\]=1.5 is not allowed: expected an integer",
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
        ("train.bf16=true train.fp16=true", r"train.bf16=true and train.fp16=true: expected at"),
        (
            "teachers.toy_bert.model=models/teacher/bertt",
            r"teachers.toy_bert.model='models/teacher/bertt' \(relative to .*\) is not a dir",
        ),
        ("student.tokenizer=/nope", r"student.tokenizer='/nope' is not a directory"),
        ("teachers.toy_bert.tokenizer=/nope", r"teachers.toy_bert.tokenizer='/nope' is not a dir"),
        (
            "ensemble=learned ensemble.fit_split=heldout",
            r"ensemble.fit_split=heldout, but the run has no held-out slice: set data.heldout",
        ),
        (
            "recipe=xtremedistil data.heldout=40 recipe.stages.1.freeze=[encoderr]",
            r"stage 'soft': freeze=\['encoderr'\] matches no parameter of the student",
        ),
    ],
)
def test_bad_settings_stop_the_run_in_the_check_stage(tiny_cfg, monkeypatch, override, message):
    _forbid_training(monkeypatch)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        pipeline.run(tiny_cfg(*override.split()))


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


@pytest.mark.slow
def test_a_damaged_store_entry_is_reported_in_one_line_and_rebuilt(
    tiny_assets, tmp_path, caplog, capsys
):
    cfg = _cfg(tiny_assets, tmp_path, "[toy_bert]")
    first = prepare_teacher(cfg)
    weights = first.model_dir / "model.safetensors"
    digest = _sha(weights)
    root = Path(cfg.paths.logits_dir)
    assert cache_tool.main(["--root", str(root), "verify"]) == 0
    assert f"ok   teacher {first.model_dir.name}" in capsys.readouterr().out

    payload = bytearray(weights.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # a flipped byte, same size
    weights.write_bytes(bytes(payload))
    assert cache_tool.main(["--root", str(root), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"BAD  teacher {first.model_dir.name}: model.safetensors fails its content hash" in out
    cache_tool.main(["--root", str(root), "list"])
    assert first.model_dir.name in capsys.readouterr().out

    with caplog.at_level(logging.WARNING):
        rebuilt = prepare_teacher(cfg)
    (line,) = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert "model.safetensors fails its content hash" in line and "\n" not in line
    assert rebuilt.origin == teachers.FINETUNED and _sha(weights) == digest  # rebuilt, the same

    caplog.clear()
    (first.model_dir / "tokenizer.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert prepare_teacher(cfg).origin == teachers.FINETUNED
    assert any("tokenizer.json is missing" in r.getMessage() for r in caplog.records)
    assert prepare_teacher(cfg).origin == teachers.STORE  # intact again: reused


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


def _set_field(path: Path, line: int, **fields) -> None:
    """Set fields of one line (1-based) of a jsonl file, written back as raw JSON."""
    lines = path.read_text().splitlines()
    row = json.loads(lines[line - 1])
    lines[line - 1] = json.dumps({**row, **fields})
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "split, fields, message",
    [
        ("train", {"label": 1.0}, r"field 'label' is 1.0 \(a float\): expected an integer label"),
        ("train", {"label": True}, r"field 'label' is true \(a boolean\): expected an integer"),
        ("train", {"label": None}, r"field 'label' is null: expected an integer label id: 0 \("),
        ("validation", {"idx": 7.5}, r"field 'idx' is 7.5 \(a float\): expected an integer id"),
        ("validation", {"idx": 2**70}, r"field 'idx' is 1180591620717411303424 \(an integer\)"),
        ("train", {"label": "1"}, r"field 'label' is \"1\" \(a string\)"),
    ],
)
def test_a_mistyped_label_or_idx_is_named_by_file_line_and_field_before_any_training(
    tiny_assets, tiny_cfg, tmp_path, monkeypatch, split, fields, message
):
    _forbid_training(monkeypatch)
    folder = _data_copy(tiny_assets, tmp_path)
    _set_field(folder / f"{split}.jsonl", 5, **fields)
    where = rf"Task 'sst2', split '{split}' \({re.escape(str(folder / split))}\.jsonl\): line 5: "
    with pytest.raises(ValueError, match=where + message):
        pipeline.run(tiny_cfg(f"data.dir={folder}"))


def test_a_latin1_byte_in_a_data_file_is_named_with_its_offset(
    tiny_assets, tiny_cfg, tmp_path, monkeypatch
):
    _forbid_training(monkeypatch)
    folder = _data_copy(tiny_assets, tmp_path)
    path = folder / "validation.jsonl"
    text = path.read_text()
    at = text.index("\n") + 20  # on line 2
    path.write_bytes(text[:at].encode() + "\u00e9".encode("latin-1") + text[at:].encode())
    message = rf"Data file {re.escape(str(path))} is not UTF-8 text: byte {at} \(line 2\) is 0xe9"
    with pytest.raises(ValueError, match=message):
        pipeline.run(tiny_cfg(f"data.dir={folder}"))


def test_transfer_labels_by_name_are_read_as_ids_and_a_bad_one_is_named(tiny_cfg, tmp_path, caplog):
    path = tmp_path / "extra.csv"
    path.write_text("sentence,label\ngood film,positive\nbad film,negative\nso so,\n")
    cfg = tiny_cfg("transfer=files", f"transfer.paths=[{path}]")
    task, settings = get_task("sst2"), pipeline.read_settings(cfg)
    splits = data.load_splits(task, settings.data, ["train"])
    with caplog.at_level(logging.INFO):
        built = sead.transfer.build(settings.transfer, task, splits)
    assert built.gold.tolist()[:2] == [1.0, 0.0] and np.isnan(built.gold[2])  # empty: no label
    assert any("2 label names in column 'label'" in r.getMessage() for r in caplog.records)

    path.write_text("sentence,label\ngood film,positive\nbad film,great\n")
    message = (
        rf"Transfer data {re.escape(str(path))}: data row 2 \(from 1, the header not counted\), "
        r"column 'label' is 'great': expected a "
        r"label id 0..1 or a label name \['negative', 'positive'\] for task 'sst2'"
    )
    with pytest.raises(ValueError, match=message):
        sead.transfer.build(settings.transfer, task, splits)


@pytest.mark.parametrize(
    "content, message",
    [
        (f'{{"idx": {2**70}, "logits": [0.1, 0.2]}}\n', r"line 1: idx must be an integer that"),
        ('{"idx": 0, "logits": [0.1, 0.2]}\n{"idx": 1, "logits": "caf\u00e9"}\n', r"not UTF-8"),
    ],
)
def test_a_bad_prediction_file_is_named_in_the_check_stage(
    tiny_cfg, tmp_path, monkeypatch, content, message
):
    _forbid_training(monkeypatch)
    path = tmp_path / "judge.jsonl"
    path.write_bytes(content.encode("latin-1"))
    teacher = (
        f"+teachers.judge={{predictions: {{train: {path}, validation: {path}}}, "
        "format: logits, labels: [negative, positive]}"
    )
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*{message}"):
        pipeline.run(tiny_cfg(teacher))


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
    # what the run stored, entries and fine-tuned teachers, the rest of a team can read
    stored = [p for p in Path(cfg.paths.cache_dir).rglob("*") if not p.name.startswith(".")]
    assert any(p.is_dir() for p in stored) and any(p.is_file() for p in stored)
    assert [str(p) for p in stored if p.stat().st_mode & 0o004 == 0] == []
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


# --- 7. a cache others can write to ---------------------------------------------------------


def test_a_cache_others_can_write_to_is_warned_about(tiny_cfg, tmp_path, monkeypatch, caplog):
    _forbid_training(monkeypatch)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    monkeypatch.setattr(pipeline, "_check_distributed", _stop_after_inputs)  # after the inputs
    with caplog.at_level(logging.WARNING), pytest.raises(_InputsChecked):
        pipeline.run(tiny_cfg())
    (line,) = [r.getMessage() for r in caplog.records if "can plant" in r.getMessage()]
    assert f"paths.cache_dir={cache_dir} is world-writable (mode drwxrwxrwx)" in line

    caplog.clear()
    cache_dir.chmod(0o755)
    owner = cache_dir.stat().st_uid
    monkeypatch.setattr(sead.files.os, "geteuid", lambda: owner + 1)  # another user's folder
    with caplog.at_level(logging.WARNING), pytest.raises(_InputsChecked):
        pipeline.run(tiny_cfg())
    lines = [r.getMessage() for r in caplog.records if "can plant" in r.getMessage()]
    assert any(f"{cache_dir} is owned by another user (uid {owner})" in line for line in lines)


class _InputsChecked(Exception):
    pass


def _stop_after_inputs(*args, **kwargs):
    raise _InputsChecked


# --- 8. an earlier run's folder -------------------------------------------------------------


def _earlier_run(folder: Path) -> dict[str, bytes]:
    (folder / "student").mkdir(parents=True)
    (folder / "student" / "model.safetensors").write_bytes(b"weights")
    (folder / "results.json").write_text('{"status": "ok"}')
    (folder / "metrics.jsonl").write_text('{"event": "config"}\n')
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_run_into_an_earlier_runs_folder_is_refused_before_hydra_writes(tiny_assets, tmp_path):
    folder = tmp_path / "earlier"
    before = _earlier_run(folder)
    args = ["experiment=demo", f"paths.demo_dir={tiny_assets}", f"hydra.run.dir={folder}"]
    with pytest.raises(SystemExit, match=r"holds an earlier run \(results.json, metrics.jsonl, "):
        run.exit_if_earlier_run(args)
    run.exit_if_earlier_run([*args, "overwrite_run=true"])  # asked for: no refusal
    run.exit_if_earlier_run(["-m", *args])  # a sweep's folders are its job folders
    run.exit_if_earlier_run(args[:2] + [f"hydra.run.dir={tmp_path / 'new'}"])

    proc = subprocess.run(
        [sys.executable, "-m", "sead.run", *args, f"paths.cache_dir={tmp_path / 'cache'}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 1 and "pass overwrite_run=true" in proc.stderr
    after = {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before  # not a byte written, not even Hydra's .hydra/


def test_an_earlier_run_found_by_the_job_is_kept_or_replaced_on_request(tmp_path, monkeypatch):
    folder = tmp_path / "job"
    before = _earlier_run(folder)
    runtime = type("Runtime", (), {"output_dir": str(folder)})
    hydra_config = type("HydraConfig", (), {"runtime": runtime, "mode": run.RunMode.RUN})
    monkeypatch.setattr(run.HydraConfig, "get", staticmethod(lambda: hydra_config))
    with pytest.raises(run.EarlierRun, match=rf"hydra.run.dir={re.escape(str(folder))} holds an"):
        run._keep_earlier_run(compose(output_dir=str(folder)))
    elsewhere = tmp_path / "new"  # Hydra's new folder, but paths.output_dir the earlier run's
    runtime.output_dir = str(elsewhere)
    with pytest.raises(run.EarlierRun, match=rf"paths.output_dir={re.escape(str(folder))} holds"):
        run._keep_earlier_run(compose(output_dir=str(folder)))
    runtime.output_dir = str(folder)
    assert {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    run._keep_earlier_run(compose(["overwrite_run=true"], output_dir=str(folder)))
    assert run.earlier_run(folder) == []  # the new run starts from an empty folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _sead(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sead.run", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            **(env or {}),
        },
    )


def test_a_folder_named_any_other_way_is_refused_before_hydra_writes(tiny_assets, tmp_path):
    """An interpolated run folder, a reused sweep folder: EarlierRunCheck refuses them before
    Hydra writes `.hydra/`, a log or `multirun.yaml` there (the command line's literal
    hydra.run.dir is refused earlier still)."""
    demo = ["experiment=demo", f"paths.demo_dir={tiny_assets}", f"paths.cache_dir={tmp_path}/c"]
    folder = tmp_path / "earlier"
    before = _earlier_run(folder)
    proc = _sead(*demo, "hydra.run.dir=${oc.env:EARLIER}", env={"EARLIER": str(folder)})
    assert proc.returncode == 1 and f"hydra.run.dir={folder} holds an earlier run" in proc.stderr
    assert "Traceback" not in proc.stderr and _files(folder) == before

    sweep = tmp_path / "sweep"
    job_before = _earlier_run(sweep / "0")
    (sweep / "multirun.yaml").write_text("the earlier sweep's\n")
    proc = _sead("-m", *demo, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"hydra.sweep.dir={sweep} holds an earlier run (metrics.jsonl, results.json" in (
        proc.stderr
    )
    assert (sweep / "multirun.yaml").read_text() == "the earlier sweep's\n"
    assert _files(sweep / "0") == job_before


def test_overwrite_run_replaces_the_earlier_run_and_its_log(tmp_path):
    folder = tmp_path / "earlier"
    _earlier_run(folder)
    (folder / "run.log").write_text("the earlier run's log\n")
    (folder / "notes.txt").write_text("the user's own\n")
    config = api.compose(
        ["overwrite_run=true", f"hydra.run.dir={folder}"], return_hydra_config=True
    )
    run.EarlierRunCheck().on_run_start(config)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_rerun_into_its_own_folder_is_refused_with_the_way_to_run_it_again(tmp_path):
    folder = tmp_path / "earlier"
    _earlier_run(folder)
    (folder / ".hydra").mkdir()
    pickled = folder / ".hydra" / "config.pickle"
    with pytest.raises(SystemExit, match=r"Hydra takes no overrides with a rerun"):
        run.exit_if_earlier_run(["--experimental-rerun", str(pickled)])


def test_two_sweeps_started_at_once_get_their_own_folders():
    """As runs do: microseconds and the process's random id (a new one here, as another
    process would draw), resolved once per config, so a sweep's jobs share its folder."""
    import sead

    config = api.compose(return_hydra_config=True)
    folder = str(config.hydra.sweep.dir)
    assert folder == str(config.hydra.sweep.dir)  # cached: every job resolves the same
    sead.new_run_id()
    other = str(api.compose(return_hydra_config=True).hydra.sweep.dir)
    assert folder.startswith("multirun/") and other.rsplit("-", 1)[1] != folder.rsplit("-", 1)[1]


def test_relative_paths_are_the_launch_directorys_with_hydra_job_chdir(tiny_assets, tmp_path):
    """hydra.job.chdir=true moves the job into its run folder; sead still reads relative
    paths from where it was launched (Hydra's to_absolute_path convention)."""
    (tmp_path / "demo").symlink_to(tiny_assets)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("SEAD_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sead.run", "experiment=demo", "paths.demo_dir=demo",
         "stage=teachers", "teacher_gate=false", "teachers.toy_bert.finetune_args.epochs=1",
         "teachers.toy_roberta.finetune_args.epochs=1", "hydra.run.dir=run",
         "hydra.job.chdir=true"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "teachers.json").is_file()
    assert (tmp_path / "cache" / "logits").is_dir() and not (tmp_path / "run" / "cache").exists()


def test_the_outputs_that_mark_an_earlier_run_are_the_ones_each_stage_writes():
    """`sead.run` writes the names out (it must not import the stages to start); they are
    the stages' own constants."""
    from sead import export, pipeline, report, tracking

    written = {report.RESULTS_FILE, pipeline.TEACHERS_FILE, run.ENSEMBLE_FILE}
    written |= {tracking.METRICS_FILE, "student", export.ONNX_DIR, export.INT8_DIR}
    assert set(run.RUN_OUTPUTS) == written | {export.EXPORT_FILE}
