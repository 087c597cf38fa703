"""The task registry: what every other stage needs to know about a GLUE task.

One `TaskSpec` per task is the single source of truth; `conf/task/<name>.yaml`
only selects a task by name, so a config can never disagree with the registry.
"""

from __future__ import annotations

from dataclasses import dataclass

CLASSIFICATION = "classification"
REGRESSION = "regression"
MULTIPLE_CHOICE = "multiple_choice"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    benchmark: str  # Hub dataset name: "glue" or "super_glue"
    text_fields: tuple[str, ...]  # one field (single sentence) or two (a pair)
    kind: str  # CLASSIFICATION, REGRESSION or MULTIPLE_CHOICE
    # label names in the dataset's label-id order; () for regression; for multiple choice, one
    # name per choice (copa), or () when the number of choices varies by example (record)
    labels: tuple[str, ...]
    metrics: tuple[str, ...]  # metric keys reported by sead.metrics, main metric first
    eval_splits: tuple[str, ...] = ("validation",)
    train_split: str = "train"

    @property
    def num_labels(self) -> int:
        """Width of a model's output layer: one column per label, one for regression."""
        return 1 if self.kind == REGRESSION else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.kind == REGRESSION

    @property
    def is_multiple_choice(self) -> bool:
        """Scored per choice (one logit each) by a multiple-choice head; see sead/choices.py."""
        return self.kind == MULTIPLE_CHOICE

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


def _glue(name, text_fields, labels, metrics, **kw) -> TaskSpec:
    kind = REGRESSION if not labels else CLASSIFICATION
    return TaskSpec(name, "glue", tuple(text_fields), kind, tuple(labels), tuple(metrics), **kw)


_NLI = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        _glue("cola", ["sentence"], ["unacceptable", "acceptable"], ["matthews_correlation"]),
        _glue("sst2", ["sentence"], ["negative", "positive"], ["accuracy"]),
        _glue(
            "mrpc",
            ["sentence1", "sentence2"],
            ["not_equivalent", "equivalent"],
            ["f1", "accuracy"],
        ),
        _glue("stsb", ["sentence1", "sentence2"], [], ["pearson", "spearmanr"]),
        _glue(
            "qqp", ["question1", "question2"], ["not_duplicate", "duplicate"], ["f1", "accuracy"]
        ),
        _glue(
            "mnli",
            ["premise", "hypothesis"],
            ["entailment", "neutral", "contradiction"],
            ["accuracy"],
            eval_splits=("validation_matched", "validation_mismatched"),
        ),
        _glue("qnli", ["question", "sentence"], _NLI, ["accuracy"]),
        _glue("rte", ["sentence1", "sentence2"], _NLI, ["accuracy"]),
        _glue("wnli", ["sentence1", "sentence2"], ["not_entailment", "entailment"], ["accuracy"]),
    ]
}

# SuperGLUE multiple choice (sead/choices.py formats them): text_fields are the fields that shape
# a model's input, so the data fingerprint of the teacher-logit cache covers them.
TASKS |= {
    t.name: t
    for t in [
        TaskSpec(
            "copa",
            "super_glue",
            ("premise", "choice1", "choice2", "question"),
            MULTIPLE_CHOICE,
            ("choice1", "choice2"),
            ("accuracy",),
        ),
        TaskSpec(
            "record",
            "super_glue",
            ("passage", "query", "entities"),
            MULTIPLE_CHOICE,
            (),  # one choice per candidate entity: ~14 on average, up to dozens
            ("f1", "exact_match"),
        ),
    ]
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, or fail with the list of known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise ValueError(f"Unknown task {name!r}: expected one of {known}.") from None
