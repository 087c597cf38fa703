"""Load a task's splits (Hub or local jsonl), check them, subsample, format, tokenize.

Everything here runs before any model is touched, so bad data stops a run
with a message that names the file and field, not a stack trace mid-training.

Formatting (`format_inputs`) turns a task's rows into the text a model reads, in one place
for teachers, their cache keys and the student: SuperGLUE's span tasks mark the words they
ask about with plain-text markers that WordPiece and byte-level BPE vocabularies both have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Value, load_dataset
from datasets import utils as progress_bars

from sead import choices, metrics
from sead.config import setting
from sead.files import read_text, text_lines
from sead.tasks import TASKS, TaskSpec, get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSettings:
    """`cfg.data` (conf/data/default.yaml): where the splits come from, and how much of them."""

    dir: str | None  # a folder of <split>.jsonl; null: the Hub
    max_train_samples: int | None = setting(low=1)  # a fixed random subset; null: all
    max_eval_samples: int | None = setting(low=1)
    subsample_seed: int = setting(low=0)  # not the run seed: sweeping `seed` keeps the data
    diagnostics: tuple[str, ...]  # evaluation-only sets, e.g. (axb, axg) for rte
    diagnostics_dir: str | None  # a folder of <name>/test.jsonl; null: the Hub
    # rows of train held out (a count, or a fraction below 1): the split `heldout`
    heldout: float | None = setting(low=0, low_open=True)
    heldout_seed: int = setting(low=0)  # which rows

    def __post_init__(self):
        if self.heldout is not None and self.heldout >= 1 and self.heldout != int(self.heldout):
            raise ValueError(
                f"data.heldout={self.heldout:g} is not allowed: expected a count of rows (a "
                "whole number) or a fraction of the train split in (0, 1)."
            )

    @property
    def heldout_file(self) -> Path | None:
        """`<dir>/heldout.jsonl` when the data folder has one: a held-out slice of its own."""
        path = Path(self.dir) / f"{HELDOUT}.jsonl" if self.dir else None
        return path if path is not None and path.is_file() else None

    @property
    def has_heldout(self) -> bool:
        """A held-out slice: carved from train (`heldout`), or the data folder's own file."""
        return self.heldout is not None or self.heldout_file is not None

    def whole(self, folder: str | None) -> DataSettings:
        """Every example of the splits in `folder` (null: the Hub), none held back."""
        return replace(
            self, dir=folder, max_train_samples=None, max_eval_samples=None, heldout=None
        )


def load_splits(task: TaskSpec, settings: DataSettings, splits: Iterable[str]) -> DatasetDict:
    """Load, validate and subsample the requested splits of `task`.

    `settings.dir` set: read `<dir>/<split>.jsonl` (the HF schema, as in
    `shared/data/glue/<task>/`); unset: `load_dataset(benchmark, task)` from the Hub.
    With `settings.heldout`, the split `heldout` is carved from train (`carve_heldout`) and
    train is what is left: no one trains on those rows, whichever splits are asked for.
    """
    splits = list(dict.fromkeys(splits))
    carve = settings.heldout is not None
    files = [s for s in splits if not (carve and s == HELDOUT)]
    if carve and task.train_split not in files:
        files.append(task.train_split)
    if settings.dir:
        if carve and settings.heldout_file is not None:
            raise ValueError(
                f"data.heldout={settings.heldout:g} would carve a held-out slice from train, but "
                f"{settings.heldout_file} is one already: set "
                "data.heldout=null to use that file, or remove it."
            )
        loaded = _load_local(task, Path(settings.dir), files)
    else:
        loaded = _load_hub(task, files)
    if carve:
        loaded[task.train_split], loaded[HELDOUT] = carve_heldout(
            loaded[task.train_split], task, settings
        )
    out = DatasetDict()
    for split in splits:
        ds = loaded[split]
        source = _source_name(settings, split)
        where = f"Task {task.name!r}, split {split!r} ({source})"
        if task.is_multiple_choice:
            _check_texts(task, ds, where)
            ds = choices.prepare(task, ds, split, source=source)
        else:
            _validate(task, ds, split, source=source)
        ds = _checked_ids(task, ds, where)
        is_train = split == task.train_split
        limit = settings.max_train_samples if is_train else settings.max_eval_samples
        if split == HELDOUT:  # its size is data.heldout's (or its file's): rows are not lost
            limit = None
        out[split] = subsample(ds, limit, seed=settings.subsample_seed, groups=row_groups(ds, task))
    log.info("Task %s: %s", task.name, ", ".join(f"{s}={len(d):,}" for s, d in out.items()))
    return out


HELDOUT = "heldout"  # the held-out slice of train: where stages and fitted ensemblers choose


def carve_heldout(train: Dataset, task: TaskSpec, settings: DataSettings):
    """(train without the held-out rows, the held-out rows): `settings.heldout` rows (or that
    fraction of train), picked by `settings.heldout_seed`, both in their original order.
    multirc keeps each question's answers on one side."""
    wanted = settings.heldout
    count = round(wanted * len(train)) if wanted < 1 else int(wanted)
    if not 0 < count < len(train):
        raise ValueError(
            f"data.heldout={wanted:g} leaves {count} of the {len(train):,} rows of task "
            f"{task.name!r}'s {task.train_split} split held out: expected at least 1, and fewer "
            "than all of them."
        )
    rows = subsample_rows(len(train), count, settings.heldout_seed, row_groups(train, task))
    rest = np.setdiff1d(np.arange(len(train)), rows)
    heldout = train.select(rows.tolist())
    log.info(
        "Held out %d of %d %s rows (data.heldout=%g, seed %d; content %s)",
        len(heldout),
        len(train),
        task.train_split,
        wanted,
        settings.heldout_seed,
        input_fingerprint(heldout, task, [c for c in ("label",) if c in heldout.column_names])[:12],
    )
    return train.select(rest.tolist()), heldout


def heldout_record(heldout: Dataset | None, task: TaskSpec, settings: DataSettings):
    """What results.json says of the held-out slice: where it came from, its size and a hash
    of its content (None without one)."""
    if heldout is None:
        return None
    carved = settings.heldout is not None
    return {
        "source": f"data.heldout={settings.heldout:g}, seed {settings.heldout_seed}"
        if carved
        else _source_name(settings, HELDOUT),
        "rows": len(heldout),
        "content": input_fingerprint(heldout, task, ["label"]),
    }


def _source_name(settings: DataSettings, split: str) -> str:
    if split == HELDOUT and settings.heldout is not None:
        return "the rows held out of the train split (data.heldout)"
    if settings.dir:
        return str(Path(settings.dir) / f"{split}.jsonl")
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
        carve = (
            f" The held-out slice ({HELDOUT}) is a {HELDOUT}.jsonl there, or carved from train "
            "with data.heldout (a count or fraction)."
            if HELDOUT in splits and HELDOUT + ".jsonl" not in present
            else ""
        )
        raise FileNotFoundError(
            f"Task {task.name!r} needs the split file(s) {', '.join(missing)}, which do not "
            f"exist (found: {', '.join(present)}; data.dir reads <split>.jsonl files only).{carve}"
        )
    return DatasetDict({split: _read_jsonl(path, task, split) for split, path in files.items()})


def _read_jsonl(path: Path, task: TaskSpec, split: str) -> Dataset:
    """One split file on its own, so a bad file is named and schemas need not agree.

    Its text is read and each line's `label` and `idx` checked first (`check_rows`): the
    JSON reader behind `datasets` turns a float label, a boolean or an oversized id into
    another column type without a word, so only the lines themselves can say which is wrong.
    """
    text = read_text(path, "Data file")  # UTF-8, or refused naming the byte
    if not text.strip():
        raise ValueError(f"{path} is empty: expected one JSON object per line.")
    check_rows(task, text, f"Task {task.name!r}, split {split!r} ({path})")
    quiet = not progress_bars.are_progress_bars_disabled()
    if quiet:  # a local file reads in a blink: no "Generating train split" bar per file
        progress_bars.disable_progress_bars()
    try:
        ds = load_dataset("json", data_files=str(path), split="train")
    except Exception as err:  # datasets wraps the cause in several exception types
        cause = err.__cause__ or err
        reason = str(cause).strip() or type(cause).__name__
        raise ValueError(f"Could not read {path} as JSON lines: {reason}") from err
    finally:
        if quiet:
            progress_bars.enable_progress_bars()
    if "idx" not in ds.column_names and task.example_id is None:  # a file's row, as its id
        ds = ds.add_column("idx", list(range(len(ds))))  # before any carve or subsample
    return ds


def check_rows(task: TaskSpec, text: str, where: str) -> None:
    """Every line of a jsonl split is a JSON object whose `label` and `idx` have the type
    the task needs; the first that does not is named by line, field and what was expected."""
    for line_no, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{where}: line {line_no} is not JSON ({err}).") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: line {line_no} is {_kind(row)}, not a JSON object.")
        problem = _row_problem(task, row)
        if problem:
            raise ValueError(f"{where}: line {line_no}: {problem}.")


INT64 = (-(2**63), 2**63 - 1)


def _row_problem(task: TaskSpec, row: dict) -> str | None:
    """What is wrong with one row's `label` or `idx`, or None."""
    if "label" in row and not task.is_multiple_choice:  # multiple choice: choices.prepare
        label = row["label"]
        if task.is_regression and not (_is_number(label) and math.isfinite(label)):
            return f"field 'label' is {_shown(label)}: expected a finite number (a score)"
        if not task.is_regression and not _is_integer(label):
            ids = ", ".join(f"{i} ({name})" for i, name in enumerate(task.labels))
            return f"field 'label' is {_shown(label)}: expected an integer label id: {ids}"
    if "idx" in row:
        idx = row["idx"]
        if task.example_id is not None and isinstance(idx, dict):
            key, idx = f"idx.{task.example_id}", idx.get(task.example_id)
        else:
            key = "idx"
        if not isinstance(idx, dict) and not (_is_integer(idx) and INT64[0] <= idx <= INT64[1]):
            return f"field {key!r} is {_shown(idx)}: expected an integer id that fits in 64 bits"
    return None


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    kinds |= {list: "a list", dict: "an object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _shown(value) -> str:
    text = json.dumps(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return text if value is None else f"{text} ({_kind(value)})"


def _load_hub(task: TaskSpec, splits: list[str]) -> DatasetDict:
    return DatasetDict(
        {split: load_dataset(task.benchmark, task.hub_name, split=split) for split in splits}
    )


def load_diagnostics(task: TaskSpec, settings: DataSettings) -> DatasetDict:
    """The diagnostic sets in `data.diagnostics` (SuperGLUE axb/axg for an RTE model), checked.

    Each is its task's labelled `test` split: `<data.diagnostics_dir>/<name>/test.jsonl` when
    that is set, else `load_dataset("super_glue", name, split="test")`. Never subsampled: they
    are small, and axg's gender parity needs every pair.
    """
    out = DatasetDict()
    for name in settings.diagnostics:
        diagnostic = get_task(name)
        if task.name not in diagnostic.diagnostic_for:
            fits = sorted(n for n, t in TASKS.items() if task.name in t.diagnostic_for)
            raise ValueError(
                f"data.diagnostics lists {name!r}, which evaluates models of "
                f"{list(diagnostic.diagnostic_for) or 'no task (it is not a diagnostic set)'}, "
                f"not of task {task.name!r}. Diagnostic sets for {task.name!r}: {fits or 'none'}."
            )
        folder = settings.diagnostics_dir
        source = settings.whole(str(Path(folder) / name) if folder else None)
        (split,) = diagnostic.eval_splits
        out[name] = load_splits(diagnostic, source, [split])[split]
    return out


def _validate(task: TaskSpec, ds: Dataset, split: str, source: str) -> None:
    """Fail early on missing fields, labels outside the task's label set, bad idx or spans."""
    where = f"Task {task.name!r}, split {split!r} ({source})"
    for field in (*task.text_fields, "label"):
        if field not in ds.column_names:
            raise ValueError(
                f"{where} has no field {field!r}: "
                f"expected fields {[*task.text_fields, 'label']}, found {ds.column_names}."
            )
    _check_texts(task, ds, where)
    labels = np.asarray(ds["label"])
    if not task.is_regression and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(  # a Hub split (a local file's lines were checked one by one)
            f"{where}: field 'label' holds {ds.features['label']}: expected integer label ids "
            f"{dict(enumerate(task.labels))}."
        )
    if task.is_regression:
        if not np.issubdtype(labels.dtype, np.number) or np.isnan(labels.astype(float)).any():
            raise ValueError(f"{where}: field 'label' must be a number for a regression task.")
        low, high = task.score_range or (-np.inf, np.inf)
        outside = sorted({float(x) for x in labels if not low <= x <= high})
        if outside:
            raise ValueError(
                f"{where}: label value(s) {outside[:5]} are outside the task's scores "
                f"[{low:g}, {high:g}]."
            )
        return
    valid = set(range(task.num_labels))
    bad = sorted(set(labels.tolist()) - valid)
    if bad:
        raise ValueError(
            f"{where}: label value(s) {bad[:5]} are "
            f"outside the task's label set {dict(enumerate(task.labels))}. Test splits with "
            f"hidden labels (-1) cannot be used for training or evaluation."
        )
    if task.formatter is not None:
        issues: list[str] = []
        try:  # spans outside their text fail here, not mid-training
            FORMATTERS[task.formatter](ds[:], issues)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if issues:
            shown = issues[:10] + ([f"... and {len(issues) - 10} more"] if len(issues) > 10 else [])
            log.warning(
                "%s: %d span(s) are not where their index says:\n  %s",
                where,
                len(issues),
                "\n  ".join(shown),
            )


def _checked_ids(task: TaskSpec, ds: Dataset, where: str) -> Dataset:
    """`ds` with unique row ids, checked here, before any model runs: the logit cache aligns
    rows by them. A split without `idx` gets its row numbers, except where the task's id is
    a field of a dict idx (multirc, record), which only the file can give."""
    if "idx" not in ds.column_names:
        if task.example_id is not None:
            raise ValueError(
                f"{where} has no field 'idx': expected a dict with key {task.example_id!r} in "
                f"every row, as in HF's super_glue {task.hub_name!r}."
            )
        return ds.add_column("idx", list(range(len(ds))))
    try:
        example_ids(ds, task)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return ds


def _check_texts(task: TaskSpec, ds: Dataset, where: str) -> None:
    """Every row's text fields are text: a row without one (null in the file) would otherwise
    stop the tokenizer mid-run with an error that names no file, row or field."""
    for field in task.text_fields:
        if field not in ds.column_names:
            continue  # a missing field is named by the split's own check
        feature = ds.features[field]
        if not isinstance(feature, Value) or feature.dtype not in (
            "string",
            "large_string",
            "null",
        ):
            continue  # spans and indices (wic's start1...) are checked by their formatter
        bad = [i for i, value in enumerate(ds[field][:]) if not isinstance(value, str)]
        if bad:
            ids = ds["idx"][: bad[0] + 1][-1] if "idx" in ds.column_names else bad[0]
            raise ValueError(
                f"{where}: row {bad[0]} (idx {ids}) has no text in field {field!r} "
                f"({len(bad)} row(s) in all, e.g. rows {bad[:5]}): expected a string in every row."
            )


def example_ids(ds: Dataset, task: TaskSpec) -> np.ndarray:
    """Each row's id within its split, as int64: `idx`, or `idx[task.example_id]` for dicts.

    The logit cache aligns rows by these ids, so they must be unique integers.
    """
    idx = ds["idx"][:]
    if task.example_id is not None:
        if idx and not all(isinstance(i, dict) and task.example_id in i for i in idx):
            raise ValueError(
                f"field 'idx' must be a dict with key {task.example_id!r} in every row "
                f"(as in HF's super_glue {task.hub_name!r}), got e.g. {idx[0]!r}."
            )
        idx = [i[task.example_id] for i in idx]
    elif idx and isinstance(idx[0], dict):
        raise ValueError(
            f"field 'idx' holds dicts (e.g. {idx[0]!r}); task {task.name!r} expects an integer "
            f"idx per row."
        )
    ids = np.asarray(idx, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        key = "idx" if task.example_id is None else f"idx.{task.example_id}"
        repeated = values[counts > 1][:5].tolist()
        raise ValueError(f"{key} repeats the value(s) {repeated}: each row needs its own id.")
    return ids


def row_groups(ds: Dataset, task: TaskSpec):
    """One key per row for tasks whose rows are scored in groups (multirc: a question's
    answers), which every slice keeps whole; None for the others."""
    return metrics.GROUP_KEYS[task.name](ds) if task.name in metrics.GROUP_KEYS else None


def subsample(ds: Dataset, limit: int | None, seed: int = 0, groups=None) -> Dataset:
    """A fixed random subset, kept in the original order.

    The seed is `data.subsample_seed`, not the run seed, so that sweeping the run
    seed keeps the same examples and therefore hits the teacher logit cache.
    With `groups` (one key per row: multirc's questions), whole groups are kept, as
    many as fit in `limit` rows (at least one), so grouped metrics stay meaningful.
    """
    if not limit or limit >= len(ds):
        return ds
    return ds.select(subsample_rows(len(ds), limit, seed, groups).tolist())


def subsample_rows(n_rows: int, limit: int, seed: int = 0, groups=None) -> np.ndarray:
    """The sorted row numbers `subsample` keeps (its complement is what it leaves out)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return np.sort(rng.choice(n_rows, size=int(limit), replace=False))
    keys, group_of_row, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(keys))
    fits = np.cumsum(sizes[order]) <= int(limit)
    chosen = order[: max(int(fits.sum()), 1)]
    return np.flatnonzero(np.isin(group_of_row, chosen))


def content_fingerprint(ds: Dataset, fields: Iterable[str]) -> str:
    """Hash of the examples' `idx` and text, the only data that shapes a teacher's logits."""
    h = hashlib.sha256()
    for field in ["idx", *fields]:
        h.update(field.encode())
        h.update(json.dumps(ds[field][:], ensure_ascii=False).encode())
    return h.hexdigest()


def input_fingerprint(ds: Dataset, task: TaskSpec, extra: Iterable[str] = ()) -> str:
    """Hash of what a model reads from `ds` (plus the `extra` fields, e.g. the label).

    For tasks with a formatter, the formatted text itself is hashed, so that a change to the
    formatting invalidates cached logits and stored teachers; other tasks hash their text
    fields as `content_fingerprint` always has, which keeps existing caches valid.
    """
    extra = list(extra)
    if task.formatter is None:
        return content_fingerprint(ds, [*task.text_fields, *extra])
    first, second = format_inputs(task, ds[:])
    h = hashlib.sha256(content_fingerprint(ds, extra).encode())
    h.update(json.dumps([first, second], ensure_ascii=False).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Formatting: rows -> (first texts, second texts or None), the text every model reads.
# --------------------------------------------------------------------------------------------

# Plain characters in both BERT's WordPiece and RoBERTa's byte-level vocabularies, so any
# encoder keeps them, and no new token (and no resized embedding) is needed.
TARGET_MARK = "*"  # wic's target word, wsc's candidate referent (span1)
PRONOUN_MARK = "#"  # wsc's pronoun (span2)

Texts = tuple[list[str], list[str] | None]


def format_inputs(task: TaskSpec, batch: dict[str, list]) -> Texts:
    """A batch of rows (column -> values) as (first texts, second texts or None)."""
    if task.formatter is not None:
        return FORMATTERS[task.formatter](batch)
    texts = [batch[field] for field in task.text_fields]
    return texts[0], (texts[1] if len(texts) > 1 else None)


def _rows(batch: dict[str, list], *fields: str):
    """(idx, *values) per row; idx is the row number when the batch has none."""
    n = len(batch[fields[0]])
    return zip(batch.get("idx", range(n)), *(batch[f] for f in fields), strict=True)


def _format_wic(batch: dict[str, list], issues: list[str] | None = None) -> Texts:
    """`word: sentence1` / `sentence2`, the target word's occurrence `*marked*` in each.

    The marks point at the occurrence (a sentence may use the word twice, inflected); the
    prefix names the lemma. Both are plain text, so any encoder sees them.
    """
    first, second = [], []
    fields = ("word", "sentence1", "start1", "end1", "sentence2", "start2", "end2")
    for idx, word, s1, start1, end1, s2, start2, end2 in _rows(batch, *fields):
        first.append(f"{word}: {_mark_chars(s1, start1, end1, idx, 'start1/end1')}")
        second.append(_mark_chars(s2, start2, end2, idx, "start2/end2"))
    return first, second


def _mark_chars(text: str, start: int, end: int, idx, fields: str) -> str:
    if not 0 <= start < end <= len(text):
        raise ValueError(
            f"row idx {idx}: {fields}={start}/{end} is not a character span of the "
            f"{len(text)}-character sentence {text!r}."
        )
    return f"{text[:start]}{TARGET_MARK}{text[start:end]}{TARGET_MARK}{text[end:]}"


def _format_wsc(batch: dict[str, list], issues: list[str] | None = None) -> Texts:
    """The text with the candidate `*marked*` and the pronoun `#marked#`, one segment.

    `span*_index` counts whitespace-separated words, and the span's text says how many words
    it covers. The real data is not always consistent (even HF's `wsc.fixed` keeps a few
    spans that are not at their index, or not in the text at all): such a span is marked
    where its words are nearest its index, else at its index, and described in `issues`.
    """
    out = []
    fields = ("text", "span1_index", "span1_text", "span2_index", "span2_text")
    for idx, text, index1, text1, index2, text2 in _rows(batch, *fields):
        words = text.split()
        span1 = _word_span(words, index1, text1, idx, "span1", issues)
        span2 = _word_span(words, index2, text2, idx, "span2", issues)
        if span1.start < span2.stop and span2.start < span1.stop:
            raise ValueError(f"row idx {idx}: span1 {text1!r} and span2 {text2!r} overlap.")
        _wrap(words, span1, TARGET_MARK)
        _wrap(words, span2, PRONOUN_MARK)
        out.append(" ".join(words))
    return out, None


def _normal_words(text: str) -> list[str]:
    return [re.sub(r"\W", "", word.lower()) for word in text.split()]


def _word_span(words: list[str], index: int, span_text: str, idx, name: str, issues) -> range:
    """The words `span_text` covers: at `index` when they are there, else the nearest match."""
    target = _normal_words(span_text)
    if not target or not 0 <= index < len(words):
        raise ValueError(
            f"row idx {idx}: {name}_index={index} with {name}_text={span_text!r} is not a "
            f"span of the {len(words)}-word text {' '.join(words)!r}."
        )
    normal = _normal_words(" ".join(words))
    n = len(target)
    starts = [i for i in range(len(words) - n + 1) if normal[i : i + n] == target]
    if index in starts or _clitic_at(words, normal, index, target):
        return range(index, index + n)
    if starts:
        start = min(starts, key=lambda i: abs(i - index))
        note = f"found at word {start}"
    else:
        start, n = index, min(n, len(words) - index)
        note = f"not in the text; marked {' '.join(words[start : start + n])!r} at its index"
    if issues is not None:
        issues.append(f"idx {idx}: {name}_text {span_text!r} is not at word {index}, {note}")
    return range(start, start + n)


def _clitic_at(words: list[str], normal: list[str], index: int, target: list[str]) -> bool:
    """The span at `index` with a clitic on its last word (`it` in "it's", `Charlie` in
    "Charlie's"): the right words, which an exact match would move elsewhere."""
    last = index + len(target) - 1
    if last >= len(words) or normal[index:last] != target[:-1]:
        return False
    return re.fullmatch(rf"\W*{re.escape(target[-1])}['’]\w*\W*", words[last].lower()) is not None


def _wrap(words: list[str], span: range, mark: str) -> None:
    """Put `mark` around the span's words, leaving leading/trailing punctuation outside."""
    first, last = span.start, span.stop - 1
    lead = re.match(r"\W*", words[first]).end()
    words[first] = words[first][:lead] + mark + words[first][lead:]
    trail = re.search(r"\W*$", words[last]).start()
    trail = max(trail, lead + 1 if first == last else 0)  # a word of punctuation only
    words[last] = words[last][:trail] + mark + words[last][trail:]


# MultiRC's paragraphs number their sentences in HTML (`<b>Sent 1: </b>...<br>`): about a dozen
# tokens a sentence that would crowd the passage out of max_length, stripped as jiant does.
_MULTIRC_MARKUP = re.compile(r"<b>\s*Sent \d+:\s*</b>|<br\s*/?>")


def _format_multirc(batch: dict[str, list], issues: list[str] | None = None) -> Texts:
    """One row per candidate answer: `question answer` / paragraph (the part truncated),
    the paragraph without its HTML sentence markup."""
    first = [f"{q} {a}" for q, a in zip(batch["question"], batch["answer"], strict=True)]
    return first, [" ".join(_MULTIRC_MARKUP.sub(" ", p).split()) for p in batch["paragraph"]]


# name -> formatter(batch, issues=None): `issues` collects inconsistencies that were repaired.
FORMATTERS: dict[str, Callable[..., Texts]] = {
    "wic": _format_wic,
    "wsc": _format_wsc,
    "multirc": _format_multirc,
}


def tokenize(ds: Dataset, tokenizer, task: TaskSpec, max_length: int) -> Dataset:
    """Token ids for `ds` with the model's own tokenizer; padding is left to the collator."""
    if task.is_multiple_choice:
        return choices.tokenize(ds, tokenizer, task, max_length)

    def encode(batch):
        first, second = format_inputs(task, batch)
        try:
            return tokenizer(first, second, truncation=task.truncation, max_length=max_length)
        except Exception as err:  # tokenizers: "Truncation error: Sequence to truncate too short"
            if task.truncation != "only_second":
                raise
            lengths = [len(ids) for ids in tokenizer(first)["input_ids"]]
            worst = int(np.argmax(lengths))
            raise ValueError(
                f"Task {task.name!r} keeps its first text whole (only the passage is cut), and "
                f"row idx {batch['idx'][worst]} has one of {lengths[worst]} tokens, which leaves "
                f"the passage no room in max_length={max_length}: raise the model's max_length "
                "(student.max_length, teachers.<name>.max_length)."
            ) from err

    keep = {"label", "idx"}
    drop = [c for c in ds.column_names if c not in keep]
    return ds.map(encode, batched=True, remove_columns=drop, desc="Tokenizing")
