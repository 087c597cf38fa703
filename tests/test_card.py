"""The student's model card: Hugging Face metadata that parses, the results, and push_to_hub."""

import pytest
import yaml
from huggingface_hub import ModelCard

import sead.distill
import sead.teachers.store
from sead import card, manifest, pipeline
from tests.helpers import compose, settings


def _results():
    return {
        "task": "mnli",
        "main_metric": "accuracy",
        "eval_splits": ["validation_matched", "validation_mismatched"],
        "n_examples": {"train": 1000, "validation_matched": 98, "validation_mismatched": 99},
        "seed": 3,
        "teachers": {
            "bert": {
                "source": "JeremiahZ/bert-base-uncased-mnli",
                "model_id": "JeremiahZ/bert-base-uncased-mnli@abc",
                "finetuned": False,
                "params": 109_484_547,
                "metrics": {
                    "validation_matched": {"accuracy": 0.84},
                    "validation_mismatched": {"accuracy": 0.85},
                },
            }
        },
        "ensemble": {
            "name": "mean_logits",
            "weights": {"bert": 1.0},
            "metrics": {
                "validation_matched": {"accuracy": 0.84},
                "validation_mismatched": {"accuracy": 0.85},
            },
        },
        "student": {
            "model": "microsoft/xtremedistil-l6-h256-uncased",
            "params": 12_755_459,
            "metrics": {
                "validation_matched": {"accuracy": 0.8012},
                "validation_mismatched": {"accuracy": 0.8123},
            },
            "eval_runtime_s": {"validation_matched": 0.5, "validation_mismatched": 0.6},
            "examples_per_second": {"validation_matched": 196.0, "validation_mismatched": 165.0},
        },
        "speed": {
            "examples": 98,
            "batch_size": 128,
            "device": "cpu",
            "examples_per_second": {"student": 500.0, "bert": 100.0},
            "speedup": {"bert": 5.0},
        },
        "train": {"temperature": 2.0, "alpha": 0.5, "lr": 5e-5, "epochs": 3, "batch_size": 32},
    }


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_metadata_parses_with_model_index_per_eval_split(tmp_path):
    report = settings("report", hub_model_id="me/sead-mnli")
    path = card.write_model_card(_results(), report, tmp_path, max_length=128)
    text = path.read_text()
    meta = _front_matter(text)
    assert meta["license"] == "apache-2.0" and meta["language"] == "en"
    assert {"knowledge-distillation", "sead"} <= set(meta["tags"])
    assert meta["datasets"] == ["nyu-mll/glue"]
    assert meta["base_model"] == "microsoft/xtremedistil-l6-h256-uncased"
    (entry,) = meta["model-index"]
    assert entry["name"] == "me/sead-mnli"
    scores = {
        r["dataset"]["split"]: r["metrics"][0]["value"]
        for r in entry["results"]
        if r["metrics"][0]["type"] == "accuracy"
    }
    assert scores == {"validation_matched": 0.8012, "validation_mismatched": 0.8123}
    # huggingface_hub reads it back the way the Hub will.
    loaded = ModelCard.load(path)
    assert {r.dataset_split for r in loaded.data.eval_results} == set(scores)
    # The body: results with runtime and throughput, the teacher, settings, how to load.
    assert "| validation_matched | 98 | 80.12 | 0.5 | 196.0 |" in text
    assert "JeremiahZ/bert-base-uncased-mnli" in text and "| 84.00 |" in text
    assert "500.0 (5.0x bert)" in text
    assert "`mean_logits`" in text and "T = 2.0, alpha = 0.5" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("me/sead-mnli")' in text
    assert "Transfer set" not in text  # none was used


def test_card_states_the_transfer_set(tmp_path):
    results = _results()
    results["transfer"] = {
        "source": "unlabeled_split",
        "size": 4000,
        "parts": {"unlabeled_split": 4000},
        "labeled": 2000,
    }
    text = card.write_model_card(results, settings("report"), tmp_path, 128).read_text()
    assert (
        "- Transfer set `unlabeled_split`: 4,000 examples without gold labels (4,000 "
        "unlabeled_split), labelled by the teacher ensemble and learned with the soft term "
        "alone, beside 2,000 gold-labelled examples"
    ) in text


def test_local_student_is_not_named_as_base_model(tmp_path):
    results = _results()
    results["student"]["model"] = str(tmp_path)
    meta = _front_matter(
        card.write_model_card(results, settings("report"), tmp_path, 128).read_text()
    )
    assert "base_model" not in meta


def test_push_to_hub_is_off_by_default():
    assert compose().report.push_to_hub is False


def test_push_to_hub_without_repo_id_fails_before_any_work(tiny_cfg, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started before the bad setting was caught")

    monkeypatch.setattr(sead.teachers.store, "finetune", fail)
    monkeypatch.setattr(sead.distill, "distill", fail)
    with pytest.raises(ValueError, match=r"report.push_to_hub=true needs report.hub_model_id"):
        pipeline.run(tiny_cfg("report.push_to_hub=true"))


def test_push_uploads_the_student_folder_with_its_card(tmp_path, monkeypatch):
    """The upload's wiring, with huggingface_hub's two calls recorded instead of sent."""
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **k: calls.append(((), k)))
    report = settings("report", push_to_hub=True, hub_model_id="me/sead-sst2")  # no error
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    manifest.write(tmp_path)  # as the run saves the student
    assert card.push_to_hub(tmp_path, report) == "me/sead-sst2"
    (create_args, create_kwargs), (_, upload_kwargs) = calls
    assert create_args == ("me/sead-sst2",) and create_kwargs["private"] is True
    assert upload_kwargs["repo_id"] == "me/sead-sst2"
    assert upload_kwargs["folder_path"] == str(tmp_path)

    (tmp_path / "model.safetensors").write_bytes(b"changed")  # same size, other bytes
    with pytest.raises(manifest.DamagedFolder, match="model.safetensors fails its content hash"):
        card.push_to_hub(tmp_path, report)
    assert len(calls) == 2  # nothing more was sent


def test_the_card_says_the_loss_it_trained_and_its_snippets_load_from_the_run(tmp_path):
    """A regression student's loss is MSE (no temperature), a staged one names its stages;
    with no Hub id the usage loads the run folder's student/, and the ONNX snippet feeds the
    task's own inputs (a pair)."""
    from sead.tasks import get_task
    from tests.test_export import exported_results

    train = {"alpha": 0.5, "temperature": 2.0}
    regression = card._loss_line(get_task("stsb"), train, {})
    assert "alpha * MSE(student, ensemble) + (1 - alpha) * MSE(student, gold)" in regression
    staged = {"name": "staged", "stages": [{"name": "representations"}, {"name": "soft"}]}
    assert "stages representations, soft" in card._loss_line(get_task("sst2"), train, staged)
    text = card.write_model_card(_results(), settings("report"), tmp_path, max_length=128)
    assert 'AutoModelForSequenceClassification.from_pretrained("student")' in text.read_text()
    example = card._example(get_task("stsb"))
    lines = "\n".join(card._deployment_lines(exported_results()["export"], False, example))
    assert (
        'tokenizer("The cat sat on the mat.", "A cat is sitting on a mat.", return_tensors' in lines
    )
