"""Ensemblers: combine the teachers' cached logits into the student's soft targets.

Every strategy is a small class in `ENSEMBLERS`, selected by `conf/ensemble/<name>.yaml`.
`combine` takes stacked logits `[n_teachers, n_examples, n_labels]` and returns
targets `[n_examples, n_labels]`: class probabilities at temperature T for
classification, the predicted score (one column) for regression.

Strategies that learn something (weights, temperatures) do it in `fit`, on the
teachers' logits and the gold labels of `ensemble.fit_split` (default: the task's first eval split).
When that split is also reported, `assess` scores it by k-fold cross-fitting, so no
reported number comes from an example the ensembler was fitted on.

`sead stage=ensemble task=sst2 'teachers=[a,b,c]'` prints every strategy next to
each teacher alone, from cached logits, without training a student (`sead.pipeline`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf
from scipy.optimize import minimize, nnls
from scipy.special import log_softmax, softmax
from sklearn.model_selection import KFold, StratifiedKFold

from sead import choices, metrics
from sead.config import build as build_settings
from sead.config import check_keys, check_like_defaults, container, setting
from sead.tasks import PAD_LOGIT, UNLABELED, TaskSpec

log = logging.getLogger(__name__)

ENSEMBLERS: dict[str, type[Ensembler]] = {}
# Keys of `cfg.ensemble` that configure the ensemble stage, not the strategy itself.
STAGE_KEYS = ("fit_split", "folds", "fold_seed")
MIN_SCALE = 1e-4  # a fitted per-teacher temperature is at most 1 / MIN_SCALE
# ... and at least 1 / MAX_SCALE: on a fit split a teacher gets all right, the NLL falls for
# ever as its logits are scaled up, and soft labels would turn one-hot at any KD temperature.
MAX_SCALE = 20.0
CHANCE_PERMUTATIONS = 10


def register(name: str):
    def add(cls):
        cls.name = name
        ENSEMBLERS[name] = cls
        return cls

    return add


def regression_strategies() -> list[str]:
    return [name for name, cls in ENSEMBLERS.items() if cls.supports_regression]


class Ensembler:
    """Base class: a weighted combination of (optionally rescaled) teacher logits.

    Subclasses change what `weights`, `temperatures` and `example_weights` return,
    and learn them in `_fit` when they need held-out labels.
    """

    name = "base"
    supports_regression = True
    needs_fit = False  # True: `fit` must run before `combine`
    over = "logits"  # average logits (then soften) or probabilities at T
    ensemble_temperature = 1.0  # the combined logits are divided by this (and by the KD T)

    def __init__(self, task: TaskSpec, teacher_names: list[str]):
        if task.is_regression and not self.supports_regression:
            raise ValueError(
                f"Ensemble {self.name!r} needs class probabilities, but task {task.name!r} is "
                f"a regression task. Strategies that support regression: "
                f"{', '.join(regression_strategies())}."
            )
        self.task = task
        self.teacher_names = list(teacher_names)
        self.fitted = False

    @classmethod
    def options(cls) -> list[str]:
        """The options `ensemble.<option>` this strategy takes: its `__init__`'s own arguments."""
        arguments = list(inspect.signature(cls.__init__).parameters)
        return [name for name in arguments if name not in ("self", "task", "teacher_names")]

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> Ensembler:
        """Learn from held-out teacher logits and their gold labels."""
        logits = check_logits(logits, self.task, self.teacher_names)
        self._fit(logits, check_labels(labels, logits.shape[1], self.task))
        self.fitted = True
        return self

    def _fit(self, logits: np.ndarray, labels: np.ndarray) -> None:
        """Nothing to learn by default."""

    def weights(self) -> np.ndarray:
        """One weight per teacher."""
        n = len(self.teacher_names)
        return np.full(n, 1.0 / n)

    def temperatures(self) -> np.ndarray:
        """Each teacher's logits are divided by its own temperature before combining."""
        return np.ones(len(self.teacher_names))

    def example_weights(self, scaled_logits: np.ndarray) -> np.ndarray:
        """Weights `[n_teachers, n_examples]`: the same for every example by default."""
        return np.broadcast_to(self.weights()[:, None], scaled_logits.shape[:2])

    def combine(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        logits = check_logits(logits, self.task, self.teacher_names)
        self._check_fitted()
        if self.task.is_regression:
            return (self.example_weights(logits)[..., None] * logits).sum(axis=0)
        scaled = logits / self.temperatures()[:, None, None]
        w = self.example_weights(scaled)[..., None]
        t = temperature * self.ensemble_temperature
        if self.over == "probs":
            return (w * softmax(scaled / t, axis=-1)).sum(axis=0)
        return softmax((w * scaled).sum(axis=0) / t, axis=-1)

    def predict(self, logits: np.ndarray) -> np.ndarray:
        """Hard predictions (label ids, or scores for regression) at T = 1."""
        return metrics.hard_predictions(self.task, self.combine(logits, 1.0))

    def describe(self) -> dict:
        """What the ensembler uses: weights, each teacher's temperature, the ensemble's."""
        self._check_fitted()
        return {
            "name": self.name,
            "weights": self._by_teacher(self.weights()),
            "temperatures": self._by_teacher(self.temperatures()),
            "temperature": float(self.ensemble_temperature),
            "over": self.over,
        }

    def _by_teacher(self, values) -> dict[str, float]:
        return dict(zip(self.teacher_names, map(float, values), strict=True))

    def _check_fitted(self) -> None:
        if self.needs_fit and not self.fitted:
            raise RuntimeError(
                f"Ensemble {self.name!r} learns from held-out labels: call "
                f"fit(logits, labels) before combine (sead fits it on ensemble.fit_split)."
            )

    def _set_over(self, over: str) -> None:
        if over not in ("logits", "probs"):
            raise ValueError(f"ensemble.over must be 'logits' or 'probs', got {over!r}.")
        if over == "probs" and self.task.is_regression:
            raise ValueError(
                f"ensemble.over=probs needs class probabilities; task {self.task.name!r} is "
                f"a regression task (use over=logits, which averages the scores)."
            )
        self.over = over


@register("mean_logits")
class MeanLogits(Ensembler):
    """Average the logits, then soften: the classic multi-teacher KD target."""


@register("mean_probs")
class MeanProbs(Ensembler):
    """Average each teacher's probabilities at temperature T."""

    supports_regression = False
    over = "probs"


@register("weighted")
class Weighted(Ensembler):
    """Static weights from the config, one per teacher: `{bert: 2, roberta: 1}`."""

    def __init__(self, task, teacher_names, weights=None, over="logits"):
        super().__init__(task, teacher_names)
        self._set_over(over)
        self._weights = _validated_weights(weights, self.teacher_names)

    def weights(self) -> np.ndarray:
        return self._weights


@register("metric_weighted")
class MetricWeighted(Ensembler):
    """Weights from each teacher's skill on the fit split: its metric above chance.

    Chance is the same teacher's metric against shuffled gold labels (what its
    predictions score with no information), so a random teacher gets ~0 skill
    whatever the metric (accuracy, F1, Matthews, Pearson). `proportional`:
    w ∝ max(skill, 0); `softmax`: w ∝ exp(sharpness * skill).
    """

    needs_fit = True

    def __init__(
        self, task, teacher_names, metric=None, mode="proportional", sharpness=20.0, over="logits"
    ):
        super().__init__(task, teacher_names)
        self._set_over(over)
        self.metric = metric or task.main_metric
        if self.metric not in task.metrics:
            raise ValueError(
                f"ensemble.metric={self.metric!r} is not a metric of task {task.name!r}: "
                f"expected one of {list(task.metrics)}."
            )
        if self.metric in metrics.GROUPED_METRICS.get(task.name, ()):
            raise ValueError(
                f"ensemble.metric={self.metric!r} scores groups of rows (e.g. questions), which "
                f"the ensembler does not see; use {task.main_metric!r}."
            )
        if mode not in ("proportional", "softmax"):
            raise ValueError(f"ensemble.mode must be 'proportional' or 'softmax', got {mode!r}.")
        if not float(sharpness) > 0:
            raise ValueError(f"ensemble.sharpness must be positive, got {sharpness}.")
        self.mode, self.sharpness = mode, float(sharpness)

    def _fit(self, logits, labels):
        rng = np.random.default_rng(0)
        shuffles = [rng.permutation(labels) for _ in range(CHANCE_PERMUTATIONS)]
        skill = []
        for teacher in logits:
            predictions = metrics.hard_predictions(self.task, teacher)
            value = self._metric(predictions, labels)
            chance = np.mean([self._metric(predictions, shuffled) for shuffled in shuffles])
            # nan: constant predictions. Rounded: on a one-class slice every permutation
            # scores the same, and a mean's last bit must not hand one teacher every weight.
            skill.append(np.round(np.nan_to_num(value - chance), 12))
        self.skill = np.asarray(skill)
        if self.mode == "softmax":
            self._weights = softmax(self.sharpness * self.skill)
            return
        positive = np.clip(self.skill, 0.0, None)
        if positive.sum() <= 0:
            log.warning("metric_weighted: no teacher beats chance on the fit split; equal weights.")
            positive = np.ones_like(positive)
        self._weights = positive / positive.sum()

    def _metric(self, predictions, labels) -> float:
        # The plain functions behind sead.metrics: fast enough to call per permutation.
        return metrics.CONFIGS[self.task.name](predictions, labels)[self.metric]

    def weights(self):
        return self._weights

    def describe(self):
        return {**super().describe(), "skill": self._by_teacher(self.skill)}


@register("calibrated")
class Calibrated(Ensembler):
    """Temperature-scale each teacher to its lowest NLL on the fit split, then average.

    An over-confident teacher would otherwise dominate an average of logits; after
    scaling, every teacher speaks on the same confidence scale (Guo et al., 2017).
    """

    supports_regression = False
    needs_fit = True

    def __init__(self, task, teacher_names, over="logits"):
        super().__init__(task, teacher_names)
        self._set_over(over)

    def _fit(self, logits, labels):
        scales = [
            _fit_logit_scales(z[None], labels, lower=MIN_SCALE, what=f"teacher {name!r}")[0]
            for name, z in zip(self.teacher_names, logits, strict=True)
        ]
        self._temperatures = 1.0 / np.asarray(scales)

    def temperatures(self):
        return self._temperatures


@register("learned")
class Learned(Ensembler):
    """Non-negative weights (and one temperature) with the lowest ensemble NLL on the fit split.

    The ensemble is softmax(sum_i w_i z_i / tau). With v_i = w_i / tau the NLL is convex
    in v >= 0, so L-BFGS-B finds the global optimum; w = v / sum(v), tau = 1 / sum(v).
    Regression: non-negative least squares of the gold scores on the teachers' scores
    (no intercept); the weights are then scale factors and need not sum to one.
    """

    needs_fit = True

    def _fit(self, logits, labels):
        if self.task.is_regression:
            v, _ = nnls(logits[:, :, 0].T, labels.astype(np.float64))
            if v.sum() <= 0:
                raise ValueError(
                    f"ensemble=learned: no non-negative combination of the teachers fits the "
                    f"{self.task.name!r} scores (every weight is 0)."
                )
            self._weights, self.ensemble_temperature = v, 1.0
            return
        v = _fit_logit_scales(logits, labels, lower=0.0, what="the teachers' combination")
        total = max(v.sum(), MIN_SCALE)
        self._weights = v / total if v.sum() > 0 else np.full(len(v), 1.0 / len(v))
        self.ensemble_temperature = 1.0 / total

    def weights(self):
        return self._weights


@register("confidence")
class Confidence(Calibrated):
    """Per-example weights: the more confident teacher (lower entropy) counts more there.

    w_i(x) ∝ exp(-sharpness * H_i(x) / log L), H_i the entropy of teacher i on x, as in
    confidence-aware multi-teacher KD. With `calibrate` (default) each teacher is first
    temperature-scaled on the fit split, so that confidence means the same for every
    teacher and an over-confident one cannot take over.
    """

    def __init__(self, task, teacher_names, sharpness=4.0, calibrate=True, over="logits"):
        super().__init__(task, teacher_names, over=over)
        if not float(sharpness) >= 0:
            raise ValueError(f"ensemble.sharpness must be >= 0, got {sharpness}.")
        self.sharpness, self.calibrate = float(sharpness), bool(calibrate)
        self.needs_fit = self.calibrate

    def _fit(self, logits, labels):
        if self.calibrate:
            super()._fit(logits, labels)
        scaled = logits / self.temperatures()[:, None, None]
        self.mean_weights = self.example_weights(scaled).mean(axis=1)

    def temperatures(self):
        return super().temperatures() if self.calibrate else np.ones(len(self.teacher_names))

    def example_weights(self, scaled_logits):
        log_p = log_softmax(scaled_logits, axis=-1)
        entropy = -(np.exp(log_p) * log_p).sum(-1) / np.log(scaled_logits.shape[-1])
        return softmax(-self.sharpness * entropy, axis=0)

    def describe(self):
        out = super().describe()
        out["weights"] = "per example"
        if self.fitted:
            out["mean_weights"] = self._by_teacher(self.mean_weights)
        return out


@register("vote")
class Vote(Ensembler):
    """Hard majority vote as a smoothed one-hot target: a baseline.

    Ties go to the tied label with the highest mean probability over teachers, then
    to the lowest label id. The target is (1 - smoothing) on the winner plus
    smoothing / n_choices on every real choice; the KD temperature does not change it.
    """

    supports_regression = False

    def __init__(self, task, teacher_names, smoothing=0.1):
        super().__init__(task, teacher_names)
        if not 0.0 <= float(smoothing) < 1.0:
            raise ValueError(f"ensemble.smoothing must be in [0, 1), got {smoothing}.")
        self.smoothing = float(smoothing)

    def combine(self, logits, temperature=1.0):
        logits = check_logits(logits, self.task, self.teacher_names)
        n_labels = logits.shape[-1]
        votes = np.eye(n_labels)[logits.argmax(-1)].sum(axis=0)  # [n, L]
        tied = votes == votes.max(axis=-1, keepdims=True)
        mean_probs = softmax(logits, axis=-1).mean(axis=0)
        winner = np.where(tied, mean_probs, -1.0).argmax(-1)  # argmax: lowest id among equals
        real = (logits > PAD_LOGIT / 2).any(axis=0)  # record: no smoothing on padding choices
        spread = real / real.sum(-1, keepdims=True)
        return (1.0 - self.smoothing) * np.eye(n_labels)[winner] + self.smoothing * spread

    def describe(self):
        # One vote per teacher; no temperature applies to a vote.
        return {
            "name": self.name,
            "weights": self._by_teacher(self.weights()),
            "smoothing": self.smoothing,
        }


def _fit_logit_scales(
    logits: np.ndarray, labels: np.ndarray, lower: float, what: str
) -> np.ndarray:
    """Scales lower <= v <= MAX_SCALE minimising the NLL of softmax(sum_i v_i z_i) (convex in
    v), on the examples that have a gold choice."""
    ids = choices.label_ids(labels)
    logits = logits[:, ids != UNLABELED]
    ids = ids[ids != UNLABELED]
    n_teachers, n, n_labels = logits.shape
    if n == 0:
        raise ValueError("No example of the fit split has a gold answer to fit the ensemble on.")
    onehot = np.eye(n_labels)[ids]

    def nll_and_grad(v):
        log_p = log_softmax(np.tensordot(v, logits, axes=1), axis=-1)
        grad = np.einsum("tnl,nl->t", logits, np.exp(log_p) - onehot) / n
        return -(onehot * log_p).sum(-1).mean(), grad

    result = minimize(
        nll_and_grad,
        x0=np.full(n_teachers, 1.0 / n_teachers),
        jac=True,
        method="L-BFGS-B",
        bounds=[(lower, MAX_SCALE)] * n_teachers,
        options={"ftol": 1e-12, "gtol": 1e-8},  # tiny problem: converge tightly
    )
    if not result.success:
        log.warning("Ensemble fit did not fully converge: %s", result.message)
    if (np.tensordot(result.x, logits, axes=1).argmax(-1) == ids).all():
        log.warning(
            "Ensemble fit: %s is right on every one of the fit split's %d rows, so the NLL "
            "falls as its logits are scaled up without end and the fit stops at scale %.3g "
            "(at most %g): near one-hot soft labels. The fit split is too small, or the "
            "teachers were trained on it.",
            what,
            n,
            result.x.sum(),
            MAX_SCALE,
        )
    return np.asarray(result.x)


def _validated_weights(weights, teacher_names: list[str]) -> np.ndarray:
    if weights is None:
        raise ValueError(
            f"ensemble=weighted needs ensemble.weights, one per teacher: e.g. "
            f"'ensemble.weights={{{','.join(f'{n}:1' for n in teacher_names)}}}'."
        )
    if OmegaConf.is_config(weights):
        weights = OmegaConf.to_container(weights, resolve=True)
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(teacher_names))
        missing = sorted(set(teacher_names) - set(weights))
        if unknown or missing:
            raise ValueError(
                f"ensemble.weights must name each teacher {teacher_names} once: "
                f"missing {missing}, unknown {unknown}."
            )
        values = [weights[name] for name in teacher_names]
    else:
        values = list(weights)
        if len(values) != len(teacher_names):
            raise ValueError(
                f"ensemble.weights has {len(values)} value(s) for {len(teacher_names)} "
                f"teachers {teacher_names}."
            )
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    w = np.asarray(values if numbers else [np.nan], dtype=np.float64)
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"ensemble.weights must be non-negative numbers with a positive sum, got {values}."
        )
    return w / w.sum()


def check_logits(logits, task: TaskSpec, teacher_names: list[str]) -> np.ndarray:
    """Stack per-teacher logits and check they agree with each other and the task."""
    if isinstance(logits, (list, tuple)) and len(logits) == len(teacher_names):
        shapes = {name: np.shape(x) for name, x in zip(teacher_names, logits, strict=True)}
        if len(set(shapes.values())) > 1:
            raise ValueError(
                f"Teacher logits differ in shape: {shapes}. Every teacher must give one row "
                f"per example and {task.num_labels} column(s) for task {task.name!r}."
            )
        logits = np.stack(logits)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[0] != len(teacher_names):
        raise ValueError(
            f"Expected logits [n_teachers={len(teacher_names)}, n_examples, n_labels], "
            f"got shape {logits.shape}."
        )
    if task.num_labels and logits.shape[-1] != task.num_labels:  # record: as many as candidates
        raise ValueError(
            f"Teacher logits have {logits.shape[-1]} columns; task {task.name!r} needs "
            f"{task.num_labels}."
        )
    bad = [name for name, x in zip(teacher_names, logits, strict=True) if not np.isfinite(x).all()]
    if bad:
        raise ValueError(f"Logits of teacher(s) {bad} contain NaN or infinite values.")
    return logits


def check_labels(labels, n_examples: int, task: TaskSpec) -> np.ndarray:
    """Gold labels to fit on: one per example, inside the task's label set."""
    labels = np.asarray(labels)
    if task.is_multiple_choice and labels.ndim == 3 and len(labels) == n_examples:
        return labels  # record's credit table: fitted on its best candidates (choices.label_ids)
    if labels.shape != (n_examples,):
        raise ValueError(
            f"Got labels of shape {labels.shape} to fit an ensemble on {n_examples} examples."
        )
    if task.is_regression:
        return labels.astype(np.float64)
    if (
        not np.issubdtype(labels.dtype, np.integer)
        or not ((labels >= 0) & (labels < task.num_labels)).all()
    ):
        raise ValueError(
            f"Labels to fit an ensemble for task {task.name!r} must be label ids in "
            f"0..{task.num_labels - 1}, got {sorted(set(labels.tolist()))[:5]}."
        )
    return labels


def nll(targets: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of gold labels under target probabilities."""
    ids = choices.label_ids(labels)
    rows = np.flatnonzero(ids != UNLABELED)  # record: queries with a gold candidate
    p = np.clip(targets[rows, ids[rows]], 1e-12, 1.0)
    return float(-np.log(p).mean()) if len(rows) else float("nan")


def loss_name(task: TaskSpec) -> str:
    """How targets are scored against gold besides the task metrics: NLL, or MSE for scores."""
    return "mse" if task.is_regression else "nll"


def score(task: TaskSpec, targets: np.ndarray, labels: np.ndarray) -> tuple[dict, float]:
    """The task's official metrics of targets at T = 1, and their NLL (MSE for regression)."""
    predictions = metrics.hard_predictions(task, targets)
    if task.is_regression:
        loss = float(np.mean((targets[:, 0] - labels) ** 2))
    else:
        loss = nll(targets, labels)
    return metrics.compute(task.name, predictions, labels), loss


def build(cfg, task: TaskSpec, teacher_names: list[str]) -> Ensembler:
    """The ensembler named by `cfg.name` (a mapping, or `EnsembleSettings`), with the rest of
    `cfg` as its options; the stage's own keys (`STAGE_KEYS`) are not options."""
    name, options = _name_and_options(getattr(cfg, "strategy", cfg))
    return ENSEMBLERS[name](task, teacher_names, **options)


def _name_and_options(cfg) -> tuple[str, dict]:
    """A strategy's name and options, each option a parameter of its class (its signature)."""
    options = container(cfg, "ensemble")
    for key in STAGE_KEYS:
        options.pop(key, None)
    name = options.pop("name", None)
    if name not in ENSEMBLERS:
        raise ValueError(f"Unknown ensemble {name!r}: expected one of {sorted(ENSEMBLERS)}.")
    check_keys(options, ENSEMBLERS[name].options(), f"ensemble={name}", what="option")
    signature = inspect.signature(ENSEMBLERS[name].__init__).parameters
    check_like_defaults(options, {k: p.default for k, p in signature.items()}, "ensemble")
    return name, options


@dataclass(frozen=True)
class EnsembleSettings:
    """`cfg.ensemble`: the strategy (its name and options) and the stage's own keys."""

    strategy: dict  # {"name": ..., **options}, checked against the strategy's signature
    fit_split: str | None  # fitted strategies learn on it; null: held-out slice, else first eval
    folds: int = setting(low=2)  # k-fold cross-fitting when the fit split is also reported
    # not the run seed: sweeping `seed` keeps the ensemble's numbers
    fold_seed: int = setting(low=0, high=2**32 - 1)

    @property
    def name(self) -> str:
        return self.strategy["name"]

    @classmethod
    def from_config(cls, cfg) -> EnsembleSettings:
        raw = container(cfg, "ensemble")
        name, options = _name_and_options(raw)
        stage = {key: raw[key] for key in STAGE_KEYS if key in raw}
        return build_settings(cls, {"strategy": {"name": name, **options}, **stage}, "ensemble")


@dataclass(frozen=True)
class FitPlan:
    """Where fitted strategies learn, and how the fit split itself is scored."""

    split: str
    folds: int
    seed: int


def fit_plan(settings: EnsembleSettings, task: TaskSpec, heldout: str | None = None) -> FitPlan:
    """`ensemble.fit_split` (null: the run's held-out slice of train, `heldout`, when it has
    one, else the task's first eval split), `folds`, `fold_seed`."""
    split = settings.fit_split or heldout or task.eval_splits[0]
    return FitPlan(split=split, folds=settings.folds, seed=settings.fold_seed)


def fold_ids(labels: np.ndarray, task: TaskSpec, folds: int, seed: int) -> np.ndarray:
    """The held-out fold of each example: stratified by label when every class allows it."""
    n = len(labels)
    if n < folds:
        raise ValueError(
            f"ensemble.folds={folds} needs at least {folds} examples on the fit split, got {n}."
        )
    splitter, strata = KFold(folds, shuffle=True, random_state=seed), None
    if not task.is_regression and np.asarray(labels).ndim == 1:  # record's slots are no classes
        if np.bincount(labels, minlength=task.num_labels).min() >= folds:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
            strata = labels
        else:
            log.info("A label has fewer than %d examples: folds are not stratified.", folds)
    ids = np.empty(n, dtype=np.int64)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(n), strata)):
        ids[held_out] = fold
    return ids


def cross_fit(
    make: Callable[[], Ensembler], logits: np.ndarray, labels: np.ndarray, plan: FitPlan
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold targets at T = 1: each fold scored by an ensembler fitted on the others.

    Returns the targets and each example's fold id.
    """
    task = make().task
    ids = fold_ids(labels, task, plan.folds, plan.seed)
    targets = np.empty(logits.shape[1:])
    for fold in range(plan.folds):
        held_out = ids == fold
        ensembler = make().fit(logits[:, ~held_out], labels[~held_out])
        targets[held_out] = ensembler.combine(logits[:, held_out], 1.0)
    return targets, ids


def assess(
    make: Callable[[], Ensembler],
    logits: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    eval_splits: list[str],
    plan: FitPlan,
) -> tuple[Ensembler, dict]:
    """Fit on the fit split; score every eval split, cross-fitted where it is the fit split.

    `logits[split]` is stacked `[n_teachers, n_examples, n_labels]`. Returns the
    ensembler fitted on the whole fit split (for the student's targets) and its scores.
    """
    fitted = make().fit(logits[plan.split], labels[plan.split])
    # A strategy that learns nothing (mean_logits, vote...) has nothing to cross-fit.
    cross_fitted = {split: split == plan.split and fitted.needs_fit for split in eval_splits}
    targets = {}
    for split in eval_splits:
        if cross_fitted[split]:
            targets[split], _ = cross_fit(make, logits[split], labels[split], plan)
        else:
            targets[split] = fitted.combine(logits[split], 1.0)
    scores = split_scores(fitted.task, targets, labels)
    scores["cross_fitted"] = cross_fitted
    return fitted, scores


def baselines(
    task: TaskSpec,
    teacher_names: list[str],
    logits: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    eval_splits: list[str],
) -> dict[str, dict]:
    """Each teacher alone and the plain `mean_logits` average, on the same splits."""
    candidates = {
        f"teacher {name}": (MeanLogits(task, [name]), slice(i, i + 1))
        for i, name in enumerate(teacher_names)
    }
    candidates["mean_logits"] = (MeanLogits(task, teacher_names), slice(None))
    return {
        label: split_scores(
            task, {split: plain.combine(logits[split][rows], 1.0) for split in eval_splits}, labels
        )
        for label, (plain, rows) in candidates.items()
    }


def split_scores(task: TaskSpec, targets: dict[str, np.ndarray], labels: dict) -> dict:
    """`{"metrics": {split: ...}, "nll" (or "mse"): {split: ...}}` for targets per split."""
    out = {"metrics": {}, loss_name(task): {}}
    for split, split_targets in targets.items():
        out["metrics"][split], out[loss_name(task)][split] = score(
            task, split_targets, labels[split]
        )
    return out


def stage_record(
    settings: EnsembleSettings, ensembler: Ensembler, plan: FitPlan, scores: dict, comparison: dict
) -> dict:
    """The `ensemble` block of results.json."""
    _, options = _name_and_options(settings.strategy)
    return {
        **ensembler.describe(),
        "options": options,
        "fit_split": plan.split,
        "folds": plan.folds,
        "fold_seed": plan.seed,
        **scores,
        "comparison": comparison,
    }
