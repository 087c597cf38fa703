"""metrics.jsonl and `train.report_to`: tracking that needs no service."""

import json
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

import sead.teachers
from sead import pipeline
from sead.distill import report_to
from sead.tracking import MetricsLog
from tests.helpers import compose


def test_metrics_log_writes_config_trainer_logs_and_results(tmp_path):
    log = MetricsLog(tmp_path)
    log.config(compose(["train.lr=0.001"]))
    callback = log.callback()
    state = TrainerState(global_step=5)
    args = TrainingArguments(output_dir=str(tmp_path / "t"), report_to="none")
    callback.on_log(args, state, TrainerControl(), logs={"loss": 0.5, "learning_rate": 1e-3})
    log.write("results", student={"accuracy": float("nan")})
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["config", "train", "results"]
    assert lines[0]["config"]["train"]["lr"] == 0.001
    assert lines[1]["step"] == 5 and lines[1]["loss"] == 0.5
    assert lines[2]["student"] == {"accuracy": None}  # NaN is not JSON: written as null
    log.config(compose())  # a rerun in the same folder starts the file afresh
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_metrics_log_of_a_non_main_rank_writes_nothing(tmp_path):
    log = MetricsLog(tmp_path, enabled=False)
    log.config(compose())
    assert not (tmp_path / "metrics.jsonl").exists()


def test_report_to_passes_through_to_the_trainer(monkeypatch):
    import transformers.integrations

    installed = ["tensorboard", "wandb", "mlflow"]
    monkeypatch.setattr(
        transformers.integrations, "get_available_reporting_integrations", lambda: installed
    )
    assert compose().train.report_to == "none"
    assert report_to(compose().train) == []
    assert report_to(compose(["train.report_to=tensorboard"]).train) == ["tensorboard"]
    assert report_to(compose(["train.report_to=[wandb,mlflow]"]).train) == ["wandb", "mlflow"]


def test_report_to_a_tracker_that_is_not_installed_fails_early(monkeypatch):
    import transformers.integrations

    monkeypatch.setattr(
        transformers.integrations, "get_available_reporting_integrations", lambda: []
    )
    with pytest.raises(ValueError, match=r"the package of \['wandb'\] is not installed"):
        report_to(compose(["train.report_to=wandb"]).train)
    # a typo is named as one, not as a package to install; none beside a tracker is no tracker
    with pytest.raises(ValueError, match=r"\['tensorbord'\] is not a tracker the Trainer knows"):
        report_to(compose(["train.report_to=tensorbord"]).train)
    with pytest.raises(ValueError, match=r"the package of \['wandb'\] is not installed"):
        report_to(compose(["train.report_to=[none,wandb]"]).train)


def test_pipeline_checks_report_to_before_any_work(tiny_cfg, monkeypatch):
    import transformers.integrations

    monkeypatch.setattr(
        transformers.integrations, "get_available_reporting_integrations", lambda: []
    )
    monkeypatch.setattr(sead.teachers, "prepare", _never)
    with pytest.raises(ValueError, match="train.report_to"):
        pipeline.run(tiny_cfg("train.report_to=mlflow"))


def _never(*args, **kwargs):
    raise AssertionError("work started before the bad setting was caught")


@pytest.mark.slow
def test_every_epoch_logs_its_loss_and_eval_metric_however_few_steps(tiny_cfg, caplog):
    """A small task (a few dozen steps) with logging_steps far above them: still one loss
    line and the eval metric per epoch, for the teacher sead fine-tunes and for the student."""
    cfg = tiny_cfg(
        "teachers.toy_bert.finetune_args.epochs=2",
        "train.epochs=2",
        "train.logging_steps=100000",
        "data.max_train_samples=96",
        "report.speed_samples=0",
    )
    with caplog.at_level("INFO", logger="sead"):
        pipeline.run(cfg)
    for who in ("Teacher toy_bert", "Student"):
        for epoch in (1, 2):
            lines = [m for m in caplog.messages if m.startswith(f"{who}, epoch {epoch}/2: loss ")]
            assert len(lines) == 1 and "; validation accuracy=" in lines[0], caplog.messages
    metrics_file = Path(cfg.paths.output_dir) / "metrics.jsonl"
    logged = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    per_epoch = [line for line in logged if "eval_validation_accuracy" in line]
    assert [round(line["epoch"]) for line in per_epoch] == [1, 2]
