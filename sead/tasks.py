"""The task registry: what every other stage needs to know about a GLUE / SuperGLUE task.

One `TaskSpec` per task is the single source of truth; `conf/task/<name>.yaml`
only selects a task by name, so a config can never disagree with the registry.

Names: a task's name is its Hub config name, except where GLUE and SuperGLUE both have a
task of that name: SuperGLUE's RTE (the same examples as GLUE's, with premise/hypothesis
fields) is `superglue_rte`, loaded as `load_dataset("super_glue", "rte")`. SuperGLUE's
diagnostics `axb` and `axg` are evaluation-only sets scored with an RTE model
(`data.diagnostics`), never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

CLASSIFICATION = "classification"
REGRESSION = "regression"
MULTIPLE_CHOICE = "multiple_choice"
# The label of a row without a gold label: a transfer set's rows, a record query whose gold
# answer is none of its candidates. Losses give such rows the soft (teacher) term only.
UNLABELED = -100
# The logit of a multiple-choice padding choice (float16-safe; exp underflows to 0); here, at
# the ground floor, so that reading prediction files (and `sead cache`) never imports torch.
PAD_LOGIT = -1.0e4


@dataclass(frozen=True)
class TaskSpec:
    name: str
    benchmark: str  # Hub dataset name: "glue" or "super_glue"
    # The input fields: one (single sentence) or two (a pair) that are the model's text as
    # they are; with a `formatter`, every field it reads (e.g. wic's word and spans); for
    # multiple choice, every field that shapes the choices (sead/choices.py formats them).
    text_fields: tuple[str, ...]
    kind: str  # CLASSIFICATION, REGRESSION or MULTIPLE_CHOICE
    # label names in the dataset's label-id order; () for regression; for multiple choice, one
    # name per choice (copa), or () when the number of choices varies by example (record)
    labels: tuple[str, ...]
    metrics: tuple[str, ...]  # metric keys reported by sead.metrics, main metric first
    eval_splits: tuple[str, ...] = ("validation",)
    train_split: str = "train"
    hub_config: str | None = None  # the Hub config, where it is not `name` (superglue_rte: rte)
    # How rows become (first text, second text or None): a name in `sead.data.FORMATTERS`;
    # None: the text fields as they are.
    formatter: str | None = None
    # The tokenizer's truncation: "only_second" cuts only the passage, never the question.
    truncation: str = "longest_first"
    # Where `idx` is a dict (multirc), the key whose value identifies a row within a split.
    example_id: str | None = None
    # An evaluation-only diagnostic set: the tasks whose models it evaluates (axb: rte).
    diagnostic_for: tuple[str, ...] = ()
    # Regression: the scores the task's annotators give (stsb: 0 to 5), checked on loading.
    score_range: tuple[float, float] | None = None

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

    @property
    def hub_name(self) -> str:
        """The config name of `load_dataset(benchmark, ...)`."""
        return self.hub_config or self.name

    @property
    def is_diagnostic(self) -> bool:
        return bool(self.diagnostic_for)


def _glue(name, text_fields, labels, metrics, **kw) -> TaskSpec:
    kind = REGRESSION if not labels else CLASSIFICATION
    return TaskSpec(name, "glue", tuple(text_fields), kind, tuple(labels), tuple(metrics), **kw)


def _super_glue(name, text_fields, labels, metrics, **kw) -> TaskSpec:
    return TaskSpec(
        name, "super_glue", tuple(text_fields), CLASSIFICATION, tuple(labels), tuple(metrics), **kw
    )


_NLI = ("entailment", "not_entailment")
_BOOL = ("False", "True")  # SuperGLUE's yes/no tasks: label 0 is False, as in HF's ClassLabel
_RTE_TASKS = ("rte", "superglue_rte")

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
        _glue("stsb", ["sentence1", "sentence2"], [], ["pearson", "spearmanr"], score_range=(0, 5)),
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
        # SuperGLUE. Formatting (sead.data.FORMATTERS) and metrics: see the README's table.
        _super_glue(
            "boolq",
            ["question", "passage"],
            _BOOL,
            ["accuracy"],
            truncation="only_second",  # passages run to hundreds of tokens; keep the question
        ),
        _super_glue(
            "cb",
            ["premise", "hypothesis"],
            ["entailment", "contradiction", "neutral"],
            ["accuracy", "f1"],  # f1: macro-averaged over the 3 classes, as SuperGLUE scores it
        ),
        _super_glue(
            "superglue_rte", ["premise", "hypothesis"], _NLI, ["accuracy"], hub_config="rte"
        ),
        _super_glue(
            "wic",
            ["word", "sentence1", "sentence2", "start1", "end1", "start2", "end2"],
            _BOOL,
            ["accuracy"],
            formatter="wic",
        ),
        _super_glue(
            "wsc",
            ["text", "span1_index", "span2_index", "span1_text", "span2_text"],
            _BOOL,
            ["accuracy"],
            formatter="wsc",
            # The original release has span texts that are not in the text; HF's fixed config
            # repairs most of them (same fields, same examples).
            hub_config="wsc.fixed",
        ),
        _super_glue(
            "multirc",
            ["paragraph", "question", "answer"],
            _BOOL,
            # f1_a (F1 over all answers) first: it needs no grouping, so the ensembler and the
            # teacher gate can use it; exact_match and f1_m group the answers by question.
            ["f1_a", "exact_match", "f1_m"],
            formatter="multirc",
            truncation="only_second",  # question + answer whole, the paragraph cut
            example_id="answer",
        ),
        _super_glue(
            "axb",
            ["sentence1", "sentence2"],
            _NLI,
            ["matthews_correlation"],
            eval_splits=("test",),
            diagnostic_for=_RTE_TASKS,
        ),
        _super_glue(
            "axg",
            ["premise", "hypothesis"],
            _NLI,
            ["accuracy", "gender_parity"],
            eval_splits=("test",),
            diagnostic_for=_RTE_TASKS,
        ),
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
            example_id="query",  # idx is {passage, query}; a query is one example
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


def check_trainable(task: TaskSpec) -> None:
    """Diagnostic sets have no training data: they evaluate a model of another task."""
    if task.is_diagnostic:
        raise ValueError(
            f"Task {task.name!r} is a SuperGLUE diagnostic set (test split only, no training "
            f"data): train on one of {list(task.diagnostic_for)} and evaluate the student on "
            f"it with data.diagnostics=[{task.name}], e.g. "
            f"task={task.diagnostic_for[-1]} 'data.diagnostics=[{task.name}]'."
        )


def head_config(task: TaskSpec) -> dict:
    """Output-layer settings for a model trained on `task` (labels named as the task's)."""
    if task.is_regression:
        return {"num_labels": 1, "problem_type": "regression"}
    if task.is_multiple_choice:
        return {}  # one logit per choice, whatever the count: no labels to name
    return {
        "num_labels": task.num_labels,
        "id2label": dict(enumerate(task.labels)),
        "label2id": {name: i for i, name in enumerate(task.labels)},
        "problem_type": "single_label_classification",
    }
