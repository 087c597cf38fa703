"""Where a teacher comes from: a fine-tuned checkpoint as it is, or a base model that sead
fine-tunes once and keeps in the teacher store (`teachers.store`)."""

from __future__ import annotations

from datasets import DatasetDict

import sead.teachers.predictions as predictions
import sead.teachers.store as store
from sead.cache import FileHashes, SoftLabelCache
from sead.checkpoints import (
    check_checkpoint,
    check_tokenizer,
    identity,
    resolve,
    tokenizer_identity,
)
from sead.representations import RepresentationSpec
from sead.tasks import TaskSpec
from sead.teachers.labels import check_labels
from sead.teachers.spec import PredictionsSpec, TeacherSpec
from sead.teachers.teacher import Teacher


def prepare(
    spec: TeacherSpec | PredictionsSpec,
    task: TaskSpec,
    splits: DatasetDict,
    store_dir,
    file_hashes: FileHashes | None = None,
    cache: SoftLabelCache | None = None,
    gate: bool = False,
    representations: RepresentationSpec | None = None,
) -> Teacher | predictions.PredictionsTeacher:
    """Resolve a teacher's checkpoint and label order, fine-tuning (or reusing) it when asked.

    `file_hashes` memoizes the content hashes that identify local checkpoints;
    `cache` receives a newly fine-tuned teacher's eval-split logits; with `gate`, a newly
    fine-tuned teacher below its floor stops here and is not stored.
    `representations`: the spec the run will ask `cached_logits` for, if any, so that a newly
    fine-tuned teacher's eval-split entries hold vectors too (one pass over them, not two).
    A predictions teacher has no model: its files' content hashes are its identity.
    """
    if isinstance(spec, PredictionsSpec):
        return predictions.prepare(spec, task)
    local = resolve(spec.source, spec.revision)
    tok_name = spec.tokenizer or spec.source
    # a tokenizer of its own is another repository: the checkpoint's revision is not its
    tok_dir = resolve(tok_name, None, patterns=()) if spec.tokenizer else local
    tok_id = tokenizer_identity(tok_dir, file_hashes)
    if spec.finetune:
        base_id = identity(spec.source, local, file_hashes=file_hashes)
        return store.finetune(
            spec,
            task,
            splits,
            base_dir=local,
            tok_dir=tok_dir,
            base_id=base_id,
            tok_id=tok_id,
            store_dir=store_dir,
            cache=cache,
            file_hashes=file_hashes,
            gate=gate,
            representations=representations,
        )
    model_id = identity(spec.source, local, file_hashes=file_hashes)
    teacher = Teacher(spec, local, tok_dir, model_id, tok_id)
    teacher.label_alignment = check_labels(spec, task, explain=True)
    return teacher


def check_files(spec: TeacherSpec, task: TaskSpec) -> None:
    """A teacher's checkpoint can be loaded (a local folder holds it, and a tokenizer unless
    another is set; a Hub id is reachable) and so can its own tokenizer, if set: checked for
    every teacher before the first one runs."""
    option = f"teachers.{spec.name}." + ("model" if spec.finetune else f"checkpoints.{task.name}")
    check_checkpoint(spec.source, option, spec.revision, tokenizer=not spec.tokenizer)
    if spec.tokenizer:
        check_tokenizer(spec.tokenizer, f"teachers.{spec.name}.tokenizer")
