"""The code a study's jobs ran on, recorded beside their results (shared by the studies)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_commit(root: Path) -> str:
    """HEAD of the checkout at `root`, marked when `sead/` or `conf/` have uncommitted edits."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "sead", "conf"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:  # no git here
        return "unknown"
    return head.stdout.strip() + (" (uncommitted changes)" if dirty else "")
