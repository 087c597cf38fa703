"""A teacher read from prediction files: any model, run anywhere, joins the ensemble.

The model behind the files (a GPU-cluster job, a hosted LLM asked for label probabilities,
a scikit-learn pipeline, a teacher exported with `sead cache export`) never runs
here: sead checks the files against the task's splits before any expensive work (`check`),
turns them into logits in the task's label order, and caches those like any teacher's. The
cache key holds each file's content hash, so editing a file invalidates its entry and
renaming or moving it does not. File formats and conversions: `sead.prediction_files`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict

from sead import choices, data, prediction_files
from sead.cache import CacheEntry, SoftLabelCache
from sead.representations import RepresentationSpec
from sead.tasks import TaskSpec
from sead.teachers.labels import align_labels
from sead.teachers.spec import PredictionsSpec

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"  # a teacher's origin in results.json and the teacher table


def label_columns(spec: PredictionsSpec, task: TaskSpec) -> list[int] | None:
    """For each task label, the file column that holds it (None: already the task's order);
    names are matched as checkpoint labels are (`LABEL_SYNONYMS`, case, spelling)."""
    if task.kind != "classification":
        return None
    if len(spec.labels) != task.num_labels:
        raise ValueError(
            f"teachers.{spec.name}.labels={list(spec.labels)} has {len(spec.labels)} names, "
            f"task {task.name!r} has {task.num_labels}: {list(task.labels)}."
        )
    try:
        return align_labels(dict(enumerate(spec.labels)), task, teacher=spec.name)
    except ValueError as err:
        raise ValueError(
            f"teachers.{spec.name}.labels={list(spec.labels)} do not match the labels of task "
            f"{task.name!r}, {list(task.labels)}, by name (synonyms such as pos/neg are "
            f"understood): list the files' columns by the task's label names, in the files' order."
        ) from err


def layout(spec: PredictionsSpec, task: TaskSpec, ds: Dataset) -> prediction_files.Layout:
    """What a file for split `ds` must hold: its ids, and each row's width."""
    if task.is_multiple_choice:
        widths = choices.n_choices(task, ds)
    else:
        widths = np.full(len(ds), task.num_labels, dtype=np.int64)
    return prediction_files.Layout(
        ids=data.example_ids(ds, task),
        widths=widths,
        kind=task.kind,
        label_names=spec.labels or (),
    )


def read_logits(spec: PredictionsSpec, task: TaskSpec, split: str, ds: Dataset):
    """(logits in the task's label order, sha256 of the bytes read) of one split's file."""
    path = file_for(spec, split)
    predictions = prediction_files.read(path, spec.format, task.example_id)
    logits = prediction_files.to_logits(
        predictions,
        layout(spec, task, ds),
        spec.format,
        columns=label_columns(spec, task),
        smoothing=spec.smoothing,
        epsilon=spec.epsilon,
        tolerance=spec.tolerance,
        extra_ids=spec.extra_ids,
    )
    if task.is_regression and task.score_range is not None:
        _check_scale(path, logits[:, 0], task)
    return logits, predictions.sha256


def _check_scale(path, scores: np.ndarray, task: TaskSpec) -> None:
    """Scores on the gold labels' scale, give or take a tenth of it: the Pearson gate cannot
    tell a cosine similarity in [-1, 1] from an STS-B score, and the student would learn it."""
    low, high = task.score_range
    margin = 0.1 * (high - low)
    outside = scores[(scores < low - margin) | (scores > high + margin)]
    if len(outside):
        raise prediction_files.PredictionFileError(
            f"{path}: {len(outside)} of {len(scores)} scores lie outside task {task.name!r}'s "
            f"scale [{low:g}, {high:g}] (e.g. {', '.join(f'{v:.4g}' for v in outside[:3])}): "
            f"expected scores on the gold labels' scale; rescale the file (a cosine similarity "
            f"in [-1, 1] is not a {task.name} score)."
        )


def file_for(spec: PredictionsSpec, split: str):
    if split not in spec.files:
        raise ValueError(
            f"Teacher {spec.name!r} has no prediction file for split {split!r}: it lists "
            f"{sorted(spec.files)}. Set teachers.{spec.name}.predictions.{split}=<file>."
        )
    return spec.files[split]


def check(spec: PredictionsSpec, task: TaskSpec, splits: DatasetDict) -> None:
    """Every file the run will read, read and checked now, before any expensive work:
    ids (missing, repeated, unknown), widths, finite values, probabilities, label names; and
    no file under a key that names no split (a typo would leave its file unread)."""
    label_columns(spec, task)
    known = {task.train_split, *task.eval_splits, "test", data.HELDOUT, *splits}
    unknown = [s for s in spec.files if s not in known and not s.startswith("transfer_")]
    if unknown:
        raise ValueError(
            f"teachers.{spec.name}.predictions has files for {unknown}, which name no split "
            f"of task {task.name!r}: expected keys among {sorted(known)} (or transfer_*)."
        )
    for split, ds in splits.items():
        logits, _ = read_logits(spec, task, split, ds)
        log.info("Teacher %s: %s checked (%d rows)", spec.name, file_for(spec, split), len(logits))


@dataclass
class PredictionsTeacher:
    """A predictions teacher as the teacher stage sees it: an identity and a column order,
    no model (no parameters, no speed, nothing fine-tuned)."""

    spec: PredictionsSpec
    sha256: dict[str, str]  # split -> content hash of its file, at the start of the run
    label_alignment: list[int] | None = None
    origin: str = PREDICTIONS
    store_record: None = None
    params: None = None
    examples_per_second: None = None
    finetuned_now: bool = False

    @property
    def model_id(self) -> str:
        """One id for all its files: two teachers with the same files are the same teacher."""
        joined = "".join(f"{split}={sha}" for split, sha in sorted(self.sha256.items()))
        return f"predictions:{hashlib.sha256(joined.encode()).hexdigest()[:16]}"

    def record(self) -> dict:
        """What results.json shows of it: format, and each split's file and hash."""
        return {
            "format": self.spec.format,
            "labels": list(self.spec.labels) if self.spec.labels else None,
            "files": {
                split: {"path": str(path), "sha256": self.sha256.get(split)}
                for split, path in self.spec.files.items()
            },
        }


def prepare(spec: PredictionsSpec, task: TaskSpec) -> PredictionsTeacher:
    """The teacher with each existing file's content hash (its identity in the cache)."""
    hashes = {
        split: prediction_files.content_hash(path)
        for split, path in spec.files.items()
        if path.is_file()
    }
    return PredictionsTeacher(spec, hashes, label_columns(spec, task))


def cache_key(teacher: PredictionsTeacher, task: TaskSpec, split: str, ds: Dataset) -> dict:
    """The file's content and how it is read, the task, split and its example ids; not the
    teacher's name nor the file's path."""
    spec = teacher.spec
    fmt = spec.format
    return {
        "predictions": teacher.sha256.get(split),
        "format": fmt,
        "label_alignment": teacher.label_alignment,
        "smoothing": spec.smoothing if fmt == "label" else None,
        "epsilon": spec.epsilon if fmt in ("probs", "log_probs", "label") else None,
        "task": task.name,
        "split": split,
        "ids": hashlib.sha256(data.example_ids(ds, task).tobytes()).hexdigest(),
    }


def cached_logits(
    teacher: PredictionsTeacher,
    task: TaskSpec,
    splits: DatasetDict,
    cache: SoftLabelCache,
    representations: RepresentationSpec | None = None,
) -> dict[str, CacheEntry]:
    """The teacher's logits for every split: read from its files on a cache miss.

    Prediction files hold no hidden states: asked for `representations`, its entries still
    come back, with `representations=None`; the teacher takes part through its soft labels
    (a representation objective leaves it out)."""
    spec = teacher.spec
    if representations is not None:
        log.info(
            "Teacher %s is read from prediction files: it has no representations, and takes "
            "part through its soft labels only.",
            spec.name,
        )
    entries = {}
    for split, ds in splits.items():
        path = file_for(spec, split)
        expected = teacher.sha256.get(split)

        def compute(partial, ds=ds, split=split, path=path, expected=expected):
            logits, sha = read_logits(spec, task, split, ds)
            if sha != expected:
                raise ValueError(f"{path} changed during the run; run again.")
            return logits

        about = {"teacher": spec.name, "source": f"predictions {path}"}
        key = cache_key(teacher, task, split, ds)
        entries[split] = cache.get_or_compute(key, data.example_ids(ds, task), compute, about)
    return entries
