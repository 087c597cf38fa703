"""The soft-label cache: each teacher's logits per split, on disk, by fingerprint.

Teachers are the expensive part of multi-teacher distillation, and their
outputs depend only on the model, its tokenizer, the truncation settings, the
task and the data. Everything else (student, ensembler, temperature, seed)
reads the same entry, so a teacher never runs twice on the same data.

An entry is a directory `<root>/<fingerprint>/` holding `logits.safetensors`
and `manifest.json`. It is built under a temporary name and renamed into place
(atomic on POSIX), guarded by a file lock so that parallel sweep jobs compute
it once, and verified against its manifest's checksum on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from safetensors.numpy import load_file, save_file

log = logging.getLogger(__name__)

LOGITS_FILE = "logits.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


def fingerprint(key: dict) -> str:
    """Stable hash of everything that determines a teacher's logits."""
    blob = json.dumps({"format": FORMAT_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def hash_files(paths) -> str:
    """Content hash of files (e.g. a local checkpoint's weights and config)."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    return hash_files([path])


@dataclass
class CacheEntry:
    fingerprint: str
    logits: np.ndarray  # [n_examples, n_labels], rows in `idx` order
    idx: np.ndarray  # [n_examples] the dataset's example ids
    hit: bool  # True when read from disk, False when computed now


class CorruptEntry(Exception):
    """An entry on disk that must not be used (truncated, edited, mismatched)."""


class SoftLabelCache:
    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path(self, fp: str) -> Path:
        return self.root / fp

    def get_or_compute(
        self,
        key: dict,
        expected_idx: np.ndarray,
        compute: Callable[[], np.ndarray],
    ) -> CacheEntry:
        """Read the entry for `key`, or compute, store and return it.

        `expected_idx` is the example order the caller is about to use; an entry
        built for another order is treated as stale. `compute()` returns logits in
        that order.
        """
        fp = fingerprint(key)
        expected_idx = np.asarray(expected_idx, dtype=np.int64)
        with FileLock(str(self.root / f"{fp}.lock")):
            try:
                logits = self._load(fp, key, expected_idx)
                self.hits += 1
                log.info("Cache hit %s (%s)", fp, _describe(key))
                return CacheEntry(fp, logits, expected_idx, hit=True)
            except FileNotFoundError:
                pass
            except CorruptEntry as err:
                log.warning("Cache entry %s is unusable (%s); recomputing it.", fp, err)
            log.info("Cache miss %s (%s): computing", fp, _describe(key))
            logits = np.ascontiguousarray(compute(), dtype=np.float32)
            if logits.shape[0] != len(expected_idx):
                raise ValueError(
                    f"compute() returned {logits.shape[0]} rows for {len(expected_idx)} examples"
                )
            self._store(fp, key, logits, expected_idx)
            self.misses += 1
            return CacheEntry(fp, logits, expected_idx, hit=False)

    def _load(self, fp: str, key: dict, expected_idx: np.ndarray) -> np.ndarray:
        entry = self.path(fp)
        manifest_path, logits_path = entry / MANIFEST_FILE, entry / LOGITS_FILE
        if not entry.exists():
            raise FileNotFoundError(entry)
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CorruptEntry(f"manifest unreadable: {err}") from err
        if manifest.get("key") != json.loads(json.dumps(key, default=str)):
            raise CorruptEntry("manifest key differs from the requested one")
        if not logits_path.is_file() or _sha256(logits_path) != manifest.get("sha256"):
            raise CorruptEntry("logits file missing or checksum mismatch")
        try:
            tensors = load_file(str(logits_path))
        except Exception as err:  # safetensors raises several types on bad bytes
            raise CorruptEntry(f"logits unreadable: {err}") from err
        logits, idx = tensors.get("logits"), tensors.get("idx")
        if logits is None or idx is None or list(logits.shape) != manifest.get("shape"):
            raise CorruptEntry("logits shape differs from the manifest")
        if not np.array_equal(idx, expected_idx):
            raise CorruptEntry("example idx order differs from the data being used")
        return logits.astype(np.float32, copy=False)

    def _store(self, fp: str, key: dict, logits: np.ndarray, idx: np.ndarray) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{fp}.", dir=self.root))
        try:
            save_file({"logits": logits, "idx": idx}, str(tmp / LOGITS_FILE))
            manifest = {
                "fingerprint": fp,
                "key": key,
                "shape": list(logits.shape),
                "dtype": str(logits.dtype),
                "n_examples": int(logits.shape[0]),
                "sha256": _sha256(tmp / LOGITS_FILE),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
            final = self.path(fp)
            if final.exists():
                shutil.rmtree(final)  # a stale entry that failed verification
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _describe(key: dict) -> str:
    return ", ".join(str(key.get(k)) for k in ("teacher", "task", "split") if k in key)
