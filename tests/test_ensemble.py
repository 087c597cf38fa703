"""Each ensembler on fixed logits whose right answer is known by hand."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from sead.ensemble import build, nll
from sead.tasks import get_task

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
