"""Cluster to laptop: export cached logits, read them back as a predictions teacher, distil.

The round trip must be exact (the same soft targets), and a predictions teacher must sit in
an ensemble beside a model teacher through the whole pipeline: check, gate, cache, ensemble,
student, results.json, teacher table, model card and speed comparison.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from sead import ensemble, pipeline, prediction_files, report, teachers
from sead.cache import SoftLabelCache
from sead.cache import tool as cache_tool
from sead.choices import PAD_LOGIT
from sead.entry import read_entry
from sead.tasks import get_task
from sead.teachers import predictions, teacher_specs
from tests.helpers import compose

RNG = np.random.default_rng(0)


def _dataset(task_name: str) -> Dataset:
    if task_name == "record":  # one row per query, as many choices as candidate entities
        return Dataset.from_dict(
            {
                "idx": [{"passage": 0, "query": q} for q in (4, 1, 7)],
                "entities": [["a", "b"], ["a", "b", "c"], ["a"]],
            }
        )
    return Dataset.from_dict({"idx": [4, 1, 7, 2], "label": [0, 1, 0, 1]})


def _cached(root: Path, task_name: str, ds: Dataset) -> np.ndarray:
    """A model teacher's cached validation logits, as a GPU run would have left them."""
    task = get_task(task_name)
    ids = np.array([i["query"] if isinstance(i, dict) else i for i in ds["idx"]])
    width = 3 if task_name == "record" else task.num_labels
    logits = RNG.normal(size=(len(ids), width)).astype(np.float32)
    if task.is_regression:  # scores on the task's own scale (stsb: 0-5)
        logits = RNG.uniform(0, 5, size=(len(ids), width)).astype(np.float32)
    if task_name == "record":
        logits[0, 2] = logits[2, 1:] = PAD_LOGIT
    key = {"model": "big-model", "task": task_name, "split": "validation"}
    about = {"teacher": "big"}
    SoftLabelCache(root).get_or_compute(key, ids, lambda partial: logits, about)
    return logits


@pytest.mark.parametrize("suffix", [".jsonl", ".npy", ".safetensors"])
@pytest.mark.parametrize("task_name", ["sst2", "mnli", "boolq", "stsb", "copa", "record"])
def test_export_then_import_gives_identical_soft_targets(tmp_path, capsys, suffix, task_name):
    task, ds = get_task(task_name), _dataset(task_name)
    logits = _cached(tmp_path / "logits", task_name, ds)
    out = tmp_path / f"big{suffix}"
    args = ["--root", str(tmp_path / "logits"), "export", "--teacher", "big", "-o", str(out)]
    assert cache_tool.main(args) == 0
    printed = capsys.readouterr().out
    fmt = "score" if task.is_regression else "logits"
    assert f"format {fmt}" in printed and f"format: {fmt}" in printed  # the config to use
    config = OmegaConf.create(printed.split(f"(task {task_name})\n", 1)[1])  # the file, as is
    assert config.big_files.predictions == {"validation": str(out.resolve())}
    if task.kind == "classification":  # boolq's False, True: strings, not YAML booleans
        assert list(config.big_files.labels) == list(task.labels)
    [spec] = teacher_specs(config, task)
    imported, _ = predictions.read_logits(spec, task, "validation", ds)
    np.testing.assert_array_equal(imported, logits)
    if not task.is_regression:
        combine = ensemble.build(OmegaConf.create({"name": "mean_logits"}), task, ["big"]).combine
        np.testing.assert_array_equal(combine(imported[None], 2.0), combine(logits[None], 2.0))


def test_export_a_folder_and_refuse_an_ambiguous_file(tmp_path, capsys):
    ds = _dataset("sst2")
    _cached(tmp_path / "logits", "sst2", ds)
    _cached(tmp_path / "logits", "stsb", ds)
    root = ["--root", str(tmp_path / "logits"), "export", "--teacher", "big"]
    with pytest.raises(SystemExit, match="2 entries match, one file"):
        cache_tool.main([*root, "-o", str(tmp_path / "one.jsonl")])
    assert cache_tool.main([*root, "-o", str(tmp_path / "out"), "--format", "npy"]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "big-sst2-validation.idx.npy",
        "big-sst2-validation.npy",
        "big-stsb-validation.idx.npy",
        "big-stsb-validation.npy",
    ]
    with pytest.raises(SystemExit, match="Name entries to export"):
        cache_tool.main(["--root", str(tmp_path / "logits"), "export", "-o", str(tmp_path / "x")])
    # Two entries for one teacher, task and split: refused before any file is written.
    key = {"model": "big-model-v2", "task": "sst2", "split": "validation"}
    SoftLabelCache(tmp_path / "logits").get_or_compute(
        key,
        np.array([4, 1, 7, 2]),
        lambda partial: np.zeros((4, 2), np.float32),
        {"teacher": "big"},
    )
    with pytest.raises(SystemExit, match="Two entries for teacher big, task sst2, split valid"):
        cache_tool.main([*root, "-o", str(tmp_path / "ambiguous")])
    assert not (tmp_path / "ambiguous").exists()
    capsys.readouterr()


def demo_cfg(assets, tmp_path, teacher, *overrides, output="run"):
    """`experiment=demo` on the tiny assets with one model teacher (the other overrides the
    `tiny_cfg` fixture sets need both demo teachers)."""
    return compose(
        [
            "experiment=demo",
            f"paths.demo_dir={assets}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "train.epochs=1",
            f"teachers=[{teacher}]",
            f"teachers.{teacher}.finetune_args.epochs=1",
            "teacher_gate=false",
            *overrides,
        ],
        output_dir=str(tmp_path / output),
    )


@pytest.mark.slow
def test_model_teacher_beside_predictions_of_another_model(tiny_assets, tmp_path, capsys):
    """toy_roberta runs on the "GPU machine" and is exported; on the "laptop" its files join
    toy_bert, a model sead fine-tunes there, in one ensemble that a student learns from."""
    gpu = demo_cfg(tiny_assets, tmp_path, "toy_roberta", "stage=teachers", output="gpu")
    on_gpu = pipeline.prepare_teachers(gpu)
    exported = tmp_path / "exported"
    export = ["export", "--teacher", "toy_roberta", "-o", str(exported)]
    assert cache_tool.main(["--root", gpu.paths.logits_dir, *export]) == 0
    capsys.readouterr()
    files = {s: exported / f"toy_roberta-sst2-{s}.jsonl" for s in ("train", "validation")}
    teacher = (
        f"+teachers.roberta_files={{predictions: {{train: {files['train']}, validation: "
        f"{files['validation']}}}, format: logits, labels: [negative, positive]}}"
    )
    laptop = demo_cfg(
        tiny_assets,
        tmp_path,
        "toy_bert",
        teacher,
        f"paths.cache_dir={tmp_path / 'laptop'}",
        "report.speed_samples=16",
        output="laptop",
    )
    results = pipeline.run(laptop)

    record = results["teachers"]["roberta_files"]
    assert record["origin"] == "predictions" and record["params"] is None
    assert record["metrics"] == on_gpu["teachers"]["toy_roberta"]["metrics"]  # the same logits
    for split, path in files.items():
        sha = prediction_files.content_hash(path)
        assert record["predictions"]["files"][split] == {"path": str(path), "sha256": sha}
        gpu_fingerprint = on_gpu["teachers"]["toy_roberta"]["cache"][split]
        gpu_entry = read_entry(Path(gpu.paths.logits_dir) / gpu_fingerprint)
        laptop_entry = read_entry(Path(laptop.paths.logits_dir) / record["cache"][split])
        np.testing.assert_array_equal(laptop_entry[1], gpu_entry[1])  # the exact soft labels
    assert results["teachers"]["toy_bert"]["origin"] != "predictions"
    assert results["speed"]["skipped"] == {"roberta_files": "predictions file: no model to time"}
    assert set(results["speed"]["speedup"]) == {"toy_bert"}
    table = report.teacher_table(results)
    sha = record["predictions"]["files"]["validation"]["sha256"]
    assert f"predictions ...sst2-validation.jsonl {sha[:8]}" in table  # file name's tail, hash
    assert "predictions file" in table
    card = (Path(laptop.paths.output_dir) / "student" / "README.md").read_text()
    assert f"sha256:{sha[:12]}" in card and "Not timed: teacher roberta_files" in card
    saved = json.loads((Path(laptop.paths.output_dir) / "results.json").read_text())
    assert saved["teachers"]["roberta_files"]["predictions"]["format"] == "logits"

    laptop_again = f"paths.cache_dir={tmp_path / 'laptop'}"
    again = pipeline.run(demo_cfg(tiny_assets, tmp_path, "toy_bert", teacher, laptop_again))
    assert all(again["teachers"]["roberta_files"]["cache_hit"].values())


def test_a_bad_file_stops_the_run_at_the_check(tiny_assets, tmp_path, monkeypatch):
    """Nothing is fine-tuned, computed or trained before the files are checked."""
    import sead.teachers.store

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the files were checked")

    monkeypatch.setattr(sead.teachers.store, "finetune", forbidden)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"idx": 0, "probs": [0.2, 0.2]}\n')
    teacher = (
        f"+teachers.judge={{predictions: {{train: {bad}, validation: {bad}}}, "
        f"format: probs, labels: [negative, positive]}}"
    )
    with pytest.raises(prediction_files.PredictionFileError, match=r"bad.jsonl: its ids"):
        pipeline.run(demo_cfg(tiny_assets, tmp_path, "toy_bert", teacher))


def test_a_file_teacher_is_gated_before_a_model_teacher_is_fine_tuned(
    tiny_assets, tmp_path, monkeypatch
):
    """A file teacher listed after a model teacher (as in `teachers=[minilm,gpt_judge]`)
    needs no model for its gate: swapped columns stop the run before any fine-tuning."""
    import sead.teachers.store

    def forbidden(*args, **kwargs):
        raise AssertionError("a model teacher was fine-tuned before the file teacher's gate")

    monkeypatch.setattr(sead.teachers.store, "finetune", forbidden)
    files = {}
    for split in ("train", "validation"):
        rows = [
            json.loads(line)
            for line in (tiny_assets / "data" / "sst2_toy" / f"{split}.jsonl").open()
        ]
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text(
            "".join(json.dumps({"idx": r["idx"], "label": r["label"]}) + "\n" for r in rows)
        )
    teacher = (
        f"+teachers.judge={{predictions: {{train: {files['train']}, validation: "
        f"{files['validation']}}}, format: label, labels: [positive, negative]}}"  # swapped
    )
    cfg = demo_cfg(tiny_assets, tmp_path, "toy_bert", teacher, "teacher_gate=true")
    with pytest.raises(teachers.TeacherBelowFloor, match="judge"):
        pipeline.run(cfg)
