"""SuperGLUE multiple choice (copa, record): formatting, batches, masks, losses, metrics.

Fixtures in `tests/fixtures/super_glue/{copa,record}/` are in the exact HF `super_glue` schema
(record: `idx` a dict, `entity_spans` a dict of lists, `answers` instead of a label).
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForMultipleChoice, AutoTokenizer

from sead import choices, data, distill, ensemble, inference, metrics, teachers, toy
from sead.tasks import UNLABELED, get_task
from tests.helpers import compose, settings

FIXTURES = Path(__file__).parent / "fixtures" / "super_glue"
COPA, RECORD = get_task("copa"), get_task("record")
TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}


def _splits(task, *splits):
    data_settings = settings("data", dir=str(FIXTURES / task.name))
    return data.load_splits(task, data_settings, splits or ["train", "validation"])


# --------------------------------------------------------------------------------------------
# Metrics, against hand-computed values.
# --------------------------------------------------------------------------------------------


def test_record_answer_normalisation_is_squads():
    assert metrics.normalize_answer("The  U.S. Army!") == "us army"
    assert metrics.normalize_answer("an Apple a day") == "apple day"
    assert metrics.normalize_answer("Barack-Obama") == "barackobama"  # punctuation dropped


def test_record_takes_the_best_f1_and_exact_match_over_gold_answers():
    answers = [["Obama", "President Barack Obama"], ["the U.K."]]
    # "Barack Obama" vs "Obama": P=1/2, R=1, F1=2/3; vs "President Barack Obama": P=1, R=2/3,
    # F1=0.8: the max is 0.8, no exact match. "UK" normalises to "uk" == "the U.K.": 1 and 1.
    scores = metrics.record_metrics(["Barack Obama", "UK"], answers)
    assert scores == pytest.approx({"f1": 0.9, "exact_match": 0.5})
    official = metrics.load_metric("record").compute(
        predictions=["Barack Obama", "UK"], references=answers
    )
    assert official == pytest.approx(scores)


def test_record_credit_table_scores_exactly_like_the_text_metric():
    validation = _splits(RECORD, "validation")["validation"]
    credit = metrics.references(RECORD, validation)
    counts = choices.n_choices(RECORD, validation)
    assert credit.shape == (len(validation), counts.max(), 2)
    assert (credit[~choices.padding_mask(counts, credit.shape[1])] == 0).all()
    rng = np.random.default_rng(0)
    for _ in range(5):
        picks = rng.integers(0, counts)  # any candidate of each query
        texts = [e[i] for e, i in zip(validation["entities"][:], picks, strict=True)]
        by_text = metrics.record_metrics(texts, validation["answers"][:])
        assert metrics.compute("record", picks, credit) == pytest.approx(by_text)
    # the query whose gold answer is no candidate earns nothing, and has no training label
    assert credit[-1].max() == 0 and validation["label"][-1] == UNLABELED


def test_copa_is_accuracy_over_choices():
    assert metrics.compute("copa", [0, 1, 1, 0], [0, 1, 0, 0]) == {"accuracy": 0.75}


def test_gate_baseline_is_the_best_constant_choice():
    assert teachers.constant_baseline(COPA, np.array([1, 1, 0, 1])) == 0.75
    credit = np.zeros((4, 3, 2))
    credit[[0, 1, 2], [2, 2, 0], :] = 1.0  # slot 2 is right twice, slot 0 once
    credit[3, 1] = [0.5, 0.0]
    assert teachers.constant_baseline(RECORD, credit) == 0.5  # always slot 2: f1 (1+1)/4
    splits = {"validation": Dataset.from_dict({"label": [1, 1, 0, 1]})}
    spec = teachers.TeacherSpec("t", "x", False, None, 64, None, False, 8)
    with pytest.raises(teachers.TeacherBelowFloor, match="constant baseline 0.7500"):
        teachers.gate(spec, COPA, {"validation": {"accuracy": 0.75}}, splits)


# --------------------------------------------------------------------------------------------
# Data: the HF schema checked, choices written so the question / query stays visible.
# --------------------------------------------------------------------------------------------


def test_copa_choices_continue_the_premise_with_because_or_so():
    batch = {
        "premise": ["The man broke his toe.", "It started to rain."],
        "choice1": ["He dropped a hammer on his foot.", "We opened our umbrellas."],
        "choice2": ["He got a hole in his sock.", "We put on sunglasses."],
        "question": ["cause", "effect"],
    }
    firsts, seconds = choices.choice_texts(COPA, batch)
    assert firsts == [["The man broke his toe."] * 2, ["It started to rain."] * 2]
    assert seconds[0] == [
        "because he dropped a hammer on his foot.",
        "because he got a hole in his sock.",
    ]
    assert seconds[1] == ["so we opened our umbrellas.", "so we put on sunglasses."]


def test_record_choices_fill_the_placeholder_with_each_candidate():
    row = _splits(RECORD, "train")["train"][0]
    firsts, seconds = choices.choice_texts(RECORD, {k: [v] for k, v in row.items()})
    assert firsts[0] == [row["query"].replace("@placeholder", e) for e in row["entities"]]
    assert "@highlight" not in seconds[0][0] and "\n- " in seconds[0][0]
    assert row["label"] == row["entities"].index(row["answers"][0])


def test_fixtures_load_in_the_hf_schema_with_dict_ids():
    record = _splits(RECORD)["train"]
    assert set(record.column_names) >= {"entities", "entity_spans", "answers", "idx"}
    assert set(record[0]["idx"]) == {"passage", "query"}
    spans = record[0]["entity_spans"]
    assert all(
        record[0]["passage"][s : e + 1] == t for t, s, e in zip(*spans.values(), strict=True)
    )
    ids = data.example_ids(record, RECORD)
    assert ids.dtype == np.int64 and len(set(ids.tolist())) == len(record)


@pytest.mark.parametrize(
    ("task", "row", "error"),
    [
        (COPA, {"question": "why"}, r"question \['why'\] is not 'cause' or 'effect'"),
        (COPA, {"label": -1}, r"label value\(s\) \[-1\] are not a choice"),
        (RECORD, {"query": "no slot"}, r"row\(s\) \[0\] have no @placeholder"),
        (RECORD, {"entities": []}, r"row\(s\) \[0\] have no candidate entities"),
    ],
)
def test_bad_rows_are_named_before_any_work(task, row, error):
    ds = _splits(task, "validation")["validation"]
    if task is RECORD:
        ds = ds.remove_columns("label")
    first = {**ds[0], **row}
    bad = Dataset.from_list([first, *list(ds)[1:]])
    with pytest.raises(ValueError, match=error):
        choices.prepare(task, bad, "validation", "x.jsonl")


def _rewritten(task, tmp_path, change):
    """The task's validation fixture with `change(row)` applied to every row, as a data dir."""
    rows = [json.loads(line) for line in (FIXTURES / task.name / "validation.jsonl").open()]
    for row in rows:
        change(row)
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return settings("data", dir=str(tmp_path))


def test_split_files_with_no_text_repeated_or_missing_ids_are_refused_on_load(tmp_path):
    """What every other task's loader refuses, before any model runs, naming the file."""
    where = r"Task 'copa', split 'validation' \(.*validation.jsonl\)"
    first = {"done": False}

    def null_choice(row):
        if not first["done"]:
            row["choice2"], first["done"] = None, True

    with pytest.raises(ValueError, match=where + r": row 0 .* no text in field 'choice2'"):
        data.load_splits(COPA, _rewritten(COPA, tmp_path, null_choice), ["validation"])
    same_idx = _rewritten(COPA, tmp_path, lambda row: row.update(idx=0))
    with pytest.raises(ValueError, match=where + r": idx repeats the value\(s\) \[0\]"):
        data.load_splits(COPA, same_idx, ["validation"])
    no_idx = _rewritten(RECORD, tmp_path, lambda row: row.pop("idx"))
    missing = r"'record'.* has no field 'idx': expected a dict with key 'query'"
    with pytest.raises(ValueError, match=missing):
        data.load_splits(RECORD, no_idx, ["validation"])


def test_a_record_split_without_answers_is_refused_not_scored_zero(tmp_path):
    hidden = _rewritten(RECORD, tmp_path, lambda row: row.update(answers=[]))
    with pytest.raises(ValueError, match=r"no query has a gold answer among its entities"):
        data.load_splits(RECORD, hidden, ["validation"])


def test_a_missing_field_names_the_schema():
    ds = Dataset.from_dict({"premise": ["a"], "choice1": ["b"], "label": [0]})
    with pytest.raises(ValueError, match=r"no field\(s\) \['choice2', 'question'\]"):
        choices.prepare(COPA, ds, "train", "copa/train.jsonl")


# --------------------------------------------------------------------------------------------
# Tiny multiple-choice models with both tokenizer kinds.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[("wordpiece", "bert"), ("bpe", "roberta")])
def mc_model(request, tmp_path_factory):
    """A tiny random multiple-choice checkpoint (BERT/WordPiece or RoBERTa/BPE) and tokenizer."""
    kind, arch = request.param
    folder = tmp_path_factory.mktemp(arch)
    toy.build_tokenizer(kind, folder)
    toy.build_tiny_model(arch, folder, folder, **TINY)
    model = AutoModelForMultipleChoice.from_pretrained(folder)
    model.save_pretrained(folder)
    return model.eval(), AutoTokenizer.from_pretrained(folder), folder


def test_record_truncates_the_passage_never_the_query(mc_model, caplog):
    _, tokenizer, _ = mc_model
    ds = _splits(RECORD, "validation")["validation"]
    queries = [ds[0]["query"].replace("@placeholder", e) for e in ds[0]["entities"]]
    room = max(len(tokenizer(q)["input_ids"]) for q in queries) + 8  # the query and some passage
    encoded = choices.tokenize(ds, tokenizer, RECORD, max_length=room)
    row = encoded[0]
    assert row["n_choices"] == len(ds[0]["entities"]) == len(row["input_ids"])
    assert "longer than max_length" not in caplog.text
    for ids, entity in zip(row["input_ids"], ds[0]["entities"], strict=True):
        assert len(ids) == room  # the passage was cut to fit
        text = tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "").lower()
        query = ds[0]["query"].replace("@placeholder", entity)
        assert query.replace(" ", "").lower() in text  # the whole query, candidate included
    # A query too long for max_length on its own is cut too, with a warning, not a crash.
    short = choices.tokenize(ds.select([0]), tokenizer, RECORD, max_length=8)
    assert {len(ids) for ids in short[0]["input_ids"]} == {8}
    assert "longer than max_length=8" in caplog.text


@pytest.mark.parametrize("room", [8, 1000])
def test_record_passages_tokenized_once_give_the_tokenizers_own_pair_ids(mc_model, room):
    _, tokenizer, _ = mc_model
    ds = _splits(RECORD, "validation")["validation"]
    firsts, seconds = choices.choice_texts(RECORD, ds[:4])
    firsts, seconds = sum(firsts, []), sum(seconds, [])
    # the longest query and `room` tokens of passage: truncated passages, or whole ones
    max_length = max(len(ids) for ids in tokenizer(firsts)["input_ids"]) + room
    ours = choices.SharedSecondEncoder(tokenizer, max_length)(firsts, seconds)
    theirs = tokenizer(firsts, seconds, truncation="only_second", max_length=max_length)
    assert ours == {key: theirs[key] for key in ours}
    assert set(ours) == set(theirs)


def test_collator_pads_choices_and_tokens_and_masks_padding_choices(mc_model):
    _, tokenizer, _ = mc_model
    features = [
        {"input_ids": [[5, 6, 7], [5, 6]], "attention_mask": [[1, 1, 1], [1, 1]], "label": 1},
        {"input_ids": [[5], [5, 6], [8, 9, 9, 9]], "attention_mask": [[1], [1, 1], [1] * 4]},
    ]
    features[1]["label"] = UNLABELED
    for f, targets in zip(features, ([0.3, 0.7, 0.0, 0.0], [0.2, 0.3, 0.5, 0.0]), strict=True):
        f["soft_targets"] = targets
    batch = choices.ChoiceCollator(tokenizer)(features)
    assert batch["input_ids"].shape == (2, 3, 4)
    assert batch["choice_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["input_ids"][0, 2].tolist() == [tokenizer.pad_token_id] * 4
    assert batch["attention_mask"][0, 2].tolist() == [1, 0, 0, 0]  # a padding choice
    assert batch["attention_mask"][0, 1].tolist() == [1, 1, 0, 0]
    assert batch["soft_targets"].shape == (2, 3)  # cut to the batch's choices
    assert batch["labels"].tolist() == [1, -100]


def test_predict_logits_pads_record_and_is_batch_invariant(mc_model):
    model, tokenizer, _ = mc_model
    ds = _splits(RECORD, "validation")["validation"]
    encoded = choices.tokenize(ds, tokenizer, RECORD, max_length=48)
    logits = inference.predict_logits(model, tokenizer, encoded, batch_size=3)
    counts = choices.n_choices(RECORD, ds)
    assert logits.shape == (len(ds), counts.max())
    padding = ~choices.padding_mask(counts, logits.shape[1])
    assert padding.any() and (logits[padding] == choices.PAD_LOGIT).all()
    for row in [0, len(ds) - 1]:  # one example alone gives the same logits
        alone = inference.predict_logits(model, tokenizer, encoded.select([row]), batch_size=1)
        np.testing.assert_allclose(alone[0, : counts[row]], logits[row, : counts[row]], atol=1e-5)


def test_choice_batches_are_sorted_by_choices_times_tokens(mc_model):
    _, tokenizer, _ = mc_model
    ds = _splits(RECORD, "validation")["validation"]
    encoded = choices.tokenize(ds, tokenizer, RECORD, max_length=48)
    sizes = np.asarray(encoded[choices.CHOICE_TOKENS][:])
    expected = [len(ids) * max(map(len, ids)) for ids in encoded["input_ids"][:]]
    assert sizes.tolist() == expected
    batches = inference.size_sorted_batches(np.array([10, 27, 20, 16]), batch_size=1)
    assert [b.tolist() for b in batches] == [[1], [2], [3], [0]]  # 27 tokens per batch


def test_teacher_checkpoint_must_have_a_choice_head(mc_model, tiny_assets):
    _, _, folder = mc_model
    spec = teachers.TeacherSpec("mc", str(folder), False, None, 64, None, False, 8)
    assert teachers.check_labels(spec, COPA) is None  # one logit per choice: nothing to align
    assert choices.checkpoint_class(folder) is AutoModelForMultipleChoice
    base = str(tiny_assets / "models" / "student")
    plain = teachers.TeacherSpec("base", base, False, None, 64, None, False, 8)
    with pytest.raises(
        ValueError, match="'base'.*task 'record' is multiple choice.*ForMultipleChoice"
    ):
        teachers.check_labels(plain, RECORD)
    with pytest.raises(ValueError, match="'mc'.*is a multiple-choice checkpoint.*'sst2' is not"):
        teachers.check_labels(spec, get_task("sst2"))


def test_cache_key_covers_the_choice_formatting_and_leaves_glue_keys_alone():
    assert choices.cache_key(get_task("sst2")) == {}
    assert choices.cache_key(RECORD) == {"formatting": "record-v1", "truncation": "only_second"}


# --------------------------------------------------------------------------------------------
# Losses and ensembles over the choice softmax.
# --------------------------------------------------------------------------------------------


def test_kd_loss_ignores_padding_choices():
    mask = torch.tensor([[True, True, False], [True, True, True]])
    targets = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.3, 0.6]])
    labels = torch.tensor([0, 2])
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    loss = distill.kd_loss(student, targets, labels, 2.0, 0.5, choice_mask=mask)
    moved = student.clone()
    moved[0, 2] = 50.0  # whatever the student says for a padding choice
    assert distill.kd_loss(moved, targets, labels, 2.0, 0.5, choice_mask=mask) == loss
    # the first example alone is the plain two-way loss
    alone = distill.kd_loss(student[:1, :2], targets[:1, :2], labels[:1], 2.0, 0.5)
    first = distill.kd_loss(student[:1], targets[:1], labels[:1], 2.0, 0.5, choice_mask=mask[:1])
    assert first.item() == pytest.approx(alone.item(), rel=1e-6)


def test_queries_without_a_gold_candidate_only_learn_from_the_teachers():
    """A record query whose gold answer is no candidate (label -100) is like a transfer row:
    the soft term alone, whatever alpha; the batch loss is the mean of the examples' losses."""
    mask = torch.ones(2, 2, dtype=torch.bool)
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    targets = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    log_p = torch.log_softmax(student.detach(), -1)
    kl = (targets * (targets.log() - log_p)).sum(-1)  # per example, T = 1
    none = torch.tensor([-100, -100])
    no_gold = distill.kd_loss(student, targets, none, 1.0, 0.0, choice_mask=mask)
    assert no_gold.item() == pytest.approx(kl.mean().item())
    no_gold.backward()  # a batch with no gold at all still trains
    assert student.grad.abs().sum() > 0
    one = distill.kd_loss(student, targets, torch.tensor([0, -100]), 1.0, 0.0, choice_mask=mask)
    ce = -log_p[0, 0]
    assert one.item() == pytest.approx(((ce + kl[1]) / 2).item())


@pytest.mark.parametrize("strategy", sorted(ensemble.ENSEMBLERS))
def test_ensembles_leave_no_mass_on_padding_choices(strategy):
    rng = np.random.default_rng(0)
    counts = np.array([2, 4, 3, 4, 2, 3] * 3)
    logits = rng.normal(size=(2, len(counts), 4))
    logits[:, ~choices.padding_mask(counts, 4)] = choices.PAD_LOGIT
    credit = np.zeros((len(counts), 4, 2))
    credit[np.arange(len(counts)), logits.mean(0).argmax(-1)] = 1.0  # teachers mostly right
    options = {"weights": [1, 2]} if strategy == "weighted" else {}
    ensembler = ensemble.build({"name": strategy, **options}, RECORD, ["a", "b"])
    if ensembler.needs_fit:
        ensembler.fit(logits, credit)
    raw = ensembler.combine(logits, 2.0)  # scored as it is (ensemble.score), vote included
    assert raw[~choices.padding_mask(counts, 4)].max() < 1e-12
    targets = choices.mask_targets(raw, counts)
    assert np.allclose(targets.sum(-1), 1.0)
    assert (targets[~choices.padding_mask(counts, 4)] == 0).all()
    scores, nll = ensemble.score(RECORD, targets, credit)
    assert scores["f1"] > 0.5 and np.isfinite(nll)


def test_queries_without_a_gold_candidate_do_not_shape_the_fit_or_the_nll():
    """Such a query is UNLABELED for the hard loss; the ensembler must not read candidate 0
    as its gold either (fitting, NLL)."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 40, 3))
    credit = np.zeros((40, 3, 2))
    credit[np.arange(40), logits.mean(0).argmax(-1)] = 1.0
    extra = rng.normal(size=(2, 10, 3)) * 5  # ten queries whose answer no candidate holds
    with_extra = np.concatenate([logits, extra], axis=1)
    credit_extra = np.concatenate([credit, np.zeros((10, 3, 2))])
    assert (choices.label_ids(credit_extra)[40:] == UNLABELED).all()
    fitted = [
        ensemble.build({"name": "calibrated"}, RECORD, ["a", "b"]).fit(z, c).temperatures()
        for z, c in ((logits, credit), (with_extra, credit_extra))
    ]
    assert np.allclose(fitted[0], fitted[1])
    targets = ensemble.build({"name": "mean_logits"}, RECORD, ["a", "b"]).combine(with_extra)
    assert ensemble.nll(targets, credit_extra) == pytest.approx(ensemble.nll(targets[:40], credit))


def test_a_formatting_change_invalidates_cached_logits_and_stored_teachers(monkeypatch, tmp_path):
    from sead.cache import SoftLabelCache

    splits = _splits(COPA)
    recipe = teachers.FinetuneArgs.from_config("t", compose().teachers.bert.finetune_args)
    spec = teachers.TeacherSpec("t", "x", True, None, 64, None, False, 8, finetune_args=recipe)
    teacher = teachers.Teacher(spec, tmp_path, tmp_path, "model", "tok")
    tokenizer = type("Tok", (), {"truncation_side": "right"})()
    cache = SoftLabelCache(tmp_path / "cache")

    def keys():
        logits = teachers.cache_keys(teacher, COPA, splits, tokenizer, cache)["validation"]
        store = teachers.store_key(spec, COPA, splits["train"], "base", "tok")
        return cache.fingerprint(logits), store

    before = keys()
    monkeypatch.setattr(choices, "FORMAT_VERSION", choices.FORMAT_VERSION + 1)
    after = keys()
    assert before[0] != after[0] and before[1] != after[1]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "student"), [("copa", "student"), ("record", "teacher_roberta")])
def test_end_to_end_on_fixtures_with_bert_and_roberta_teachers(
    task, student, tiny_cfg, tiny_assets
):
    """Two tiny teachers (WordPiece BERT, BPE RoBERTa) fine-tuned as multiple-choice models,
    their logits cached, ensembled, a student (BERT for copa, RoBERTa for record) distilled and
    scored; a rerun hits the cache."""
    from sead import pipeline

    overrides = [f"task={task}", f"data.dir={FIXTURES / task}", "train.eval_batch_size=4"]
    overrides.append(f"student.model={tiny_assets / 'models' / student}")
    cfg = tiny_cfg(*overrides, output="run1")
    results = pipeline.run(cfg)
    card = (Path(cfg.paths.output_dir) / "student" / "README.md").read_text()
    assert "AutoModelForMultipleChoice" in card and "pipeline_tag: multiple-choice" in card
    metric_keys = set(get_task(task).metrics)
    assert set(results["student"]["metrics"]["validation"]) == metric_keys
    for teacher in results["teachers"].values():
        assert teacher["finetuned_now"] and set(teacher["metrics"]["validation"]) == metric_keys
        assert teacher["gate"]["splits"]["validation"]["baseline"] > 0
    assert set(results["ensemble"]["metrics"]["validation"]) == metric_keys
    again = pipeline.run(tiny_cfg(*overrides, output="run2"))
    assert again["cache"]["misses"] == 0 and again["cache"]["hits"] == 4
    assert again["student"]["metrics"] == results["student"]["metrics"]


@pytest.mark.parametrize("task", [COPA, RECORD])
def test_training_batches_group_examples_of_similar_padded_size(task, mc_model, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    _, _, folder = mc_model
    spec = teachers.TeacherSpec("t", str(folder), True, None, 48, None, False, 8)
    recipe = teachers.FinetuneArgs.from_config("t", compose().teachers.bert.finetune_args)
    spec = dataclasses.replace(spec, finetune_args=dataclasses.replace(recipe, batch_size=4))
    train = _splits(task, "train")["train"]
    trainer = teachers.store._teacher_trainer(spec, task, train, folder, folder, tmp_path)
    sampler = trainer._get_train_sampler(trainer.train_dataset)
    assert isinstance(sampler, LengthGroupedSampler)
    assert sampler.lengths == trainer.train_dataset[choices.CHOICE_TOKENS][:]
    batch = next(iter(trainer.get_train_dataloader()))  # the collator copes with every column
    assert batch["input_ids"].shape[0] == 4 and "choice_mask" in batch
    loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss)
