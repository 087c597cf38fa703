"""The offline stand-ins must look, to the rest of sead, just like Hub datasets and checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sead.toy import (
    DEMO_MODELS,
    TOY_WORDS,
    build_demo_assets,
    build_tiny_model,
    build_tokenizer,
    make_toy_task,
    toy_sentences,
)

CORPUS = toy_sentences(300)


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_toy_task_has_the_sst2_schema(tmp_path):
    out = make_toy_task(tmp_path, n_train=200, n_validation=50, seed=3)
    for split, n in (("train", 200), ("validation", 50)):
        rows = _rows(out / f"{split}.jsonl")
        assert len(rows) == n
        for i, row in enumerate(rows):
            assert list(row) == ["sentence", "label", "idx"]
            assert isinstance(row["sentence"], str) and row["sentence"]
            assert row["label"] in (0, 1)
            assert row["idx"] == i
        positive = sum(row["label"] for row in rows) / n
        assert 0.35 < positive < 0.65


def test_toy_task_is_deterministic_per_seed(tmp_path):
    def generate(name, seed, n_train=100):
        out = make_toy_task(tmp_path / name, n_train=n_train, n_validation=40, seed=seed)
        return {s: (out / f"{s}.jsonl").read_bytes() for s in ("train", "validation")}

    first = generate("a", seed=7)
    assert generate("b", seed=7) == first
    assert generate("c", seed=8)["train"] != first["train"]
    # Validation does not depend on the size of the training split.
    assert generate("d", seed=7, n_train=150)["validation"] == first["validation"]


def test_toy_sentences_use_only_the_toy_vocabulary():
    words = {w for sentence in CORPUS for w in sentence.split()}
    assert words <= set(TOY_WORDS)


@pytest.mark.parametrize(
    ("kind", "cls", "sep", "has_segments"),
    [("wordpiece", "[CLS]", "[SEP]", True), ("bpe", "<s>", "</s>", False)],
)
def test_tokenizers_load_and_encode_pairs(tmp_path, kind, cls, sep, has_segments):
    tok = AutoTokenizer.from_pretrained(build_tokenizer(kind, tmp_path, CORPUS))
    enc = tok("the movie was not good .", "i loved the plot !")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == cls and tokens[-1] == sep
    assert tokens.count(sep) >= 2
    assert tok.unk_token_id not in enc["input_ids"]
    assert ("token_type_ids" in enc) == has_segments
    if has_segments:
        assert set(enc["token_type_ids"]) == {0, 1}
    assert tok.decode(enc["input_ids"], skip_special_tokens=True).split()[:3] == [
        "the",
        "movie",
        "was",
    ]
    # Words the corpus never saw still tokenize, if only into pieces.
    assert len(tok("zebra")["input_ids"]) > 2


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    return {kind: build_tokenizer(kind, root / kind, CORPUS) for kind in ("wordpiece", "bpe")}


@pytest.mark.parametrize(
    ("arch", "kind"), [("bert", "wordpiece"), ("roberta", "bpe"), ("distilbert", "wordpiece")]
)
@pytest.mark.parametrize("labels", [None, ("negative", "positive")])
def test_tiny_models_load_as_sequence_classifiers(tmp_path, tokenizers, arch, kind, labels):
    out = build_tiny_model(arch, tmp_path / "model", tokenizers[kind], labels=labels)
    assert (out / "model.safetensors").is_file()

    model = AutoModelForSequenceClassification.from_pretrained(out, num_labels=2).eval()
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(
        ["a good film .", "the plot was far from clever , but i loved the cast"],
        ["it was dull .", "what a film"],
        padding=True,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    assert model.config.model_type == arch
    assert tok.model_max_length == 128
    assert ("token_type_ids" in batch) == (arch == "bert")
    if labels is not None:
        assert model.config.id2label == {0: "negative", 1: "positive"}
        assert model.config.label2id == {"negative": 0, "positive": 1}


def test_tiny_models_are_deterministic_per_seed(tmp_path, tokenizers):
    def weights(name, seed):
        out = build_tiny_model("bert", tmp_path / name, tokenizers["wordpiece"], seed=seed)
        return load_file(out / "model.safetensors")

    first, again, other = weights("a", 0), weights("b", 0), weights("c", 1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_demo_assets_are_built_once(tmp_path):
    paths = build_demo_assets(tmp_path)
    assert set(paths) == {"data", *DEMO_MODELS}
    assert (paths["data"] / "train.jsonl").is_file()
    assert (paths["data"] / "validation.jsonl").is_file()
    for name in DEMO_MODELS:
        assert AutoTokenizer.from_pretrained(paths[name]) is not None
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(DEMO_MODELS)

    def mtimes():
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}

    before = mtimes()
    assert build_demo_assets(tmp_path) == paths
    assert mtimes() == before

    # An incomplete model directory is rebuilt, and only that one.
    (paths["student"] / "model.safetensors").unlink()
    build_demo_assets(tmp_path)
    after = mtimes()
    assert (paths["student"] / "model.safetensors").is_file()
    for kept in (paths["teacher_bert"] / "model.safetensors", paths["data"] / "train.jsonl"):
        assert after[kept] == before[kept]
    assert not [p for p in tmp_path.rglob(".*")], "staging directories left behind"
