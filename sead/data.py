"""Load a task's splits (Hub or local jsonl), check them, subsample, tokenize.

Everything here runs before any model is touched, so bad data stops a run
with a message that names the file and field, not a stack trace mid-training.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset

from sead import choices
from sead.tasks import TaskSpec

log = logging.getLogger(__name__)


def load_splits(task: TaskSpec, data_cfg, splits: Iterable[str]) -> DatasetDict:
    """Load, validate and subsample the requested splits of `task`.

    `data_cfg.dir` set: read `<dir>/<split>.jsonl` (the HF schema, as in
    `shared/data/glue/<task>/`); unset: `load_dataset(benchmark, task)` from the Hub.
    """
    splits = list(dict.fromkeys(splits))
    if data_cfg.get("dir"):
        loaded = _load_local(task, Path(data_cfg.dir), splits)
    else:
        loaded = _load_hub(task, splits)
    out = DatasetDict()
    for split in splits:
        ds = loaded[split]
        if task.is_multiple_choice:
            ds = choices.prepare(task, ds, split, source=_source_name(data_cfg, split))
        else:
            _validate(task, ds, split, source=_source_name(data_cfg, split))
        if "idx" not in ds.column_names:
            ds = ds.add_column("idx", list(range(len(ds))))
        is_train = split == task.train_split
        limit = data_cfg.get("max_train_samples" if is_train else "max_eval_samples")
        out[split] = subsample(ds, limit, seed=data_cfg.get("subsample_seed", 0))
    log.info("Task %s: %s", task.name, ", ".join(f"{s}={len(d):,}" for s, d in out.items()))
    return out


def _source_name(data_cfg, split: str) -> str:
    if data_cfg.get("dir"):
        return str(Path(data_cfg.dir) / f"{split}.jsonl")
    return f"the Hub dataset split {split!r}"


def _load_local(task: TaskSpec, folder: Path, splits: list[str]) -> DatasetDict:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data.dir={str(folder)!r} is not a directory: expected a folder with "
            f"{', '.join(s + '.jsonl' for s in splits)} for task {task.name!r}."
        )
    files = {split: folder / f"{split}.jsonl" for split in splits}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        present = sorted(p.name for p in folder.glob("*.jsonl")) or ["no .jsonl files"]
        raise FileNotFoundError(
            f"Task {task.name!r} needs the split file(s) {', '.join(missing)}, which do not "
            f"exist (found: {', '.join(present)})."
        )
    return DatasetDict({split: _read_jsonl(path) for split, path in files.items()})


def _read_jsonl(path: Path) -> Dataset:
    """One split file on its own, so a bad file is named and schemas need not agree."""
    try:
        return load_dataset("json", data_files=str(path), split="train")
    except Exception as err:  # datasets wraps the cause in several exception types
        cause = err.__cause__ or err
        raise ValueError(f"Could not read {path} as JSON lines: {cause}") from err


def _load_hub(task: TaskSpec, splits: list[str]) -> DatasetDict:
    return DatasetDict(
        {split: load_dataset(task.benchmark, task.name, split=split) for split in splits}
    )


def _validate(task: TaskSpec, ds: Dataset, split: str, source: str) -> None:
    """Fail early on missing fields and labels outside the task's label set."""
    for field in (*task.text_fields, "label"):
        if field not in ds.column_names:
            raise ValueError(
                f"Task {task.name!r}, split {split!r} ({source}) has no field {field!r}: "
                f"expected fields {[*task.text_fields, 'label']}, found {ds.column_names}."
            )
    labels = np.asarray(ds["label"])
    if task.is_regression:
        if not np.issubdtype(labels.dtype, np.number) or np.isnan(labels.astype(float)).any():
            raise ValueError(
                f"Task {task.name!r}, split {split!r} ({source}): field 'label' must be a number "
                f"for a regression task."
            )
        return
    valid = set(range(task.num_labels))
    bad = sorted(set(labels.tolist()) - valid)
    if bad:
        raise ValueError(
            f"Task {task.name!r}, split {split!r} ({source}): label value(s) {bad[:5]} are "
            f"outside the task's label set {dict(enumerate(task.labels))}. Test splits with "
            f"hidden labels (-1) cannot be used for training or evaluation."
        )


def subsample(ds: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """A fixed random subset, kept in the original order.

    The seed is `data.subsample_seed`, not the run seed, so that sweeping the run
    seed keeps the same examples and therefore hits the teacher logit cache.
    """
    if not limit or limit >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(ds), size=int(limit), replace=False))
    return ds.select(keep.tolist())


def content_fingerprint(ds: Dataset, fields: Iterable[str]) -> str:
    """Hash of the examples' `idx` and text, the only data that shapes a teacher's logits."""
    h = hashlib.sha256()
    for field in ["idx", *fields]:
        h.update(field.encode())
        h.update(json.dumps(ds[field][:], ensure_ascii=False).encode())
    return h.hexdigest()


def tokenize(ds: Dataset, tokenizer, task: TaskSpec, max_length: int) -> Dataset:
    """Token ids for `ds` with the model's own tokenizer; padding is left to the collator."""
    if task.is_multiple_choice:
        return choices.tokenize(ds, tokenizer, task, max_length)

    def encode(batch):
        texts = [batch[field] for field in task.text_fields]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    keep = {"label", "idx"}
    drop = [c for c in ds.column_names if c not in keep]
    return ds.map(encode, batched=True, remove_columns=drop, desc="Tokenizing")
