"""The student's model card (`student/README.md`) and the optional upload to the Hub.

The card is in the Hugging Face format, so the Hub renders it and indexes its results: YAML
metadata (language, license, tags, datasets, metrics, base model, `model-index`) written by
`huggingface_hub.ModelCardData`, then the results (metric, eval runtime, samples per second, as
the XtremeDistil and SEAD cards report them), the teachers it learned from with their scores,
the ensembler and training settings, and how to load it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from sead import data, manifest
from sead.config import setting
from sead.files import write_atomic
from sead.tasks import get_task

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
HUB_DATASETS = {"glue": "nyu-mll/glue", "super_glue": "aps/super_glue"}


@dataclass(frozen=True)
class ReportSettings:
    """`cfg.report` (conf/report/default.yaml): what a run reports beyond results.json."""

    speed_samples: int = setting(low=0)  # eval examples timed for the speedup; 0: skip
    language: str  # model card metadata
    license: str
    push_to_hub: bool  # upload student/ (weights, tokenizer, card) to the Hub
    hub_model_id: str | None  # <user or org>/<name>; required when push_to_hub
    hub_private: bool  # a new Hub repository is private unless false

    def __post_init__(self):
        """Fail before any training when the upload asked for cannot happen."""
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError(
                "report.push_to_hub=true needs report.hub_model_id=<user or org>/<model name> "
                "(the Hub repository to create or update); none is set."
            )


def write_model_card(
    results: dict, report: ReportSettings, student_dir: Path, max_length: int
) -> Path:
    """Write `README.md` beside the student's weights; returns its path.

    `max_length`: the student's truncation length (`student.max_length`).
    """
    name = report.hub_model_id or f"{Path(results['student']['model']).name}-sead-{results['task']}"
    card = ModelCard(
        f"---\n{_metadata(results, report, name).to_yaml()}\n---\n"
        f"{_body(results, name, max_length, load_from=report.hub_model_id or 'student')}"
    )
    path = Path(student_dir) / CARD_FILE
    write_atomic(path, str(card))
    return path


def _metadata(results: dict, report: ReportSettings, name: str) -> ModelCardData:
    task = get_task(results["task"])
    dataset = HUB_DATASETS.get(task.benchmark, task.benchmark)
    student = results["student"]
    eval_results = [
        EvalResult(
            task_type="multiple-choice" if task.is_multiple_choice else "text-classification",
            task_name=_task_name(task),
            dataset_type=dataset,
            dataset_name=f"{task.benchmark.upper()} {task.hub_name.upper()}",
            dataset_config=task.hub_name,  # superglue_rte: rte
            dataset_split=split,
            metric_type=metric,
            metric_name=metric.replace("_", " ").title(),
            metric_value=round(float(value), 4),
        )
        for split in results["eval_splits"]
        for metric, value in student["metrics"][split].items()
    ]
    base_model = str(student["model"])
    return ModelCardData(
        model_name=name,
        language=report.language,
        license=report.license,
        library_name="transformers",
        pipeline_tag="multiple-choice" if task.is_multiple_choice else "text-classification",
        tags=["knowledge-distillation", "sead", "ensemble-distillation", task.benchmark, task.name],
        datasets=[dataset],
        metrics=list(task.metrics),
        # The Hub only links a base model given by its repository id, not a local path.
        base_model=None if Path(base_model).expanduser().exists() else base_model,
        eval_results=eval_results,
    )


def _body(results: dict, name: str, max_length: int, load_from: str = "student") -> str:
    """The card's text. `load_from`: what its usage loads, the Hub id once pushed, else the
    run folder's student/ (the card's own name would not load)."""
    task, splits = get_task(results["task"]), results["eval_splits"]
    student, ensemble, teachers = results["student"], results["ensemble"], results["teachers"]
    train = results.get("train", {})
    metrics = list(task.metrics)
    speed = results.get("speed") or {}
    lines = [
        f"# {name}",
        "",
        f"A student distilled from an ensemble of {len(teachers)} teacher(s) "
        f"({', '.join(teachers)}) on {task.benchmark.upper()} {task.name.upper()} with "
        "sead (SEAD-style multi-teacher ensemble knowledge distillation). "
        f"Initialised from `{student['model']}`: {student['params']:,} parameters.",
        "",
        "## Results",
        "",
        "| Split | Examples | " + " | ".join(metrics) + " | Eval runtime (s) | Samples/s |",
        "|" + "---|" * (len(metrics) + 4),
    ]
    for split in splits:
        scores = " | ".join(f"{100 * student['metrics'][split][m]:.2f}" for m in metrics)
        runtime = (student.get("eval_runtime_s") or {}).get(split, "")
        per_second = (student.get("examples_per_second") or {}).get(split, "")
        n = results.get("n_examples", {}).get(split, "")
        lines.append(f"| {split} | {n} | {scores} | {runtime} | {per_second} |")
    split, main = splits[0], task.main_metric
    lines += [
        "",
        f"Compared with its teachers ({main} on {split}, x100; {_speed_how(speed)}, batch size "
        f"{speed.get('batch_size', '')}, device {speed.get('device', '')}):"
        if speed
        else f"Compared with its teachers ({main} on {split}, x100):",
        "",
        "| Model | Checkpoint | #params | Samples/s | " + main + " |",
        "|---|---|---|---|---|",
    ]
    per_second = speed.get("examples_per_second") or {}
    for teacher_name, teacher in teachers.items():
        source = teacher.get("source", teacher.get("model_id"))
        source += " (fine-tuned by sead)" if teacher.get("finetuned") else ""
        files = (teacher.get("predictions") or {}).get("files") or {}
        if files:  # a teacher read from files: each split's file and content hash
            source += ": " + ", ".join(
                f"{split} {Path(f['path']).name} sha256:{(f['sha256'] or '?')[:12]}"
                for split, f in files.items()
            )
        lines.append(
            f"| teacher {teacher_name} | `{source}` | {_params(teacher['params'])} "
            f"| {per_second.get(teacher_name, '')} | {100 * teacher['metrics'][split][main]:.2f} |"
        )
    lines.append(
        f"| ensemble ({ensemble['name']}) | | | | {100 * ensemble['metrics'][split][main]:.2f} |"
    )
    speedups = ", ".join(f"{v:.1f}x {k}" for k, v in (speed.get("speedup") or {}).items())
    lines.append(
        f"| **student** | `{student['model']}` | {_params(student['params'])} "
        f"| {per_second.get('student', '')}{f' ({speedups})' if speedups else ''} "
        f"| **{100 * student['metrics'][split][main]:.2f}** |"
    )
    for teacher_name, why in (speed.get("skipped") or {}).items():
        lines.append(f"\nNot timed: teacher {teacher_name} ({why}).")
    lines += _deployment_lines(results.get("export"), task.is_multiple_choice, _example(task))
    weights = ensemble.get("weights") or {}
    lines += [
        "",
        "## Training",
        "",
        f"- Ensembler: `{ensemble['name']}`"
        + (f", weights {', '.join(f'{k}={v:.3f}' for k, v in weights.items())}" if weights else ""),
        _loss_line(task, train, results.get("recipe") or {}),
        f"- Optimiser: lr {train.get('lr')}, {train.get('epochs')} epoch(s), batch size "
        f"{train.get('batch_size')}, weight decay {train.get('weight_decay')}, warmup ratio "
        f"{train.get('warmup_ratio')}, seed {results.get('seed')}",
        f"- Max sequence length {max_length}; "
        f"{results.get('n_examples', {}).get(task.train_split, '?')} training examples",
        *_transfer_lines(results.get("transfer"), results.get("heldout")),
        "",
        "## How to use",
        "",
    ]
    if task.is_multiple_choice:
        return "\n".join([*lines, *_choice_usage(task, load_from)])
    lines += [
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{load_from}")',
        f'model = AutoModelForSequenceClassification.from_pretrained("{load_from}")',
        f"inputs = tokenizer({_example(task)}, return_tensors='pt')",
        "prediction = model(**inputs).logits"
        + ("[0, 0].item()  # the predicted score" if task.is_regression else ".argmax(-1).item()"),
    ]
    if not task.is_regression:
        lines.append("print(model.config.id2label[prediction])")
    lines += ["```", ""]
    return "\n".join(lines)


def _speed_how(speed: dict) -> str:
    """How the speed column was measured (`sead.speed.compare`'s method)."""
    if speed.get("method") == "interleaved":
        return f"speed measured on the same {speed.get('examples', '')} examples"
    return (
        "speed of forward passes: the teachers' while they labelled this run's data, the "
        f"student's on {speed.get('examples', '')} examples"
    )


def _deployment_lines(
    export: dict | None, multiple_choice: bool = False, example: str = '"A gripping film."'
) -> list[str]:
    """The exported formats side by side (sead.export), when the student was exported; how to
    load the ONNX files, when it was exported to ONNX."""
    if not export or not export.get("formats"):
        return []
    check = export.get("equivalence")
    agreement = (
        f" The ONNX fp32 logits match PyTorch's within {check['max_abs_diff']:.1e} "
        f"(tolerance {check['atol']:g})."
        if check
        else ""
    )
    speed = export["speed"]
    lines = [
        "",
        "## Deployment",
        "",
        f"{export['main_metric']} on the {export['examples']} {export['split']} examples; speed "
        f"on {speed['examples']} of them, {export['threads']} CPU thread(s) for every format: "
        f"latency at batch 1, throughput with length-sorted batches of {speed['batch_size']}; "
        "int8 change in points in brackets." + agreement,
        "",
        deployment_table(export),
    ]
    if export.get("backend") != "onnx":
        return lines
    lines += [
        "",
        "In the run folder, `onnx/` and `onnx-int8/` beside `student/` (not uploaded with it) "
        "hold `model.onnx`, the config and the tokenizer (`optimum.onnxruntime.ORTModelFor...` "
        "loads them too)"
        + (
            ": a multiple-choice graph takes inputs shaped [batch, choices, length], each "
            "choice encoded as in the PyTorch usage below."
            if multiple_choice
            else ". From the run folder:"
        ),
    ]
    if multiple_choice:
        return lines
    return lines + [
        "",
        "```python",
        "import onnxruntime",
        "from transformers import AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("onnx-int8")',
        'session = onnxruntime.InferenceSession("onnx-int8/model.onnx")',
        f'inputs = tokenizer({example}, return_tensors="np")',
        "names = [i.name for i in session.get_inputs()]",
        "logits = session.run(None, {n: inputs[n] for n in names})[0]",
        "```",
    ]


def deployment_table(record: dict) -> str:
    """The formats side by side: size, metric, p50 latency, throughput (markdown)."""
    metric, speed = record["main_metric"], record["speed"]
    lines = [
        f"| Format | Size on disk | {metric} ({record['split']}) | p50 latency, batch 1 (ms) "
        f"| Throughput, batch {speed['batch_size']} (ex/s) |",
        "|---|---|---|---|---|",
    ]
    for name, entry in record["formats"].items():
        value = 100 * entry["metrics"][metric]
        drop = entry.get("metric_drop")
        change = f" ({0.0 - drop:+.2f})" if drop is not None else ""  # 0.0 -: never "-0.00"
        lines.append(
            f"| {name} | {entry['size_bytes'] / 2**20:.1f} MiB | {value:.2f}{change} "
            f"| {entry['latency_ms']['p50']:.2f} | {entry['throughput']:,.0f} "
            f"({entry['speedup']:.2f}x) |"
        )
    return "\n".join(lines)


def _transfer_lines(transfer: dict | None, heldout: dict | None) -> list[str]:
    """The transfer set (sead.transfer), when the student saw text beyond the gold labels,
    and every gold label the run used: the held-out slice's too (its stages chose on them)."""
    if not transfer or not transfer.get("size"):
        return []
    parts = ", ".join(f"{n:,} {name}" for name, n in transfer.get("parts", {}).items())
    chosen = f", and {heldout['rows']:,} held-out gold labels to choose on" if heldout else ""
    return [
        f"- Transfer set `{transfer['source']}`: {transfer['size']:,} examples without gold "
        f"labels ({parts}), labelled by the teacher ensemble and learned with the soft term "
        f"alone, beside {transfer['labeled']:,} gold-labelled examples{chosen}"
    ]


def _task_name(task) -> str:
    if task.is_multiple_choice:
        return "Multiple Choice"
    return "Text Regression" if task.is_regression else "Text Classification"


def _choice_usage(task, name: str) -> list[str]:
    """A multiple-choice student scores one (first, second) text pair per choice, written as
    sead/choices.py writes them for the task."""
    if task.name == "copa":
        texts = [
            'premise = "The man broke his toe."',
            'options = ["He dropped a hammer on his foot.", "He got a hole in his sock."]',
            "# question 'cause': 'because <option>'; question 'effect': 'so <option>'",
            "firsts = [premise] * len(options)",
            'seconds = ["because " + o[0].lower() + o[1:] for o in options]',
        ]
    else:
        texts = [
            'passage = "Obama arrived in Berlin, where Merkel was waiting."',
            'query, options = "@placeholder was greeted in Berlin.", ["Obama", "Berlin", "Merkel"]',
            'firsts = [query.replace("@placeholder", entity) for entity in options]',
            "seconds = [passage] * len(options)",
        ]
    return [
        "```python",
        "from transformers import AutoModelForMultipleChoice, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForMultipleChoice.from_pretrained("{name}")',
        *texts,
        "inputs = tokenizer(firsts, seconds, padding=True, truncation=True, return_tensors='pt')",
        "logits = model(**{k: v.unsqueeze(0) for k, v in inputs.items()}).logits  # [1, choices]",
        "print(options[logits.argmax(-1).item()])",
        "```",
        "",
    ]


def _params(n) -> str:
    return f"{n / 1e6:.1f}M" if n and n >= 1e5 else f"{n:,}" if n else "?"


# One row of each task whose input sead formats (marks spans, joins fields), to show the text
# the student expects: formatted by the same function the student was trained with.
FORMATTED_EXAMPLES = {
    "wic": {"word": "bank", "sentence1": "We sat on the bank.", "start1": 14, "end1": 18,
            "sentence2": "The bank is closed.", "start2": 4, "end2": 8},
    "wsc": {"text": "Tom thanked Ann because she helped him.", "span1_index": 2,
            "span1_text": "Ann", "span2_index": 4, "span2_text": "she"},
    "multirc": {"paragraph": "Ann moved to Oslo in May.", "question": "Where did Ann move?",
                "answer": "Oslo"},
}  # fmt: skip


def _loss_line(task, train: dict, recipe: dict) -> str:
    """What the student minimised: the single pass's loss, or the recipe's stages."""
    stages = recipe.get("stages") or []
    if len(stages) > 1:
        names = ", ".join(str(stage.get("name")) for stage in stages)
        return f"- Recipe `{recipe.get('name')}`: stages {names} (results.json `recipe`)"
    alpha, temperature = train.get("alpha"), train.get("temperature")
    if task.is_regression:
        return (
            f"- Loss: alpha * MSE(student, ensemble) + (1 - alpha) * MSE(student, gold), "
            f"alpha = {alpha} (no temperature for scores)"
        )
    return (
        f"- Loss: alpha * T^2 * KL(ensemble_T || student_T) + (1 - alpha) * CE(student, gold), "
        f"T = {temperature}, alpha = {alpha}"
    )


def _example(task) -> str:
    if task.formatter in FORMATTED_EXAMPLES:
        row = {key: [value] for key, value in FORMATTED_EXAMPLES[task.formatter].items()}
        first, second = data.format_inputs(task, row)
        return ", ".join(repr(text[0]) for text in (first, second) if text)
    if len(task.text_fields) == 1:
        return '"A gripping, beautifully acted film."'
    return '"The cat sat on the mat.", "A cat is sitting on a mat."'


def push_to_hub(student_dir: Path, report: ReportSettings) -> str:
    """Upload the student folder (weights, tokenizer, card) to `report.hub_model_id`."""
    from huggingface_hub import create_repo, upload_folder

    manifest.verify(student_dir)  # what training saved, file for file, or DamagedFolder
    repo_id = report.hub_model_id
    create_repo(repo_id, private=report.hub_private, exist_ok=True)
    upload_folder(
        repo_id=repo_id,
        folder_path=str(student_dir),
        commit_message="Upload student distilled with sead",
    )
    log.info("Pushed %s to the Hub as %s", student_dir, repo_id)
    return repo_id
