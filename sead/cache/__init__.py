"""The soft-label cache: each teacher's logits per split, on disk, by fingerprint.

Teachers are the expensive part of multi-teacher distillation, and their outputs depend only
on the model, its tokenizer, the truncation settings, the task and the data. Everything else
(student, ensembler, temperature, seed) reads the same entry, so a teacher never runs twice on
the same data: an entry that holds vectors too serves a run that asks for logits alone.

Layout under the cache root (`paths.logits_dir`):

    <fingerprint>/logits.safetensors   logits [n_examples, n_labels] (+ idx when not a range;
                                       + representations [n_examples, hidden] when asked for)
    <fingerprint>/manifest.json        key, shape, dtype, idx order, checksum, created
    .partial-<fingerprint>/            chunks of an entry being computed (`sead.chunks`: resume
                                       after a kill; several processes or jobs fill one entry)
    .locks/<fingerprint>.lock          one process assembles or computes, the others wait and read
    file_hashes.json                   content hashes of checkpoint files, by (path, size, mtime)

An entry is built under a temporary name and renamed into place (atomic on POSIX), and verified
against its manifest on every load: a missing, truncated, edited or mismatched entry is
reported in one line and recomputed, never used.

`sead cache list|show|rm|verify` (`sead.cache.tool`) inspects and prunes the cache; `export`
writes a teacher's cached logits as prediction files (`sead.prediction_files`), which a
predictions teacher reads on another machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
from filelock import FileLock, Timeout
from safetensors.numpy import save_file

from sead import chunks
from sead import representations as reps
from sead.chunks import CACHE_SETTING, LOCK_DIR, PartialEntry, Shard
from sead.config import build, setting
from sead.entry import (
    LOGITS_FILE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    CorruptEntry,
    check_computed,
    is_range,
    read_tensors,
)
from sead.files import disk_space, open_to_team, write_atomic
from sead.manifest import FileHashes
from sead.representations import Outputs, RepresentationSpec

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
FILE_HASHES = "file_hashes.json"
FORMAT_VERSION = 1  # part of every fingerprint: bump only when keys change meaning


def fingerprint(key: dict) -> str:
    """Stable hash of everything that determines a teacher's logits."""
    blob = json.dumps({"format": FORMAT_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class CacheEntry:
    fingerprint: str
    logits: np.ndarray | None  # [n_examples, n_labels] float32, rows in `idx` order
    idx: np.ndarray  # [n_examples] the dataset's example ids
    hit: bool  # True when read from disk, False when computed now
    # (chunks saved, chunks in all) of an entry other shards are still filling: no logits yet
    pending: tuple[int, int] | None = None
    # [n_examples, hidden] float32 when asked for (`sead.representations`); None otherwise
    representations: np.ndarray | None = None


# logits, or `Outputs` (logits and vectors) when the entry's key asks for representations
Compute = Callable[[PartialEntry], np.ndarray | Outputs]


@dataclass(frozen=True)
class StorageSettings:
    """How a `SoftLabelCache` computes and stores entries: `cfg.cache` but the representations,
    which a caller asks for entry by entry."""

    dtype: Literal["float32", "float16"]  # storage (`reps.STORAGE_DTYPES`), part of every key
    chunk_size: int = setting(low=1)  # examples per resumable chunk
    autocast: Literal["bf16", "fp16"] | None  # on a GPU; null: float32
    shard: str | None  # 'i/n': fill only chunk set i of n of each missing entry

    def __post_init__(self):
        Shard.parse(self.shard)


@dataclass(frozen=True)
class CacheSettings(StorageSettings):
    """`cfg.cache` (conf/cache/default.yaml): how teacher logits are computed and stored, and
    the representations a stage that learns from them asks `cached_logits` for."""

    representations: RepresentationSpec  # cache.representations.{layer,pooling,dtype}


def not_writable(root: Path, err: OSError) -> PermissionError:
    """A write the cache cannot do, naming the settings that move it."""
    return PermissionError(
        f"Cannot write to the teacher-logit cache {root} ({err.strerror or err}): an entry "
        "is missing or damaged and must be computed. Point SEAD_CACHE (or paths.cache_dir, "
        "or paths.logits_dir) at a writable folder."
    )


class SoftLabelCache:
    """Teacher logits on disk, keyed by `fingerprint(key)`.

    `dtype` is how logits are stored (float16 halves the size, at ~1e-3
    relative rounding; it is part of each entry's key). `chunk_size` and
    `autocast` are read by whoever fills the cache (`sead.teachers.logits`). `shard` ('i/n')
    is the chunk set this process fills of each entry that `fill_shard` is asked for; it is
    not part of any key. Build it from the run's settings with `sead.pipeline.soft_label_cache`,
    so that every stage keys alike; the keyword defaults serve library callers that only read.

    Every method takes `representations=None` (logits only, keyed as always) or a
    `RepresentationSpec` (`settings.cache.representations`): the entry then holds one vector
    per example too, under a key of its own. The cache holds no spec: the caller asks.
    """

    def __init__(
        self, root, dtype: str = "float32", chunk_size: int = 4096, autocast=None, shard=None
    ):
        given = {"dtype": dtype, "chunk_size": chunk_size, "autocast": autocast, "shard": shard}
        build(StorageSettings, given, "cache")  # checked, each setting named
        self.shard = Shard.parse(shard)
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise not_writable(self.root, err) from err
        self.dtype = dtype
        self.chunk_size = int(chunk_size)
        self.autocast = autocast
        self.file_hashes = FileHashes(self.root / FILE_HASHES)
        # Counted per run (one cache object): an entry computed in this run and read back
        # later in it (a fine-tuned teacher's eval logits) counts once, as computed.
        self.hits = 0
        self.misses = 0
        self.computed: set[str] = set()  # fingerprints this object computed
        # entries stored with these vectors serve logits-only requests too (one pass gave both)
        self.serving: RepresentationSpec | None = None  # set by pipeline.soft_label_cache

    @classmethod
    def from_settings(cls, root, settings: StorageSettings) -> SoftLabelCache:
        """The cache at `root` with a run's `cache.*` settings (a `CacheSettings` too: its
        representations are for the caller to ask for)."""
        return cls(root, **{f.name: getattr(settings, f.name) for f in fields(StorageSettings)})

    def path(self, fp: str) -> Path:
        return self.root / fp

    def partial_path(self, fp: str) -> Path:
        return self.root / f"{PARTIAL_PREFIX}{fp}"

    def full_key(self, key: dict, representations: RepresentationSpec | None = None) -> dict:
        """The key as stored: the caller's, plus how this cache stores logits (and vectors,
        when asked for: a key without them is exactly what it always was)."""
        vectors = {} if representations is None else {"representations": representations.key()}
        return {**key, "storage_dtype": self.dtype, **vectors}

    def fingerprint(self, key: dict, representations: RepresentationSpec | None = None) -> str:
        return fingerprint(self.full_key(key, representations))

    def get_or_compute(
        self,
        key: dict,
        expected_idx,
        compute: Compute,
        about: dict | None = None,
        representations: RepresentationSpec | None = None,
    ) -> CacheEntry:
        """Read the entry for `key`, or compute, store and return it.

        `expected_idx` is the example order the caller is about to use; an entry
        built for another order is treated as stale. `compute(partial)` returns
        logits in that order, saving and reusing chunks through `partial`.
        `about` is shown by `list` (e.g. the teacher's name) but is not part of
        the key: two names for one checkpoint share an entry.
        With `representations`, the entry holds vectors too (its own key): `compute` returns
        `Outputs(logits, vectors)`, and the entry comes back with `.representations`.
        """
        asked = key
        key = self.full_key(key, representations)
        fp = fingerprint(key)
        expected_idx = np.asarray(expected_idx, dtype=np.int64)
        try:  # a complete entry needs no lock, so a shared read-only cache is usable
            return self._hit(fp, key, expected_idx, about)
        except (FileNotFoundError, CorruptEntry):
            pass  # absent or unusable: decided, and reported, under the lock
        served = self._served(asked, representations, expected_idx, about)
        if served is not None:
            return served
        with self.lock(fp):
            try:
                return self._hit(fp, key, expected_idx, about)
            except FileNotFoundError:
                pass
            except CorruptEntry as err:
                reason = " ".join(str(err).split())  # one line, whatever the cause says
                log.warning("Cache entry %s is unusable (%s); recomputing it.", fp, reason)
            log.info("Cache miss %s (%s): computing", fp, _describe(key, about))
            self._remove_stale_temps(fp)
            partial = self._partial(fp, key, about)
            started = time.perf_counter()
            outputs = Outputs.of(compute(partial), representations)
            seconds = time.perf_counter() - started
            try:
                check_computed(outputs, len(expected_idx), key, _describe(key, about))
            except ValueError:
                partial.remove()  # its chunks hold the same values: a rerun computes them anew
                raise
            self._store(fp, key, about or {}, outputs, expected_idx, seconds)
            partial.remove()
            self.misses += 1
            self.computed.add(fp)
            logits, vectors = self._load(fp, key, expected_idx)  # what every later run reads
            return CacheEntry(fp, logits, expected_idx, hit=False, representations=vectors)

    def fill_shard(
        self,
        key: dict,
        expected_idx,
        compute: Compute,
        about: dict | None,
        shard: Shard,
        representations: RepresentationSpec | None = None,
    ) -> CacheEntry:
        """Compute `shard`'s chunks of the entry for `key` while other processes compute the
        rest, then assemble the entry if every chunk is there (as `get_or_compute` does).

        No entry lock is held while computing: chunk claims keep processes apart. Returns the
        entry, or one with `pending` = (chunks saved, chunks in all) and no logits while other
        shards are missing. `shard.sync` (ranks: a barrier) is called before that check.
        `representations`: as in `get_or_compute` (chunks hold the vectors too).
        """
        full = self.full_key(key, representations)
        fp = fingerprint(full)
        expected_idx = np.asarray(expected_idx, dtype=np.int64)
        served = self._served(key, representations, expected_idx, about)
        if served is not None:  # stored whole: every rank reads it, none computes
            return served
        partial = self._partial(fp, full, about, shard)  # notes the entry as it is now
        try:
            self._load(fp, full, expected_idx)
            stored = True
        except (FileNotFoundError, CorruptEntry):  # absent or unusable: fill this shard
            stored = False
            log.info("Cache fill %s (%s), chunk set %s", fp, _describe(key, about), shard)
            # Assembled: by a process that found every chunk while this one waited for one
            with suppress(chunks.Assembled):
                compute(partial)
        if shard.sync is not None:
            shard.sync()
        # stored: sound when this began, or written since (a damaged one left from before
        # still waits for its chunks, so a shard never computes the others')
        pending = None if stored or partial.assembled() else self._pending(fp)
        if pending is not None:
            what = f"{fp} ({_describe(key, about)}): {pending[0]} of {pending[1]} chunks saved"
            log.info("Cache entry %s; the process that finds all of them assembles it.", what)
            return CacheEntry(fp, None, expected_idx, hit=False, pending=pending)
        return self.get_or_compute(key, expected_idx, compute, about, representations)

    def _pending(self, fp: str) -> tuple[int, int] | None:
        """(chunks saved, chunks in all) of an entry still being filled; None when every
        chunk is there to assemble it."""
        done, total = chunks.progress(self.partial_path(fp))
        return None if total is not None and done >= total else (done, total or 0)

    def _served(self, key: dict, representations, expected_idx, about) -> CacheEntry | None:
        """A logits-only request read from the sound entry holding `serving` vectors too."""
        if representations is not None or self.serving is None:
            return None
        full = self.full_key(key, self.serving)
        try:
            entry = self._hit(fingerprint(full), full, expected_idx, about)
        except (FileNotFoundError, CorruptEntry):
            return None
        return replace(entry, representations=None)

    def _partial(self, fp: str, key: dict, about: dict | None, shard=None) -> PartialEntry:
        described = {k: key.get(k) for k in ("task", "split")}
        described["teacher"] = (about or {}).get("teacher", key.get("model"))
        # a shard stops once another process stores the entry (and removes these chunks)
        stored = self.path(fp) / MANIFEST_FILE if shard is not None else None
        return PartialEntry(
            self.partial_path(fp), self.chunk_size, shard=shard, about=described, stored=stored
        )

    def _hit(self, fp: str, key: dict, expected_idx: np.ndarray, about) -> CacheEntry:
        logits, vectors = self._load(fp, key, expected_idx)
        PartialEntry(self.partial_path(fp), self.chunk_size).remove()  # killed after writing
        hit = fp not in self.computed  # computed earlier in this run: not a hit
        if hit:
            self.hits += 1
            log.info("Cache hit %s (%s)", fp, _describe(key, about))
        return CacheEntry(fp, logits, expected_idx, hit=hit, representations=vectors)

    @contextmanager
    def lock(self, fp: str) -> Iterator[None]:
        """Held while an entry is computed or removed; others wait, then read."""
        lock = FileLock(str(self.root / LOCK_DIR / f"{fp}.lock"))
        try:
            (self.root / LOCK_DIR).mkdir(exist_ok=True)
            lock.acquire(timeout=0)
        except Timeout:  # an OSError too, so caught first
            log.info("Cache entry %s is being computed by another process; waiting.", fp)
            lock.acquire()
        except OSError as err:
            raise not_writable(self.root, err) from err
        try:
            yield
        finally:
            lock.release()

    def _load(self, fp: str, key: dict, expected_idx: np.ndarray):
        """(logits, vectors or None) as float32, from an entry made for `key` and this order."""
        manifest, tensors, idx = read_tensors(self.path(fp))
        if manifest.get("key") != json.loads(json.dumps(key, default=str)):
            raise CorruptEntry("manifest key differs from the requested one")
        if len(idx) != len(expected_idx) or not np.array_equal(idx, expected_idx):
            raise CorruptEntry(
                f"its {len(idx)} examples are not the {len(expected_idx)} being used, in order"
            )
        vectors = tensors.get("representations")
        if (vectors is None) != (reps.spec_of(key) is None):  # the key says which it holds
            raise CorruptEntry("its representations are not the ones its key asks for")
        return tensors["logits"].astype(np.float32), reps.float32(vectors)

    def _store(self, fp, key, about, outputs: Outputs, idx, seconds) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{fp}.", dir=self.root))
        try:
            stored = outputs.logits.astype(reps.STORAGE_DTYPES[self.dtype])
            tensors = {"logits": stored}
            spec = reps.spec_of(key)
            if spec is not None:
                vectors = outputs.representations.astype(reps.STORAGE_DTYPES[spec.dtype])
                tensors["representations"] = vectors
            if is_range(idx):
                start = int(idx[0]) if len(idx) else 0
                idx_record = {"range": [start, start + len(idx)]}
            else:
                idx_dtype = np.int32 if idx.min() >= -(2**31) and idx.max() < 2**31 else np.int64
                tensors["idx"] = idx.astype(idx_dtype)
                idx_record = {"tensor": "idx"}
            needed = 2 * sum(t.nbytes for t in tensors.values())
            with disk_space(self.root, "teacher logits", needed, CACHE_SETTING):
                save_file(tensors, str(tmp / LOGITS_FILE))
            payload = (tmp / LOGITS_FILE).read_bytes()
            manifest = {
                "manifest_version": MANIFEST_VERSION,
                "fingerprint": fp,
                "key": key,
                "about": about,
                "shape": list(stored.shape),
                "dtype": self.dtype,
                "n_examples": int(stored.shape[0]),
                "idx": {**idx_record, "sha256": chunks.sha256(idx.tobytes())},
                "sha256": chunks.sha256(payload),
                "size_bytes": len(payload),
                "compute_seconds": round(seconds, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            if spec is not None:  # an entry with logits only has the manifest it always had
                manifest["representations"] = reps.record(vectors, spec)
            write_atomic(tmp / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str))
            final = self.path(fp)
            if final.exists():
                shutil.rmtree(final)  # a stale entry that failed verification
            open_to_team(tmp)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _remove_stale_temps(self, fp: str) -> None:
        """Temp dirs of a run killed while writing this entry (we hold its lock)."""
        for tmp in self.root.glob(f".{fp}.*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def remove(self, fp: str) -> None:
        """An entry with its partial chunks and temp dirs, once no one is writing it."""
        with self.lock(fp):
            shutil.rmtree(self.path(fp), ignore_errors=True)
            PartialEntry(self.partial_path(fp), self.chunk_size).remove()
            self._remove_stale_temps(fp)


def _describe(key: dict, about: dict | None = None) -> str:
    parts = [str((about or {}).get("teacher", key.get("model")))]
    parts += [str(key[k]) for k in ("task", "split") if k in key]
    return ", ".join(parts)
