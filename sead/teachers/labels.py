"""Label alignment: a checkpoint's output columns, in the task's label order.

Public checkpoints disagree on label order (an MNLI head may order
contradiction/neutral/entailment), so every loaded teacher's columns are mapped to the
task's order before its logits are cached. Only the checkpoint's config is read, so the
check runs with the other input checks, before any work.
"""

from __future__ import annotations

import logging
import re

from transformers import AutoConfig

from sead import choices
from sead.checkpoints import check_max_length, resolve
from sead.representations import check_layer
from sead.tasks import TaskSpec
from sead.teachers.spec import TeacherSpec

log = logging.getLogger(__name__)

# Spellings of GLUE label names seen on public checkpoints (after `_normalise`).
LABEL_SYNONYMS = {
    "entails": "entailment",
    "entailed": "entailment",
    "non_entailment": "not_entailment",
    "no_entailment": "not_entailment",
    "not_entailed": "not_entailment",
    "contradict": "contradiction",
    "contradicts": "contradiction",
    "contradictory": "contradiction",
    "pos": "positive",
    "neg": "negative",
    "grammatical": "acceptable",
    "ungrammatical": "unacceptable",
    "not_acceptable": "unacceptable",
    "paraphrase": "equivalent",
    "not_paraphrase": "not_equivalent",
    "is_duplicate": "duplicate",
}
_GENERIC = re.compile(r"(?:label_)?(\d+)")  # LABEL_0, label-1, "2": names that carry no meaning


def _normalise(name) -> str:
    return re.sub(r"[\s-]+", "_", str(name).strip().lower())


def _canonical(name) -> str:
    normal = _normalise(name)
    return LABEL_SYNONYMS.get(normal, normal)


def align_labels(
    id2label: dict, task: TaskSpec, label_map: dict | None = None, teacher: str = "teacher"
) -> list[int] | None:
    """For each task label in order, the checkpoint column that predicts it.

    Returns None when the columns are already in the task's order. The order is
    read from `label_map` when given (explicit beats implicit), else from the
    checkpoint's label names. Generic names (`LABEL_0`, `LABEL_1`, ...), which
    `transformers` writes when training data had no label names, carry no order:
    `LABEL_i` is taken as task label i, the order of GLUE's own label ids, and
    the sanity gate catches a checkpoint for which that is wrong.
    """
    if task.is_regression:
        return None
    columns = {int(i): str(name) for i, name in id2label.items()}
    if label_map:
        label_of_column = _apply_label_map(columns, task, label_map, teacher)
    elif all(_GENERIC.fullmatch(_normalise(name)) for name in columns.values()):
        label_of_column = {c: int(_GENERIC.fullmatch(_normalise(n))[1]) for c, n in columns.items()}
    else:
        index = {_canonical(name): i for i, name in enumerate(task.labels)}
        label_of_column = {c: index.get(_canonical(name)) for c, name in columns.items()}
    matched = list(label_of_column.values())
    if None in matched or sorted(matched) != list(range(task.num_labels)):
        how = "its label_map" if label_map else "its label names"
        raise ValueError(
            f"Teacher {teacher!r}: cannot match {how} to the task's labels.\n"
            f"  checkpoint labels: {columns}\n"
            + (f"  label_map:         {label_map}\n" if label_map else "")
            + f"  task {task.name!r} labels: {dict(enumerate(task.labels))}\n"
            f"Map every checkpoint label (name or id) to a different task label, e.g. "
            f"teachers.{teacher}.label_map='{_example_map(columns, task)}'."
        )
    alignment = [column for label, column in sorted((v, c) for c, v in label_of_column.items())]
    return None if alignment == list(range(task.num_labels)) else alignment


def _apply_label_map(columns: dict[int, str], task: TaskSpec, label_map: dict, teacher: str):
    """`label_map` keys are checkpoint column ids (ints) or names, values task label names (or
    ids)."""
    by_name = {_normalise(name): c for c, name in columns.items()}
    task_index = {_canonical(name): i for i, name in enumerate(task.labels)}
    label_of_column: dict[int, int | None] = {c: None for c in columns}
    for key, value in label_map.items():
        # an int key is a column id; a string a label name first (a checkpoint may name its
        # labels "0" and "1" in another order), else, all digits, a column id
        named = None if isinstance(key, int) else by_name.get(_normalise(key))
        column = named if named is not None else int(key) if str(key).isdigit() else None
        if column not in columns:
            raise ValueError(
                f"teachers.{teacher}.label_map: {key!r} is neither a column id nor a label of "
                f"the checkpoint, whose labels are {columns}."
            )
        label = value if isinstance(value, int) else task_index.get(_canonical(value))
        if label not in range(task.num_labels):
            raise ValueError(
                f"teachers.{teacher}.label_map: {value!r} is not a label of task {task.name!r}: "
                f"expected one of {list(task.labels)}."
            )
        label_of_column[column] = label
    return label_of_column


def _example_map(columns: dict[int, str], task: TaskSpec) -> str:
    pairs = ", ".join(f"{c}: {task.labels[c]}" for c in sorted(columns) if c < task.num_labels)
    return "{" + pairs + "}"


def check_labels(
    spec: TeacherSpec, task: TaskSpec, explain: bool = False, representations=None
) -> list[int] | None:
    """A checkpoint's head must have one column per task label, in a known order.

    Reads only the checkpoint's config, so it runs with the other input checks.
    Returns the label alignment (None: already in the task's order); `explain`
    logs how the order was found. A teacher that sead fine-tunes gets a head in
    the task's order, so it is not checked.
    """
    config = AutoConfig.from_pretrained(
        resolve(spec.source, spec.revision, patterns=("config.json",)),
        trust_remote_code=spec.trust_remote_code,
    )
    check_max_length(config, spec.max_length, f"teachers.{spec.name}.max_length", spec.source)
    if representations is not None:  # the layer its vectors come from (a recipe asks)
        check_layer(representations.layer, config, f"Teacher {spec.name} ({spec.source})")
    if spec.finetune:
        return None
    if task.is_multiple_choice or choices.is_choice_head(config):
        return _check_choice_head(spec, task, config)
    if config.num_labels != task.num_labels:
        raise ValueError(
            f"Teacher {spec.name!r} ({spec.source}) predicts {config.num_labels} labels, but "
            f"task {task.name!r} has {task.num_labels} ({list(task.labels) or 'regression'})."
        )
    alignment = align_labels(config.id2label, task, spec.label_map, spec.name)
    if explain and not task.is_regression:
        columns = alignment or range(task.num_labels)
        pairs = zip(task.labels, columns, strict=True)
        mapping = ", ".join(f"{config.id2label[column]} -> {label}" for label, column in pairs)
        generic = not spec.label_map and all(
            _GENERIC.fullmatch(_normalise(name)) for name in config.id2label.values()
        )
        note = " (unnamed labels: taken as task label ids; the gate checks them)" if generic else ""
        log.info("Teacher %s labels: %s%s", spec.name, mapping, note)
    return alignment


def _check_choice_head(spec: TeacherSpec, task: TaskSpec, config) -> None:
    """A multiple-choice checkpoint has one logit per choice: no label count or order to align
    (its `num_labels` and `id2label` are unused defaults), and only a multiple-choice task has
    a use for one."""
    architectures = config.architectures or []
    if not task.is_multiple_choice:
        raise ValueError(
            f"Teacher {spec.name!r} ({spec.source}) is a multiple-choice checkpoint "
            f"({architectures}), but task {task.name!r} is not multiple choice."
        )
    if not choices.is_choice_head(config):
        raise ValueError(
            f"Teacher {spec.name!r} ({spec.source}) is a {architectures or 'headless'} "
            f"checkpoint, but task {task.name!r} is multiple choice: it needs a *ForMultipleChoice "
            f"checkpoint, or teachers.{spec.name}.finetune=true to fine-tune one from a base model."
        )
    return None
