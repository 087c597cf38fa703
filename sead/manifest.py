"""Content hashes of files (memoized by file stat), and folder manifests built on them.

`hash_files` identifies local checkpoints for the logit cache's keys; `FileHashes` keeps its
results so a reuse rehashes only files that changed.
A manifest lists a folder's files with their sizes and hashes, written once, checked on reuse.

The teacher store keeps fine-tuned checkpoints that every later run trusts; a flipped bit in
the weights or a deleted tokenizer file would otherwise be used silently (and hashed into
new logit-cache keys). `write` records the files; `verify` says what is wrong, in one line.
Hashing goes through `FileHashes` when given one, so a reuse rehashes only changed files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from filelock import FileLock

from sead.files import folder_size, human_size, open_to_team, write_atomic

log = logging.getLogger(__name__)

MANIFEST = "sead_manifest.json"
VERSION = 1
STORE_MARKER = "sead_teacher.json"  # a teacher store entry's record (sead.teachers.store)


def hash_files(paths: Iterable, memo: FileHashes | None = None) -> str:
    """Content hash of files (e.g. a local checkpoint's weights and config).

    Hashing a 400 MB checkpoint takes about a second; with a `memo` it happens
    once per version of the files instead of once per run.
    """
    paths = sorted(Path(p) for p in paths)
    if memo is not None:
        return memo.get(paths)
    return _hash_contents(paths)


def _hash_contents(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class FileHashes:
    """`hash_files` results memoized in a small json, keyed by each file's stat.

    A file is assumed unchanged while its resolved path, inode, size, mtime_ns
    and ctime_ns all are (the signals `git status` trusts); any change rehashes.
    Where the memo cannot be written (a shared, read-only cache), hashes are computed
    and not remembered.
    """

    def __init__(self, path):
        self.path = Path(path)

    def get(self, paths: list[Path]) -> str:
        stamp = json.dumps([_stat_stamp(p) for p in paths])
        key = hashlib.sha256(stamp.encode()).hexdigest()
        known = self._read()
        if key in known:
            return known[key]
        digest = _hash_contents(paths)
        try:
            with FileLock(str(self.path.with_name(f".{self.path.name}.lock"))):
                known = {**self._read(), key: digest}
                write_atomic(self.path, json.dumps(known, indent=0))
        except OSError as err:  # a read-only cache: the hash is right, only not remembered
            log.debug("Not memoizing file hashes in %s: %s", self.path, err)
        return digest

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # absent or damaged: rehash, never trust a bad memo


def _stat_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class DamagedFolder(Exception):
    """A folder whose files no longer match its manifest."""


def write(folder: Path, memo: FileHashes | None = None) -> dict:
    """Record every file under `folder` (but the manifest) with its size and hash."""
    folder = Path(folder)
    files = {
        str(path.relative_to(folder)): {
            "size": path.stat().st_size,
            "sha256": hash_files([path], memo),
        }
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    manifest = {"version": VERSION, "files": files}
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def publish(final: Path, fill: Callable[[Path], None], memo: FileHashes | None = None) -> None:
    """Build a folder whole or not at all: `fill(tmp)` writes it under a temporary name beside
    `final`, its manifest is recorded, then it is renamed into place (replacing any earlier
    one). A kill or a full disk on the way leaves no `final` at all, and the temporary folder
    of a killed publish is removed by the next. One writer per `final` (the caller's lock)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in final.parent.glob(f".{final.name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        write(tmp, memo)
        open_to_team(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify(folder: Path, memo: FileHashes | None = None) -> None:
    """Raise DamagedFolder naming the first problem: no manifest, a missing, resized or
    changed file. Files added since are ignored (they are not read as the entry)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DamagedFolder(f"{MANIFEST} missing or unreadable ({err.__class__.__name__})") from err
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            raise DamagedFolder(f"{name} is missing")
        size = path.stat().st_size
        if size != record.get("size"):
            raise DamagedFolder(
                f"{name} is {size:,} bytes, the manifest says {record.get('size'):,}"
            )
        if hash_files([path], memo) != record.get("sha256"):
            raise DamagedFolder(f"{name} fails its content hash")


# --- the teacher store's entries, as `sead cache list|verify` shows them -----------


def store_entries(store, teacher: str | None = None, task: str | None = None) -> list[Path]:
    """Entry folders of a teacher store (not temp dirs nor resumable `.work` checkpoints)."""
    store = Path(store)
    if not store.is_dir():
        return []
    return [
        folder
        for folder in sorted(p for p in store.iterdir() if p.is_dir())
        if not folder.name.startswith(".")
        and not folder.name.endswith(".work")
        and (task is None or folder.name.startswith(f"{task}-"))
        and (teacher is None or store_record(folder).get("teacher") == teacher)
    ]


def store_record(folder: Path) -> dict:
    """An entry's `sead_teacher.json`, or {} when it is absent or unreadable."""
    try:
        record = json.loads((Path(folder) / STORE_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def store_row(folder: Path) -> list[str]:
    """A store entry as `sead cache list` shows it: folder, teacher, task, train examples,
    size, created."""
    record = store_record(folder)
    key, examples = record.get("key"), record.get("train_examples")
    return [
        folder.name,
        str(record.get("teacher", "?")),
        str(key.get("task", "?") if isinstance(key, dict) else "?"),
        f"{examples:,}" if isinstance(examples, int) else "?",
        human_size(folder_size(folder)),
        str(record.get("created", "incomplete")),
    ]


def verify_store_entry(folder: Path, memo: FileHashes | None = None) -> None:
    """DamagedFolder unless the entry is complete and matches its manifest."""
    if not (Path(folder) / STORE_MARKER).is_file():
        raise DamagedFolder(f"incomplete, no {STORE_MARKER}")
    verify(folder, memo)
