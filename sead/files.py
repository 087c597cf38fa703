"""Small file and text helpers every floor of sead shares: atomic writes, plain-text tables."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path, payload: str | bytes) -> None:
    """Write to a temp file in the same folder, then rename: never a half-written file.

    Readers (a sweep's report, a parallel job reading a memo) see the old file or the new
    one, never a mix; the folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = payload.encode() if isinstance(payload, str) else payload
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from the rest of a team
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def format_table(rows: list[list]) -> str:
    """Rows of cells (the first row the header) as left-aligned columns, two spaces apart."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
