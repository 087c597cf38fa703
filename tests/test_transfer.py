"""Transfer sets: sources, honesty of the labelled slice, the mixed-batch loss, cache, report."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from omegaconf import OmegaConf
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

import sead.distill
import sead.teachers.logits
import sead.teachers.store
import sead.transfer
from sead import data, pipeline, report, toy
from sead.distill import kd_loss
from sead.tasks import MULTIPLE_CHOICE, TaskSpec, get_task
from sead.transfer import UNLABELED, TransferSettings, build, random_swap, word_dropout
from tests.helpers import compose, settings

SST2, STSB, MRPC = get_task("sst2"), get_task("stsb"), get_task("mrpc")


def _splits(task=SST2, n=50) -> DatasetDict:
    rows = {f: [f"{f} number {i} is here" for i in range(n)] for f in task.text_fields}
    labels = [i / 10 for i in range(n)] if task.is_regression else [i % 2 for i in range(n)]
    train = Dataset.from_dict({**rows, "label": labels, "idx": list(range(n))})
    return DatasetDict({"train": train, "validation": train.select(range(5))})


def _cfg(source="none", **settings):
    """conf/transfer/<source>.yaml with `settings` set in it."""
    return OmegaConf.merge(
        OmegaConf.to_container(compose([f"transfer={source}"]).transfer), settings
    )


def _build(cfg, task, splits):
    return build(TransferSettings.from_config(cfg, task), task, splits)


# --------------------------------------------------------------------------------------------
# The loss: unlabelled rows are pure KD; a mixed batch is the mean of per-example losses.
# --------------------------------------------------------------------------------------------


def test_mixed_batch_loss_matches_hand_computation():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    targets = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    labels = torch.tensor([0, UNLABELED])
    T, alpha = 2.0, 0.7

    def kl(p, logits):  # KL(p || softmax(logits / T))
        z = sum(math.exp(v / T) for v in logits)
        q = [math.exp(v / T) / z for v in logits]
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))

    ce_first = -math.log(math.e / (math.e + 1))
    labelled = alpha * T**2 * kl([0.8, 0.2], [1.0, 0.0]) + (1 - alpha) * ce_first
    unlabelled = T**2 * kl([0.3, 0.7], [0.0, 2.0])  # alpha = 1: no hard term
    expected = (labelled + unlabelled) / 2
    assert kd_loss(student, targets, labels, T, alpha).item() == pytest.approx(expected, rel=1e-5)


def test_all_unlabelled_batch_is_pure_kd_whatever_alpha():
    student = torch.tensor([[0.3, -0.2], [1.5, 0.5]])
    targets = torch.tensor([[0.6, 0.4], [0.1, 0.9]])
    unlabelled = torch.tensor([UNLABELED, UNLABELED])
    pure_kd = kd_loss(student, targets, torch.tensor([0, 1]), 3.0, alpha=1.0)
    for alpha in (0.0, 0.5):
        assert kd_loss(student, targets, unlabelled, 3.0, alpha).item() == pytest.approx(
            pure_kd.item()
        )


def test_regression_drops_the_gold_term_for_unlabelled_rows():
    student = torch.tensor([[1.0], [3.0]])
    ensemble = torch.tensor([[2.0], [4.0]])
    gold = torch.tensor([1.5, float(UNLABELED)])
    # row 1: 0.25 * (1-2)^2 + 0.75 * (1-1.5)^2 = 0.4375; row 2 (no gold): (3-4)^2 = 1
    loss = kd_loss(student, ensemble, gold, temperature=4.0, alpha=0.25, regression=True)
    assert loss.item() == pytest.approx((0.4375 + 1.0) / 2)


# --------------------------------------------------------------------------------------------
# Settings: mistakes named before any data is read.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, task, message",
    [
        ({"source": "web"}, SST2, r"transfer.source='web': expected one of"),
        ({"source": "none", "shots": 3}, SST2, r"unknown key\(s\) \['shots'\]"),
        ({"source": "unlabeled_split"}, SST2, "needs transfer.labeled"),
        (
            {"source": "unlabeled_split", "labeled": 0},
            SST2,
            r"labeled=0 is not allowed: expected an integer in \[1, inf\)",
        ),
        ({"source": "files"}, SST2, "exactly one of transfer.paths"),
        ({"source": "files", "paths": ["x.parquet"]}, SST2, "unknown extension"),
        ({"source": "files", "paths": ["/nonexistent.jsonl"]}, SST2, "/nonexistent.jsonl does"),
        ({"source": "augment", "word_dropout": 0, "swap": 0}, SST2, "changes nothing"),
        ({"source": "augment", "swap": 1.5}, SST2, r"swap=1.5: expected a fraction"),
        ({"source": "augment", "mlm": 0.2}, SST2, "needs transfer.fill_mask_model"),
        ({"source": "augment", "swap": 0.1, "multiplier": 0}, SST2, "multiplier=0"),
    ],
)
def test_bad_settings_are_named(settings, task, message):
    given = _cfg(**settings) if settings["source"] != "web" else settings
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        TransferSettings.from_config(given, task)


@pytest.mark.parametrize(
    "overrides",
    [
        ["transfer=unlabeled_split", "transfer.labeled=2000", "transfer.max_unlabeled=20000"],
        ["transfer=none", "transfer.labeled=2000"],
        ["transfer=files", "transfer.hub.path=imdb", "transfer.columns={sentence: text}"],
        ["transfer=augment", "transfer.mlm=0.15", "transfer.fill_mask_model=bert-base-uncased"],
    ],
)
def test_the_documented_command_lines_compose_and_validate(overrides):
    cfg = compose(overrides)
    settings = TransferSettings.from_config(cfg.transfer, SST2)
    assert settings.source == overrides[0].split("=")[1]
    assert TransferSettings.from_config(compose().transfer, SST2).source == "none"  # default


def test_plain_text_is_refused_for_sentence_pairs(tmp_path):
    path = tmp_path / "extra.txt"
    path.write_text("one line\n")
    with pytest.raises(ValueError, match=r"extra.txt is plain text.*pairs \['sentence1'"):
        TransferSettings.from_config(_cfg(source="files", paths=[str(path)]), MRPC)


def test_multiple_choice_tasks_are_refused_with_a_reason():
    copa = TaskSpec("copa", "super_glue", ("premise",), MULTIPLE_CHOICE, ("a", "b"), ("accuracy",))
    with pytest.raises(ValueError, match="'copa' is multiple choice.*Use transfer=none"):
        TransferSettings.from_config(_cfg(source="unlabeled_split", labeled=10), copa)
    TransferSettings.from_config(_cfg(source="none"), copa)  # no transfer set: fine


@pytest.mark.parametrize("task_name", ["wic", "wsc", "multirc"])
def test_span_tasks_take_their_own_unlabelled_rows_but_no_new_text(task_name):
    """New or edited text cannot carry wic/wsc spans or multirc's ids; the task's own rows can."""
    task = get_task(task_name)
    fixtures = Path(__file__).resolve().parent / "fixtures" / "super_glue" / task_name
    for source, extra in (("files", {"paths": ["x.jsonl"]}), ("augment", {})):
        with pytest.raises(ValueError, match=f"transfer={source} is not supported.*{task_name}"):
            TransferSettings.from_config(_cfg(source=source, **extra), task)
    splits = data.load_splits(task, settings("data", dir=str(fixtures)), ["train"])
    n = len(splits["train"])
    transfer = _build(_cfg(source="unlabeled_split", labeled=n // 2), task, splits)
    # the slice data.max_train_samples picks with that seed: multirc's questions kept whole
    groups = data.row_groups(splits["train"], task)
    picked = data.subsample(splits["train"], n // 2, seed=0, groups=groups)
    assert transfer.train["idx"][:] == picked["idx"][:]
    assert transfer.size == n - len(picked) and 0 < len(picked) <= n // 2
    if groups is not None:
        labelled, hidden = (set(data.row_groups(s, task)) for s in (picked, transfer.dataset))
        assert not labelled & hidden  # no question has answers on both sides
    ids = data.example_ids(transfer.dataset, task)  # the cache's row ids stay unique
    assert not set(ids.tolist()) & set(data.example_ids(transfer.train, task).tolist())
    assert (
        transfer.dataset.column_names
        == transfer.train.select_columns(transfer.dataset.column_names).column_names
    )


# --------------------------------------------------------------------------------------------
# unlabeled_split: the labelled slice is the only gold data; the rest is unlabelled.
# --------------------------------------------------------------------------------------------


def test_unlabeled_split_hides_the_labels_beyond_the_slice():
    splits = _splits(n=50)
    transfer = _build(_cfg(source="unlabeled_split", labeled=10, max_unlabeled=30), SST2, splits)
    assert len(transfer.train) == 10 and transfer.size == 30 and transfer.held_out == 40
    assert set(transfer.dataset["label"][:]) == {UNLABELED}
    # the slice is exactly the one data.max_train_samples (same seed) picks: baselines match
    assert transfer.train["idx"][:] == data.subsample(splits["train"], 10, seed=0)["idx"][:]
    # transfer rows are other train examples, with their ids; their labels kept aside
    ids = transfer.dataset["idx"][:]
    assert not set(ids) & set(transfer.train["idx"][:])
    assert transfer.gold.tolist() == [float(i % 2) for i in ids]
    assert transfer.dataset["sentence"][:] == [f"sentence number {i} is here" for i in ids]
    # none + labeled: the slice alone (the baseline), nothing unlabelled
    baseline = _build(_cfg(source="none", labeled=10), SST2, splits)
    assert baseline.train["idx"][:] == transfer.train["idx"][:] and baseline.dataset is None


def test_unlabeled_split_keeps_sentence_pairs_and_regression_targets():
    transfer = _build(_cfg(source="unlabeled_split", labeled=5), STSB, _splits(STSB, 20))
    assert set(transfer.dataset.column_names) == {"sentence1", "sentence2", "label", "idx"}
    row = transfer.dataset[0]
    assert row["sentence1"].replace("sentence1", "") == row["sentence2"].replace("sentence2", "")
    assert transfer.dataset.features["label"].dtype == "float32"
    assert np.allclose(transfer.gold, [i / 10 for i in transfer.dataset["idx"][:]])


def test_labeled_must_leave_something_unlabelled():
    with pytest.raises(ValueError, match="labeled=50 keeps every one of the train split's 50"):
        _build(_cfg(source="unlabeled_split", labeled=50), SST2, _splits(n=50))


# --------------------------------------------------------------------------------------------
# files: jsonl / csv / tsv / txt, and the Hub.
# --------------------------------------------------------------------------------------------


def test_files_of_every_format_become_one_transfer_split(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "from json", "label": 1}\n')
    (tmp_path / "b.csv").write_text('text,other\n"from, csv",x\n')
    (tmp_path / "c.tsv").write_text('text\tother\nfrom "tsv"\tx\n')
    (tmp_path / "d.txt").write_text("from txt one\n\nfrom txt two\n")
    paths = [str(tmp_path / n) for n in ("a.jsonl", "b.csv", "c.tsv")]
    cfg = _cfg(source="files", paths=paths, columns={"sentence": "text"})
    transfer = _build(cfg, SST2, _splits(n=10))
    assert transfer.dataset["sentence"][:] == ["from json", "from, csv", 'from "tsv"']
    assert set(transfer.dataset["label"][:]) == {UNLABELED}
    assert min(transfer.dataset["idx"][:]) >= 10  # never a train example's id
    assert len(transfer.train) == 10  # all gold labels kept: files only add text
    text = _build(_cfg(source="files", paths=[str(tmp_path / "d.txt")]), SST2, _splits(n=10))
    assert text.dataset["sentence"][:] == ["from txt one", "from txt two"]


def test_pair_files_need_both_fields_and_say_which(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"q": "a question", "sentence2": "an answer"}\n')
    with pytest.raises(ValueError, match=r"pairs.jsonl has no column\(s\) \['sentence1'\]"):
        _build(_cfg(source="files", paths=[str(path)]), MRPC, _splits(MRPC, 10))
    cfg = _cfg(source="files", paths=[str(path)], columns={"sentence1": "q"})
    transfer = _build(cfg, MRPC, _splits(MRPC, 10))
    assert transfer.dataset[0]["sentence1"] == "a question"
    assert transfer.dataset[0]["sentence2"] == "an answer"


def test_empty_text_and_bad_labels_are_errors_naming_the_row_alike(tmp_path):
    """Both count a file's data rows from 1, so the same row has one number."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"sentence": "fine"}\n{"sentence": ""}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: field 'sentence' is empty.*data row 2 "):
        _build(_cfg(source="files", paths=[str(path)]), SST2, _splits(n=10))
    path.write_text('{"sentence": "fine", "label": 0}\n{"sentence": "also", "label": 7}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: data row 2 .*column 'label' is 7"):
        _build(_cfg(source="files", paths=[str(path)]), SST2, _splits(n=10))


def test_hub_dataset_with_a_column_mapping(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return Dataset.from_dict({"review": ["great film", "dull plot"], "stars": [5, 1]})

    monkeypatch.setattr(sead.transfer, "load_dataset", fake_load_dataset)
    hub = {"path": "someone/reviews", "name": None, "split": "unsupervised"}
    cfg = _cfg(source="files", hub=hub, columns={"sentence": "review"}, max_unlabeled=None)
    transfer = _build(cfg, SST2, _splits(n=10))
    assert calls == [("someone/reviews", None, "unsupervised")]
    assert transfer.dataset["sentence"][:] == ["great film", "dull plot"]
    with pytest.raises(ValueError, match=r"Hub dataset 'someone/reviews' has no column"):
        _build(_cfg(source="files", hub=hub), SST2, _splits(n=10))


# --------------------------------------------------------------------------------------------
# augment: deterministic, per side for pairs, masked-LM fills from a real (tiny) MLM.
# --------------------------------------------------------------------------------------------


def test_word_dropout_and_swap():
    words = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    swapped = random_swap(words, 0.2, random.Random(0))
    assert sorted(swapped) == sorted(words) and swapped != words
    dropped = word_dropout(words, 0.5, random.Random(0))
    assert 0 < len(dropped) < len(words) and all(w in words for w in dropped)
    assert word_dropout(words, 1.0, random.Random(0))  # never an empty text


def test_augment_is_deterministic_per_seed_and_keeps_pairs():
    splits = _splits(MRPC, 20)
    cfg = dict(source="augment", multiplier=2, word_dropout=0.2, swap=0.2)
    first = _build(_cfg(**cfg), MRPC, splits).dataset
    again = _build(_cfg(**cfg), MRPC, splits).dataset
    other = _build(_cfg(**cfg, seed=1), MRPC, splits).dataset
    assert len(first) == 40 and first.to_list() == again.to_list()
    assert first["sentence1"][:] != other["sentence1"][:]
    for row in first:  # each side is augmented from its own side of the same example
        assert set(row["sentence1"].split()) <= {
            "sentence1",
            "number",
            "is",
            "here",
            *map(str, range(20)),
        }
        assert "sentence1" not in row["sentence2"]


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory):
    """A tiny BERT with a (random) masked-LM head and a WordPiece tokenizer over toy words."""
    folder = tmp_path_factory.mktemp("mlm")
    toy.build_tokenizer("wordpiece", folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    return folder


def test_masked_lm_replacement_is_batched_and_deterministic(tiny_mlm):
    sentences = ["the movie was good and the acting was great"] * 4 + ["a dull plot"]
    train = Dataset.from_dict({"sentence": sentences, "label": [1, 1, 1, 1, 0], "idx": range(5)})
    splits = DatasetDict({"train": train})
    cfg = dict(source="augment", mlm=0.3, fill_mask_model=str(tiny_mlm), mlm_top_k=3)
    cfg |= dict(word_dropout=0.0, swap=0.0)  # masked-LM replacement alone
    one = _build(_cfg(**cfg, mlm_batch_size=1), SST2, splits).dataset["sentence"][:]
    many = _build(_cfg(**cfg, mlm_batch_size=64), SST2, splits).dataset["sentence"][:]
    assert one == many  # batching does not change the result
    changed = [a != b for a, b in zip(one, sentences, strict=True)]
    assert all(changed)  # every example had a word replaced by another word
    for new, old in zip(one, sentences, strict=True):
        assert len(new.split()) == len(old.split())  # replacement, not insertion
    vocab = set(AutoTokenizer.from_pretrained(tiny_mlm).get_vocab())
    assert all(w in vocab for s in one for w in s.split())


def test_fill_mask_model_without_a_masked_lm_head_is_refused(tiny_assets):
    splits = _splits(n=5)
    student = tiny_assets / "models" / "student"  # a base encoder: no masked-LM head
    cfg = _cfg(source="augment", mlm=0.2, fill_mask_model=str(student))
    with pytest.raises(ValueError, match="has no trained masked-LM head"):
        _build(cfg, SST2, splits)


# --------------------------------------------------------------------------------------------
# The pipeline: honest slices, the cache, and results.json.
# --------------------------------------------------------------------------------------------


@pytest.fixture
def forward_passes(monkeypatch):
    calls = []
    real = sead.teachers.logits.predict

    def counting(*args, **kwargs):
        calls.append(args[4] if len(args) > 4 else kwargs.get("desc"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sead.teachers.logits, "predict", counting)
    return calls


@pytest.mark.slow
def test_unlabeled_split_pipeline_is_honest_and_labels_once(tiny_cfg, forward_passes):
    overrides = ["transfer=unlabeled_split", "transfer.labeled=100", "transfer.max_unlabeled=80"]
    results = pipeline.run(tiny_cfg(*overrides, output="run1"))
    record = results["transfer"]
    assert record["source"] == "unlabeled_split"
    assert (record["labeled"], record["unlabeled"], record["labels_hidden"]) == (100, 80, 140)
    # every teacher sead fine-tuned learnt from the labelled slice and nothing else
    for name, teacher in results["teachers"].items():
        assert teacher["finetune"]["train_examples"] == 100
        assert record["teachers_gold_data"][name] == {
            "controlled": True,
            "train_examples": 100,
            "train_data": record["labeled_data"],
        }
    assert results["n_examples"]["train"] == 100
    assert results["n_examples"]["transfer_unlabeled_split"] == 80
    agreement = record["ensemble_agreement"]["unlabeled_split"]
    assert agreement["n_examples"] == 80 and 0 <= agreement["accuracy"] <= 1
    assert set(record["cache"]) == {"toy_bert", "toy_roberta"}
    assert [list(entries) for entries in record["cache"].values()] == [SPLIT_PART] * 2
    assert not any(_hits(record))
    assert sum("on transfer" in call for call in forward_passes) == 2

    forward_passes.clear()
    again = pipeline.run(tiny_cfg(*overrides, output="run2"))
    assert forward_passes == []  # teachers, their train/validation and transfer logits: cached
    assert all(_hits(again["transfer"]))
    saved = json.loads(
        (Path(tiny_cfg(output="run2").paths.output_dir) / "results.json").read_text()
    )
    assert saved["transfer"]["unlabeled"] == 80
    line = report.transfer_summary(saved)
    assert "unlabeled_split, 80 unlabelled examples" in line and "gold (hidden), 80" in line

    # The same unlabelled rest plus augmented copies of the slice: only the new part is labelled.
    augment = ["transfer=augment", "transfer.labeled=100", "transfer.max_unlabeled=80"]
    mixed = pipeline.run(tiny_cfg(*augment, output="run3"))
    assert mixed["transfer"]["parts"] == {"unlabeled_split": 80, "augment": 100}
    assert forward_passes == [
        "Teacher toy_bert on transfer_augment",
        "Teacher toy_roberta on transfer_augment",
    ]
    shared = mixed["transfer"]["cache"]["toy_bert"]["transfer_unlabeled_split"]
    assert shared == {**record["cache"]["toy_bert"]["transfer_unlabeled_split"], "hit": True}


SPLIT_PART = ["transfer_unlabeled_split"]


def _hits(record: dict) -> list[bool]:
    return [entry["hit"] for teacher in record["cache"].values() for entry in teacher.values()]


@pytest.mark.slow
def test_augmented_transfer_is_cached_by_its_content(tiny_cfg, forward_passes):
    overrides = ["transfer=augment", "transfer.multiplier=1"]
    first = pipeline.run(tiny_cfg(*overrides, output="a"))
    assert first["transfer"]["parts"] == {"augment": 240}
    assert "augment" in first["transfer"]["ensemble_agreement"]
    fingerprints = {
        name: entries["transfer_augment"]["fingerprint"]
        for name, entries in first["transfer"]["cache"].items()
    }
    forward_passes.clear()
    same = pipeline.run(tiny_cfg(*overrides, "seed=7", output="b"))  # another student seed
    assert forward_passes == []
    assert all(_hits(same["transfer"]))
    other = pipeline.run(tiny_cfg(*overrides, "transfer.seed=1", output="c"))
    # other augmented text: labelled anew, under other fingerprints; nothing else recomputed
    assert forward_passes == [
        "Teacher toy_bert on transfer_augment",
        "Teacher toy_roberta on transfer_augment",
    ]
    for name, entries in other["transfer"]["cache"].items():
        assert entries["transfer_augment"]["fingerprint"] != fingerprints[name]


def test_bad_transfer_file_stops_the_run_before_any_training(tiny_cfg, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("training started before the bad transfer file was caught")

    monkeypatch.setattr(sead.teachers.store, "finetune", fail)
    monkeypatch.setattr(sead.distill, "distill", fail)
    path = tmp_path / "extra.jsonl"
    path.write_text('{"review": "no sentence field here"}\n')
    cfg = tiny_cfg("transfer=files", f"transfer.paths=[{path}]")
    with pytest.raises(ValueError, match=r"extra.jsonl has no column\(s\) \['sentence'\]"):
        pipeline.run(cfg)


@pytest.mark.parametrize("task", [SST2, STSB])
def test_student_training_set_is_the_slice_then_the_transfer_rows(task):
    splits = _splits(task, 20)
    if not task.is_regression:  # as loaded from the Hub: a ClassLabel column
        splits["train"] = splits["train"].cast_column("label", ClassLabel(names=list(task.labels)))
    transfer = _build(_cfg(source="unlabeled_split", labeled=5), task, splits)
    student = sead.transfer.with_transfer(transfer.train, transfer.dataset, task)
    assert len(student) == 20
    assert np.allclose(student["label"][:5], transfer.train["label"][:])  # float32 for stsb
    assert set(student["label"][5:]) == {UNLABELED}
    assert student["idx"][:] == transfer.train["idx"][:] + transfer.dataset["idx"][:]


def test_transfer_files_are_read_as_written_and_keep_their_ids_whatever_the_train_split(tmp_path):
    """'NA' or 'null' in a csv is text; -1 is the Hub's "no label"; a files part's ids (and
    so its cache entry) do not move with data.max_train_samples."""
    path = tmp_path / "extra.csv"
    path.write_text("sentence,label\ngood movie,1\nNA,-1\nnull,\n")
    cfg = _cfg(source="files", paths=[str(path)])
    small, large = (_build(cfg, SST2, _splits(n=n)) for n in (20, 50))
    assert small.dataset["sentence"] == ["good movie", "NA", "null"]
    assert small.gold.tolist()[0] == 1.0 and np.isnan(small.gold[1:]).all()
    assert small.dataset["idx"] == large.dataset["idx"]


def test_transfer_columns_and_max_unlabeled_are_checked_by_name(tmp_path):
    path = tmp_path / "extra.jsonl"
    path.write_text('{"sentence": "good", "text": "other", "stars": 5}\n')
    for columns, message in (
        ({"sentense": "text"}, r"transfer.columns has key\(s\) \['sentense'\]"),
        ({"label": "rating"}, r"transfer.columns.label='rating', but .* has no such column"),
    ):
        with pytest.raises(ValueError, match=message):
            _build(_cfg(source="files", paths=[str(path)], columns=columns), SST2, _splits())
    with pytest.raises(ValueError, match=r"transfer.max_unlabeled=0 is not allowed"):
        _build(_cfg(source="unlabeled_split", labeled=10, max_unlabeled=0), SST2, _splits())


def test_multirc_questions_stay_whole_in_the_unlabelled_subset_and_copa_says_what_it_refuses():
    from collections import Counter

    from sead import data
    from tests.helpers import settings

    multirc = get_task("multirc")
    fixtures = Path(__file__).parent / "fixtures" / "super_glue" / "multirc"
    splits = data.load_splits(multirc, settings("data", dir=str(fixtures)), ["train", "validation"])
    built = _build(_cfg(source="unlabeled_split", labeled=8, max_unlabeled=7), multirc, splits)
    whole = Counter(data.row_groups(splits["train"], multirc))
    kept = Counter(data.row_groups(built.dataset, multirc))
    assert kept and all(kept[question] == whole[question] for question in kept)
    with pytest.raises(ValueError, match=r"so transfer.labeled \(gold labels on part of train\)"):
        TransferSettings.from_config(_cfg(source="none", labeled=5), get_task("copa"))
