"""Ship the student: ONNX fp32 and int8 exports, checked against PyTorch and timed side by side.

`export_student(student_dir, out_dir, task, split, split_name, max_length, settings)` writes,
beside `student/`:

* `onnx/`: `model.onnx` (fp32), `config.json` and the tokenizer, the layout that
  `optimum.onnxruntime.ORTModelFor...` loads; a plain `onnxruntime.InferenceSession` loads
  `model.onnx` alone (inputs `input_ids`, `attention_mask`[, `token_type_ids`], output `logits`).
* `onnx-int8/`: the same graph with ONNX Runtime's dynamic int8 quantization (weights int8,
  one scale per output channel; activations quantized on the fly), the same layout.

The exporter is `torch.onnx.export` (the torch.export-based one, `dynamo=True`, torch's default
since 2.9), called directly: optimum-onnx, the Hugging Face wrapper around it, pins
transformers < 4.58 in its latest release and cannot be installed beside transformers 5.

Nothing ships unchecked. The student folder must match its manifest (`sead_manifest.json`,
written when the run saved it), load, and score on the split what the run recorded for it
(within `export.max_recorded_gap` points), else nothing is exported. The fp32 graph's logits
must match PyTorch's on every example of the eval split within `export.atol`, else the export
is refused naming the largest deviation. The int8 model is scored with the task's official
metric (`sead.metrics`), and a drop of more than `export.max_metric_drop` points (x100) below
PyTorch fp32 refuses it too. Refused folders are never left behind: each is written under a
temporary name and renamed once it passes.

Speed: every format predicts the same pre-tokenized examples with the same thread count:
batch 1 (latency p50/p95, ms) and length-sorted batches of 32 (throughput, examples/s).

Without ONNX Runtime (`export.backend=auto`), PyTorch dynamic quantization
(`torch.ao.quantization.quantize_dynamic` on `nn.Linear`) is checked and timed instead; it is
applied when the model is loaded, so nothing is written for it.

Classification, regression (stsb: one output column) and multiple choice (copa, record: inputs
`[batch, choices, length]`) students all export.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from datasets import Dataset
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sead import card, choices, data, fusion, manifest, metrics, timing
from sead.card import ReportSettings, deployment_table
from sead.choices import MODEL_INPUTS
from sead.config import CONF_DIR, build, setting
from sead.files import write_atomic
from sead.fusion import AdditiveMask
from sead.inference import predict_logits, torch_threads
from sead.report import RESULTS_FILE
from sead.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sead[export]' (in a checkout: pip install -e '.[export]')"
ONNX_DIR, INT8_DIR = "onnx", "onnx-int8"
ONNX_FILE = "model.onnx"
EXPORT_FILE = "export.json"  # the record, beside the folders, when there is no results.json
CONF_FILE = (
    CONF_DIR / "export" / "onnx.yaml"
)  # in the wheel too (sead.config.conf_dir); export=onnx
PYTORCH_FP32, ONNX_FP32, ONNX_INT8, PYTORCH_INT8 = (
    "pytorch fp32",
    "onnx fp32",
    "onnx int8",
    "pytorch int8",
)


class ExportError(RuntimeError):
    """The export was refused: a check failed, or a dependency is missing."""


@dataclass(frozen=True)
class ExportSettings:
    """`cfg.export` (conf/export/onnx.yaml; export=none is the same with enabled: false)."""

    enabled: bool  # export at the end of the run
    backend: str  # onnx | torch (PyTorch dynamic int8 only) | auto: onnx when installed
    split: str | None  # the eval split to check and time on; null: the task's first
    atol: float = setting(low=0)  # largest |ONNX fp32 - PyTorch logit| allowed
    # int8 may lose at most this many points (x100) of the main metric
    max_metric_drop: float = setting(low=0)
    max_recorded_gap: float = setting(low=0)  # the loaded student within this of its run's record
    opset: int = setting(low=1)
    fuse: bool  # ONNX Runtime's transformer fusions before quantizing (not multiple choice)
    per_channel: bool  # int8 weights with one scale per output column
    threads: int | None = setting(low=1)  # intra-op threads for timing; null: torch's count
    batch_size: int = setting(low=1)  # throughput batches; latency is measured at batch 1
    speed_samples: int = setting(low=1)  # examples of the split timed
    passes: int = setting(low=1)  # throughput: best of this many passes
    torch_int8: bool  # also check and time PyTorch dynamic int8 beside ONNX


# --------------------------------------------------------------------------------------------
# Dependencies: an optional group, named in the error.
# --------------------------------------------------------------------------------------------


def onnx_available() -> bool:
    """onnx, onnxscript (the exporter's) and onnxruntime are all importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def backend(settings: ExportSettings) -> str:
    """`onnx` or `torch`, from `export.backend` (auto: onnx when its packages are installed)."""
    wanted = settings.backend
    if wanted not in ("auto", "onnx", "torch"):
        raise ExportError(f"export.backend={wanted!r}: use auto, onnx or torch.")
    if wanted == "torch" or onnx_available():
        return wanted if wanted != "auto" else "onnx"
    if wanted == "onnx":
        raise ExportError(
            "The ONNX export needs onnx, onnxscript and onnxruntime, which are not all installed: "
            f"{INSTALL_HINT}; or, for PyTorch int8 only, backend=torch (`sead export RUN "
            "backend=torch`; in a run: export.backend=torch)."
        )
    log.warning(
        "onnx/onnxscript/onnxruntime are not installed (%s): no ONNX export; measuring PyTorch "
        "dynamic int8 quantization instead.",
        INSTALL_HINT,
    )
    return "torch"


# --------------------------------------------------------------------------------------------
# Export and quantize.
# --------------------------------------------------------------------------------------------


class _LogitsOnly(torch.nn.Module):
    """The model with named tensor inputs and one output, `logits`: what the graph exposes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        inputs = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        inputs = {name: value for name, value in inputs.items() if value is not None}
        return self.model(input_ids=input_ids, **inputs).logits


def export_onnx(
    model, tokenizer, example: dict, folder: Path, opset: int, wrapper=_LogitsOnly
) -> Path:
    """`folder/model.onnx` (fp32, one file), config.json and the tokenizer; returns the file.

    Every input dimension is dynamic (batch, [choices,] length): `example` only traces it.
    `wrapper` gives the model named tensor inputs and the one output `logits`.
    """
    names = [name for name in MODEL_INPUTS if name in example]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX_FILE
    dynamic = torch.export.Dim.DYNAMIC
    dims = {name: dict.fromkeys(range(example[name].dim()), dynamic) for name in names}
    try:
        torch.onnx.export(
            wrapper(model).eval(),
            (),
            str(path),
            kwargs={name: example[name] for name in names},
            input_names=names,
            output_names=["logits"],
            dynamic_shapes=dims,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    except Exception as error:
        raise ExportError(
            f"torch.onnx.export could not export {type(model).__name__}: "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    _check_opset(path, opset)
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return path


def _check_opset(path: Path, opset: int) -> None:
    """The exporter writes the opset it can (it warns, and keeps its own, when it cannot
    convert the graph to the one asked for): refused by name rather than mislabelled."""
    import onnx

    written = {o.domain: o.version for o in onnx.load(str(path), load_external_data=False)
               .opset_import}.get("", opset)  # fmt: skip
    if written != opset:
        raise ExportError(
            f"export.opset={opset}, but the exporter wrote {written} (it cannot convert "
            f"this graph to {opset}; LayerNormalization needs 17 or later): set "
            f"export.opset={written}."
        )


def export_fused(student_dir: Path, tokenizer, example: dict, folder: Path, opset: int):
    """`folder/model.onnx` with ONNX Runtime's transformer kernels fused (`sead.fusion`): the
    student exported with eager attention and the additive mask, then optimized. Returns the
    file and the count of each fused kernel."""
    eager = AutoModelForSequenceClassification.from_pretrained(
        student_dir, attn_implementation="eager"
    ).eval()
    unfused = export_onnx(eager, tokenizer, example, folder / "unfused", opset, AdditiveMask)
    path = folder / ONNX_FILE
    counts = fusion.fuse(unfused, path, eager.config)
    for file in unfused.parent.iterdir():
        if file.name != ONNX_FILE:
            shutil.move(file, folder / file.name)
    shutil.rmtree(unfused.parent)
    return path, counts


def quantize_onnx(source: Path, folder: Path, per_channel: bool = True) -> Path:
    """ONNX Runtime's dynamic int8 quantization of `source` (weights int8, activations on the
    fly), with the config and tokenizer files copied beside it.

    Per channel by default: one scale per output column keeps the 6-layer MiniLM student's
    SST-2 accuracy within 0.1 point, where one scale per tensor lost 1.7 (experiments/
    export_sst2_cpu/README.md).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX_FILE
    quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8, per_channel=per_channel)
    for file in source.parent.iterdir():
        if file.name != ONNX_FILE and file.is_file():
            shutil.copy2(file, folder / file.name)
    return path


def quantize_torch(model):
    """PyTorch dynamic quantization of every nn.Linear (int8 weights, fp32 activations)."""
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with `threads` intra-op threads (the same as torch's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # No busy-waiting between runs: the formats are timed in turns, and spinning ORT threads
    # would take the cores from PyTorch's turn.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtModel(torch.nn.Module):
    """An ONNX Runtime session behind a transformers model's call (`model(**batch).logits`),
    so that sead's inference loop (length-sorted batches, multiple-choice padding) runs it
    unchanged. The one empty parameter only tells that loop the device (CPU)."""

    def __init__(self, ort_session, config):
        super().__init__()
        self.session, self.config = ort_session, config
        self.input_names = [i.name for i in ort_session.get_inputs()]
        self.device_marker = torch.nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, **batch):
        feeds = {name: batch[name].numpy() for name in self.input_names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(None, feeds)[0]))


# --------------------------------------------------------------------------------------------
# Checks: logits and the task's metric.
# --------------------------------------------------------------------------------------------


def check_logits(reference: np.ndarray, exported: np.ndarray, ids, atol: float) -> dict:
    """The largest |difference| of two models' logits; refuses the export above `atol`."""
    deviation = np.abs(reference.astype(np.float64) - exported.astype(np.float64))
    row, column = np.unravel_index(int(deviation.argmax()), deviation.shape)
    worst = float(deviation[row, column])
    record = {"atol": atol, "max_abs_diff": worst, "mean_abs_diff": float(deviation.mean())}
    if not np.isfinite(worst) or worst > atol:
        raise ExportError(
            f"The ONNX fp32 export does not match PyTorch: largest |logit difference| {worst:.3g} "
            f"> export.atol={atol:g} (example idx {ids[row]}, column {column}: PyTorch "
            f"{reference[row, column]:.6g}, ONNX {exported[row, column]:.6g}). Not shipped."
        )
    return record


def metric_drop(task: TaskSpec, reference: dict, quantized: dict) -> float:
    """How many points (x100) the main metric fell from fp32 to int8 (negative: it rose)."""
    return round(100 * (reference[task.main_metric] - quantized[task.main_metric]), 4)


def points_allowed(limit: float, n: int) -> float:
    """A metric difference (points, x100) a check lets through on `n` examples: `limit`, or two
    examples' worth on a small split, where one flipped near tie moves accuracy by 100 / n."""
    return max(limit, 200 / max(n, 1))


def check_drop(task: TaskSpec, drop: float, limit: float, name: str, n: int) -> None:
    """Refuse a quantized model that loses more than `limit` points against PyTorch fp32 on
    `n` examples, and more than two examples' worth on a small split (CB's 56: one flipped
    example is 1.8 points), as `check_recorded` allows."""
    if drop > points_allowed(limit, n):
        raise ExportError(
            f"The {name} model loses {drop:.2f} points of {task.main_metric} against PyTorch fp32 "
            f"(export.max_metric_drop={limit:g}, or two of its {n} examples). Not shipped."
        )


# --------------------------------------------------------------------------------------------
# The stage.
# --------------------------------------------------------------------------------------------


def export_student(
    student_dir: Path, out_dir: Path, task: TaskSpec, split: Dataset, split_name: str,
    max_length: int, settings: ExportSettings, recorded: dict | None = None,
) -> dict:  # fmt: skip
    """Export, check and time the student in `student_dir`; writes `onnx/` and `onnx-int8/`
    (ONNX backend) under `out_dir` and returns the `export` record of results.json.

    `recorded`: the run's metrics for the student on each eval split (results.json); the
    loaded student must score within `export.max_recorded_gap` points of them.
    """
    chosen = backend(settings)
    student_dir, out_dir = Path(student_dir), Path(out_dir)
    verify_student(student_dir)
    with torch_threads(settings.threads):
        return _export(
            student_dir, out_dir, task, split, split_name, max_length, settings, chosen, recorded
        )


def verify_student(student_dir: Path) -> None:
    """The student's files match the manifest written when it was saved, else ExportError.

    A folder without one (saved before sead recorded manifests, or not by sead) is exported
    with a warning: the score check against the run's record still guards it.
    """
    if not (student_dir / manifest.MANIFEST).is_file():
        log.warning(
            "%s has no %s (saved by an older sead, or not by sead): its files cannot be verified.",
            student_dir,
            manifest.MANIFEST,
        )
        return
    try:
        manifest.verify(student_dir)
    except manifest.DamagedFolder as err:
        raise ExportError(
            f"The student in {student_dir} is damaged: {' '.join(str(err).split())}, so it is "
            "not the model the run trained. Not exported; rerun the run to get it back."
        ) from None


def load_student(student_dir: Path, task: TaskSpec):
    """(model, tokenizer) of a saved student; a file that cannot be read is an ExportError
    naming the folder, not the loader's raw error."""
    try:
        model = choices.model_class(task).from_pretrained(student_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(student_dir)
    except Exception as err:  # safetensors, json and transformers raise their own types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExportError(
            f"The student in {student_dir} cannot be loaded ({type(err).__name__}: {reason}): "
            "a damaged or incomplete checkpoint. Not exported."
        ) from err
    return model, tokenizer


def check_recorded(task: TaskSpec, scores: dict, recorded, split: str, limit: float, n: int):
    """The loaded student's main metric against the one its run recorded on `split`, `n`
    examples: more than `limit` points (x100) apart, and more than two examples' worth on a
    small split (batching may flip a near tie), it is not the model the run trained: refused."""
    expected = ((recorded or {}).get(split) or {}).get(task.main_metric)
    if expected is None:
        return {"recorded": None}
    gap = round(100 * abs(scores[task.main_metric] - expected), 4)
    if gap > points_allowed(limit, n):
        raise ExportError(
            f"The student scores {task.main_metric} {scores[task.main_metric]:.4f} on {split}, "
            f"but its run recorded {expected:.4f} ({gap:.2f} points apart; allowed: "
            f"export.max_recorded_gap={limit:g}, or two of its {n} examples): it is not the "
            "model the run trained (damaged or replaced). Not exported."
        )
    return {"recorded": expected, "gap": gap}


def _export(student_dir, out_dir, task, split, split_name, max_length, settings, chosen, recorded):
    threads = torch.get_num_threads()
    model, tokenizer = load_student(student_dir, task)
    encoded = data.tokenize(split, tokenizer, task, max_length)
    ids = np.asarray(split["idx"][:], dtype=object)
    batch_size, limit = settings.batch_size, settings.max_metric_drop

    def score(logits):
        return metrics.score_split(task, split, metrics.hard_predictions(task, logits))

    reference = predict_logits(model, tokenizer, encoded, 128, "PyTorch fp32")
    formats = {
        PYTORCH_FP32: {
            "path": str(student_dir),
            "size_bytes": timing.size_on_disk(*timing.weight_files(student_dir)),
            "metrics": score(reference),
        }
    }
    max_gap = settings.max_recorded_gap
    formats[PYTORCH_FP32] |= check_recorded(
        task, formats[PYTORCH_FP32]["metrics"], recorded, split_name, max_gap, len(split)
    )
    models = {PYTORCH_FP32: model}
    record = {
        "backend": chosen,
        "split": split_name,
        "examples": len(split),
        "threads": threads,
        "max_metric_drop": limit,
        "main_metric": task.main_metric,
        "versions": {"torch": torch.__version__},
    }
    if chosen == "onnx":
        import onnx
        import onnxruntime

        record["versions"] |= {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
        opset = settings.opset
        fuse = settings.fuse and not task.is_multiple_choice
        if fuse and model.config.model_type not in fusion.FUSABLE_TYPES:
            log.info(
                "ONNX fusion skipped: %s is not a type it applies to.", model.config.model_type
            )
            fuse = False
        record["exporter"] = f"torch.onnx.export (dynamo=True, opset {opset})"
        if fuse:
            record["exporter"] += ", fused by onnxruntime.transformers.optimizer"
        fp32_dir, int8_dir = out_dir / ONNX_DIR, out_dir / INT8_DIR
        staging = out_dir / ".export-tmp"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            example = timing.make_batches(encoded, tokenizer, 2, 2).sorted32[0]
            if fuse:  # what the sessions run, and what ships
                fp32_file, record["fusion"] = export_fused(
                    student_dir, tokenizer, example, staging / ONNX_DIR, opset
                )
            else:
                fp32_file = export_onnx(model, tokenizer, example, staging / ONNX_DIR, opset)
            models[ONNX_FP32] = OrtModel(session(fp32_file, threads), model.config)
            exported = predict_logits(models[ONNX_FP32], tokenizer, encoded, 128, "ONNX fp32")
            record["equivalence"] = check_logits(reference, exported, ids, settings.atol)
            formats[ONNX_FP32] = {
                "path": str(fp32_dir),
                "size_bytes": timing.size_on_disk(fp32_file),
                "metrics": score(exported),
            }
            per_channel = settings.per_channel
            int8_file = quantize_onnx(fp32_file, staging / INT8_DIR, per_channel)
            record["quantization"] = {"weights": "int8", "per_channel": per_channel}
            models[ONNX_INT8] = OrtModel(session(int8_file, threads), model.config)
            quantized = score(predict_logits(models[ONNX_INT8], tokenizer, encoded, 128, "int8"))
            drop = metric_drop(task, formats[PYTORCH_FP32]["metrics"], quantized)
            formats[ONNX_INT8] = {
                "path": str(int8_dir),
                "size_bytes": timing.size_on_disk(int8_file),
                "metrics": quantized,
                "metric_drop": drop,
            }
            check_drop(task, drop, limit, ONNX_INT8, len(split))
            for name, folder in ((ONNX_DIR, fp32_dir), (INT8_DIR, int8_dir)):
                shutil.rmtree(folder, ignore_errors=True)
                (staging / name).rename(folder)
            for name in (ONNX_FP32, ONNX_INT8):  # the sessions read the files: reopen them
                file = Path(formats[name]["path"]) / ONNX_FILE
                models[name] = OrtModel(session(file, threads), model.config)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if chosen == "torch" or settings.torch_int8:
        models[PYTORCH_INT8] = quantize_torch(model)
        quantized = score(predict_logits(models[PYTORCH_INT8], tokenizer, encoded, 128, "int8"))
        drop = metric_drop(task, formats[PYTORCH_FP32]["metrics"], quantized)
        formats[PYTORCH_INT8] = {
            "path": None,  # quantized when loaded: quantize_dynamic(model, {nn.Linear}, qint8)
            "size_bytes": timing.torch_int8_size(models[PYTORCH_INT8]),
            "metrics": quantized,
            "metric_drop": drop,
        }
        if chosen == "torch":  # what ships; beside ONNX (export.torch_int8) it is only compared
            check_drop(task, drop, limit, PYTORCH_INT8, len(split))

    batches = timing.make_batches(encoded, tokenizer, settings.speed_samples, batch_size)
    passes = settings.passes
    log.info("Timing %s (%d threads)...", ", ".join(models), threads)
    for name, timed in timing.time_models(models, batches, passes).items():
        formats[name] |= timed
    base = formats[PYTORCH_FP32]["throughput"]
    for entry in formats.values():
        entry["speedup"] = round(entry["throughput"] / base, 2)
    record["speed"] = {"examples": batches.n_examples, "batch_size": batch_size, "passes": passes}
    record["formats"] = formats
    log.info("\n%s", deployment_table(record))
    return record


# --------------------------------------------------------------------------------------------
# From a run's settings: the pipeline's call, and the command's.
# --------------------------------------------------------------------------------------------


def export_run(
    settings: ExportSettings,
    task: TaskSpec,
    data_settings: data.DataSettings,
    max_length: int,
    out_dir: Path,
    splits=None,
    recorded=None,
) -> dict:
    """Export `<out_dir>/student` with the run's task, data and student max length.

    `splits`: the run's loaded splits (the pipeline's), else the eval split is loaded;
    `recorded`: the student's metrics the run recorded, per split.
    """
    split_name = settings.split or task.eval_splits[0]
    if splits is None or split_name not in splits:
        splits = data.load_splits(task, data_settings, [split_name])
    return export_student(
        Path(out_dir) / "student", out_dir, task, splits[split_name], split_name, max_length,
        settings, recorded,
    )  # fmt: skip


def export_after_run(settings: ExportSettings, task: TaskSpec, *args) -> dict:
    """`export_run` at the end of a training run (same arguments): a refused export (a check
    failed) is recorded and warned about, not a failed run, whose results and student are
    kept; `sead export <run>` retries with other limits."""
    try:
        return export_run(settings, task, *args)
    except ExportError as refused:
        log.warning("Export refused: %s The run's results and student are kept.", refused)
        return {"status": "refused", "reason": str(refused)}
    except Exception as error:  # anything else in the export must not lose the run either
        log.warning("Export failed; the run's results and student are kept.", exc_info=True)
        return {"status": "refused", "reason": f"{type(error).__name__}: {error}"}


def check(settings: ExportSettings, task: TaskSpec) -> None:
    """Before any work: the backend's packages (`backend`), and `export.split` names one of
    the task's eval splits."""
    backend(settings)
    if settings.split is not None and settings.split not in task.eval_splits:
        raise ValueError(
            f"export.split={settings.split!r}: expected one of task {task.name!r}'s eval "
            f"splits {list(task.eval_splits)} (or null: the first)."
        )


def default_settings() -> DictConfig:
    """conf/export/onnx.yaml: the command's defaults, the same as `export=onnx` in a run."""
    return OmegaConf.load(CONF_FILE)


def main(argv=None, prog: str = "python -m sead.export") -> None:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Export a sead student to ONNX fp32 and int8, checked and timed: writes "
        "onnx/ and onnx-int8/ beside student/, and the 'export' record into results.json (and "
        "the model card), or export.json when the folder has no run results.",
    )
    parser.add_argument("path", type=Path, help="a run folder (with student/) or a student folder")
    parser.add_argument(
        "overrides", nargs="*", help="export settings (conf/export/onnx.yaml), e.g. atol=1e-5"
    )
    parser.add_argument("--task", help="the task, for a student folder outside a sead run")
    parser.add_argument("--data-dir", help="its data: a folder of <split>.jsonl (default: Hub)")
    parser.add_argument("--max-length", type=int, default=128, help="(outside a run) default 128")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.path.is_dir():
        sys.exit(f"{args.path}: no such folder (pass a run folder or its student/).")
    _exit_if_no_student(args.path)
    run_dir = args.path if (args.path / "student").is_dir() else args.path.parent
    cfg = _run_config(run_dir, args)
    try:
        export_finished_run(run_dir, cfg, OmegaConf.from_dotlist(args.overrides))
    except ExportError as error:
        sys.exit(f"Export refused: {error}")


def export_finished_run(run_dir: Path, cfg: DictConfig, overrides) -> dict:
    """Export a finished run's student with its own task, data and max length (`cfg`, its
    saved config), the export settings of conf/export/onnx.yaml with the run's and then
    `overrides` over them; the record goes into its results.json (`save_record`)."""
    merged = OmegaConf.merge(default_settings(), OmegaConf.select(cfg, "export", default={}))
    merged = OmegaConf.merge(merged, overrides, {"enabled": True})
    task = get_task(cfg.task.name)
    try:  # a bad override is named before any work, as `sead export` spells it
        settings = build(ExportSettings, merged, "export")
        check(settings, task)  # as a run checks it: the split, before the student loads
    except ValueError as error:
        raise ExportError(f"{error} (`sead export RUN key=value`: e.g. atol=1e-4)") from None
    data_settings = build(data.DataSettings, cfg.data, "data")
    max_length = int(cfg.student.max_length)
    recorded = _recorded_metrics(run_dir)
    record = export_run(settings, task, data_settings, max_length, run_dir, recorded=recorded)
    report = build(ReportSettings, cfg.report, "report")
    save_record(run_dir, record, report, max_length)  # the table was logged by export_student
    return record


def _exit_if_no_student(path: Path) -> None:
    """A run folder without `student/` (the run failed, or is a stage run): say that."""
    if (path / "student").is_dir() or not any(
        (path / name).exists() for name in ("config.yaml", RESULTS_FILE, "metrics.jsonl", ".hydra")
    ):
        return
    status = ""
    try:
        results = json.loads((path / RESULTS_FILE).read_text())
        if results.get("status") == "failed":
            error = results.get("error") or {}
            status = f" The run failed: {error.get('type')}: {error.get('message')}"
    except (OSError, ValueError, AttributeError):
        pass
    sys.exit(
        f"{path}: this run has no student/ to export (it saved none: failed, stopped before the "
        f"student was saved, or a stage run).{status}"
    )


def _recorded_metrics(run_dir: Path) -> dict | None:
    """The student's metrics per split from the run's results.json, when it finished."""
    try:
        results = json.loads((run_dir / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("status", "ok") != "ok":
        return None
    return (results.get("student") or {}).get("metrics")


def _run_config(run_dir: Path, args) -> DictConfig:
    """The run's resolved config; for a student folder of its own, the default config with
    the options' task, data folder, student and max length."""
    if (run_dir / "config.yaml").is_file() and not args.task:
        return OmegaConf.load(run_dir / "config.yaml")
    if not args.task:
        sys.exit(f"{args.path}: not a sead run (no config.yaml beside student/): pass --task.")
    if (run_dir / "student").resolve() != args.path.resolve():
        sys.exit(f"{args.path}: the student folder must be named student/ (exports go beside it).")
    defaults = OmegaConf.load(CONF_DIR / "data" / "default.yaml")
    return OmegaConf.create(
        {
            "task": {"name": args.task},
            "data": {**OmegaConf.to_container(defaults), "dir": args.data_dir},
            "student": {"model": str(args.path), "max_length": args.max_length},
            "report": OmegaConf.to_container(OmegaConf.load(CONF_DIR / "report" / "default.yaml")),
        }
    )


def save_record(run_dir: Path, record: dict, report: ReportSettings, max_length: int) -> None:
    """Into results.json (and so the model card) under `export`; else `export.json`."""
    results_file = run_dir / RESULTS_FILE
    if not results_file.is_file():
        write_atomic(run_dir / EXPORT_FILE, json.dumps(record, indent=2) + "\n")
        return
    results = json.loads(results_file.read_text())
    results["export"] = record
    write_atomic(results_file, json.dumps(results, indent=2) + "\n")
    if results.get("status", "ok") == "ok":
        card.write_model_card(results, report, run_dir / "student", max_length)


if __name__ == "__main__":
    main()
