"""Accuracy of ONNX Runtime dynamic int8 variants on a run's student (no timing, no lock needed).

    python experiments/export_sst2_cpu/quant_variants.py <run dir> [work dir]

Why sead quantizes per channel: on the 6-layer MiniLM SST-2 student, the per-tensor default
lost 1.72 points (README.md beside this file has the table this prints).
"""

import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sead import data, export, metrics
from sead.config import build
from sead.inference import predict_logits
from sead.tasks import get_task

VARIANTS = {
    "per tensor (ORT default)": {},
    "per channel": {"per_channel": True},
    "per tensor, reduce_range": {"reduce_range": True},
    "per channel, reduce_range": {"per_channel": True, "reduce_range": True},
    "uint8 weights (u8u8)": {"weight_type": QuantType.QUInt8},
    "MatMul only, per tensor": {"op_types_to_quantize": ["MatMul"]},
    "MatMul only, per channel": {"op_types_to_quantize": ["MatMul"], "per_channel": True},
}


def main(run_dir: Path, work: Path) -> None:
    torch.set_num_threads(1)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    task = get_task(cfg.task.name)
    data_settings = build(data.DataSettings, cfg.data, "data")
    split = data.load_splits(task, data_settings, [task.eval_splits[0]])[task.eval_splits[0]]
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "student")
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "student").eval()
    encoded = data.tokenize(split, tokenizer, task, int(cfg.student.max_length))
    reference = predict_logits(model, tokenizer, encoded, 128)

    def score(logits):
        return metrics.score_split(task, split, metrics.hard_predictions(task, logits))

    print(f"fp32: {task.main_metric} {100 * score(reference)[task.main_metric]:.2f}")
    example = export.make_batches(encoded, tokenizer, 2, 2).sorted32[0]
    fp32 = export.export_onnx(model, tokenizer, example, work / "fp32", 18)
    for name, options in VARIANTS.items():
        out = work / f"{name.replace(' ', '_').replace(',', '')}.onnx"
        quantize_dynamic(str(fp32), str(out), **{"weight_type": QuantType.QInt8, **options})
        logits = predict_logits(
            export.OrtModel(export.session(out, 1), model.config), tokenizer, encoded, 128
        )
        value = 100 * score(logits)[task.main_metric]
        change = float(np.abs(logits - reference).max())
        print(f"| {name} | {value:.2f} | largest logit change {change:.2f} |", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/quant_variants"))
