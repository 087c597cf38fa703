"""Teachers you can trust: configure, fine-tune once, align labels, check, cache logits.

A teacher is either a checkpoint already fine-tuned on the task (Hub id or
local path, listed per task under `checkpoints`), a base model with
`finetune: true`, which sead fine-tunes once with `transformers.Trainer`,
evaluates, and keeps in a store keyed by everything that shapes the result,
or prediction files written by any model elsewhere (`predictions:`).

Two things make a teacher silently wrong, and both are checked here:
* label order: public checkpoints disagree (an MNLI head may order
  contradiction/neutral/entailment), so every teacher's columns are mapped to
  the task's label order (`align_labels`) before its logits are cached;
* a wrong checkpoint: each teacher must beat a floor on the eval splits
  (`gate`, by default the best constant prediction's score) before a student learns from it.

One job a module, each importing only those above it in this list:

    spec      cfg.teachers.<name> -> TeacherSpec (or PredictionsSpec), checked before any work
    labels    the checkpoint's output columns in the task's label order
    predictions  a teacher read from prediction files (any model, run anywhere): checks, logits
    teacher   a teacher ready to predict (files, identity, column order, timing)
    logits    its logits per split, through the soft-label cache
    sanity    its metrics, and the sanity gate (`gate`)
    store     fine-tune once, evaluate, keep (the teacher store)
    origin    `prepare`: a checkpoint as it is, or fine-tuned (or reused from the store)

Checkpoint resolution and identity are shared with other stages: `sead.checkpoints`.
`sead stage=teachers` prepares teachers and their logits without distilling.
"""

from sead.teachers.labels import LABEL_SYNONYMS, align_labels, check_labels
from sead.teachers.logits import cache_keys, cached_logits
from sead.teachers.origin import check_files, prepare
from sead.teachers.predictions import PREDICTIONS, PredictionsTeacher
from sead.teachers.predictions import check as check_predictions
from sead.teachers.sanity import TeacherBelowFloor, constant_baseline, evaluate, gate
from sead.teachers.spec import (
    FinetuneArgs,
    PredictionsSettings,
    PredictionsSpec,
    TeacherSettings,
    TeacherSpec,
    teacher_specs,
)
from sead.teachers.store import (
    STORE_MARKER,
    finetune,
    finetune_settings,
    store_key,
    teacher_train_split,
)
from sead.teachers.teacher import CHECKPOINT, FINETUNED, STORE, Teacher

__all__ = [
    "CHECKPOINT",
    "FINETUNED",
    "LABEL_SYNONYMS",
    "PREDICTIONS",
    "STORE",
    "STORE_MARKER",
    "FinetuneArgs",
    "PredictionsSettings",
    "PredictionsSpec",
    "PredictionsTeacher",
    "Teacher",
    "TeacherBelowFloor",
    "TeacherSettings",
    "TeacherSpec",
    "align_labels",
    "cache_keys",
    "cached_logits",
    "check_files",
    "check_labels",
    "check_predictions",
    "evaluate",
    "finetune",
    "finetune_settings",
    "gate",
    "constant_baseline",
    "prepare",
    "store_key",
    "teacher_specs",
    "teacher_train_split",
]
