"""The chunks of a cache entry being filled: resumable, and shared by several processes.

A teacher's pass over a split is cut into chunks with fixed boundaries (the *plan*, recorded
before the first chunk). Each chunk is computed under its *claim*, a file lock that the OS
releases when its process dies, and saved atomically with a checksum. So:

- a killed fill resumes from the chunks already saved and redoes only the others;
- several processes fill one entry at once, each taking its `Shard` of the chunks (the ranks
  of a `torchrun` job, or `cache.shard=i/n` jobs on a cluster), and no chunk is computed
  twice: a chunk claimed by someone else is waited for, then read;
- whoever finds every chunk present assembles the entry (`SoftLabelCache.get_or_compute`).

Layout, beside the entries under the cache root:

    .partial-<fingerprint>/plan.json                 the plan, and which teacher/task/split
    .partial-<fingerprint>/chunk-00012.safetensors   rows + logits + sha256 of both (with
                                                     representations, the vectors are the
                                                     columns after the logits)
    .locks/.partial-<fingerprint>.lock               held while the plan is checked
    .locks/.partial-<fingerprint>.chunk-00012.lock   chunk 12's claim
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from safetensors import safe_open
from safetensors.numpy import save_file

from sead.files import disk_space, open_to_team, write_atomic

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
CACHE_SETTING = "SEAD_CACHE (or paths.logits_dir)"  # where a full disk's message points
LOCK_DIR = ".locks"
CHUNK_GLOB = "chunk-*.safetensors"


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class Shard:
    """Chunk set `index` of `count`: the chunks whose number is `index` modulo `count`.

    Round robin, because chunks run longest examples first: every shard gets a like mix.
    `sync` is called once a split's shard is filled (a barrier across the ranks of one run).
    `team` (ranks only) is the chunk set the ranks of one run share: a rank done with its own
    chunks takes the team's chunks no one has started, from the end, so a rank with longer
    sentences or a slower device does not hold the others at the barrier. A job
    (`cache.shard=i/n`) has no team: it computes its chunk set and no more, so its time
    limit can be sized for it.
    """

    index: int
    count: int
    sync: Callable[[], None] | None = None
    team: tuple[int, int] | None = None  # (index, count) of the chunk set the ranks share

    @classmethod
    def parse(cls, value) -> Shard | None:
        """`cache.shard`: null, or 'i/n' with 0 <= i < n (a job's chunk set)."""
        if value is None:
            return None
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
        if not match or not int(match[1]) < int(match[2]):
            raise ValueError(
                f"cache.shard={value!r}: expected 'i/n' with 0 <= i < n (chunk set i of n, "
                "e.g. cache.shard=0/4 ... cache.shard=3/4 for four jobs), or null."
            )
        return cls(int(match[1]), int(match[2]))

    def among_ranks(self, rank: int, world_size: int, sync: Callable[[], None]) -> Shard:
        """This job's chunk set, split again among the ranks of a multi-process run."""
        team = (self.index, self.count)
        return Shard(self.index + rank * self.count, self.count * world_size, sync, team)

    def owns(self, chunk: int) -> bool:
        return chunk % self.count == self.index

    def may_take(self, chunk: int) -> bool:
        """A chunk of the team's set that another rank owns (taken once it is idle)."""
        return (
            self.team is not None and chunk % self.team[1] == self.team[0] and not self.owns(chunk)
        )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class ChunkConflict(RuntimeError):
    """Another process is filling the same entry with another plan."""


class Assembled(Exception):
    """The entry was assembled (and its chunks removed) by another process meanwhile."""


class PartialEntry:
    """The chunks of one entry, as `sead.inference.predict_logits` fills them.

    The computation states its `plan` (example count, batch size, chunk boundaries, example
    order) before it starts; chunks saved under another plan are dropped, so a resumed or
    shared fill batches exactly as one uninterrupted process, and gets bitwise-identical logits
    on the same hardware and thread count.
    """

    def __init__(
        self,
        folder: Path,
        chunk_size: int,
        *,
        shard: Shard | None = None,
        about: dict | None = None,
        stored: Path | None = None,
    ):
        self.folder = Path(folder)
        self.chunk_size = chunk_size
        self.shard = shard  # None: every chunk
        self.about = about or {}  # teacher, task, split: for `sead cache list`
        # A file that exists once the entry is stored: a shard that finds it stops (`Assembled`).
        # One already there (an entry being refilled because it failed verification) is not.
        self.stored = stored
        self._stored_before = _identity(stored)
        self.lock_dir = self.folder.parent / LOCK_DIR
        self.reused = 0  # chunks read back (saved earlier, or by another process)
        self.saved = 0  # chunks computed and saved by this object
        self.computed: list[int] = []  # which ones

    # --- the plan ------------------------------------------------------------------------

    def start(self, plan: dict) -> None:
        """Record the plan, or resume under the same one; drop chunks saved under another."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_dir / f"{self.folder.name}.lock")):
            self._check_not_assembled()
            saved = read_plan(self.folder)
            if saved is not None and saved.get("plan") == plan:
                done = len(list(self.folder.glob(CHUNK_GLOB)))
                if done:
                    log.info("Resuming from %d chunk(s) in %s", done, self.folder)
                return
            if self.folder.is_dir():
                busy = self.claimed_elsewhere()
                if busy:
                    raise ChunkConflict(
                        f"{self.folder} is being filled by another process (chunk(s) {busy} "
                        "claimed) with another plan. Every process filling one entry must use "
                        "the same teachers.<name>.batch_size and cache.chunk_size."
                    )
                log.info("Dropping partial results in %s: made with another plan", self.folder)
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            write_atomic(self.folder / PLAN_FILE, json.dumps({"plan": plan, **self.about}))

    def assembled(self) -> bool:
        """Whether the entry was stored since this object was made (a damaged entry that was
        already there does not count)."""
        return _identity(self.stored) not in (None, self._stored_before)

    def _check_not_assembled(self) -> None:
        if self.assembled():
            raise Assembled(self.stored.parent)

    def claimed_elsewhere(self) -> list[int]:
        """Chunks whose claim another process holds now (being computed)."""
        busy = []
        for path in self.lock_dir.glob(f"{self.folder.name}.chunk-*.lock"):
            lock = FileLock(str(path))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                busy.append(int(path.name.rsplit("-", 1)[1].split(".")[0]))
                continue
            lock.release()
        return sorted(busy)

    # --- filling -------------------------------------------------------------------------

    def chunks_to_fill(self, n_chunks: int) -> list[int]:
        """The chunks this process provides: its shard's, or every one."""
        return [i for i in range(n_chunks) if self.shard is None or self.shard.owns(i)]

    def fill(
        self, chunk_rows: list[np.ndarray], compute: Callable[[int], np.ndarray]
    ) -> Iterator[tuple[int, np.ndarray, bool]]:
        """(chunk, logits, computed now) for each of `chunks_to_fill`, then for each chunk
        taken from the team (`Shard.team`, ranks only).

        A saved chunk is read back. A missing one is claimed, computed by `compute(chunk)`
        and saved; one that another process has claimed is left for the end, then waited for
        and read (or computed, if that process died without saving it).
        """
        later = []
        for index in self.chunks_to_fill(len(chunk_rows)):
            logits = self.load(index, chunk_rows[index])
            if logits is not None:
                yield index, logits, False
                continue
            done = self._unless_claimed(index, chunk_rows[index], compute)
            if done is None:
                later.append(index)
                continue
            yield index, *done
        for index in reversed(range(len(chunk_rows))):  # the team's unstarted chunks, last first
            if not self.shard or not self.shard.may_take(index) or self._chunk_path(index).exists():
                continue
            done = self._unless_claimed(index, chunk_rows[index], compute)
            if done is not None:
                yield index, *done
        if later:
            log.info("Waiting for %d chunk(s) that another process is computing", len(later))
        for index in later:
            with self.claim(index, wait=True):
                done = self._load_or_compute(index, chunk_rows[index], compute)
            yield index, *done

    def _unless_claimed(self, index: int, rows: np.ndarray, compute):
        """`_load_or_compute` under the chunk's claim; None when another process holds it."""
        with self.claim(index, wait=False) as claimed:
            return self._load_or_compute(index, rows, compute) if claimed else None

    def _load_or_compute(self, index: int, rows: np.ndarray, compute) -> tuple[np.ndarray, bool]:
        logits = self.load(index, rows)  # saved by another process before we claimed it
        if logits is not None:
            return logits, False
        self._check_not_assembled()  # its chunks are gone because the entry is done
        logits = compute(index)
        self.save(index, rows, logits)
        self.computed.append(index)
        return logits, True

    @contextmanager
    def claim(self, index: int, wait: bool) -> Iterator[bool]:
        """Hold chunk `index`'s claim (False: another process holds it and `wait` is off)."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_dir / f"{self.folder.name}.chunk-{index:05d}.lock"))
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def load(self, index: int, rows: np.ndarray) -> np.ndarray | None:
        """Chunk `index`'s logits, or None if absent or not exactly this chunk's rows."""
        path = self._chunk_path(index)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "np") as f:
                checksum = f.metadata().get("sha256")
                saved_rows, logits = f.get_tensor("rows"), f.get_tensor("logits")
        except Exception as err:  # safetensors raises several types on bad bytes
            log.warning("Chunk %s is unreadable (%s); recomputing it.", path, err)
            return None
        if checksum != sha256(saved_rows.tobytes() + logits.tobytes()):
            log.warning("Chunk %s fails its checksum; recomputing it.", path)
            return None
        if not np.array_equal(saved_rows, rows):
            log.warning("Chunk %s holds other examples; recomputing it.", path)
            return None
        self.reused += 1
        return logits

    def save(self, index: int, rows: np.ndarray, logits: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        checksum = sha256(rows.tobytes() + logits.tobytes())
        path = self._chunk_path(index)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        needed = rows.nbytes + logits.nbytes
        try:
            with disk_space(self.folder, "a chunk of teacher logits", needed, CACHE_SETTING):
                save_file({"rows": rows, "logits": logits}, str(tmp), metadata={"sha256": checksum})
            open_to_team(tmp)  # other users' shard jobs read it
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write leaves no partial file behind
        self.saved += 1

    def _chunk_path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:05d}.safetensors"

    def remove(self) -> None:
        """The chunks and their claims, once the entry is stored (under the entry's lock)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        for path in self.lock_dir.glob(f"{self.folder.name}.*"):
            with suppress(OSError):  # a reader without write access leaves them to the owner
                path.unlink(missing_ok=True)


def _identity(path: Path | None) -> tuple[int, int] | None:
    """(inode, mtime) of a file, None when absent: tells a newly stored entry from an old one."""
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        return None
    return None if stat is None else (stat.st_ino, stat.st_mtime_ns)


def read_plan(folder: Path) -> dict | None:
    """A partial entry's plan.json (plan, teacher, task, split), or None if unreadable."""
    try:
        saved = json.loads((Path(folder) / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def progress(folder: Path) -> tuple[int, int | None]:
    """(chunks saved, chunks in the plan) of a partial entry; None when it has no plan."""
    plan = (read_plan(folder) or {}).get("plan") or {}
    return len(list(Path(folder).glob(CHUNK_GLOB))), plan.get("n_chunks")
