"""sead.export: a tiny student exported to ONNX fp32 and int8, checked, timed, and refused when a
check fails; regression and multiple-choice students; the card's deployment table."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification

from sead import card, data, export, inference, manifest, report
from sead.config import build
from sead.tasks import get_task
from tests.helpers import settings as group_settings
from tests.test_card import _results

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FIXTURES = Path(__file__).parent / "fixtures" / "super_glue"
QUICK = {"speed_samples": 8, "passes": 1, "threads": 1, "batch_size": 4}


def settings(**overrides):
    merged = OmegaConf.merge(export.default_settings(), QUICK, overrides)
    return build(export.ExportSettings, merged, "export")


def make_student(tiny_assets, run_dir: Path, model_class=AutoModelForSequenceClassification, **kw):
    """A run folder with the tiny student (random head) saved as `student/`."""
    source = tiny_assets / "models" / "student"
    model = model_class.from_pretrained(source, **kw)
    model.save_pretrained(run_dir / "student")
    for file in source.iterdir():
        if "token" in file.name or file.name == "vocab.txt":
            (run_dir / "student" / file.name).write_bytes(file.read_bytes())
    return run_dir / "student"


def toy_split(tiny_assets, n=40):
    task = get_task("sst2")
    folder = str(tiny_assets / "data" / "sst2_toy")
    data_settings = group_settings("data", dir=folder, max_eval_samples=n)
    return task, data.load_splits(task, data_settings, ["validation"])["validation"]


@pytest.fixture
def student(tiny_assets, tmp_path):
    return make_student(tiny_assets, tmp_path / "run", num_labels=2)


def test_fp32_and_int8_exports_load_match_and_are_timed(tiny_assets, student):
    import onnxruntime

    task, split = toy_split(tiny_assets)
    run_dir = student.parent
    with inference.torch_threads(2):  # export times on 1 (QUICK), then gives the run its 2 back
        record = export.export_student(
            student, run_dir, task, split, "validation", 64, settings(max_metric_drop=100)
        )
        assert torch.get_num_threads() == 2
    for folder in ("onnx", "onnx-int8"):
        files = {p.name for p in (run_dir / folder).iterdir()}
        assert {"model.onnx", "config.json", "tokenizer_config.json"} <= files
    assert not (run_dir / ".export-tmp").exists()
    # A plain InferenceSession reproduces PyTorch's logits, with dynamic batch and length.
    model = AutoModelForSequenceClassification.from_pretrained(student).eval()
    tokenizer = export.AutoTokenizer.from_pretrained(run_dir / "onnx")
    texts = ["a good film", "not a good film at all , honestly", "dull"]
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    session = onnxruntime.InferenceSession(str(run_dir / "onnx" / "model.onnx"))
    names = [i.name for i in session.get_inputs()]
    onnx_logits = session.run(None, {n: inputs[n].numpy() for n in names})[0]
    np.testing.assert_allclose(onnx_logits, model(**inputs).logits.detach().numpy(), atol=1e-4)

    assert record["equivalence"]["max_abs_diff"] <= 1e-4 == record["equivalence"]["atol"]
    assert record["exporter"].startswith("torch.onnx.export")
    formats = record["formats"]
    assert list(formats) == ["pytorch fp32", "onnx fp32", "onnx int8"]
    assert formats["onnx int8"]["size_bytes"] < formats["onnx fp32"]["size_bytes"]
    assert formats["onnx fp32"]["metrics"] == formats["pytorch fp32"]["metrics"]
    assert "metric_drop" in formats["onnx int8"]
    for entry in formats.values():
        assert entry["latency_ms"]["p50"] > 0 and entry["throughput"] > 0
    assert formats["pytorch fp32"]["speedup"] == 1.0
    assert record["threads"] == 1 and record["speed"]["examples"] == 8


def test_a_thread_count_is_given_back_even_when_the_block_fails():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="failed inside"), inference.torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("failed inside")
    assert torch.get_num_threads() == before
    with inference.torch_threads(None):  # export.threads=null: torch's own count
        assert torch.get_num_threads() == before


def test_the_shipped_graphs_are_fused_and_still_match_pytorch(tiny_assets, student):
    """Attention, skip layer norm and bias GELU each run as one ONNX Runtime kernel (int8:
    QAttention), and the fused fp32 graph still passes the logit check against PyTorch."""
    import onnx

    task, split = toy_split(tiny_assets)
    record = export.export_student(
        student, student.parent, task, split, "validation", 64, settings(max_metric_drop=100)
    )
    layers = AutoModelForSequenceClassification.from_pretrained(student).config.num_hidden_layers
    assert record["fusion"]["Attention"] == layers
    assert record["fusion"]["SkipLayerNormalization"] == 2 * layers
    assert record["fusion"]["BiasGelu"] == layers
    assert "fused by onnxruntime.transformers.optimizer" in record["exporter"]
    assert record["equivalence"]["max_abs_diff"] <= 1e-4
    ops = {
        folder: {n.op_type for n in onnx.load(student.parent / folder / "model.onnx").graph.node}
        for folder in ("onnx", "onnx-int8")
    }
    assert "Attention" in ops["onnx"] and "Softmax" not in ops["onnx"]
    assert "QAttention" in ops["onnx-int8"]


def test_fuse_false_ships_the_graph_as_exported(tiny_assets, student):
    import onnx

    task, split = toy_split(tiny_assets)
    record = export.export_student(
        student, student.parent, task, split, "validation", 64,
        settings(max_metric_drop=100, fuse=False),
    )  # fmt: skip
    assert "fusion" not in record and "fused" not in record["exporter"]
    ops = {n.op_type for n in onnx.load(student.parent / "onnx" / "model.onnx").graph.node}
    assert "Attention" not in ops and "Softmax" in ops


def test_deviating_logits_refuse_the_export_naming_the_largest(tiny_assets, student):
    task, split = toy_split(tiny_assets, n=8)
    with pytest.raises(export.ExportError, match=r"largest \|logit difference\|.*example idx"):
        export.export_student(
            # a bound below any difference (past the range check, which refuses it by name)
            student,
            student.parent,
            task,
            split,
            "validation",
            64,
            replace(settings(), atol=-1),
        )
    assert not (student.parent / "onnx").exists() and not (student.parent / "onnx-int8").exists()


def test_int8_metric_drop_over_the_bound_refuses_the_export(tiny_assets, student, monkeypatch):
    task, split = toy_split(tiny_assets, n=8)
    monkeypatch.setattr(export, "metric_drop", lambda *args: 30.0)  # 3 of the 8 examples
    refused = r"onnx int8 model loses 30.00 .*\(export\.max_metric_drop=1, or two of its 8 ex"
    with pytest.raises(export.ExportError, match=refused):
        export.export_student(
            student, student.parent, task, split, "validation", 64, settings(max_metric_drop=1)
        )
    assert not (student.parent / "onnx-int8").exists() and not (student.parent / "onnx").exists()
    monkeypatch.setattr(export, "metric_drop", lambda *args: 25.0)  # two examples: noise
    export.export_student(
        student, student.parent, task, split, "validation", 64, settings(max_metric_drop=1)
    )


def test_an_export_refused_at_the_end_of_a_run_is_recorded_not_a_failed_run(monkeypatch):
    def refuse(*args):
        raise export.ExportError("The onnx int8 model loses 3.00 points. Not shipped.")

    monkeypatch.setattr(export, "export_run", refuse)
    record = export.export_after_run(settings(), get_task("sst2"))
    assert record == {
        "status": "refused",
        "reason": "The onnx int8 model loses 3.00 points. Not shipped.",
    }
    from sead import report

    results = {"main_metric": "accuracy", "teachers": {}, "export": record}
    assert report.warnings(results) == [f"Export refused: {record['reason']}"]


def test_missing_packages_name_the_extra_or_fall_back_to_pytorch_int8(
    tiny_assets, student, monkeypatch
):
    monkeypatch.setattr(export, "onnx_available", lambda: False)
    with pytest.raises(export.ExportError, match=r"pip install -e '\.\[export\]'"):
        export.backend(settings(backend="onnx"))
    task, split = toy_split(tiny_assets, n=8)
    record = export.export_student(
        student, student.parent, task, split, "validation", 64, settings(max_metric_drop=100)
    )
    assert record["backend"] == "torch"
    assert list(record["formats"]) == ["pytorch fp32", "pytorch int8"]
    assert not (student.parent / "onnx").exists()


def test_regression_student_exports(tiny_assets, tmp_path):
    task = get_task("stsb")
    student = make_student(tiny_assets, tmp_path / "run", num_labels=1, problem_type="regression")
    rng = np.random.default_rng(0)
    words = ["good", "film", "dull", "plot", "not", "a", "great", "story"]
    split = Dataset.from_dict(
        {
            "sentence1": [" ".join(rng.choice(words, 5)) for _ in range(12)],
            "sentence2": [" ".join(rng.choice(words, 4)) for _ in range(12)],
            "label": rng.uniform(0, 5, 12).tolist(),
            "idx": list(range(12)),
        }
    )
    record = export.export_student(
        student, student.parent, task, split, "validation", 64, settings(max_metric_drop=1000)
    )
    assert record["main_metric"] == "pearson"
    assert record["equivalence"]["max_abs_diff"] <= 1e-4


def test_multiple_choice_student_exports_with_a_choice_axis(tiny_assets, tmp_path):
    import onnxruntime

    task = get_task("copa")
    student = make_student(tiny_assets, tmp_path / "run", AutoModelForMultipleChoice)
    split = data.load_splits(
        task, group_settings("data", dir=str(FIXTURES / "copa")), ["validation"]
    )
    record = export.export_student(
        student, student.parent, task, split["validation"], "validation", 64,
        settings(max_metric_drop=1000),
    )  # fmt: skip
    assert record["equivalence"]["max_abs_diff"] <= 1e-4
    session = onnxruntime.InferenceSession(str(student.parent / "onnx" / "model.onnx"))
    assert len(session.get_inputs()[0].shape) == 3  # [batch, choices, length]


def exported_results():
    results = _results()
    results["export"] = {
        "split": "validation_matched",
        "examples": 98,
        "threads": 2,
        "main_metric": "accuracy",
        "backend": "onnx",
        "equivalence": {"atol": 1e-4, "max_abs_diff": 2.5e-6},
        "speed": {"batch_size": 32, "examples": 40},
        "formats": {
            name: {
                "size_bytes": size,
                "metrics": {"accuracy": accuracy},
                "latency_ms": {"p50": p50, "p95": 2 * p50},
                "throughput": rate,
                "speedup": rate / 400.0,
                **({"metric_drop": drop} if drop is not None else {}),
            }
            for name, size, accuracy, p50, rate, drop in [
                ("pytorch fp32", 52_000_000, 0.8012, 4.0, 400.0, None),
                ("onnx fp32", 52_100_000, 0.8012, 3.0, 600.0, None),
                ("onnx int8", 13_500_000, 0.7990, 1.5, 1000.0, 0.22),
            ]
        },
    }
    return results


def test_card_has_the_deployment_table(tmp_path):
    results = exported_results()
    report_settings = group_settings("report")
    text = card.write_model_card(results, report_settings, tmp_path, max_length=128).read_text()
    assert "## Deployment" in text and "2.5e-06" in text
    assert "| onnx int8 | 12.9 MiB | 79.90 (-0.22) | 1.50 | 1,000 (2.50x) |" in text
    assert "| pytorch fp32 | 49.6 MiB | 80.12 | 4.00 | 400 (1.00x) |" in text
    # the metric on the whole split, the speed on the examples timed
    assert "accuracy on the 98 validation_matched examples; speed on 40 of them" in text
    assert "beside `student/` (not uploaded with it)" in text and "onnx-int8/model.onnx" in text
    # no ONNX folders to describe where the torch backend wrote none
    results["export"]["backend"] = "torch"
    text = card.write_model_card(results, report_settings, tmp_path, max_length=128).read_text()
    assert "## Deployment" in text and "onnx-int8" not in text


@pytest.mark.slow
def test_run_exports_at_its_end_and_the_command_reexports(tiny_cfg):
    cfg = tiny_cfg("export=onnx", "export.max_metric_drop=100", "export.speed_samples=8")
    from sead import pipeline

    results = pipeline.run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert set(results["export"]["formats"]) == {"pytorch fp32", "onnx fp32", "onnx int8"}
    assert "## Deployment" in (run_dir / "student" / "README.md").read_text()
    assert json.loads((run_dir / "results.json").read_text())["export"]["backend"] == "onnx"

    (run_dir / "onnx").rename(run_dir / "old-onnx")
    export.main([str(run_dir / "student"), "max_metric_drop=100", "speed_samples=4", "passes=1"])
    assert (run_dir / "onnx" / "model.onnx").is_file()
    assert json.loads((run_dir / "results.json").read_text())["export"]["speed"]["examples"] == 4
    # a bad setting is refused by name, as the command spells it, before any export work
    with pytest.raises(SystemExit, match=r"Export refused: .*atol=-1 is not allowed"):
        export.main([str(run_dir), "atol=-1"])
    with pytest.raises(SystemExit, match=r"Export refused: export.split='valdation': expected"):
        export.main([str(run_dir), "split=valdation"])
    with pytest.raises(SystemExit, match=r"(?s)unknown key\(s\) \['export'\].*sead export RUN"):
        export.main([str(run_dir), "export.backend=torch"])


def test_sweep_report_has_each_format_metric_and_speedup(tmp_path):
    path = tmp_path / "job" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(exported_results()))
    (row,) = report.job_rows([path])
    assert row["student onnx int8"] == 0.7990 and row["speedup onnx int8"] == 2.5
    assert "student pytorch fp32" not in row


# --- a damaged student is never shipped -----------------------------------------------------


def _flip(path: Path, n_bytes: int, at: int | None = None) -> None:
    payload = bytearray(path.read_bytes())
    start = len(payload) // 2 if at is None else at
    for i in range(start, start + n_bytes):
        payload[i] ^= 0xFF
    path.write_bytes(bytes(payload))


def test_a_student_that_no_longer_matches_its_manifest_is_not_exported(tiny_assets, student):
    task, split = toy_split(tiny_assets)
    manifest.write(student)  # as the run saves it
    _flip(student / "model.safetensors", 4096)  # header intact, same size
    with pytest.raises(export.ExportError, match=r"damaged: model.safetensors fails its content"):
        export.export_student(student, student.parent, task, split, "validation", 64, settings())
    assert not (student.parent / "onnx").exists()


def test_a_damaged_header_is_named_not_a_raw_safetensor_error(tiny_assets, student):
    task, split = toy_split(tiny_assets)
    _flip(student / "model.safetensors", 8, at=0)  # the header's length: unreadable
    refused = r"student in .* cannot be loaded \(SafetensorError: .*\): a damaged or incomplete"
    with pytest.raises(export.ExportError, match=refused):
        export.export_student(student, student.parent, task, split, "validation", 64, settings())


def test_a_student_far_from_its_runs_recorded_score_is_refused(tiny_assets, student):
    task, split = toy_split(tiny_assets)
    record = export.export_student(
        student, student.parent, task, split, "validation", 64, settings(max_metric_drop=100)
    )
    score = record["formats"]["pytorch fp32"]["metrics"]["accuracy"]
    near = {"validation": {"accuracy": score + 0.004}}  # 0.4 points: within 1
    record = export.export_student(
        student, student.parent, task, split, "validation", 64, settings(max_metric_drop=100), near
    )
    assert record["formats"]["pytorch fp32"]["gap"] == pytest.approx(0.4)
    far = {"validation": {"accuracy": score - 0.4 if score >= 0.4 else score + 0.4}}
    refused = r"scores accuracy .* recorded .*gap=1, or two of its 40 examples\): .*replaced"
    with pytest.raises(export.ExportError, match=refused):
        export.export_student(
            student, student.parent, task, split, "validation", 64, settings(), far
        )


def test_export_of_a_failed_run_names_the_missing_student(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("task: {name: sst2}\n")
    failure = {"status": "failed", "error": {"type": "ValueError", "message": "bad label"}}
    (run_dir / "results.json").write_text(json.dumps(failure))
    with pytest.raises(SystemExit, match=r"run has no student/ to export .*ValueError: bad label"):
        export.main([str(run_dir)])


def test_a_split_or_opset_the_export_cannot_use_is_refused_by_name(tmp_path):
    """export.split is checked before any work; an opset the exporter did not write is
    refused, not recorded as if it had."""
    import onnx
    from onnx import TensorProto, helper

    from sead.tasks import get_task

    with pytest.raises(ValueError, match=r"export.split='valdation': expected one of task"):
        export.check(settings(split="valdation"), get_task("sst2"))
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    export._check_opset(path, 18)
    with pytest.raises(export.ExportError, match=r"export.opset=14, but the exporter wrote 18"):
        export._check_opset(path, 14)
