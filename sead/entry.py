"""One soft-label cache entry's files, read back and checked against its manifest.

    <fingerprint>/logits.safetensors   logits (+ idx when not a range, + representations)
    <fingerprint>/manifest.json        key, shape, dtype, idx order, sha256 and size of the file

`sead.cache` writes entries (atomically) and reads them through `read_tensors` on every use;
`python -m sead.cache verify` does the same check. Whatever fails it is a `CorruptEntry`:
reported in one line, recomputed, never used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_safetensors

from sead import chunks
from sead import representations as reps

LOGITS_FILE = "logits.safetensors"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 2  # layout of an entry on disk; older entries are rebuilt


class CorruptEntry(Exception):
    """An entry on disk that must not be used (truncated, edited, mismatched)."""


def read_entry(folder: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(manifest, logits as stored, idx) of an entry, checked against its manifest.

    FileNotFoundError when there is no entry at all; CorruptEntry when there is
    one that must not be used.
    """
    manifest, tensors, idx = read_tensors(folder)
    return manifest, tensors["logits"], idx


def read_tensors(folder: Path) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    """(manifest, {logits, and representations when it holds them} as stored, idx) of an
    entry, every tensor checked against its manifest (as `read_entry`)."""
    if not folder.is_dir():
        raise FileNotFoundError(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CorruptEntry(f"manifest unreadable: {err.__class__.__name__}") from err
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise CorruptEntry(f"manifest is not format {MANIFEST_VERSION}")
    try:
        payload = (folder / LOGITS_FILE).read_bytes()
    except OSError as err:
        raise CorruptEntry(f"{LOGITS_FILE} unreadable: {err.__class__.__name__}") from err
    if len(payload) != manifest.get("size_bytes") or chunks.sha256(payload) != manifest.get(
        "sha256"
    ):
        raise CorruptEntry(f"{LOGITS_FILE} fails its checksum ({len(payload):,} bytes)")
    try:
        tensors = load_safetensors(payload)
        logits = tensors["logits"]
        idx = _decode_idx(manifest["idx"], tensors)
    except Exception as err:  # checksum matched, so this is a manifest/file disagreement
        raise CorruptEntry(f"contents disagree with the manifest: {err!r}") from err
    if list(logits.shape) != manifest.get("shape") or logits.dtype.name != manifest.get("dtype"):
        raise CorruptEntry(
            f"logits are {logits.dtype.name}{list(logits.shape)}, the manifest says "
            f"{manifest.get('dtype')}{manifest.get('shape')}"
        )
    if not len(idx) == len(logits) == manifest.get("n_examples"):
        raise CorruptEntry(f"{len(idx)} idx for {len(logits)} rows of logits")
    if chunks.sha256(idx.tobytes()) != manifest["idx"].get("sha256"):
        raise CorruptEntry("example idx order fails its checksum")
    problem = reps.check_stored(manifest, tensors, len(idx))
    if problem:
        raise CorruptEntry(problem)
    return manifest, {k: v for k, v in tensors.items() if k != "idx"}, idx


def _decode_idx(record: dict, tensors: dict) -> np.ndarray:
    if "range" in record:
        return np.arange(*record["range"], dtype=np.int64)
    return tensors[record["tensor"]].astype(np.int64)


def is_range(idx: np.ndarray) -> bool:
    """idx == start, start+1, ...: stored as two numbers instead of a column."""
    return len(idx) == 0 or bool(np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))))


def check_computed(outputs: reps.Outputs, n_examples: int, key: dict, what: str) -> None:
    """Never cache what every later run would silently inherit as garbage: logits (and the
    vectors, when `key` asks for them) of the right shape, every value finite."""
    logits = outputs.logits
    if logits.ndim != 2 or logits.shape[0] != n_examples:
        raise ValueError(
            f"compute() returned logits of shape {list(logits.shape)} for "
            f"{n_examples} examples; expected [{n_examples}, n_labels]."
        )
    bad, overflow = reps.non_finite(logits, key.get("storage_dtype", "float32"))
    if bad:
        raise ValueError(
            f"Teacher logits for {what} have non-finite values for {bad} examples "
            f"(precision {key.get('precision', 'float32')}); they were not cached."
            + (f" {overflow} Store them as float32: cache.dtype=float32." if overflow else "")
        )
    spec = reps.spec_of(key)
    if spec is not None:
        reps.check_computed(outputs.representations, n_examples, f"Teacher {what}", spec.dtype)


def entries(root: Path) -> list[Path]:
    """Entry folders under `root` (not partial, temp or lock folders)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def manifest_or_none(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None
