"""What every study in experiments/ shares, so that a study's script keeps only its design
(tasks, conditions, settings, table):

* `compose(overrides)`: sead's own config, as `python -m sead.run <overrides>` composes it;
* `Units(folder)`: resumable units of work, one JSON file each, saved atomically as each one
  finishes; a rerun skips the units already there, so a killed study resumes;
* `machine()` and `code_commit()`: the machine and code a study ran on, for its record;
* `mean_std(values)`: a metric over seeds, through `sead.report` (the sweep report's own),
  and `seed_cells` to show it in a table;
* `report_only(parser)` and `kept(results_file, keys)`: `--report-only` re-renders a study's
  tables from its saved units, keeping the record of the run (settings, machine, commit)
  that its results file already holds;
* `cpu_lock(path)`: the team's CPU lock (`flock /tmp/sead-cpu.lock`), for a study that takes
  it one timed unit at a time, so that test suites run between its units, never during one.

A study script starts with `sys.path.insert(0, ROOT)` (this checkout's sead, whatever is
installed) and then `from experiments import harness`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sead.files import write_atomic
from sead.report import mean_std

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEAD_SHARED", ROOT.parent / "shared")) / "data"
CPU_LOCK = "/tmp/sead-cpu.lock"  # the one `flock /tmp/sead-cpu.lock <command>` takes

__all__ = [
    "CPU_LOCK",
    "ROOT",
    "SHARED_DATA",
    "Units",
    "code_commit",
    "compose",
    "cpu_lock",
    "kept",
    "machine",
    "mean_std",
    "plain",
    "report_only",
    "seed_cells",
    "markdown_table",
    "write_json",
]


def compose(overrides: list[str]):
    """The config `python -m sead.run <overrides>` would get (sead's conf/, Hydra's compose)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sead.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def plain(value):
    """A JSON-safe copy (numpy scalars and arrays as Python numbers and lists)."""
    return json.loads(
        json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    )


def write_json(path: Path, value) -> None:
    """`value` as indented JSON at `path`, written atomically (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(plain(value), indent=2) + "\n")


class Units:
    """A study's units of work under `folder`, one `<name>.json` each, saved as each finishes.

    `get(name, compute)` returns the saved unit, or computes, saves and returns it: a rerun
    (or a study killed half-way and started again) redoes only what is missing.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> dict:
        return json.loads(self.path(name).read_text())

    def save(self, name: str, record: dict) -> dict:
        """Save a finished unit, stamped with the CPU it ran on: sittings do not always get
        the same machine, and another CPU trains the same seed to other weights."""
        record = {**record, "cpu": record.get("cpu") or cpu()}
        write_json(self.path(name), record)
        return record

    def get(self, name: str, compute: Callable[[], dict]) -> dict:
        return self.load(name) if self.done(name) else self.save(name, compute())

    def all(self, pattern: str = "*.json") -> list[dict]:
        """Every saved unit whose file name matches `pattern`, in file-name order."""
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob(pattern))]


def code_commit(root: Path = ROOT) -> str:
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


@contextmanager
def cpu_lock(path: str | None = CPU_LOCK) -> Iterator[None]:
    """Hold `path` (`flock /tmp/sead-cpu.lock`) for one unit, so that test suites run between
    units but never during one. A blocking flock(2), as flock(1) takes it: waiters queue in
    the kernel alike (a polling lock would lose every race). `path` '' or None: no lock (the
    whole command already runs under `flock`)."""
    if not path:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def machine(**extra) -> dict:
    """The machine and library versions a study ran on (plus the study's own `extra`)."""
    import torch
    import transformers

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **cpu(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        **extra,
    }


def cpu_label(cpu: dict | None) -> str:
    """One line for a `cpu()` record, as reports print it ('not recorded' for None)."""
    if not cpu:
        return "not recorded"
    dot = ", ".join(cpu["int8_dot_product"]) or "none"
    return f"{cpu['cpu']} ({cpu['cpu_capability']}; int8 dot product: {dot})"


def cpu() -> dict:
    """The CPU's model and the instruction sets that decide int8 and fp32 kernel speed (what
    `/proc/cpuinfo` says; torch's own pick of kernels as `cpu_capability`)."""
    import torch

    info = Path("/proc/cpuinfo")
    first = info.read_text().split("\n\n")[0] if info.exists() else ""  # processor 0
    field = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    field = {key.strip(): value.strip() for key, value in field.items()}
    flags = set(field.get("flags", "").split())
    return {
        "cpu": field.get("model name") or platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "int8_dot_product": sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}),
    }


def seed_cells(mean: float, std: float, values) -> list[str]:
    """Two cells of a study's table: `mean ± std`, then the value of each seed."""
    return [f"{mean:.4f} ± {std:.4f}", ", ".join(f"{value:.4f}" for value in values)]


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table (a header, its rule, a line per row), ending in a newline."""
    lines = [_cells(header), "|" + "---|" * len(header), *map(_cells, rows)]
    return "\n".join(lines) + "\n"


def _cells(row) -> str:
    return "| " + " | ".join(map(str, row)) + " |"


def report_only(parser: argparse.ArgumentParser) -> None:
    """The `--report-only` flag every study takes."""
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="re-render the tables from the saved units (no computation)",
    )


def kept(results_file: Path, keys: list[str]) -> dict:
    """The record of the run (`keys` of the study's results file) that `--report-only` keeps
    while it re-renders the rest from the units; empty where there is no such file yet."""
    if not Path(results_file).is_file():
        return {}
    previous = json.loads(Path(results_file).read_text())
    return {key: previous[key] for key in keys if key in previous}
