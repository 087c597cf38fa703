"""Training batches of similar length, and one forward pass per teacher and split."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from omegaconf import OmegaConf
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sead import choices, data, distill, inference, pipeline, teachers, toy, tracking
from sead.cache import SoftLabelCache
from sead.tasks import get_task
from sead.teachers import logits as teacher_logits
from sead.teachers import store
from sead.teachers.spec import FinetuneArgs
from tests.helpers import compose, settings, teacher_spec

SST2 = get_task("sst2")


def _mixed_lengths(n: int = 1200, seed: int = 0) -> Dataset:
    """Toy sentences cut to 1-40 words: lengths spread as wide as SST-2's."""
    rng = random.Random(seed)
    words = " ".join(toy.toy_sentences(400)).split()
    rows = []
    for i in range(n):
        start, size = rng.randrange(len(words) - 40), rng.randint(1, 40)
        rows.append({"sentence": " ".join(words[start : start + size]), "label": i % 2, "idx": i})
    return Dataset.from_list(rows)


def _padding_ratio(trainer) -> float:
    """Positions computed in one epoch of the Trainer's batches / real tokens in them."""
    padded = real = 0
    for batch in trainer.get_train_dataloader():
        padded += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
    return padded / real


def _student(tiny_assets):
    folder = tiny_assets / "models" / "student"
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    return model, AutoTokenizer.from_pretrained(folder)


def _train_cfg(group_by_length: bool):
    return settings("train", group_by_length=group_by_length)


def _recipe(**changes) -> FinetuneArgs:
    """A shipped teacher's fine-tuning recipe (conf/teachers/toy_bert.yaml), with changes."""
    recipe = compose(["experiment=demo"]).teachers.toy_bert.finetune_args
    return FinetuneArgs.from_config("toy", {**OmegaConf.to_container(recipe), **changes})


def _student_trainer(tiny_assets, tmp_path, train, group_by_length: bool, seed: int):
    """The tiny student's Trainer on `train` (uniform soft targets), ready to train."""
    model, tokenizer = _student(tiny_assets)
    return distill.student_trainer(
        model,
        tokenizer,
        train,
        np.full((len(train), 2), 0.5),
        task=SST2,
        settings=_train_cfg(group_by_length),
        max_length=64,
        output_dir=tmp_path / "trainer",
        seed=seed,
    )


@pytest.mark.parametrize("group_by_length", [True, False])
def test_student_batches_are_grouped_by_length_by_default(tiny_assets, tmp_path, group_by_length):
    trainer = _student_trainer(tiny_assets, tmp_path, _mixed_lengths(), group_by_length, seed=1)
    ratio = _padding_ratio(trainer)
    if group_by_length:
        assert ratio <= 1.15, f"grouped batches compute {ratio:.2f}x the real tokens"
    else:  # the same data in random batches: what grouping saves
        assert ratio >= 1.5, f"random batches compute only {ratio:.2f}x the real tokens"


def test_the_default_config_groups_by_length():
    default = OmegaConf.load(distill.__file__.replace("sead/distill.py", "conf/train/default.yaml"))
    assert default.group_by_length is True
    assert _recipe().group_by_length is True  # no teacher config sets it: on by default


@pytest.mark.parametrize("group_by_length", [True, False])
def test_teacher_batches_are_grouped_too_and_the_store_key_says_how(
    tiny_assets, tmp_path, group_by_length
):
    base = tiny_assets / "models" / "teacher_bert"
    recipe = _recipe(group_by_length=group_by_length)
    spec = teacher_spec("toy", base, finetune=True, batch_size=64, finetune_args=recipe)
    train = _mixed_lengths()
    trainer = store._teacher_trainer(spec, SST2, train, base, base, tmp_path / "work")
    ratio = _padding_ratio(trainer)
    assert ratio <= 1.15 if group_by_length else ratio >= 1.5, ratio
    key = store.store_key(spec, SST2, train, "base", "tok")
    assert key["args"]["group_by_length"] is group_by_length


def test_the_store_keys_of_grouped_and_random_teachers_differ(tiny_assets):
    train = _mixed_lengths(50)
    keys = [
        store.store_key(
            teachers.TeacherSpec(
                "toy", "b", True, None, 64, None, False, 64, _recipe(group_by_length=g)
            ),
            SST2,
            train,
            "base",
            "tok",
        )
        for g in (True, False)
    ]
    assert keys[0] != keys[1]


def test_group_by_length_must_be_a_boolean():
    with pytest.raises(ValueError, match=r"finetune_args.group_by_length='yes' is not allowed"):
        _recipe(group_by_length="yes")
    with pytest.raises(ValueError, match=r"train.group_by_length='yes' is not allowed"):
        _train_cfg("yes")


def test_multiple_choice_batches_group_by_their_choice_tokens():
    copa = get_task("copa")
    args = choices.training_args(copa, True)
    assert args == {
        "train_sampling_strategy": "group_by_length",
        "length_column_name": "choice_tokens",
    }
    assert choices.training_args(copa, False) == {}


def _count_passes(monkeypatch) -> list[tuple[str, int]]:
    """Every forward pass over a dataset, as (description, rows), wherever it is started."""
    calls = []

    def counting(real):
        def counted(model, tokenizer, encoded, *args, **kwargs):
            desc = args[1] if len(args) > 1 else kwargs.get("desc", "")
            calls.append((desc, len(encoded)))
            return real(model, tokenizer, encoded, *args, **kwargs)

        return counted

    monkeypatch.setattr(tracking, "predict_logits", counting(inference.predict_logits))
    monkeypatch.setattr(teacher_logits, "predict", counting(inference.predict))
    return calls


@pytest.mark.parametrize("epochs", [1, 2])
def test_each_teacher_runs_over_each_split_once_per_model(tiny_cfg, monkeypatch, epochs):
    """The last epoch's evaluation becomes the cache entry: a fine-tuned teacher is not run
    again over an eval split it was just scored on."""
    calls = _count_passes(monkeypatch)
    overrides = [
        "stage=teachers",
        f"teachers.toy_bert.finetune_args.epochs={epochs}",
        f"teachers.toy_roberta.finetune_args.epochs={epochs}",
    ]
    results = pipeline.prepare_teachers(tiny_cfg(*overrides))
    n_validation, n_train = 120, 240
    validation = [c for c in calls if c[1] == n_validation]
    train = [c for c in calls if c[1] == n_train]
    # per teacher: one pass per epoch, each of other weights; none after training
    assert validation == [("Epoch eval validation", n_validation)] * 2 * epochs, calls
    assert sorted(d for d, _ in train) == [f"Teacher toy_{n} on train" for n in ("bert", "roberta")]
    for record in results["teachers"].values():  # the epoch's scores are the cached entry's
        stored = record["finetune"]["evaluation"]["validation"]["metrics"]
        assert stored == record["metrics"]["validation"]

    calls.clear()  # stored teachers, cached logits: no pass at all
    results = pipeline.prepare_teachers(tiny_cfg(*overrides, output="again"))
    assert calls == []
    assert results["cache"]["misses"] == 0


def test_the_student_is_not_scored_twice_on_its_final_weights(tiny_cfg, monkeypatch):
    calls = _count_passes(monkeypatch)
    real = tracking.evaluate
    scored = []

    def counted(model, tokenizer, task, ds, *args, **kwargs):
        scored.append(len(ds))
        return real(model, tokenizer, task, ds, *args, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate", counted)
    cfg = tiny_cfg("train.epochs=2", "report.speed_samples=0")
    results = pipeline.run(cfg)
    # teachers: 1 epoch each (tiny_cfg); the student: 2; the last one's pass is its result
    epoch_evals = [c for c in calls if c[0].startswith("Epoch eval")]
    assert epoch_evals == [("Epoch eval validation", 120)] * 4, calls
    assert scored == []  # the pipeline ran no pass of its own
    final = results["student"]["metrics"]["validation"]
    metrics_file = Path(cfg.paths.output_dir) / "metrics.jsonl"
    logged = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    last_epoch = [line for line in logged if "eval_validation_accuracy" in line][-1]
    assert last_epoch["eval_validation_accuracy"] == final["accuracy"]


def test_eval_logits_of_the_cache_are_what_a_fresh_pass_gives(tiny_assets, tmp_path):
    """The cached eval-split logits of a fine-tuned teacher equal a fresh pass of the stored
    model under inference_mode, bit for bit."""
    base = tiny_assets / "models" / "teacher_bert"
    spec = teachers.TeacherSpec(
        "toy", str(base), True, None, 64, None, False, 64, _recipe(epochs=1, seed=1)
    )
    splits = DatasetDict({"train": _mixed_lengths(200), "validation": _mixed_lengths(80, seed=1)})
    cache = SoftLabelCache(tmp_path / "cache")
    teacher = store.finetune(
        spec,
        SST2,
        splits,
        base_dir=base,
        tok_dir=base,
        base_id="base",
        tok_id="tok",
        store_dir=tmp_path / "store",
        cache=cache,
    )
    validation = DatasetDict(validation=splits["validation"])
    entry = teachers.cached_logits(teacher, SST2, validation, cache)
    model, tokenizer = teacher.load()
    encoded = data.tokenize(splits["validation"], tokenizer, SST2, 64)
    fresh = inference.predict_logits(model, tokenizer, encoded, 64)
    np.testing.assert_array_equal(entry["validation"].logits, fresh)


def test_grouped_batches_are_seeded_per_epoch_not_by_the_global_generator(tiny_assets, tmp_path):
    """An epoch's batches depend on the seed and the epoch alone: a resumed run (and every DDP
    rank) draws the batches an uninterrupted run draws."""
    import torch

    trainer = _student_trainer(tiny_assets, tmp_path, _mixed_lengths(300), True, seed=7)

    def epoch_batches(epoch: int, global_seed: int) -> list[list[int]]:
        torch.manual_seed(global_seed)  # whatever else drew numbers before this epoch
        loader = trainer.get_train_dataloader()
        loader.set_epoch(epoch)  # what the Trainer calls at each epoch's start
        return [batch["input_ids"].shape[1] for batch in loader]

    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, choices.SeededLengthGroupedSampler)
    assert epoch_batches(0, 1) == epoch_batches(0, 2)
    first, second = list(iter(sampler)), (sampler.set_epoch(1), list(iter(sampler)))[1]
    assert sorted(first) == sorted(second) and first != second
