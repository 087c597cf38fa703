"""Small file and text helpers every floor of sead shares: atomic writes, a full disk said in
one line, the one reader of input text files, a warning for a folder others can write to,
plain-text tables."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class DiskFull(OSError):
    """A write that ran out of space; the message names the folder and what it needed."""

    def __str__(self) -> str:
        return self.strerror  # the one line, without OSError's "[Errno 28]" in front


def write_atomic(path, payload: str | bytes) -> None:
    """Write to a temp file in the same folder, then rename: never a half-written file.

    Readers (a sweep's report, a parallel job reading a memo) see the old file or the new
    one, never a mix; the folder is created when missing. A full disk raises `DiskFull`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = payload.encode() if isinstance(payload, str) else payload
    with disk_space(path.parent, path.name, len(data)):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from the rest of a team
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def open_to_team(path) -> None:
    """Make a file, or a folder and all it holds, readable by everyone before it is renamed
    into place, as `write_atomic`'s files are: mkdtemp makes folders 0700 and safetensors
    writes files 0600, and both survive a rename, hiding a shared cache's entries and stored
    teachers (or a run's student) from the rest of a team."""
    path = Path(path)
    for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
        if not item.is_symlink():
            item.chmod(0o755 if item.is_dir() else 0o644)


@contextmanager
def disk_space(folder, what: str, needed: int, setting: str | None = None):
    """Turn a write that runs out of space in `folder` into one `DiskFull` line.

    Libraries report a full disk in their own words: Python and safetensors with ENOSPC
    (`os error 28`), torch's writer with `unexpected pos` or `file write failed` and no errno.
    The first count as a full disk anywhere in the block; the torch writer's only when the
    folder has less free space left than the `needed` bytes. The caller's own cleanup (temp
    files, a checkpoint without its manifest) keeps anything half-written from being used by
    a rerun; `setting` names where the folder can be moved.
    """
    try:
        yield
    except DiskFull:
        raise
    except Exception as err:
        free = _free_bytes(folder)
        torch_writer = isinstance(err, RuntimeError) and any(
            marker in str(err) for marker in TORCH_WRITE_ERRORS
        )
        if not (_says_no_space(err) or (torch_writer and free is not None and free < needed)):
            raise
        where = f", or point {setting} at a bigger disk" if setting else ""
        raise DiskFull(
            errno.ENOSPC,
            f"No space left on device in {folder}: {what} needed about {human_size(needed)} "
            f"({human_size(free or 0)} free). Free some space{where} and run again: the work "
            "finished so far is kept, and nothing half-written is used.",
        ) from err


# How torch's zip writer (torch.save) reports a write that failed, without an errno.
TORCH_WRITE_ERRORS = ("unexpected pos", "file write failed", "PytorchStreamWriter")


def _says_no_space(err: BaseException | None) -> bool:
    while err is not None:
        if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def _free_bytes(folder) -> int | None:
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def folder_size(folder) -> int:
    """Bytes in the files under `folder`."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def human_size(n_bytes: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024)."""
    size = float(n_bytes)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def read_text(path, what: str) -> str:
    """An input text file (a data split, a transfer file, a prediction file), as UTF-8 text.

    Binary or non-UTF-8 bytes are refused naming the file, the byte offset and its line, so
    no library stops later with a raw `UnicodeDecodeError` that names no file.
    """
    raw = Path(path).read_bytes()
    if b"\0" in raw:
        at = raw.index(0)
        raise ValueError(
            f"{what} {path} is binary (a NUL byte at byte {at}, line {_line(raw, at)}): "
            "expected UTF-8 text."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{what} {path} is not UTF-8 text: byte {err.start} (line {_line(raw, err.start)}) "
            f"is 0x{raw[err.start]:02x} ({err.reason}); save the file as UTF-8."
        ) from None


def text_lines(text: str) -> list[str]:
    """The lines of a text file, split on newlines only: `str.splitlines` also splits on
    U+2028, U+0085 and other characters JSON writes raw inside a string (a trailing \r goes)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _line(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


_warned: set[str] = set()


def warn_if_shared(folder, setting: str) -> None:
    """Warn (once per process) when someone else can write to `folder`: world-writable, or
    owned by another user. Whoever can write there can plant an entry with a matching
    manifest, or a resume checkpoint, and sead would trust it."""
    try:
        st = Path(folder).stat()
    except OSError:
        return  # not there yet: sead creates it, with this user as owner
    problems = []
    if st.st_mode & stat.S_IWOTH:
        problems.append(f"world-writable (mode {stat.filemode(st.st_mode)})")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        problems.append(f"owned by another user (uid {st.st_uid})")
    said = f"{folder}: {problems}"
    if problems and said not in _warned:  # once per folder and problem, not once per stage
        _warned.add(said)
        log.warning(
            "%s=%s is %s: anyone who can write there can plant teachers, logits or resume "
            "checkpoints that sead will trust. Use a folder only you can write to "
            "(chmod o-w, or point SEAD_CACHE / %s elsewhere).",
            setting,
            folder,
            " and ".join(problems),
            setting,
        )


def format_table(rows: list[list]) -> str:
    """Rows of cells (the first row the header) as left-aligned columns, two spaces apart."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
