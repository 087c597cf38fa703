"""Teachers: resolve a checkpoint, fine-tune it if asked, and cache its logits.

A teacher is either a checkpoint already fine-tuned on the task (Hub id or
local path, listed per task under `checkpoints`) or a base model with
`finetune: true`, which sead fine-tunes once with `transformers.Trainer` and
keeps in a store keyed by everything that shapes the result.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from sead import data
from sead.cache import CacheEntry, FileHashes, SoftLabelCache, fingerprint, hash_files
from sead.inference import count_parameters, precision, predict_logits
from sead.tasks import TaskSpec

log = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("config.json", "*.safetensors", "*.bin")
TOKENIZER_PATTERNS = (
    "tokenizer*.json",
    "vocab*",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "*.model",
)
STORE_MARKER = "sead_teacher.json"


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher for one task, checked against the task before any work starts."""

    name: str
    source: str  # fine-tuned checkpoint, or the base model when `finetune`
    finetune: bool
    tokenizer: str | None
    max_length: int
    revision: str | None
    trust_remote_code: bool
    batch_size: int
    finetune_args: dict = field(default_factory=dict)


def teacher_specs(teachers_cfg: DictConfig, task: TaskSpec) -> list[TeacherSpec]:
    """Turn `cfg.teachers` into specs, failing early on anything missing."""
    if not teachers_cfg:
        raise ValueError("No teachers configured: pass e.g. 'teachers=[bert,roberta]'.")
    specs = []
    for name, tcfg in teachers_cfg.items():
        tcfg = OmegaConf.to_container(tcfg, resolve=True)
        if tcfg.get("finetune"):
            if not tcfg.get("model"):
                raise ValueError(
                    f"Teacher {name!r} has finetune: true but no 'model' to fine-tune "
                    f"(expected teachers.{name}.model=<Hub id or local path>)."
                )
            source = tcfg["model"]
        else:
            checkpoints = tcfg.get("checkpoints") or {}
            source = checkpoints.get(task.name)
            if not source:
                raise ValueError(
                    f"Teacher {name!r} has no checkpoint for task {task.name!r}: it lists "
                    f"checkpoints for {sorted(checkpoints) or 'no task'}. Set "
                    f"teachers.{name}.checkpoints.{task.name}=<Hub id or local path>, or "
                    f"teachers.{name}.finetune=true to fine-tune teachers.{name}.model."
                )
        specs.append(
            TeacherSpec(
                name=name,
                source=str(source),
                finetune=bool(tcfg.get("finetune", False)),
                tokenizer=tcfg.get("tokenizer"),
                max_length=int(tcfg.get("max_length", 128)),
                revision=tcfg.get("revision"),
                trust_remote_code=bool(tcfg.get("trust_remote_code", False)),
                batch_size=int(tcfg.get("batch_size", 128)),
                finetune_args=dict(tcfg.get("finetune_args") or {}),
            )
        )
    return specs


def resolve(name_or_path: str, revision: str | None, patterns=WEIGHT_PATTERNS) -> Path:
    """A local directory holding the model's files (a Hub id is snapshot-downloaded).

    `snapshot_download` resolves a branch or tag `revision` (null: main) to the
    commit it points to now and returns `snapshots/<commit>/`, so `identity`
    names the exact weights even when the branch moves.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists():
        raise FileNotFoundError(f"Model path {name_or_path!r} is not a directory.")
    from huggingface_hub import snapshot_download

    allow = [*patterns, *TOKENIZER_PATTERNS]
    return Path(snapshot_download(name_or_path, revision=revision, allow_patterns=allow))


def identity(
    name_or_path: str,
    local_dir: Path,
    patterns=WEIGHT_PATTERNS,
    file_hashes: FileHashes | None = None,
) -> str:
    """What a checkpoint is: Hub id + resolved commit, or a content hash of local files."""
    commit = local_dir.name
    is_snapshot = len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    if Path(name_or_path).expanduser().is_dir() or not is_snapshot:
        files = [p for pattern in patterns for p in local_dir.glob(pattern) if p.is_file()]
        if not files:
            raise FileNotFoundError(f"No {'/'.join(patterns)} files in {local_dir}.")
        return "sha256:" + hash_files(files, file_hashes)
    return f"{name_or_path}@{commit}"  # snapshot folders are named by commit


def tokenizer_identity(tok_dir: Path, file_hashes: FileHashes | None = None) -> str:
    """Content hash of a tokenizer's files (vocabulary, merges, special tokens, settings)."""
    files = [p for pattern in TOKENIZER_PATTERNS for p in tok_dir.glob(pattern) if p.is_file()]
    if not files:
        raise FileNotFoundError(
            f"No tokenizer files ({', '.join(TOKENIZER_PATTERNS)}) in {tok_dir}: set "
            f"the teacher's 'tokenizer' to a Hub id or folder that has them."
        )
    return "sha256:" + hash_files(files, file_hashes)


def check_label_count(spec: TeacherSpec, task: TaskSpec) -> None:
    """A fine-tuned teacher's head must have one column per task label."""
    if spec.finetune:
        return
    config = AutoConfig.from_pretrained(
        resolve(spec.source, spec.revision, patterns=("config.json",)),
        trust_remote_code=spec.trust_remote_code,
    )
    if config.num_labels != task.num_labels:
        raise ValueError(
            f"Teacher {spec.name!r} ({spec.source}) predicts {config.num_labels} labels, but "
            f"task {task.name!r} has {task.num_labels} ({list(task.labels) or 'regression'})."
        )


@dataclass
class Teacher:
    """A teacher ready to predict: where its files are and what identifies them."""

    spec: TeacherSpec
    model_dir: Path
    tokenizer_dir: Path
    model_id: str
    tokenizer_id: str
    finetuned_now: bool = False
    params: int | None = None
    metrics: dict = field(default_factory=dict)
    label_alignment: list[int] | None = None  # teacher column per task label (issue #3)

    def load(self):
        model = AutoModelForSequenceClassification.from_pretrained(
            self.model_dir, trust_remote_code=self.spec.trust_remote_code
        )
        self.params = count_parameters(model)
        return model.to(_device()), self.load_tokenizer()

    def load_tokenizer(self):
        return AutoTokenizer.from_pretrained(
            self.tokenizer_dir, trust_remote_code=self.spec.trust_remote_code
        )


def prepare(
    spec: TeacherSpec,
    task: TaskSpec,
    splits: DatasetDict,
    store_dir,
    file_hashes: FileHashes | None = None,
) -> Teacher:
    """Resolve a teacher's checkpoint, fine-tuning (or reusing) it when asked.

    `file_hashes` memoizes the content hashes that identify local checkpoints.
    """
    local = resolve(spec.source, spec.revision)
    tok_name = spec.tokenizer or spec.source
    tok_dir = resolve(tok_name, spec.revision, patterns=()) if spec.tokenizer else local
    tok_id = tokenizer_identity(tok_dir, file_hashes)
    if not spec.finetune:
        return Teacher(
            spec, local, tok_dir, identity(spec.source, local, file_hashes=file_hashes), tok_id
        )
    base_id = identity(spec.source, local, file_hashes=file_hashes)
    model_dir, trained = finetune(spec, task, splits, local, tok_dir, base_id, tok_id, store_dir)
    model_id = identity(str(model_dir), model_dir, file_hashes=file_hashes)
    return Teacher(spec, model_dir, model_dir, model_id, tok_id, finetuned_now=trained)


def finetune(
    spec: TeacherSpec,
    task: TaskSpec,
    splits: DatasetDict,
    base_dir: Path,
    tok_dir: Path,
    base_id: str,
    tok_id: str,
    store_dir,
) -> tuple[Path, bool]:
    """Fine-tune `base_dir` on the task's train split, once; return (checkpoint, trained now).

    The store entry is keyed by the base model, tokenizer, task, training data
    and settings, so every later run and sweep job reuses it. An interrupted run
    resumes from its last Trainer checkpoint.
    """
    args = {"max_length": spec.max_length, **spec.finetune_args}
    # A fixed slice of the train split (e.g. a deliberately weak teacher, or data-slice ensembles).
    train = data.subsample(
        splits[task.train_split],
        args.get("max_train_samples"),
        seed=int(args.get("train_subsample_seed", 0)),
    )
    key = {
        "base": base_id,
        "tokenizer": tok_id,
        "task": task.name,
        "data": data.content_fingerprint(train, [*task.text_fields, "label"]),
        "args": args,
    }
    store = Path(store_dir)
    store.mkdir(parents=True, exist_ok=True)
    final = store / f"{spec.name}-{task.name}-{fingerprint(key)}"
    with FileLock(str(final) + ".lock"):
        if (final / STORE_MARKER).is_file():
            log.info("Teacher %s: reusing fine-tuned checkpoint %s", spec.name, final)
            return final, False
        work = Path(str(final) + ".work")
        log.info(
            "Teacher %s: fine-tuning %s on %s (%d examples)",
            spec.name,
            spec.source,
            task.name,
            len(train),
        )
        start = time.perf_counter()
        trainer = _teacher_trainer(spec, task, train, base_dir, tok_dir, work, args)
        trainer.train(resume_from_checkpoint=get_last_checkpoint(work) if work.is_dir() else None)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=store))
        trainer.save_model(tmp)
        record = {"key": key, "train_seconds": time.perf_counter() - start}
        (tmp / STORE_MARKER).write_text(json.dumps(record, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        shutil.rmtree(work, ignore_errors=True)
        return final, True


def _teacher_trainer(spec, task, train, base_dir, tok_dir, work, args) -> Trainer:
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=spec.trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_dir, trust_remote_code=spec.trust_remote_code, **head_config(task)
    )
    encoded = data.tokenize(train, tokenizer, task, args["max_length"]).remove_columns("idx")
    training_args = TrainingArguments(
        output_dir=str(work),
        learning_rate=float(args.get("lr", 2e-5)),
        num_train_epochs=float(args.get("epochs", 3)),
        per_device_train_batch_size=int(args.get("batch_size", 32)),
        weight_decay=float(args.get("weight_decay", 0.01)),
        warmup_steps=float(args.get("warmup_ratio", 0.1)),
        seed=int(args.get("seed", 42)),
        save_strategy="epoch",
        save_total_limit=1,
        logging_steps=50,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
    )
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=encoded,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )


def head_config(task: TaskSpec) -> dict:
    """Output-layer settings for a model trained on `task` (labels named as the task's)."""
    if task.is_regression:
        return {"num_labels": 1, "problem_type": "regression"}
    return {
        "num_labels": task.num_labels,
        "id2label": dict(enumerate(task.labels)),
        "label2id": {name: i for i, name in enumerate(task.labels)},
        "problem_type": "single_label_classification",
    }


def cache_keys(
    teacher: Teacher, task: TaskSpec, splits: DatasetDict, tokenizer, cache: SoftLabelCache
) -> dict[str, dict]:
    """Per split, everything that determines the teacher's logits, and nothing else.

    The student, ensembler, temperature, seed and output dir are absent on
    purpose: every run and sweep job that changes only those reads these entries.
    The teacher's name is absent too (two names for one checkpoint share logits).
    """
    return {
        split: {
            "model": teacher.model_id,
            "tokenizer": teacher.tokenizer_id,
            "max_length": teacher.spec.max_length,
            "truncation": "longest_first",
            "truncation_side": tokenizer.truncation_side,
            "task": task.name,
            "split": split,
            "label_alignment": teacher.label_alignment,
            "precision": precision(_device(), cache.autocast),
            "data": data.content_fingerprint(ds, task.text_fields),
        }
        for split, ds in splits.items()
    }


def cached_logits(
    teacher: Teacher, task: TaskSpec, splits: DatasetDict, cache: SoftLabelCache
) -> dict[str, CacheEntry]:
    """The teacher's logits for every split, computed only on a cache miss."""
    tokenizer = teacher.load_tokenizer()
    keys = cache_keys(teacher, task, splits, tokenizer, cache)
    model = None
    entries = {}
    for split, ds in splits.items():

        def compute(partial, ds=ds, split=split):
            nonlocal model
            if model is None:
                model, _ = teacher.load()
            encoded = data.tokenize(ds, tokenizer, task, teacher.spec.max_length)
            return predict_logits(
                model,
                tokenizer,
                encoded,
                teacher.spec.batch_size,
                f"Teacher {teacher.spec.name} on {split}",
                autocast=cache.autocast,
                partial=partial,
            )

        about = {"teacher": teacher.spec.name, "source": teacher.spec.source}
        entries[split] = cache.get_or_compute(keys[split], np.asarray(ds["idx"]), compute, about)
    if teacher.params is None:
        teacher.params = _count_params_from_disk(teacher)
    return entries


def _count_params_from_disk(teacher: Teacher) -> int:
    """Parameter count without building the model (safetensors headers only)."""
    from safetensors import safe_open

    total = 0
    for path in teacher.model_dir.glob("*.safetensors"):
        with safe_open(str(path), "np") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                total += int(np.prod(f.get_slice(name).get_shape()))
    return total


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
