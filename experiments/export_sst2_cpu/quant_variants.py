"""Which ONNX Runtime dynamic int8 variant keeps a student's accuracy: chosen on held-out rows.

    flock /tmp/sead-cpu.lock python experiments/export_sst2_cpu/quant_variants.py \
        <run dir> [<run dir> ...] [--work DIR]

Each run directory is a finished sead run whose data has a held-out slice (`data.heldout`, or
a data folder with its own `heldout.jsonl`, as every `sead_glue_cpu` unit has). For each student
it prints, per variant, the metric on the held-out slice (what sead's default,
`export.per_channel`, is chosen on) and on the first evaluation split (what is reported, never
chosen on), with the largest logit change against fp32. The records go to
`quant_variants.json` beside this file. No timing: one thread, accuracy only.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # this checkout's sead, whatever the cwd

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from experiments import harness  # noqa: E402
from sead import data, export, metrics, timing  # noqa: E402
from sead.config import build  # noqa: E402
from sead.inference import predict_logits  # noqa: E402
from sead.tasks import get_task  # noqa: E402

VARIANTS = {
    "per tensor (ORT default)": {},
    "per channel": {"per_channel": True},
    "per tensor, reduce_range": {"reduce_range": True},
    "per channel, reduce_range": {"per_channel": True, "reduce_range": True},
    "uint8 weights (u8u8)": {"weight_type": QuantType.QUInt8},
    "MatMul only, per tensor": {"op_types_to_quantize": ["MatMul"]},
    "MatMul only, per channel": {"op_types_to_quantize": ["MatMul"], "per_channel": True},
}


def measure(run_dir: Path, work: Path) -> dict:
    """{split: {variant: {metric, largest logit change}}} for one finished run."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    task = get_task(cfg.task.name)
    settings = build(data.DataSettings, cfg.data, "data")
    if not settings.has_heldout:
        sys.exit(
            f"{run_dir}: its data has no held-out slice (data.heldout is null and "
            f"{settings.dir} has no heldout.jsonl); the variant would be chosen on the "
            "reported split. Pass a run made with data.heldout set."
        )
    names = [data.HELDOUT, task.eval_splits[0]]
    splits = data.load_splits(task, settings, names)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "student")
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "student").eval()
    max_length = int(cfg.student.max_length)
    encoded = {name: data.tokenize(splits[name], tokenizer, task, max_length) for name in names}
    reference = {name: predict_logits(model, tokenizer, encoded[name], 128) for name in names}
    example = timing.make_batches(encoded[names[0]], tokenizer, 2, 2).sorted32[0]
    fp32 = export.export_onnx(model, tokenizer, example, work / "fp32", 18)

    def row(name: str, logits: np.ndarray) -> dict:
        predictions = metrics.hard_predictions(task, logits)
        value = metrics.score_split(task, splits[name], predictions)[task.main_metric]
        change = float(np.abs(logits - reference[name]).max())
        return {task.main_metric: 100 * value, "largest_logit_change": change}

    out = {name: {"fp32": row(name, reference[name])} for name in names}
    for variant, options in VARIANTS.items():
        path = work / f"{variant.replace(' ', '_').replace(',', '')}.onnx"
        quantize_dynamic(str(fp32), str(path), **{"weight_type": QuantType.QInt8, **options})
        model_int8 = export.OrtModel(export.session(path, 1), model.config)
        for name in names:
            logits = predict_logits(model_int8, tokenizer, encoded[name], 128)
            out[name][variant] = row(name, logits)
    rows = {name: len(splits[name]) for name in names}
    return {"task": task.name, "metric": task.main_metric, "rows": rows, "splits": out}


def table(record: dict) -> str:
    held, reported = list(record["splits"])
    metric = record["metric"]
    lines = [
        f"| int8 variant | {held} {metric} | change | {reported} {metric} | change |",
        "|---|---|---|---|---|",
    ]
    base = {name: record["splits"][name]["fp32"][metric] for name in (held, reported)}
    for variant in record["splits"][held]:
        cells = []
        for name in (held, reported):
            value = record["splits"][name][variant][metric]
            cells += [f"{value:.2f}", "" if variant == "fp32" else f"{value - base[name]:+.2f}"]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished sead run directories")
    parser.add_argument("--work", type=Path, default=Path("/tmp/quant_variants"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = {}
    for run_dir in args.runs:
        record = measure(run_dir.resolve(), args.work / run_dir.name)
        records[str(run_dir)] = record
        print(f"\n## {run_dir} ({record['rows']} rows)\n\n{table(record)}\n", flush=True)
    harness.write_json(
        HERE / "quant_variants.json",
        {
            "machine": harness.machine(processor=platform.processor() or platform.machine()),
            "command": " ".join(["python", *sys.argv]),
            "students": records,
        },
    )


if __name__ == "__main__":
    main()
