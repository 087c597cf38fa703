"""How long do sead's commands take to answer? Wall time of each, against `import hydra`.

Each command runs as a fresh process (what a user waits for), `--repeats` times after one
untimed warm-up (so every run finds the files in the page cache), interleaved so that a
burst of load spreads over all of them; the median and the fastest run are kept.

  python -c 'import hydra'              the floor: Hydra alone
  sead --help / --cfg job / --info      the Hydra app, without running a job
  sead cache list                       the cache tool
  python -m sead.run --help             the same app by its module

`sead` is timed as `python -m sead`, which runs the console script's function
(`sead.cli:main`) with this checkout first on PYTHONPATH. `--baseline DIR` times the same
`python -m` commands in another checkout (e.g. the commit before the light entry point).
Run it under the CPU lock so that no test run shares the cores:

  flock /tmp/sead-cpu.lock python experiments/startup/run.py --baseline /work/main

Prints a table and writes results.json beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# (name, arguments after the interpreter); "sead" commands run as `python -m sead`.
COMMANDS = [
    ("import hydra", ["-c", "import hydra"]),
    ("import sead.run", ["-c", "import sead.run"]),
    ("sead --help", ["-m", "sead", "--help"]),
    ("sead --cfg job task=cb", ["-m", "sead", "--cfg", "job", "task=cb"]),
    ("sead --info", ["-m", "sead", "--info"]),
    ("sead cache list", ["-m", "sead", "cache", "list"]),
    ("python -m sead.run --help", ["-m", "sead.run", "--help"]),
]
# What the same commands were before `sead` existed (a checkout given with --baseline).
BASELINE = [
    ("import sead.run", ["-c", "import sead.run"]),
    ("python -m sead.run --help", ["-m", "sead.run", "--help"]),
    ("python -m sead.run --cfg job task=cb", ["-m", "sead.run", "--cfg", "job", "task=cb"]),
    ("python -m sead.run --info", ["-m", "sead.run", "--info"]),
    ("python -m sead.cache list", ["-m", "sead.cache", "list"]),
]


def timed(args: list[str], checkout: Path, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    env["SEAD_CACHE"] = str(cwd / "cache")  # an empty cache: `list` reads nothing
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr.decode()[-2000:]}")
    return elapsed


def measure(commands, checkout: Path, repeats: int, cwd: Path) -> dict[str, dict]:
    for _, args in commands:  # warm-up: files in the page cache, .pyc written
        timed(args, checkout, cwd)
    runs: dict[str, list[float]] = {name: [] for name, _ in commands}
    for _ in range(repeats):
        for name, args in commands:
            runs[name].append(timed(args, checkout, cwd))
    return {
        name: {
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "runs_s": [round(t, 3) for t in times],
        }
        for name, times in runs.items()
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another checkout to time the same way")
    parser.add_argument("--baseline-repeats", type=int, default=3, help="(its commands are slow)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:  # outside the repository, as a user runs it
        cwd = Path(tmp)
        results = {"sead": measure(COMMANDS, REPO, args.repeats, cwd)}
        if args.baseline:
            baseline = args.baseline.resolve()
            results["baseline"] = measure(BASELINE, baseline, args.baseline_repeats, cwd)
    floor = results["sead"]["import hydra"]["median_s"]
    print(f"{'command':40} {'median s':>9} {'min s':>7} {'x hydra':>8}")
    for part, rows in results.items():
        print(f"-- {part}" + (f" ({args.baseline})" if part == "baseline" else ""))
        for name, row in rows.items():
            ratio = row["median_s"] / floor
            print(f"{name:40} {row['median_s']:9.2f} {row['min_s']:7.2f} {ratio:8.1f}")
    record = {
        "commit": _commit(),
        "baseline_commit": _commit(args.baseline) if args.baseline else None,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "repeats": args.repeats,
        "baseline_repeats": args.baseline_repeats if args.baseline else None,
        **results,
    }
    (HERE / "results.json").write_text(json.dumps(record, indent=2) + "\n")


def _commit(checkout: Path = REPO) -> str | None:
    proc = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True
    )
    return proc.stdout.decode().strip() or None


if __name__ == "__main__":
    main()
