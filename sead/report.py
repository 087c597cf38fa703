"""What a run leaves behind: `results.json`, the resolved config, a summary table."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from omegaconf import OmegaConf


def write_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_run(results: dict, cfg, out_dir: Path) -> None:
    write_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_atomic(out_dir / "results.json", json.dumps(results, indent=2) + "\n")


def summary_table(results: dict) -> str:
    """One row per model: each eval split's metrics, parameters, and where logits came from."""
    rows = []
    for name, teacher in results["teachers"].items():
        source = "cache" if all(teacher["cache_hit"].values()) else "computed"
        rows.append((f"teacher {name}", teacher["metrics"], teacher["params"], source))
    ensemble = results["ensemble"]
    rows.append((f"ensemble {ensemble['name']}", ensemble["metrics"], None, ""))
    student = results["student"]
    rows.append(("student", student["metrics"], student["params"], "distilled"))
    header = ["model", *[f"{split}" for split in results["eval_splits"]], "params", "logits"]
    lines = [header]
    for label, split_metrics, params, note in rows:
        cells = [
            " ".join(f"{k}={v:.4f}" for k, v in split_metrics[split].items())
            for split in results["eval_splits"]
        ]
        lines.append([label, *cells, f"{params:,}" if params else "-", note])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    )
