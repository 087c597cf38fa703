"""Each ensembler on fixed logits whose right answer is known by hand."""

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import sead.distill
import sead.ensemble
from sead import pipeline, report
from sead.ensemble import (
    Ensembler,
    EnsembleSettings,
    FitPlan,
    assess,
    build,
    cross_fit,
    fit_plan,
    fold_ids,
    nll,
)
from sead.tasks import get_task
from tests.helpers import compose, sead_run

SST2, STSB = get_task("sst2"), get_task("stsb")
NAMES = ["a", "b"]
# Two teachers, two examples, two labels.
LOGITS = np.array([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 4.0]]])


def _ensemble(name, **options):
    return build(OmegaConf.create({"name": name, **options}), SST2, NAMES)


def _softmax_row(z):
    e = np.exp(np.asarray(z) - np.max(z))
    return e / e.sum()


def test_mean_logits_averages_logits_then_softens():
    targets = _ensemble("mean_logits").combine(LOGITS, temperature=2.0)
    # mean logits: [1, 0] and [0, 2]; divided by T=2: [0.5, 0] and [0, 1]
    np.testing.assert_allclose(targets[0], _softmax_row([0.5, 0.0]))
    np.testing.assert_allclose(targets[1], _softmax_row([0.0, 1.0]))


def test_mean_probs_averages_probabilities_at_temperature():
    targets = _ensemble("mean_probs").combine(LOGITS, temperature=2.0)
    expected0 = (_softmax_row([1.0, 0.0]) + _softmax_row([0.0, 0.0])) / 2
    expected1 = (_softmax_row([0.0, 0.0]) + _softmax_row([0.0, 2.0])) / 2
    np.testing.assert_allclose(targets, [expected0, expected1])
    np.testing.assert_allclose(targets.sum(-1), 1.0)


def test_weighted_normalises_and_follows_the_heavier_teacher():
    ens = _ensemble("weighted", weights={"a": 3, "b": 1})
    assert ens.describe()["weights"] == {"a": 0.75, "b": 0.25}
    targets = ens.combine(LOGITS, temperature=1.0)
    np.testing.assert_allclose(targets[0], _softmax_row([1.5, 0.0]))
    np.testing.assert_allclose(targets[1], _softmax_row([0.0, 1.0]))
    # a list in teacher order is accepted too
    np.testing.assert_allclose(_ensemble("weighted", weights=[3, 1]).combine(LOGITS), targets)


@pytest.mark.parametrize(
    "weights, message",
    [
        (None, "needs ensemble.weights"),
        ([1.0], "1 value"),
        ({"a": 1}, "missing \\['b'\\]"),
        ({"a": 1, "b": 1, "c": 1}, "unknown \\['c'\\]"),
        ([1, -1], "non-negative"),
        ([0, 0], "positive sum"),
    ],
)
def test_weighted_rejects_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        _ensemble("weighted", weights=weights)


def test_weighted_over_probs():
    ens = _ensemble("weighted", weights=[1, 1], over="probs")
    np.testing.assert_allclose(
        ens.combine(LOGITS, 2.0), _ensemble("mean_probs").combine(LOGITS, 2.0)
    )


def test_predict_is_argmax_at_temperature_one():
    np.testing.assert_array_equal(_ensemble("mean_logits").predict(LOGITS), [0, 1])


def test_regression_averages_scores():
    ens = build(OmegaConf.create({"name": "mean_logits"}), STSB, NAMES)
    scores = np.array([[[1.0], [4.0]], [[3.0], [2.0]]])
    np.testing.assert_allclose(ens.combine(scores, temperature=3.0), [[2.0], [3.0]])
    np.testing.assert_allclose(ens.predict(scores), [2.0, 3.0])


def test_unknown_ensembler_and_unknown_options_fail_clearly():
    with pytest.raises(ValueError, match="Unknown ensemble 'nope'.*mean_logits"):
        _ensemble("nope")
    with pytest.raises(ValueError, match="unknown option"):
        _ensemble("mean_logits", weights=[1, 2])


@pytest.mark.parametrize("name", sorted(sead.ensemble.ENSEMBLERS))
def test_every_strategy_rejects_an_unknown_option_by_name(name):
    """Options come from each strategy's `__init__`: a misspelling is named, with the options
    the strategy takes, never a bare TypeError."""
    options = sead.ensemble.ENSEMBLERS[name].options()
    taken = ", ".join(options) or "none"
    message = rf"ensemble={name} has unknown option\(s\) \['smoothnes'\]; expected some of: {taken}"
    with pytest.raises(ValueError, match=message):
        _ensemble(name, smoothnes=0.2)


def test_logits_that_disagree_with_task_or_each_other_fail_clearly():
    ens = _ensemble("mean_logits")
    with pytest.raises(ValueError, match="differ in shape"):
        ens.combine([np.zeros((2, 2)), np.zeros((3, 2))])
    with pytest.raises(ValueError, match="3 columns; task 'sst2' needs 2"):
        ens.combine(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="n_teachers=2"):
        ens.combine(np.zeros((3, 4, 2)))


def test_nll_of_known_probabilities():
    targets = np.array([[0.5, 0.5], [0.25, 0.75]])
    assert nll(targets, np.array([0, 1])) == pytest.approx(-(np.log(0.5) + np.log(0.75)) / 2)


# --- Fitted strategies, cross-fitting and the ensemble stage ---------------------------------

NAMES3 = ["good", "useless", "copy"]


def _binary_logits(margin):
    """Two-class logits whose log-odds of label 1 is `margin`."""
    return np.stack([-margin / 2, margin / 2], axis=-1)


def _sampled_task(n=3000, seed=0):
    """A teacher whose probabilities are exactly right (labels are drawn from them)."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0, 3, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(np.int64)
    return _binary_logits(margin), labels, rng


def _build(name, task=SST2, names=NAMES3, **options):
    return build(OmegaConf.create({"name": name, **options}), task, names)


@pytest.mark.parametrize(
    "name, options",
    [
        ("learned", {}),
        ("metric_weighted", {"mode": "proportional"}),
        ("metric_weighted", {"mode": "softmax"}),
    ],
)
def test_a_useless_teacher_gets_near_zero_weight(name, options):
    good, labels, rng = _sampled_task()
    useless = rng.normal(0, 3, good.shape)  # random logits, unrelated to the labels
    noisy_copy = good + rng.normal(0, 1, good.shape)
    ensembler = _build(name, **options).fit(np.stack([good, useless, noisy_copy]), labels)
    weights = ensembler.describe()["weights"]
    assert weights["useless"] < 0.02, weights
    assert weights["good"] > weights["copy"] > 0.02, weights
    assert sum(weights.values()) == pytest.approx(1.0)


def test_metric_weighted_on_a_one_class_slice_weighs_teachers_equally(caplog):
    """Every permutation of one class scores the same: no teacher beats chance, whatever the
    last bit of a mean of ten floats says."""
    rng = np.random.default_rng(0)
    labels = np.ones(100, dtype=np.int64)
    right = [rng.random(100) < p for p in (0.3, 0.7)]  # teacher a 30% right, b 70%
    logits = np.stack([_binary_logits(np.where(r, 2.0, -2.0)) for r in right])
    ensembler = build(OmegaConf.create({"name": "metric_weighted"}), SST2, NAMES)
    ensembler.fit(logits, labels)
    assert ensembler.describe()["weights"] == {"a": 0.5, "b": 0.5}
    assert "no teacher beats chance" in caplog.text


@pytest.mark.parametrize("name", ["learned", "calibrated"])
def test_a_teacher_right_on_every_fit_row_keeps_a_bounded_temperature(name, caplog):
    """Separable fit rows have no finite NLL optimum: the scale stops, bounded, and says so."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    logits = _binary_logits(np.where(labels == 1, 1.0, -1.0))[None]
    ensembler = build(OmegaConf.create({"name": name}), SST2, ["sure"]).fit(logits, labels)
    described = ensembler.describe()
    temperature = described["temperature" if name == "learned" else "temperatures"]
    if name == "calibrated":
        temperature = temperature["sure"]
    assert 1 / sead.ensemble.MAX_SCALE <= temperature < 0.1
    assert "is right on every one of the fit split's 200 rows" in caplog.text
    # with tiny logits it would scale them by thousands: the bound holds it at MAX_SCALE
    described = ensembler.fit(logits * 1e-3, labels).describe()
    temperature = described["temperature" if name == "learned" else "temperatures"]
    if name == "calibrated":
        temperature = temperature["sure"]
    assert temperature == pytest.approx(1 / sead.ensemble.MAX_SCALE)


def test_learned_recovers_a_known_temperature():
    good, labels, _ = _sampled_task()
    # Only one teacher, three times too confident: the right ensemble temperature is 3.
    ensembler = build(OmegaConf.create({"name": "learned"}), SST2, ["hot"])
    ensembler.fit((3 * good)[None], labels)
    assert ensembler.describe()["temperature"] == pytest.approx(3.0, rel=0.1)


def test_calibrated_tames_an_over_confident_copy():
    good, labels, _ = _sampled_task()
    logits = np.stack([good, 5 * good])  # same predictions, five times the confidence
    names = ["calm", "over"]
    calibrated = build(OmegaConf.create({"name": "calibrated"}), SST2, names).fit(logits, labels)
    temperatures = calibrated.describe()["temperatures"]
    assert temperatures["calm"] == pytest.approx(1.0, rel=0.1)  # already calibrated
    assert temperatures["over"] / temperatures["calm"] == pytest.approx(5.0, rel=1e-3)
    # Once each is rescaled the two teachers agree, so the ensemble is the calm teacher alone.
    np.testing.assert_allclose(
        calibrated.combine(logits), _softmax_rows(good / temperatures["calm"]), atol=1e-4
    )
    plain = build(OmegaConf.create({"name": "mean_logits"}), SST2, names)
    assert nll(calibrated.combine(logits), labels) < nll(plain.combine(logits), labels) - 0.1


def _softmax_rows(z):
    return np.stack([_softmax_row(row) for row in z])


def test_confidence_weights_each_example_towards_the_surer_teacher():
    # Teacher a is sure on example 0, unsure on 1; teacher b the other way round.
    logits = np.array([[[5.0, -5.0], [0.1, 0.0]], [[0.0, 0.1], [-5.0, 5.0]]])
    ensembler = _ensemble("confidence", calibrate=False, sharpness=4.0)
    weights = ensembler.example_weights(logits)
    assert weights[0, 0] > 0.9 and weights[1, 1] > 0.9
    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    np.testing.assert_array_equal(ensembler.predict(logits), [0, 1])
    plain = _ensemble("confidence", calibrate=False, sharpness=0.0).combine(logits)
    np.testing.assert_allclose(plain, _ensemble("mean_logits").combine(logits))


def test_confidence_with_calibration_is_not_taken_over_by_an_over_confident_teacher():
    good, labels, rng = _sampled_task()
    flipped = -4 * (good + rng.normal(0, 2, good.shape))  # loud, and mostly wrong
    logits = np.stack([good, flipped])
    names = ["good", "loud"]
    raw = build(OmegaConf.create({"name": "confidence", "calibrate": False}), SST2, names)
    calibrated = build(OmegaConf.create({"name": "confidence"}), SST2, names).fit(logits, labels)
    accuracy = {
        "raw": (raw.predict(logits) == labels).mean(),
        "calibrated": (calibrated.predict(logits) == labels).mean(),
        "good alone": (good.argmax(-1) == labels).mean(),
    }
    assert accuracy["raw"] < 0.5 < accuracy["calibrated"], accuracy
    assert accuracy["calibrated"] == pytest.approx(accuracy["good alone"], abs=0.02), accuracy


def test_vote_majority_smoothing_and_deterministic_ties():
    names = ["a", "b", "c"]
    vote = build(OmegaConf.create({"name": "vote", "smoothing": 0.2}), SST2, names)
    # Example 0: two of three say 1, although the dissenter is far more confident.
    logits = np.array([[[0.0, 0.1]], [[0.0, 0.1]], [[9.0, 0.0]]])
    np.testing.assert_allclose(vote.combine(logits, temperature=4.0), [[0.1, 0.9]])
    two = build(OmegaConf.create({"name": "vote", "smoothing": 0.0}), SST2, NAMES)
    # A 1-1 tie goes to the label with the higher mean probability...
    np.testing.assert_array_equal(two.predict(np.array([[[1.0, 0.0]], [[0.0, 3.0]]])), [1])
    np.testing.assert_array_equal(two.predict(np.array([[[3.0, 0.0]], [[0.0, 1.0]]])), [0])
    # ...and an exact tie in probabilities too goes to the lowest label id, every time.
    mirror = np.array([[[2.0, 0.0]], [[0.0, 2.0]]])
    np.testing.assert_array_equal(two.predict(mirror), [0])
    np.testing.assert_array_equal(two.predict(mirror[::-1]), [0])


def test_vote_rejects_bad_smoothing():
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        _ensemble("vote", smoothing=1.0)


def test_regression_learned_is_non_negative_least_squares():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 500)
    scores = np.stack([gold + rng.normal(0, 0.3, 500), rng.uniform(0, 5, 500)])[..., None]
    learned = build(OmegaConf.create({"name": "learned"}), STSB, NAMES).fit(scores, gold)
    weights = learned.describe()["weights"]
    assert weights["a"] == pytest.approx(1.0, abs=0.05) and weights["b"] < 0.02
    np.testing.assert_allclose(
        learned.predict(scores), 0 * gold + (np.array(list(weights.values())) @ scores[..., 0])
    )
    metric_weighted = build(OmegaConf.create({"name": "metric_weighted"}), STSB, NAMES)
    assert metric_weighted.fit(scores, gold).describe()["weights"]["b"] < 0.05


@pytest.mark.parametrize("name", ["calibrated", "confidence", "vote", "mean_probs"])
def test_strategies_that_need_probabilities_refuse_regression(name):
    with pytest.raises(ValueError, match=rf"'{name}'.*'stsb' is a regression task.*learned"):
        build(OmegaConf.create({"name": name}), STSB, NAMES)


@pytest.mark.parametrize("name", ["metric_weighted", "calibrated", "learned"])
def test_fitted_strategies_refuse_to_combine_before_fit(name):
    with pytest.raises(RuntimeError, match="call fit"):
        _build(name, names=NAMES).combine(LOGITS)


def test_fit_rejects_labels_that_do_not_match():
    ensembler = _build("learned", names=NAMES)
    with pytest.raises(ValueError, match=r"labels of shape \(3,\).*2 examples"):
        ensembler.fit(LOGITS, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"label ids in 0..1, got \[0, 2\]"):
        ensembler.fit(LOGITS, np.array([0, 2]))


def test_teachers_with_different_label_counts_or_nan_fail_clearly():
    ensembler = _build("calibrated", names=NAMES)
    two_way, three_way = np.zeros((4, 2)), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"differ in shape.*'b': \(4, 3\).*2 column"):
        ensembler.fit([two_way, three_way], np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=r"teacher\(s\) \['b'\].*NaN"):
        ensembler.fit([two_way, np.full((4, 2), np.nan)], np.zeros(4, dtype=int))


class _Spy(Ensembler):
    """Records the example ids (kept in logit column 0) it is fitted on and asked to combine."""

    def __init__(self, log):
        super().__init__(SST2, NAMES)
        self.log = log

    def _fit(self, logits, labels):
        self.log.append(("fit", set(logits[0, :, 0].astype(int))))

    def combine(self, logits, temperature=1.0):
        self.log.append(("combine", set(np.asarray(logits)[0, :, 0].astype(int))))
        return super().combine(logits, temperature)


def test_cross_fitting_never_scores_an_example_with_weights_fitted_on_it():
    n = 53
    ids = np.arange(n, dtype=np.float64)
    logits = np.stack([np.stack([ids, np.zeros(n)], axis=-1)] * 2)
    labels = np.arange(n) % 2
    events = []
    plan = FitPlan("validation", folds=5, seed=3)
    _, fold_of = cross_fit(lambda: _Spy(events), logits, labels, plan)
    fits = [rows for kind, rows in events if kind == "fit"]
    scored = [rows for kind, rows in events if kind == "combine"]
    assert len(fits) == len(scored) == plan.folds
    for fitted_on, held_out in zip(fits, scored, strict=True):
        assert not fitted_on & held_out
        assert fitted_on | held_out == set(range(n))
        assert len({int(f) for f in fold_of[sorted(held_out)]}) == 1  # one fold at a time
    assert sorted(i for rows in scored for i in rows) == list(range(n))  # each scored once
    # Stratified: every fold holds both labels in about the same proportion.
    for fold in range(plan.folds):
        assert abs(labels[fold_of == fold].mean() - 0.5) < 0.2
    np.testing.assert_array_equal(fold_of, fold_ids(labels, SST2, 5, 3))  # deterministic


def test_assess_cross_fits_the_fit_split_only():
    good, labels, rng = _sampled_task(n=600)
    logits = np.stack([good, rng.normal(0, 3, good.shape), good])
    other = np.stack([good[:100], good[:100], good[:100]])
    splits = {"validation": logits, "test": other}
    gold = {"validation": labels, "test": labels[:100]}
    plan = FitPlan(split="validation", folds=4, seed=0)
    fitted, scores = assess(lambda: _build("learned"), splits, gold, ["validation", "test"], plan)
    assert scores["cross_fitted"] == {"validation": True, "test": False}
    crossed, _ = cross_fit(lambda: _build("learned"), logits, labels, plan)
    assert scores["nll"]["validation"] == pytest.approx(nll(crossed, labels))
    assert scores["nll"]["test"] == pytest.approx(nll(fitted.combine(other), labels[:100]))
    # In-sample would be optimistic: the cross-fitted NLL is not below the in-sample one.
    assert scores["nll"]["validation"] >= nll(fitted.combine(logits), labels) - 1e-9


def test_comparison_table_claims_cross_fitting_only_where_it_happened():
    good, labels, rng = _sampled_task(n=200)
    logits = {s: np.stack([good, good + rng.normal(0, 1, good.shape)]) for s in ("validation",)}
    rows = sead.ensemble.baselines(SST2, NAMES, logits, {"validation": labels}, ["validation"])
    crossed = report.comparison_table(SST2, rows, FitPlan("validation", 5, 0))
    assert "* validation is the fit split: fitted strategies are scored by 5-fold" in crossed
    assert "validation* accuracy" in crossed
    on_heldout = report.comparison_table(SST2, rows, FitPlan("heldout", 5, 0))
    assert "cross-fitting" not in on_heldout and "*" not in on_heldout
    assert "Fitted strategies learned on heldout, which no column scores" in on_heldout


@pytest.mark.parametrize("name", ["mean_logits", "mean_probs", "vote"])
def test_assess_claims_no_cross_fitting_for_a_strategy_that_fits_nothing(name):
    good, labels, rng = _sampled_task(n=200)
    logits = np.stack([good, rng.normal(0, 3, good.shape), good])
    plan = FitPlan(split="validation", folds=4, seed=0)
    splits, gold = {"validation": logits}, {"validation": labels}
    fitted, scores = assess(lambda: _build(name), splits, gold, ["validation"], plan)
    assert scores["cross_fitted"] == {"validation": False}
    assert scores["nll"]["validation"] == pytest.approx(nll(fitted.combine(logits), labels))


def _settings(*overrides):
    return EnsembleSettings.from_config(compose(["ensemble=learned", *overrides]).ensemble)


@pytest.mark.parametrize(
    "override, message",
    [
        ("ensemble.folds=1", r"ensemble.folds=1 is not allowed: expected an integer in \[2"),
        ("ensemble.fold_seed=x", "ensemble.fold_seed='x' is not allowed"),
        ("~ensemble.folds", r"ensemble is missing key\(s\) \['folds'\]"),
        ("+ensemble.fold=3", r"ensemble=learned has unknown option\(s\) \['fold'\]"),
    ],
)
def test_fit_settings_reject_bad_settings(override, message):
    with pytest.raises(ValueError, match=message):
        _settings(override)


def test_fit_split_defaults_to_the_heldout_slice_else_the_tasks_first_eval_split():
    assert fit_plan(_settings(), SST2).split == "validation"
    assert fit_plan(_settings(), get_task("mnli")).split == "validation_matched"
    assert fit_plan(_settings(), SST2, heldout="heldout").split == "heldout"
    assert fit_plan(_settings("ensemble.fit_split=validation"), SST2, "heldout").split == (
        "validation"
    )
    assert fit_plan(_settings("ensemble.fit_split=train"), SST2) == FitPlan("train", 5, 0)


def test_too_few_examples_for_the_folds():
    with pytest.raises(ValueError, match="folds=5 needs at least 5 examples"):
        fold_ids(np.array([0, 1, 0]), SST2, 5, 0)


def test_stage_keys_are_not_strategy_options():
    cfg = OmegaConf.create({"name": "learned", "fit_split": "validation", "folds": 3})
    assert build(cfg, SST2, NAMES).name == "learned"


# --- The ensemble stage of the pipeline, and `python -m sead.run stage=ensemble` -------------


def _forbid_student_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the ensemble comparison must not train a student")

    monkeypatch.setattr(sead.distill, "distill", fail)


@pytest.mark.slow
def test_pipeline_records_the_fitted_ensemble_beside_each_teacher(tiny_cfg):
    cfg = tiny_cfg("ensemble=learned", "ensemble.folds=3", "data.max_train_samples=80")
    results = pipeline.run(cfg)
    block = results["ensemble"]
    assert block["name"] == "learned" and block["options"] == {}
    assert (block["fit_split"], block["folds"], block["fold_seed"]) == ("validation", 3, 0)
    assert set(block["weights"]) == {"toy_bert", "toy_roberta"} and block["temperature"] > 0
    assert block["cross_fitted"] == {"validation": True}
    assert 0 <= block["metrics"]["validation"]["accuracy"] <= 1 and block["nll"]["validation"] > 0
    assert list(block["comparison"]) == ["teacher toy_bert", "teacher toy_roberta", "mean_logits"]
    for name, teacher in results["teachers"].items():
        assert block["comparison"][f"teacher {name}"]["metrics"] == teacher["metrics"]
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert saved["ensemble"] == json.loads(json.dumps(block))
    assert "ensemble learned" in report.summary_table(results)


@pytest.mark.slow
def test_cli_compares_every_strategy_from_cached_logits(tiny_assets, tmp_path, monkeypatch):
    _forbid_student_training(monkeypatch)
    overrides = [
        "experiment=demo",
        f"paths.demo_dir={tiny_assets}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "teachers.toy_bert.finetune_args.epochs=1",
        "teachers.toy_roberta.finetune_args.epochs=1",
        "teacher_gate=false",  # one-epoch teachers are near chance
        "ensemble=metric_weighted",
        "ensemble.mode=softmax",
        "ensemble.folds=4",
    ]
    table, data = pipeline.compare_ensembles(compose(overrides, output_dir=str(tmp_path / "out")))
    fitted = ["metric_weighted", "calibrated", "learned", "confidence", "vote"]
    assert set(data["rows"]) >= {"teacher toy_bert", "mean_logits", "mean_probs", *fitted}
    assert data["rows"]["metric_weighted"]["cross_fitted"] == {"validation": True}
    assert "weighted: skipped (ensemble=weighted needs ensemble.weights" in table
    # Teachers were fine-tuned on train, but only validation logits were computed.
    assert len(list((tmp_path / "cache" / "logits").glob("*/manifest.json"))) == 2

    # The literal command line reads the same cache and prints the same table.
    run_dir = tmp_path / "cli"
    proc = sead_run("stage=ensemble", *overrides, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert table in proc.stdout
    assert json.loads((run_dir / "ensemble_comparison.json").read_text())["folds"] == 4
    assert "Cache hit" in proc.stdout and "Cache miss" not in proc.stdout  # Hydra logs to stdout


def test_regression_is_cross_fitted_and_scored_by_mse():
    rng = np.random.default_rng(1)
    gold = rng.uniform(0, 5, 200)
    scores = np.stack([gold + rng.normal(0, 0.5, 200), 0.5 * gold])[..., None]
    plan = FitPlan("validation", folds=5, seed=0)

    def make():
        return build(OmegaConf.create({"name": "learned"}), STSB, NAMES)

    fitted, result = assess(
        make, {"validation": scores}, {"validation": gold}, ["validation"], plan
    )
    assert set(result) == {"metrics", "mse", "cross_fitted"}
    assert result["metrics"]["validation"]["pearson"] > 0.9
    crossed, _ = cross_fit(make, scores, gold, plan)
    assert result["mse"]["validation"] == pytest.approx(np.mean((crossed[:, 0] - gold) ** 2))
    # The second teacher is right up to a factor of 2: NNLS finds it (and ~ignores the noisy one).
    assert fitted.describe()["weights"]["b"] == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "confidence", "calibrate": "no"}, r"ensemble.calibrate='no': expected true or"),
        ({"name": "confidence", "sharpness": "abc"}, r"ensemble.sharpness='abc': expected a num"),
        ({"name": "vote", "smoothing": True}, r"ensemble.smoothing=True: expected a number"),
        ({"name": "weighted", "weights": {"a": 1, "b": "x"}}, r"weights must be non-negative"),
    ],
)
def test_an_option_of_the_wrong_kind_is_named_not_taken_as_truthy(options, message):
    with pytest.raises(ValueError, match=message):
        build(OmegaConf.create(options), SST2, NAMES)
