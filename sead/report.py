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


def save_run(results: dict, cfg, out_dir: Path, name: str = "results.json") -> None:
    write_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_atomic(out_dir / name, json.dumps(results, indent=2) + "\n")


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
        cells = [_metrics(split_metrics[split]) for split in results["eval_splits"]]
        lines.append([label, *cells, f"{params:,}" if params else "-", note])
    return _format_table(lines)


ORIGINS = {"checkpoint": "loaded checkpoint", "finetuned": "fine-tuned now", "store": "from store"}


def teacher_table(results: dict) -> str:
    """One row per teacher: where it came from, its size, scores, speed and fine-tuning."""
    splits = results["eval_splits"]
    header = ["teacher", "source", "params", *splits, "gate", "ex/s", "fine-tune", "origin"]
    lines = [header]
    for name, teacher in results["teachers"].items():
        finetune = teacher.get("finetune")
        speed = teacher.get("examples_per_second")
        lines.append(
            [
                name,
                _shorten(teacher["source"], 40),
                _millions(teacher["params"]),
                *[_metrics(teacher["metrics"][split]) for split in splits],
                _gate(teacher.get("gate")),
                f"{speed:,.1f}" if speed else "cached",
                _finetune(finetune) if finetune else "-",
                ORIGINS.get(teacher.get("origin"), teacher.get("origin", "-")),
            ]
        )
    return _format_table(lines)


def _metrics(split_metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in split_metrics.items())


def _gate(gate: dict | None) -> str:
    if not gate:
        return "-"
    passed = all(split["passed"] for split in gate["splits"].values())
    return ("pass" if passed else "FAIL") + ("" if gate["enabled"] else " (off)")


def _finetune(record: dict) -> str:
    args = record["finetune_args"]
    return (
        f"{record['train_seconds']:.0f}s, {record['train_examples']:,} ex x {args['epochs']:g} ep, "
        f"seed {args['seed']}"
    )


def _millions(params: int | None) -> str:
    return f"{params / 1e6:.1f}M" if params else "-"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _format_table(lines: list[list]) -> str:
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
