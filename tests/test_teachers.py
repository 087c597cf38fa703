"""Teachers you can trust: settings, label alignment, the sanity gate, the store and resume."""

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from omegaconf import OmegaConf
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
)

from sead import pipeline, report, teachers, toy
from sead.cache import SoftLabelCache
from sead.tasks import get_task
from tests.conftest import TINY
from tests.helpers import compose, sead_run

SST2, MNLI, RTE, MRPC, COLA, STSB = map(get_task, ["sst2", "mnli", "rte", "mrpc", "cola", "stsb"])


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


GLUE_RECIPE = {"lr": 2e-5, "epochs": 3, "batch_size": 32, "weight_decay": 0.01}
GLUE_RECIPE |= {"warmup_ratio": 0.1, "seed": 42, "group_by_length": True}


def test_finetune_args_are_converted_and_typos_and_gaps_fail():
    args = teachers.FinetuneArgs.from_config("x", GLUE_RECIPE)
    assert (args.lr, args.epochs, args.batch_size, args.warmup_ratio) == (2e-5, 3.0, 32, 0.1)
    assert "save_steps" not in args.store_key()  # checkpointing never changes the model
    parsed = teachers.FinetuneArgs.from_config("x", {**GLUE_RECIPE, "lr": "1e-4", "seed": 7})
    assert (parsed.lr, parsed.seed, parsed.epochs) == (1e-4, 7, 3.0)
    with pytest.raises(
        ValueError, match=r"teachers.x.finetune_args has unknown key.*learning_rate"
    ):
        teachers.FinetuneArgs.from_config("x", {**GLUE_RECIPE, "learning_rate": 1e-4})
    with pytest.raises(ValueError, match=r"teachers.x.finetune_args is missing key.*'lr'"):
        teachers.FinetuneArgs.from_config("x", {k: v for k, v in GLUE_RECIPE.items() if k != "lr"})
    with pytest.raises(ValueError, match=r"finetune_args.max_train_samples=50 needs .*seed"):
        teachers.teacher_specs(
            compose(
                ["teachers=[minilm]", "+teachers.minilm.finetune_args.max_train_samples=50"]
            ).teachers,
            SST2,
        )


def test_unknown_teacher_key_is_named_with_the_expected_ones():
    cfg = compose(["teachers=[minilm]", "+teachers.minilm.labelmap={0: negative}"])
    with pytest.raises(ValueError, match=r"(?s)unknown key.*labelmap.*label_map"):
        teachers.teacher_specs(cfg.teachers, SST2)


def test_two_seeds_of_one_base_are_two_teachers_with_two_store_keys():
    cfg = compose(["teachers=[minilm,minilm_s2]"])
    first, second = teachers.teacher_specs(cfg.teachers, SST2)
    assert (first.name, second.name) == ("minilm", "minilm_s2")
    assert first.source == second.source
    assert (first.finetune_args.seed, second.finetune_args.seed) == (1, 2)
    train = Dataset.from_dict({"sentence": ["good", "bad"], "label": [1, 0], "idx": [0, 1]})
    keys = [teachers.store_key(s, SST2, train, "base", "tok") for s in (first, second)]
    assert keys[0] != keys[1] and {**keys[0]["args"], "seed": 2} == keys[1]["args"]


def test_seeds_override_expands_one_teacher_into_a_seed_ensemble():
    cfg = compose(["teachers=[minilm]", "teachers.minilm.seeds=[3,4,5]"])
    specs = teachers.teacher_specs(cfg.teachers, SST2)
    assert [(s.name, s.finetune_args.seed) for s in specs] == [
        ("minilm_s3", 3),
        ("minilm_s4", 4),
        ("minilm_s5", 5),
    ]
    clash = compose(["teachers=[minilm,minilm_s2]", "teachers.minilm.seeds=[2]"])
    with pytest.raises(ValueError, match=r"\['minilm_s2'\] appear more than once"):
        teachers.teacher_specs(clash.teachers, SST2)
    fixed = compose(["teachers=[bert]", "teachers.bert.seeds=[1,2]"])
    with pytest.raises(ValueError, match="teachers.bert.seeds needs finetune: true"):
        teachers.teacher_specs(fixed.teachers, SST2)


def test_label_map_on_a_teacher_sead_fine_tunes_is_rejected():
    cfg = compose(["teachers=[minilm]", "+teachers.minilm.label_map={0: negative, 1: positive}"])
    with pytest.raises(ValueError, match="label_map is set, but teachers.minilm.finetune is true"):
        teachers.teacher_specs(cfg.teachers, SST2)


# --------------------------------------------------------------------------------------------
# Label alignment (pure: checkpoint id2label -> task order)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "id2label", "expected"),
    [
        (MNLI, {0: "entailment", 1: "neutral", 2: "contradiction"}, None),
        (MNLI, {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}, [2, 1, 0]),
        (MNLI, {0: "Neutral", 1: "Entailment", 2: "contradiction"}, [1, 0, 2]),
        (RTE, {0: "not-entailment", 1: "Entailment"}, [1, 0]),
        (RTE, {0: "ENTAILMENT", 1: "NOT_ENTAILMENT"}, None),
        (RTE, {0: "entailment", 1: "non_entailment"}, None),
        (SST2, {0: "POS", 1: "NEG"}, [1, 0]),
        (COLA, {0: "unacceptable", 1: "acceptable"}, None),
        (STSB, {0: "LABEL_0"}, None),  # regression: one column, nothing to order
    ],
)
def test_checkpoint_labels_are_aligned_to_the_task_order(task, id2label, expected):
    alignment = teachers.align_labels(id2label, task)
    assert alignment == expected
    if expected is not None:  # the aligned columns carry the task's names, in order
        names = [teachers.labels._canonical(id2label[column]) for column in expected]
        assert names == [teachers.labels._canonical(name) for name in task.labels]


def test_generic_label_names_are_taken_as_the_task_label_ids():
    """LABEL_i (transformers' default) names no label: LABEL_i is read as task label i."""
    assert teachers.align_labels({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, MNLI) is None
    assert teachers.align_labels({0: "0", 1: "1"}, SST2) is None
    assert teachers.align_labels({0: "LABEL_1", 1: "LABEL_0"}, SST2) == [1, 0]
    with pytest.raises(ValueError, match="cannot match its label names"):  # half generic
        teachers.align_labels({0: "LABEL_0", 1: "positive"}, SST2)


def test_label_map_by_column_id_or_name_beats_the_names():
    mnli_order = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    by_id = {0: "contradiction", 1: "neutral", 2: "entailment"}
    assert teachers.align_labels(mnli_order, MNLI, by_id) == [2, 1, 0]
    by_name = {"yes": "entailment", "maybe": "neutral", "no": "contradiction"}
    names = {0: "no", 1: "yes", 2: "maybe"}
    assert teachers.align_labels(names, MNLI, by_name) == [1, 2, 0]
    # explicit beats implicit: a map that contradicts the names wins
    assert teachers.align_labels({0: "negative", 1: "positive"}, SST2, {0: 1, 1: 0}) == [1, 0]
    # labels named by digits in another order: a string key is a name, an int key an id
    swapped = {0: "1", 1: "0"}
    assert teachers.align_labels(swapped, SST2, {"1": "positive", "0": "negative"}) == [1, 0]
    assert teachers.align_labels(swapped, SST2, {1: "positive", 0: "negative"}) is None


def test_unmatched_labels_stop_the_run_listing_both_label_sets():
    with pytest.raises(ValueError) as err:
        teachers.align_labels({0: "yes", 1: "no"}, RTE, teacher="nli")
    message = str(err.value)
    assert "Teacher 'nli': cannot match its label names" in message
    assert "{0: 'yes', 1: 'no'}" in message  # the checkpoint's labels
    assert "{0: 'entailment', 1: 'not_entailment'}" in message  # the task's labels
    assert "teachers.nli.label_map=" in message


@pytest.mark.parametrize(
    ("label_map", "error"),
    [
        ({0: "entailment", 1: "entailment"}, "cannot match its label_map"),
        ({0: "entailment"}, "cannot match its label_map"),
        ({"maybe": "entailment", 1: "not_entailment"}, "'maybe' is neither a column id nor"),
        ({0: "neutral", 1: "entailment"}, "'neutral' is not a label of task 'rte'"),
    ],
)
def test_a_bad_label_map_is_named(label_map, error):
    with pytest.raises(ValueError, match=error):
        teachers.align_labels({0: "yes", 1: "no"}, RTE, label_map)


# --------------------------------------------------------------------------------------------
# Sanity gate (pure: scores -> pass or a message)
# --------------------------------------------------------------------------------------------


def _labels(values) -> DatasetDict:
    return DatasetDict({"validation": Dataset.from_dict({"label": list(values)})})


def test_constant_baseline_is_the_best_score_of_always_predicting_one_label():
    gold = np.array([1, 1, 1, 0])
    assert teachers.constant_baseline(SST2, gold) == 0.75  # accuracy: the majority class
    # F1 of the positive class where it is the minority (QQP): always "duplicate", not 0
    minority = np.array([0, 0, 0, 1])
    assert teachers.constant_baseline(get_task("qqp"), minority) == pytest.approx(2 / 5)
    assert teachers.constant_baseline(MRPC, gold) == pytest.approx(2 * 0.75 / 1.75)  # f1
    assert teachers.constant_baseline(COLA, gold) == 0.0  # matthews
    assert teachers.constant_baseline(STSB, np.array([0.5, 3.0, 4.2])) == 0.0  # pearson


def _spec(**kwargs):
    base = dict(name="bad", source="some/checkpoint", finetune=False, tokenizer=None)
    base |= dict(max_length=128, revision=None, trust_remote_code=False, batch_size=8)
    return teachers.TeacherSpec(**{**base, **kwargs})


def test_a_teacher_not_above_the_constant_baseline_stops_the_run_with_a_clear_message():
    splits = _labels([1, 1, 1, 0])
    with pytest.raises(teachers.TeacherBelowFloor) as err:
        teachers.gate(_spec(), SST2, {"validation": {"accuracy": 0.75}}, splits)
    message = str(err.value)
    assert "Teacher 'bad' (some/checkpoint) fails the sanity gate on task 'sst2'" in message
    assert "validation: accuracy=0.7500, needs to be above the constant baseline 0.7500" in (
        message
    )
    assert "teachers.bad.label_map" in message  # the likely cause of a fine-tuned checkpoint
    assert "teachers.bad.gate=false" in message and "teacher_gate=false" in message
    assert "teachers.bad.min_metric=<value>" in message
    passed = teachers.gate(_spec(), SST2, {"validation": {"accuracy": 0.8}}, splits)
    checked = passed["splits"]["validation"]
    assert {k: checked[k] for k in ("score", "baseline", "passed")} == {
        "score": 0.8,
        "baseline": 0.75,
        "passed": True,
    }
    assert checked["noise"]["within_noise"]  # 4 examples: no evidence either way


def test_a_teacher_that_passes_by_noise_is_warned_about(caplog):
    """COPA as met on real data: 100 validation examples, majority 0.55, teachers at 0.58
    and 0.62 passed the gate though a guesser at 0.55 often scores that high."""
    splits = _labels([1] * 55 + [0] * 45)
    with caplog.at_level("WARNING"):
        record = teachers.gate(_spec(), SST2, {"validation": {"accuracy": 0.58}}, splits)
    noise = record["splits"]["validation"]["noise"]
    assert record["splits"]["validation"]["passed"] and noise["within_noise"]
    assert noise["n"] == 100 and noise["margin_examples"] == 3 and noise["interval"] == [0.45, 0.65]
    assert "Teacher bad may have learned nothing on validation" in caplog.text
    assert "a margin of +3 of 100 examples" in caplog.text and "[0.4500, 0.6500] 95%" in caplog.text
    caplog.clear()
    clear = teachers.gate(_spec(), SST2, {"validation": {"accuracy": 0.75}}, splits)
    assert not clear["splits"]["validation"]["noise"]["within_noise"] and not caplog.text
    # No binomial interval for F1, MCC or correlations: not checked, said as None.
    mcc = teachers.gate(_spec(), COLA, {"validation": {"matthews_correlation": 0.3}}, splits)
    assert mcc["splits"]["validation"]["noise"] is None


def test_min_metric_sets_the_floor_and_the_gate_can_be_switched_off():
    splits = _labels([1, 0, 1, 0])
    strict = _spec(min_metric=0.9)
    with pytest.raises(teachers.TeacherBelowFloor, match="needs to be at least .*min_metric=0.9"):
        teachers.gate(strict, SST2, {"validation": {"accuracy": 0.85}}, splits)
    assert teachers.gate(strict, SST2, {"validation": {"accuracy": 0.9}}, splits)["floor"] == 0.9
    off = teachers.gate(strict, SST2, {"validation": {"accuracy": 0.1}}, splits, enabled=False)
    assert off["enabled"] is False and off["splits"]["validation"]["passed"] is False


# --------------------------------------------------------------------------------------------
# Tiny models: fine-tune, store, reuse, resume, align, gate
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyword_task(tmp_path_factory):
    """A tiny sst2-shaped task a tiny model learns in ~100 steps: one sentiment word decides."""
    folder = tmp_path_factory.mktemp("keyword_sst2")
    for split, n in (("train", 320), ("validation", 100)):
        rng = random.Random(split)
        rows = []
        for idx in range(n):
            label = idx % 2
            words = toy.POSITIVE_ADJECTIVES if label else toy.NEGATIVE_ADJECTIVES
            sentence = f"the {rng.choice(toy.NOUNS)} was {rng.choice(words[:6])} ."
            rows.append(json.dumps({"sentence": sentence, "label": label, "idx": idx}))
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return folder


KEYWORD_SETTINGS = "{lr: 3.0e-3, epochs: 5, batch_size: 16, seed: 1}"


@pytest.fixture
def keyword_overrides(tiny_assets, keyword_task, tmp_path) -> list[str]:
    """Tiny teachers that sead fine-tunes on the keyword task (100 steps: ~1s each)."""
    return [
        "experiment=demo",
        "teachers=[toy_bert]",
        f"paths.demo_dir={tiny_assets}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"data.dir={keyword_task}",
        f"teachers.toy_bert.finetune_args={KEYWORD_SETTINGS}",
    ]


@pytest.fixture
def teacher_cfg(keyword_overrides, tmp_path):
    def make(*overrides):
        return compose([*keyword_overrides, *overrides], output_dir=str(tmp_path / "run"))

    return make


@pytest.fixture
def trainings(monkeypatch):
    """Records every Trainer.train call (its resume_from_checkpoint) and every step it trains."""
    calls = []
    real = Trainer.train

    class CountSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            calls[-1]["steps"] += 1

    def train(self, *args, **kwargs):
        calls.append({"resume_from_checkpoint": kwargs.get("resume_from_checkpoint"), "steps": 0})
        self.add_callback(CountSteps())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", train)
    return calls


def _prepare(cfg):
    inputs = pipeline.check_inputs(pipeline.read_settings(cfg))
    cache = SoftLabelCache(cfg.paths.logits_dir)
    (spec,) = inputs.specs
    store = cfg.paths.teachers_dir
    return teachers.prepare(spec, inputs.task, inputs.splits, store, cache.file_hashes, cache)


def test_a_fine_tuned_teacher_beats_the_constant_baseline_is_stored_and_reused(
    teacher_cfg, trainings
):
    first = _prepare(teacher_cfg())
    assert first.origin == teachers.FINETUNED and len(trainings) == 1
    record = json.loads((first.model_dir / teachers.STORE_MARKER).read_text())
    assert record == first.store_record
    assert record["train_examples"] == 320 and record["train_seconds"] > 0
    assert record["finetune_args"]["seed"] == 1
    accuracy = record["evaluation"]["validation"]["metrics"]["accuracy"]
    gold = np.asarray(
        pipeline.check_inputs(pipeline.read_settings(teacher_cfg())).gold["validation"]
    )
    assert accuracy > teachers.constant_baseline(SST2, gold) + 0.1
    assert not (first.model_dir / "training_args.bin").exists()  # no pickles in the store
    assert not first.model_dir.with_name(first.model_dir.name + ".work").exists()

    second = _prepare(teacher_cfg())
    assert len(trainings) == 1  # no training: the store entry was reused
    assert second.origin == teachers.STORE
    assert (second.model_dir, second.model_id) == (first.model_dir, first.model_id)

    other_seed = _prepare(teacher_cfg("teachers.toy_bert.finetune_args.seed=2"))
    assert len(trainings) == 2 and other_seed.model_dir != first.model_dir


class Interrupt(Exception):
    pass


def test_interrupted_fine_tuning_resumes_from_its_last_checkpoint(
    teacher_cfg, trainings, monkeypatch
):
    cfg = teacher_cfg(
        "teachers.toy_bert.finetune_args.epochs=1",
        "+teachers.toy_bert.finetune_args.save_steps=3",
    )
    steps = 320 // 16
    real = teachers.store._teacher_trainer

    class StopAtStep5(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise Interrupt  # like a killed job: checkpoint-3 is on disk, step 4-5 lost

    def interrupted_trainer(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.add_callback(StopAtStep5())
        return trainer

    monkeypatch.setattr(teachers.store, "_teacher_trainer", interrupted_trainer)
    with pytest.raises(Interrupt):
        _prepare(cfg)
    work = next(Path(cfg.paths.teachers_dir).glob("*.work"))
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-3"]

    monkeypatch.setattr(teachers.store, "_teacher_trainer", real)
    teacher = _prepare(cfg)
    assert trainings[-1]["resume_from_checkpoint"] == str(work / "checkpoint-3")
    assert trainings[-1]["steps"] == steps - 3  # resumed at step 3, not from scratch
    assert teacher.store_record["resumed_from_step"] == 3
    assert teacher.store_record["global_step"] == steps
    assert not work.exists()


def _flipped_head_copy(model_dir: Path, folder: Path, id2label: dict) -> Path:
    """`model_dir` with its two output rows swapped, saved with `id2label` as its names."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label = id2label
    model.config.label2id = {name: i for i, name in id2label.items()}
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder)
    return folder


def test_a_permuted_head_gives_the_same_cached_logits_after_alignment(
    tiny_assets, keyword_task, tmp_path
):
    tokenizer_dir = tiny_assets / "models" / "teacher_bert"
    original = tmp_path / "original"
    toy.build_tiny_model("bert", original, tokenizer_dir, labels=["negative", "positive"], **TINY)
    # Column 0 now predicts 'positive', and the checkpoint says so.
    permuted = _flipped_head_copy(original, tmp_path / "permuted", {0: "POSITIVE", 1: "NEGATIVE"})

    splits = DatasetDict({"validation": _toy_split(keyword_task, 40)})
    cache = SoftLabelCache(tmp_path / "cache")
    logits = {}
    for name, folder in [("original", original), ("permuted", permuted)]:
        spec = _spec(name=name, source=str(folder))
        teacher = teachers.prepare(spec, SST2, splits, tmp_path / "store", cache=cache)
        entry = teachers.cached_logits(teacher, SST2, splits, cache)["validation"]
        assert not entry.hit
        logits[name] = (teacher, entry.logits)
    (plain, expected), (aligned, got) = logits["original"], logits["permuted"]
    assert (plain.label_alignment, aligned.label_alignment) == (None, [1, 0])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected[:, 0], expected[:, 1])  # the columns do differ
    # Read by a later run (a new cache object: within one run, its own entries are not hits).
    later = SoftLabelCache(tmp_path / "cache")
    again = teachers.cached_logits(aligned, SST2, splits, later)["validation"]
    assert again.hit and np.array_equal(again.logits, got)  # the aligned logits were cached


def _toy_split(folder, n):
    rows = (folder / "validation.jsonl").read_text().splitlines()
    return Dataset.from_list([json.loads(row) for row in rows[:n]])


def test_a_checkpoint_in_the_wrong_order_is_caught_by_the_gate_before_its_train_split(
    teacher_cfg, tmp_path, monkeypatch
):
    """A good teacher whose head lists generic LABEL_i names in the wrong order: alignment
    cannot know, so it takes LABEL_i as task label i; the gate must stop the run."""
    good = _prepare(teacher_cfg())
    flipped = _flipped_head_copy(good.model_dir, tmp_path / "flipped", {0: "LABEL_0", 1: "LABEL_1"})
    overrides = [
        "teachers.toy_bert.finetune=false",
        f"+teachers.toy_bert.checkpoints={{sst2: '{flipped}'}}",
    ]
    passes = []
    real = teachers.logits.predict
    monkeypatch.setattr(
        teachers.logits, "predict", lambda *a, **k: passes.append(a[-1]) or real(*a, **k)
    )
    cfg = teacher_cfg(*overrides)
    inputs = pipeline.check_inputs(pipeline.read_settings(cfg))
    cache = SoftLabelCache(cfg.paths.logits_dir)
    with pytest.raises(teachers.TeacherBelowFloor, match="(?s)'toy_bert'.*accuracy=0.0000"):
        pipeline.teacher_logits(inputs, cache)
    assert passes == ["Teacher toy_bert on validation"]  # stopped before the train split

    # Switched off, the run goes on and the record says what the gate found.
    off = teacher_cfg(*overrides, "teacher_gate=false")
    _, records, _ = pipeline.teacher_logits(
        pipeline.check_inputs(pipeline.read_settings(off)), cache
    )
    gate = records["toy_bert"]["gate"]
    assert gate["enabled"] is False and not gate["splits"]["validation"]["passed"]
    # With the right label_map, the same checkpoint passes.
    fixed = teacher_cfg(*overrides, "+teachers.toy_bert.label_map={0: positive, 1: negative}")
    _, records, _ = pipeline.teacher_logits(
        pipeline.check_inputs(pipeline.read_settings(fixed)), cache
    )
    assert records["toy_bert"]["label_alignment"] == [1, 0]
    assert records["toy_bert"]["gate"]["splits"]["validation"]["passed"]


def test_teacher_records_and_table(teacher_cfg):
    cfg = teacher_cfg(
        "teachers=[toy_bert,toy_roberta]", f"teachers.toy_roberta.finetune_args={KEYWORD_SETTINGS}"
    )
    inputs = pipeline.check_inputs(pipeline.read_settings(cfg))
    cache = SoftLabelCache(cfg.paths.logits_dir)
    _, records, _ = pipeline.teacher_logits(inputs, cache)
    results = pipeline.teacher_results(inputs, records, cache)
    for name, record in records.items():
        assert record["origin"] == "finetuned" and record["examples_per_second"] > 0
        assert (
            record["finetune"]["evaluation"]["validation"]["metrics"]
            == record["metrics"]["validation"]
        )
        assert record["gate"]["splits"]["validation"]["passed"], name
    table = report.teacher_table(results).splitlines()
    assert table[0].split() == [
        "teacher", "source", "params", "validation", "gate", "ex/s", "fine-tune", "origin"
    ]  # fmt: skip
    accuracy = records["toy_bert"]["metrics"]["validation"]["accuracy"]
    assert table[1].startswith("toy_bert") and f"accuracy={accuracy:.4f}" in table[1]
    assert (
        "fine-tuned now" in table[1] and "all 320 ex x 5 ep, lr 0.003, batch 16, seed 1" in table[1]
    )

    _, again, _ = pipeline.teacher_logits(inputs, SoftLabelCache(cfg.paths.logits_dir))
    assert all(r["origin"] == "store" and r["examples_per_second"] is None for r in again.values())
    rows = report.teacher_table({**results, "teachers": again}).splitlines()[1:]
    assert all("cached" in row and "from store" in row for row in rows)


def test_config_yaml_gate_switch_is_on_by_default():
    assert OmegaConf.select(compose(), "teacher_gate") is True


def test_seed_variants_of_one_base_get_their_own_store_and_cache_entries(teacher_cfg):
    cfg = teacher_cfg("teachers.toy_bert.seeds=[1,2]")
    inputs = pipeline.check_inputs(pipeline.read_settings(cfg))
    logits, records, _ = pipeline.teacher_logits(inputs, SoftLabelCache(cfg.paths.logits_dir))
    assert list(records) == ["toy_bert_s1", "toy_bert_s2"]
    stores = {r["finetune"]["store_dir"] for r in records.values()}
    fingerprints = {fp for r in records.values() for fp in r["cache"].values()}
    assert len(stores) == 2 and len(fingerprints) == 4  # 2 teachers x (train, validation)
    assert [r["finetune"]["finetune_args"]["seed"] for r in records.values()] == [1, 2]
    assert not np.array_equal(logits["toy_bert_s1"]["train"], logits["toy_bert_s2"]["train"])


@pytest.mark.slow
def test_teachers_stage_cli_prepares_teachers_without_distilling(keyword_overrides, tmp_path):
    out = tmp_path / "stage"
    args = [*keyword_overrides, f"hydra.run.dir={out}"]
    proc = sead_run("stage=teachers", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, row = proc.stdout.strip().splitlines()[-2:]
    assert header.split()[:3] == ["teacher", "source", "params"]
    assert row.startswith("toy_bert") and "pass" in row and "fine-tuned now" in row
    saved = json.loads((out / "teachers.json").read_text())
    assert saved["teachers"]["toy_bert"]["origin"] == "finetuned"
    assert "student" not in saved and not (out / "student").exists()

    unknown = sead_run("stage=teachers", "teachers=[toy_bert,nope]", timeout=120)
    assert unknown.returncode == 1 and "Unknown teacher(s) ['nope']" in unknown.stderr


@pytest.mark.slow
def test_teachers_stage_prepares_the_logits_the_full_run_reads(keyword_overrides, tmp_path):
    """`stage=teachers` builds its cache with `cfg.cache`, as the full run does: storage dtype
    and precision are part of every key, so with another dtype it used to fill entries the run
    never read."""
    stage = sead_run(
        "stage=teachers",
        "cache.dtype=float16",
        *keyword_overrides,
        f"hydra.run.dir={tmp_path / 'stage'}",
    )
    assert stage.returncode == 0, stage.stderr[-3000:]
    manifests = list((tmp_path / "cache" / "logits").glob("*/manifest.json"))
    assert {json.loads(m.read_text())["dtype"] for m in manifests} == {"float16"}

    cfg = compose(
        [*keyword_overrides, "cache.dtype=float16", "train.epochs=1", "report.speed_samples=0"],
        output_dir=str(tmp_path / "run"),
    )
    results = pipeline.run(cfg)
    teacher = results["teachers"]["toy_bert"]
    assert teacher["origin"] == "store" and all(teacher["cache_hit"].values())
    assert results["cache"]["misses"] == 0


@pytest.mark.slow
def test_every_stage_records_its_failure_in_its_results_file(tmp_path):
    for stage, results_file in [("teachers", "teachers.json"), ("bogus", "results.json")]:
        out = tmp_path / stage
        proc = sead_run(f"stage={stage}", "task=axb", f"hydra.run.dir={out}", timeout=120)
        assert proc.returncode == 1
        saved = json.loads((out / results_file).read_text())
        assert saved["status"] == "failed" and saved["error"]["type"] == "ValueError"
        expected = "diagnostic set" if stage == "teachers" else "expected one of all, teachers"
        assert expected in saved["error"]["message"]


def test_shipped_minilm_teachers_use_the_recipe_the_readme_states():
    """README: the GLUE recipe, 3 epochs on all of train; the shipped MiniLM pair does
    exactly that (minilm_weak is the documented exception)."""
    cfg = compose(["teachers=[minilm,minilm_s2]"])
    recipe = teachers.FinetuneArgs.from_config("glue", GLUE_RECIPE)
    for spec in teachers.teacher_specs(cfg.teachers, SST2):
        args = spec.finetune_args
        assert (args.epochs, args.max_train_samples) == (recipe.epochs, None), spec.name
        assert (args.batch_size, args.warmup_ratio) == (recipe.batch_size, recipe.warmup_ratio)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "3 epochs" in readme and "4,000-example slice of train)" not in readme


def test_the_teacher_table_states_the_effective_settings_and_a_slice_too_big(caplog):
    cfg = compose(["teachers=[minilm_s2]", "teachers.minilm_s2.finetune_args.max_train_samples=50"])
    (spec,) = teachers.teacher_specs(cfg.teachers, SST2)
    train = Dataset.from_dict({"sentence": ["a"] * 40, "label": [0, 1] * 20, "idx": range(40)})
    splits = DatasetDict({"train": train})
    settings = teachers.finetune_settings(spec, SST2, splits)
    assert settings["summary"] == "all 40 ex (slice 50 > split) x 3 ep, lr 5e-05, batch 32, seed 2"
    assert (settings["train_examples"], settings["sliced"]) == (40, False)
    with caplog.at_level("WARNING"):
        assert len(teachers.teacher_train_split(spec, SST2, splits)) == 40
    assert "max_train_samples=50 is not smaller than the train split (40 examples)" in caplog.text
    small = replace(spec, finetune_args=replace(spec.finetune_args, max_train_samples=10))
    summary = teachers.finetune_settings(small, SST2, splits)["summary"]
    assert summary.startswith("10 of 40 ex (slice seed 2) x 3 ep")


def test_a_bin_only_teachers_parameters_are_counted_from_disk(tiny_assets, tmp_path):
    """A teacher whose logits are all cache hits is never built: its size is read from its
    files, `.safetensors` headers or, for a `.bin`-only checkpoint, its tensors' shapes."""
    from types import SimpleNamespace

    from sead.teachers.logits import _count_params_from_disk

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_assets / "models" / "teacher_bert"
    )
    expected = sum(tensor.numel() for tensor in model.state_dict().values())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    torch.save({"not": "tensors"}, tmp_path / "training_args.bin")  # as Trainer leaves it
    assert _count_params_from_disk(SimpleNamespace(model_dir=tmp_path)) == expected


def test_a_teacher_max_length_beyond_its_position_table_is_refused_at_the_check(tiny_assets):
    """Found from the config alone, for a loaded checkpoint and a base model sead fine-tunes."""
    from tests.helpers import teacher_spec

    folder = tiny_assets / "models" / "teacher_bert"
    positions = AutoConfig.from_pretrained(folder).max_position_embeddings
    sst2 = get_task("sst2")
    for finetune in (False, True):
        spec = teacher_spec("big", folder, finetune=finetune, max_length=positions + 1)
        with pytest.raises(ValueError, match=rf"teachers.big.max_length={positions + 1}, but"):
            teachers.check_labels(spec, sst2)
