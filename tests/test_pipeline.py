"""The whole pipeline on tiny models: outputs, cache reuse, reproducibility, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sead.distill
import sead.teachers.logits
import sead.teachers.store
from sead import pipeline, toy

pytestmark = pytest.mark.slow
SHARED_SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "sst2"


@pytest.fixture
def forward_passes(monkeypatch):
    """Counts teacher inference calls (each one is a full pass over a split)."""
    calls = []
    real = sead.teachers.logits.predict

    def counting(*args, **kwargs):
        calls.append(kwargs.get("desc") or args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(sead.teachers.logits, "predict", counting)
    return calls


def test_end_to_end_writes_results_and_second_run_reuses_the_cache(tiny_cfg, forward_passes):
    first = pipeline.run(tiny_cfg(output="run1"))
    out = Path(tiny_cfg(output="run1").paths.output_dir)
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"task", "teachers", "ensemble", "student", "timings_s", "cache"}
    assert list(results["teachers"]) == ["toy_bert", "toy_roberta"]
    for teacher in results["teachers"].values():
        assert teacher["finetuned_now"] and teacher["params"] > 0
        assert 0 <= teacher["metrics"]["validation"]["accuracy"] <= 1
    assert "accuracy" in results["ensemble"]["metrics"]["validation"]
    assert results["student"]["params"] > 0
    assert "accuracy" in results["student"]["metrics"]["validation"]
    assert (out / "student" / "model.safetensors").is_file()
    assert (out / "student" / "tokenizer_config.json").is_file()
    assert (out / "config.yaml").is_file()
    # 2 teachers x train; their validation logits are their last epoch's evaluation
    assert forward_passes == ["Teacher toy_bert on train", "Teacher toy_roberta on train"]
    # Everything was computed in this run (eval logits while fine-tuning, read back after).
    assert (first["cache"]["hits"], first["cache"]["misses"]) == (0, 4)
    assert not any(any(t["cache_hit"].values()) for t in first["teachers"].values())

    forward_passes.clear()
    second = pipeline.run(tiny_cfg(output="run2"))
    assert forward_passes == []  # no teacher ran
    assert second["cache"] == {**first["cache"], "hits": 4, "misses": 0}
    assert not any(t["finetuned_now"] for t in second["teachers"].values())
    assert second["student"]["metrics"] == first["student"]["metrics"]  # same seed, same result


def test_unknown_task_stops_before_any_work(tiny_cfg, monkeypatch):
    _forbid_training(monkeypatch)
    with pytest.raises(ValueError, match="Unknown task 'nope': expected one of .*sst2"):
        pipeline.run(tiny_cfg("task.name=nope"))


def test_teacher_without_checkpoint_for_task(tiny_cfg, monkeypatch):
    _forbid_training(monkeypatch)
    cfg = tiny_cfg("teachers.toy_bert.finetune=false", "+teachers.toy_bert.checkpoints={rte: x}")
    with pytest.raises(ValueError, match="'toy_bert' has no checkpoint for task 'sst2'.*rte"):
        pipeline.run(cfg)


def test_teacher_with_wrong_number_of_labels(tiny_cfg, tiny_assets, tmp_path, monkeypatch):
    _forbid_training(monkeypatch)
    three_way = tmp_path / "three_way"
    toy.build_tokenizer("wordpiece", three_way)
    toy.build_tiny_model("bert", three_way, three_way, num_labels=3)
    cfg = tiny_cfg(
        "teachers.toy_bert.finetune=false",
        f"+teachers.toy_bert.checkpoints={{sst2: '{three_way}'}}",
    )
    with pytest.raises(ValueError, match="'toy_bert'.*predicts 3 labels.*'sst2' has 2"):
        pipeline.run(cfg)


def test_missing_field_and_bad_label_stop_before_training(tiny_cfg, tmp_path, monkeypatch):
    _forbid_training(monkeypatch)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"sentence": "good", "label": 1, "idx": 0}\n')
    (data / "validation.jsonl").write_text('{"text": "bad", "label": 0, "idx": 0}\n')
    with pytest.raises(ValueError, match="no field 'sentence'"):
        pipeline.run(tiny_cfg(f"data.dir={data}"))
    (data / "validation.jsonl").write_text('{"sentence": "bad", "label": 7, "idx": 0}\n')
    with pytest.raises(ValueError, match=r"label value\(s\) \[7\]"):
        pipeline.run(tiny_cfg(f"data.dir={data}"))


def _forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started before the bad input was caught")

    monkeypatch.setattr(sead.teachers.store, "finetune", fail)
    monkeypatch.setattr(sead.distill, "distill", fail)


def test_two_job_multirun_shares_the_cache(tiny_assets, tmp_path):
    sweep_dir = tmp_path / "multirun"
    cmd = [
        sys.executable,
        "-m",
        "sead.run",
        "-m",
        "experiment=demo",
        f"paths.demo_dir={tiny_assets}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "teachers=[toy_bert],[toy_bert,toy_roberta]",
        "train.epochs=1",
        "data.max_train_samples=60",
        "data.max_eval_samples=40",
        "teacher_gate=false",  # teachers trained on 60 examples are near chance
        f"hydra.sweep.dir={sweep_dir}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [json.loads((sweep_dir / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert [list(job["teachers"]) for job in jobs] == [["toy_bert"], ["toy_bert", "toy_roberta"]]
    assert jobs[0]["cache"]["misses"] == 2
    assert jobs[1]["teachers"]["toy_bert"]["cache_hit"] == {"train": True, "validation": True}
    assert not jobs[1]["teachers"]["toy_bert"]["finetuned_now"]


@pytest.mark.skipif(not SHARED_SST2.is_dir(), reason=f"real GLUE data not found at {SHARED_SST2}")
def test_pipeline_on_real_sst2_rows(tiny_cfg):
    cfg = tiny_cfg(
        f"data.dir={SHARED_SST2}", "data.max_train_samples=200", "data.max_eval_samples=100"
    )
    results = pipeline.run(cfg)
    assert results["n_examples"] == {"train": 200, "validation": 100}
    assert 0 <= results["student"]["metrics"]["validation"]["accuracy"] <= 1
