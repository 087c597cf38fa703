"""Where a student stands against its teachers, by length: accuracy on the task's held-out
slice (carved from train, `work/data/<task>/heldout.jsonl`), its rows binned by words, for the
fine-tuned teachers and every saved student of the study. It reads the held-out slice only,
never a reported split, so a design may lean on it. Prints a table; saves
`heldout_by_length.json` beside this file.

    OMP_NUM_THREADS=2 flock /tmp/sead-cpu.lock \
        python experiments/sead_glue_cpu/heldout_by_length.py --task sst2

About a minute on 2 cores for SST-2's 1,000 rows (MPNet most of it, 20 students a few
seconds each); run it on a quiet machine, never beside a study unit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # this checkout's sead, whatever is installed

from experiments.sead_glue_cpu.design import TASKS  # noqa: E402
from sead.files import write_atomic  # noqa: E402
from sead.recipe import word_counts  # noqa: E402
from sead.tasks import get_task  # noqa: E402
from sead.tracking import evaluate  # noqa: E402

WORK = HERE / "work"
BINS = ((0, 5), (5, 10), (10, 20), (20, None), (10, None), (0, None))  # words, [low, high)


def bin_name(low: int, high: int | None) -> str:
    return f"{low}-{high - 1}" if high else f"{low}+"


def accuracy_by_bin(correct: np.ndarray, words: np.ndarray) -> dict[str, dict]:
    out = {}
    for low, high in BINS:
        inside = (words >= low) & (words < (high or np.inf))
        out[bin_name(low, high)] = {
            "rows": int(inside.sum()),
            "accuracy": float(correct[inside].mean()) if inside.any() else None,
        }
    return out


def units(task: str) -> dict[str, dict]:
    """Each saved student's unit: its results (for the tokenizer and teachers) and folder."""
    found = {}
    for results in sorted((WORK / "outputs" / task).glob("*/results.json")):
        if (results.parent / "student" / "model.safetensors").is_file():
            found[results.parent.name] = json.loads(results.read_text())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sst2")
    args = parser.parse_args()
    task = get_task(args.task)
    rows = Dataset.from_json(str(WORK / "data" / args.task / "heldout.jsonl"))
    words, labels = word_counts(rows, task), np.asarray(rows["label"])
    found = units(args.task)
    if not found:
        raise SystemExit(
            f"No saved students under {WORK / 'outputs' / args.task}: run units first."
        )
    first, max_length = next(iter(found.values())), TASKS[args.task]["max_length"]
    models = {  # name -> (weights folder, tokenizer folder)
        f"teacher {name}": (record["finetune"]["store_dir"],) * 2
        for name, record in first["teachers"].items()
        if record.get("finetune")
    }
    models |= {unit: (WORK / "outputs" / args.task / unit / "student", r["student"]["model"])
               for unit, r in found.items()}  # fmt: skip
    table = {}
    for name, (weights, tokenizer_dir) in models.items():
        model = AutoModelForSequenceClassification.from_pretrained(str(weights)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        scored = evaluate(model, tokenizer, task, rows, max_length, 128, name)
        correct = scored.logits.argmax(-1) == labels
        table[name] = accuracy_by_bin(correct, words)
    header = ["model", *(f"{bin_name(lo, hi)} ({table[name][bin_name(lo, hi)]['rows']})"
                         for lo, hi in BINS)]  # fmt: skip
    print(" | ".join(header))
    for name, bins in table.items():
        print(" | ".join([name, *(f"{b['accuracy']:.3f}" for b in bins.values())]))
    out = {"task": args.task, "heldout_rows": len(rows), "by_words": table}
    write_atomic(HERE / "heldout_by_length.json", json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
