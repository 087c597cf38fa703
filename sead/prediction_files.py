"""Prediction files: a teacher's outputs written by any model, anywhere, read back as logits.

A predictions teacher (`sead.teachers.predictions`) reads these; `sead cache export`
writes them from cached logits, so a teacher run on a GPU machine can be distilled elsewhere.

Formats (one file per split):

    .jsonl        one row per example: {"idx": 3, "<format>": [0.1, 0.9]}
                  (label: a label name or column number; score: a number)
    .npy          the values [n, width] (label, score: [n]); the example ids in <stem>.idx.npy
    .safetensors  two tensors: "idx" [n] and one named after the format

`<format>` is what the values are: `logits`, `probs`, `log_probs`, `label` (a hard vote) or
`score` (regression). Multiple choice: one value per choice (record: a row per query, as many
values as it has candidates; arrays are as wide as the most candidates, extra cells ignored).

Everything is checked before it is used, and each failure names the file, the row (jsonl line
or array row) and what was expected. Only safetensors and pickle-free `.npy` are read.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from sead.files import read_text, text_lines, write_atomic
from sead.tasks import PAD_LOGIT

log = logging.getLogger(__name__)

FORMATS = ("logits", "probs", "log_probs", "label", "score")
SUFFIXES = (".jsonl", ".npy", ".safetensors")
# Probabilities below EPSILON become EPSILON before the log: a 0 would be a logit of -inf,
# which no ensembler or KD loss can take. log(1e-6) = -13.8 is already certainty in practice.
EPSILON = 1e-6
TOLERANCE = 1e-3  # how far a row of probabilities may sum from 1 (float32 softmax, rounding)
INT64_MIN = -(2**63)  # example ids are int64, as the split's
SHOWN = 5  # how many missing / duplicate / unknown ids a message lists


class PredictionFileError(ValueError):
    """A prediction file that cannot be used as it is; the message says where and why."""


@dataclass
class Predictions:
    """A file's rows as read, before any check against the split."""

    path: Path
    sha256: str  # of the bytes parsed: the teacher's identity in the cache key
    idx: np.ndarray  # [n] int64
    values: list | np.ndarray  # per row: a list (jsonl) or an array row
    where: list[str]  # per row, how a message names it: "line 7", "row 6"


def idx_path(path) -> Path:
    """Where a `.npy` file's example ids are: `<stem>.idx.npy` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.idx.npy")


def content_hash(path) -> str:
    """sha256 of a prediction file's bytes (and its ids file for `.npy`), not of its name:
    renaming or moving a file keeps its cache entries, editing it does not."""
    path = Path(path)
    h = hashlib.sha256(path.read_bytes())
    if path.suffix == ".npy":
        h.update(idx_path(path).read_bytes())
    return h.hexdigest()


def read(path, fmt: str, example_id: str | None = None) -> Predictions:
    """A prediction file's ids and values. `example_id`: the key of a dict `idx` (multirc)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise PredictionFileError(f"{path}: unknown file type; expected one of {SUFFIXES}.")
    if not path.is_file():
        raise PredictionFileError(f"{path}: no such file.")
    if path.suffix == ".jsonl":
        return _read_jsonl(path, fmt, example_id)
    payload = path.read_bytes()
    if path.suffix == ".npy":
        ids_file = idx_path(path)
        if not ids_file.is_file():
            raise PredictionFileError(f"{path}: its example ids are missing: expected {ids_file}.")
        ids_payload = ids_file.read_bytes()
        values, idx = _load_npy(path, payload), _load_npy(ids_file, ids_payload)
        sha = hashlib.sha256(payload)
        sha.update(ids_payload)
        digest = sha.hexdigest()
    else:
        try:
            tensors = load_safetensors(payload)
        except Exception as err:  # safetensors raises several types on bad bytes
            raise PredictionFileError(f"{path}: not a safetensors file ({err}).") from err
        for name in ("idx", fmt):
            if name not in tensors:
                raise PredictionFileError(
                    f"{path}: no tensor {name!r}; expected 'idx' and {fmt!r} (format: {fmt}), "
                    f"found {sorted(tensors)}."
                )
        values, idx = tensors[fmt], tensors["idx"]
        digest = hashlib.sha256(payload).hexdigest()
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise PredictionFileError(
            f"{path}: idx must be a 1-d integer array, got {idx.dtype}{list(idx.shape)}."
        )
    if len(values) != len(idx):
        raise PredictionFileError(f"{path}: {len(values)} rows of values for {len(idx)} ids.")
    where = [f"row {i}" for i in range(len(idx))]
    return Predictions(path, digest, idx.astype(np.int64), values, where)


def _load_npy(path: Path, payload: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(payload), allow_pickle=False)
    except ValueError as err:  # object arrays need pickle, which is never allowed
        raise PredictionFileError(f"{path}: not a plain numeric .npy array ({err}).") from err


def _read_jsonl(path: Path, fmt: str, example_id: str | None) -> Predictions:
    try:
        text = read_text(path, "Prediction file")  # UTF-8, or refused naming the byte
    except ValueError as err:
        raise PredictionFileError(str(err)) from None
    payload = text.encode("utf-8")  # the very bytes read: valid UTF-8 round-trips exactly
    ids, values, where = [], [], []
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise PredictionFileError(f"{path}: line {number}: not JSON ({err}).") from err
        if not isinstance(row, dict) or "idx" not in row or fmt not in row:
            raise PredictionFileError(
                f"{path}: line {number}: expected an object with 'idx' and {fmt!r} "
                f"(format: {fmt}), got {line[:80]!r}."
            )
        idx = row["idx"]
        if isinstance(idx, dict) and example_id is not None:
            idx = idx.get(example_id)
        if isinstance(idx, bool) or not isinstance(idx, int) or not INT64_MIN <= idx < -INT64_MIN:
            key = "idx" if example_id is None else f"idx.{example_id} (or idx)"
            raise PredictionFileError(
                f"{path}: line {number}: {key} must be an integer that fits in 64 bits, got "
                f"{row['idx']!r}."
            )
        ids.append(idx)
        values.append(row[fmt])
        where.append(f"line {number}")
    digest = hashlib.sha256(payload).hexdigest()
    return Predictions(path, digest, np.asarray(ids, dtype=np.int64), values, where)


@dataclass(frozen=True)
class Layout:
    """What a split expects of a file: its ids, and each row's width and meaning."""

    ids: np.ndarray  # the split's example ids, in the split's order
    widths: np.ndarray  # values each row must have: labels, or that example's choices
    kind: str  # "classification", "regression" or "multiple_choice"
    label_names: tuple[str, ...] = ()  # the file's columns by name (label format: names)


def to_logits(
    predictions: Predictions,
    layout: Layout,
    fmt: str,
    *,
    columns: list[int] | None = None,
    smoothing: float = 0.1,
    epsilon: float = EPSILON,
    tolerance: float = TOLERANCE,
    extra_ids: str = "error",
) -> np.ndarray:
    """The file's values as logits `[n, width]`, rows in the split's order.

    `columns[j]` is the file column that holds task label j (None: the same order).
    Raises `PredictionFileError` on anything that does not fit the split.
    """
    rows = _match_ids(predictions, layout.ids, extra_ids)
    path, where = predictions.path, predictions.where
    widths = layout.widths
    n, width = len(layout.ids), int(widths.max()) if len(widths) else 0
    ordered = (
        predictions.values[rows]
        if isinstance(predictions.values, np.ndarray)
        else [predictions.values[row] for row in rows]
    )
    fast = _all_rows_at_once(ordered, layout, fmt, epsilon, tolerance)
    if fast is not None:
        return fast if columns is None else fast[:, columns]
    out = np.full((n, max(width, 1)), PAD_LOGIT, dtype=np.float32)
    bad: dict[str, list[str]] = {}
    for position, row in enumerate(rows):
        value, expected = ordered[position], int(widths[position])
        try:
            out[position, :expected] = _row_logits(
                value, expected, fmt, layout, smoothing, epsilon, tolerance
            )
        except _RowError as err:
            bad.setdefault(str(err), []).append(where[row])
    if bad:
        lines = [f"{path}: {sum(map(len, bad.values()))} row(s) cannot be used:"]
        for reason, places in bad.items():
            more = f" and {len(places) - 1} more" if len(places) > 1 else ""
            lines.append(f"  {places[0]}{more}: {reason}")
        raise PredictionFileError("\n".join(lines))
    if columns is not None:
        out = out[:, columns]
    return out


def _all_rows_at_once(values, layout: Layout, fmt: str, epsilon: float, tolerance: float):
    """The usual file (every row a full list of good numbers) at numpy speed; None for
    anything else, which the row-by-row path then reads, saying what is wrong where."""
    widths = set(layout.widths.tolist())
    if fmt not in ("logits", "probs", "log_probs") or len(widths) != 1:
        return None
    if _holds_booleans(values):  # numpy would read true as 1.0
        return None
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if matrix.shape != (len(layout.widths), widths.pop()) or not _fits_float32(matrix).all():
        return None
    if fmt == "probs":
        if (matrix < -tolerance).any() or (abs(matrix.sum(1) - 1.0) > tolerance).any():
            return None
        matrix = np.log(np.clip(matrix, epsilon, None))
    elif fmt == "log_probs":
        if (matrix > tolerance).any() or (abs(np.exp(matrix).sum(1) - 1.0) > tolerance).any():
            return None
        matrix = np.maximum(matrix, np.log(epsilon))
    return matrix.astype(np.float32)


def _holds_booleans(values) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype == bool
    return any(
        isinstance(v, bool) for row in values for v in (row if isinstance(row, list) else [row])
    )


def _fits_float32(values: np.ndarray) -> np.ndarray:
    """Finite, and still finite once stored as float32 (the cache's and the logits' type)."""
    return np.isfinite(values) & (np.abs(values) <= np.finfo(np.float32).max)


class _RowError(ValueError):
    """What is wrong with one row (collected, then reported with the row's place)."""


def _row_logits(value, expected, fmt, layout, smoothing, epsilon, tolerance) -> np.ndarray:
    if fmt == "label":
        return _label_logits(value, expected, layout, smoothing, epsilon)
    if fmt == "score":
        values = np.atleast_1d(np.asarray(value, dtype=object))
        if values.shape != (1,) or not _is_number(values[0]):
            raise _RowError(f"expected one number (format: score), got {_show(value)}")
        values = values.astype(np.float64)
    else:
        values = np.asarray(value, dtype=object) if isinstance(value, list) else np.asarray(value)
        if values.ndim != 1 or not all(_is_number(v) for v in values):
            raise _RowError(f"expected a list of {expected} numbers, got {_show(value)}")
        if layout.kind == "multiple_choice" and not isinstance(value, list):
            values = values[:expected]  # arrays are as wide as the most choices in the split
        if len(values) != expected:
            what = "choices" if layout.kind == "multiple_choice" else "labels"
            raise _RowError(f"expected {expected} values (one per {what[:-1]}), got {len(values)}")
        values = values.astype(np.float64)
    if not _fits_float32(values).all():
        raise _RowError(f"values must be finite numbers within float32, got {_show(value)}")
    if fmt == "probs":
        if (values < -tolerance).any() or abs(values.sum() - 1.0) > tolerance:
            raise _RowError(
                f"probabilities must be >= 0 and sum to 1 (within {tolerance:g}), "
                f"got sum {values.sum():.6g}"
            )
        return np.log(np.clip(values, epsilon, None))
    if fmt == "log_probs":
        if (values > tolerance).any() or abs(np.exp(values).sum() - 1.0) > tolerance:
            raise _RowError(
                f"log-probabilities must be <= 0 and their exp sum to 1 (within "
                f"{tolerance:g}), got sum {np.exp(values).sum():.6g}"
            )
        return np.maximum(values, np.log(epsilon))
    return values  # logits, score


def _label_logits(value, expected, layout, smoothing, epsilon) -> np.ndarray:
    """A hard label as the log of a smoothed one-hot: (1 - s) on it, s / k on every column."""
    names = list(layout.label_names)
    if isinstance(value, str) and value in names:
        column = names.index(value)
    elif isinstance(value, int | np.integer) and not isinstance(value, bool):
        column = int(value)
    else:
        one_of = f" or one of {names}" if names else ""
        raise _RowError(f"expected a column number{one_of}, got {_show(value)}")
    if not 0 <= column < expected:
        raise _RowError(f"label {column} is outside 0..{expected - 1}")
    probs = np.full(expected, smoothing / expected)
    probs[column] += 1.0 - smoothing
    return np.log(np.clip(probs, epsilon, None))


def _match_ids(predictions: Predictions, ids: np.ndarray, extra_ids: str) -> np.ndarray:
    """For each id of the split, the file row that holds it; every problem at once."""
    file_ids = predictions.idx
    values, first_row, counts = np.unique(file_ids, return_index=True, return_counts=True)
    expected = set(ids.tolist())
    problems = []
    present = set(values.tolist())
    missing = [i for i in ids.tolist() if i not in present]
    if missing:
        problems.append(f"{len(missing)} id(s) of the split are missing: {_first(missing)}")
    repeated = values[counts > 1].tolist()
    if repeated:
        places = [
            f"{i} ({', '.join(predictions.where[r] for r in np.flatnonzero(file_ids == i)[:3])})"
            for i in repeated[:SHOWN]
        ]
        more = f" and {len(repeated) - SHOWN} more" if len(repeated) > SHOWN else ""
        problems.append(f"{len(repeated)} id(s) appear more than once: {', '.join(places)}{more}")
    unknown = [(i, predictions.where[r]) for i, r in zip(values, first_row, strict=True)]
    unknown = [(int(i), w) for i, w in unknown if int(i) not in expected]
    if unknown and extra_ids != "ignore":
        shown = [f"{i} ({w})" for i, w in unknown[:SHOWN]]
        more = f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
        problems.append(
            f"{len(unknown)} id(s) are not in the split: {', '.join(shown)}{more} (a file for "
            f"another split? if it covers a whole split that data.max_train_samples cuts, set "
            f"extra_ids: ignore)"
        )
    if problems:
        raise PredictionFileError(
            f"{predictions.path}: its ids do not match the split's {len(ids):,} examples:\n  "
            + "\n  ".join(problems)
        )
    if unknown:
        log.info("%s: %d row(s) for ids not in the split, ignored.", predictions.path, len(unknown))
    row_of = dict(zip(values.tolist(), first_row.tolist(), strict=True))
    return np.asarray([row_of[i] for i in ids.tolist()], dtype=np.int64)


def _first(items: list) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(map(str, items[:SHOWN])) + more


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _show(value) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def write(path, idx: np.ndarray, logits: np.ndarray, regression: bool = False) -> str:
    """Cached logits as a prediction file (format `logits`, or `score` for regression); the
    format comes from the suffix. Multiple-choice padding (`PAD_LOGIT`) is left out of jsonl
    rows. Returns the format written."""
    path = Path(path)
    idx = np.asarray(idx, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float32)
    fmt = "score" if regression else "logits"
    values = logits[:, 0] if regression else logits
    if path.suffix == ".jsonl":
        lines = []
        for i, row in zip(idx.tolist(), values, strict=True):
            if regression:
                value = float(row)
            else:
                keep = len(row)
                while keep > 1 and row[keep - 1] == PAD_LOGIT:
                    keep -= 1
                value = [float(v) for v in row[:keep]]
            lines.append(json.dumps({"idx": i, fmt: value}))
        write_atomic(path, "\n".join(lines) + "\n")
    elif path.suffix == ".npy":
        write_atomic(path, _npy_bytes(values))
        write_atomic(idx_path(path), _npy_bytes(idx))
    elif path.suffix == ".safetensors":
        write_atomic(path, save_safetensors({"idx": idx, fmt: np.ascontiguousarray(values)}))
    else:
        raise PredictionFileError(f"{path}: unknown file type; expected one of {SUFFIXES}.")
    return fmt


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
