"""Teachers you can trust: resolve, fine-tune once, align labels, check, cache logits.

A teacher is either a checkpoint already fine-tuned on the task (Hub id or
local path, listed per task under `checkpoints`) or a base model with
`finetune: true`, which sead fine-tunes once with `transformers.Trainer`,
evaluates, and keeps in a store keyed by everything that shapes the result.

Two things make a teacher silently wrong, and both are checked here:
* label order: public checkpoints disagree (an MNLI head may order
  contradiction/neutral/entailment), so every teacher's columns are mapped to
  the task's label order (`align_labels`) before its logits are cached;
* a wrong checkpoint: each teacher must beat a floor on the eval splits
  (`gate`, by default the majority-class baseline) before a student learns from it.

`python -m sead.teachers task=rte 'teachers=[bert,roberta]'` prepares teachers and
their logits and prints the teacher table, without distilling.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoConfig,
    AutoTokenizer,
    Trainer,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from sead import choices, data, metrics
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
STORE_MARKER = "sead_teacher.json"  # written last: a store entry without it is incomplete


# --------------------------------------------------------------------------------------------
# Configuration: `cfg.teachers.<name>` -> TeacherSpec, checked before any work starts.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneArgs:
    """How sead fine-tunes a base model. Defaults are the usual GLUE recipe (BERT paper,
    `run_glue.py`): lr 2e-5, 3 epochs, batch 32, 10% warmup; max length is the teacher's (128).
    """

    lr: float = 2e-5
    epochs: float = 3.0
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    # A fixed random slice of the (already subsampled) train split, for a deliberately weak
    # teacher or data-slice ensembles; null: all of it. `train_subsample_seed` picks the slice.
    max_train_samples: int | None = None
    train_subsample_seed: int = 0
    # How often a resumable Trainer checkpoint is written. It does not change the model, so it
    # is left out of the store key: changing it never retrains a stored teacher.
    save_steps: int = 500

    @classmethod
    def from_config(cls, teacher: str, raw: dict | None) -> FinetuneArgs:
        raw = dict(raw or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(
                f"teachers.{teacher}.finetune_args has unknown key(s) {unknown}: "
                f"expected some of {', '.join(known)}."
            )
        kinds = {f.name: type(f.default) for f in fields(cls) if f.default is not None}
        kinds["max_train_samples"] = int
        try:
            return cls(
                **{
                    name: None if value is None else kinds[name](value)
                    for name, value in raw.items()
                }
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"teachers.{teacher}.finetune_args: {err}") from err

    def store_key(self) -> dict:
        """The settings that shape the fine-tuned model. Not `save_steps`, nor the slice
        settings: the store key holds the training data the slice selects, by content."""
        left_out = {"save_steps", "max_train_samples", "train_subsample_seed"}
        return {k: v for k, v in asdict(self).items() if k not in left_out}


TEACHER_KEYS = {
    "checkpoints": "task -> fine-tuned checkpoint (Hub id or local path)",
    "model": "the base model sead fine-tunes when finetune: true",
    "finetune": "fine-tune `model` on the task (true) or use `checkpoints` (false)",
    "finetune_args": f"fine-tuning settings: {', '.join(f.name for f in fields(FinetuneArgs))}",
    "seeds": "a list of seeds: one teacher <name>_s<seed> per seed (finetune: true only)",
    "tokenizer": "another tokenizer than the checkpoint's own",
    "revision": "Hub branch, tag or commit",
    "max_length": "truncation length, for fine-tuning and inference",
    "batch_size": "inference batch size",
    "trust_remote_code": "allow custom model code from the checkpoint",
    "label_map": "checkpoint label (name or id) -> task label name",
    "gate": "check the teacher against its floor (min_metric) after its eval-split logits",
    "min_metric": "floor on the task's main metric; null: the majority-class baseline",
}


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
    finetune_args: FinetuneArgs = field(default_factory=FinetuneArgs)
    label_map: dict | None = None
    gate: bool = True
    min_metric: float | None = None


def teacher_specs(teachers_cfg: DictConfig, task: TaskSpec) -> list[TeacherSpec]:
    """Turn `cfg.teachers` into specs, failing early on anything missing or misspelt."""
    if not teachers_cfg:
        raise ValueError("No teachers configured: pass e.g. 'teachers=[bert,roberta]'.")
    specs = []
    for name, tcfg in teachers_cfg.items():
        tcfg = OmegaConf.to_container(tcfg, resolve=True)
        unknown = sorted(set(tcfg) - set(TEACHER_KEYS))
        if unknown:
            expected = "\n".join(f"  {key}: {what}" for key, what in TEACHER_KEYS.items())
            raise ValueError(f"teachers.{name} has unknown key(s) {unknown}. Expected:\n{expected}")
        spec = TeacherSpec(
            name=name,
            source=_source(name, tcfg, task),
            finetune=bool(tcfg.get("finetune", False)),
            tokenizer=tcfg.get("tokenizer"),
            max_length=int(tcfg.get("max_length", 128)),
            revision=tcfg.get("revision"),
            trust_remote_code=bool(tcfg.get("trust_remote_code", False)),
            batch_size=int(tcfg.get("batch_size", 128)),
            finetune_args=FinetuneArgs.from_config(name, tcfg.get("finetune_args")),
            label_map=tcfg.get("label_map") or None,
            gate=bool(tcfg.get("gate", True)),
            min_metric=None if tcfg.get("min_metric") is None else float(tcfg["min_metric"]),
        )
        if spec.label_map and spec.finetune:
            raise ValueError(
                f"teachers.{name}.label_map is set, but teachers.{name}.finetune is true: sead "
                f"builds a fine-tuned teacher's head in the task's label order, so there is "
                f"nothing to map. Remove the label_map, or set finetune=false."
            )
        specs += _seed_variants(spec, tcfg.get("seeds"))
    names = [spec.name for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"Teacher name(s) {repeated} appear more than once in {names}.")
    return specs


def _source(name: str, tcfg: dict, task: TaskSpec) -> str:
    if tcfg.get("finetune"):
        if not tcfg.get("model"):
            raise ValueError(
                f"Teacher {name!r} has finetune: true but no 'model' to fine-tune "
                f"(expected teachers.{name}.model=<Hub id or local path>)."
            )
        return str(tcfg["model"])
    checkpoints = tcfg.get("checkpoints") or {}
    if not checkpoints.get(task.name):
        # Public fine-tuned SuperGLUE checkpoints are rare; base models fine-tuned by sead are not.
        hint = (
            f" The configs list no public {task.benchmark} checkpoint fine-tuned on "
            f"{task.name!r} that sead has checked; fine-tuning the base model is the usual route: "
            f"teachers.{name}.finetune=true (model: {tcfg.get('model') or '<set one>'})."
            if task.benchmark == "super_glue"
            else ""
        )
        raise ValueError(
            f"Teacher {name!r} has no checkpoint for task {task.name!r}: it lists "
            f"checkpoints for {sorted(checkpoints) or 'no task'}. Set "
            f"teachers.{name}.checkpoints.{task.name}=<Hub id or local path>, or "
            f"teachers.{name}.finetune=true to fine-tune teachers.{name}.model.{hint}"
        )
    return str(checkpoints[task.name])


def _seed_variants(spec: TeacherSpec, seeds) -> list[TeacherSpec]:
    """`seeds: [1, 2, 3]` on a fine-tuned teacher: a seed ensemble, one teacher per seed."""
    if not seeds:
        return [spec]
    if not spec.finetune:
        raise ValueError(
            f"teachers.{spec.name}.seeds needs finetune: true: a fine-tuned checkpoint has "
            f"no seed to vary. Set teachers.{spec.name}.finetune=true, or remove seeds."
        )
    return [
        replace(
            spec,
            name=f"{spec.name}_s{seed}",
            finetune_args=replace(spec.finetune_args, seed=int(seed)),
        )
        for seed in seeds
    ]


# --------------------------------------------------------------------------------------------
# Where a checkpoint's files are, and what identifies them.
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Label alignment: the checkpoint's output columns, in the task's label order.
# --------------------------------------------------------------------------------------------

# Spellings of GLUE label names seen on public checkpoints (after `_normalise`).
LABEL_SYNONYMS = {
    "entails": "entailment",
    "entailed": "entailment",
    "non_entailment": "not_entailment",
    "no_entailment": "not_entailment",
    "not_entailed": "not_entailment",
    "contradict": "contradiction",
    "contradicts": "contradiction",
    "contradictory": "contradiction",
    "pos": "positive",
    "neg": "negative",
    "grammatical": "acceptable",
    "ungrammatical": "unacceptable",
    "not_acceptable": "unacceptable",
    "paraphrase": "equivalent",
    "not_paraphrase": "not_equivalent",
    "is_duplicate": "duplicate",
}
_GENERIC = re.compile(r"(?:label_)?(\d+)")  # LABEL_0, label-1, "2": names that carry no meaning


def _normalise(name) -> str:
    return re.sub(r"[\s-]+", "_", str(name).strip().lower())


def _canonical(name) -> str:
    normal = _normalise(name)
    return LABEL_SYNONYMS.get(normal, normal)


def align_labels(
    id2label: dict, task: TaskSpec, label_map: dict | None = None, teacher: str = "teacher"
) -> list[int] | None:
    """For each task label in order, the checkpoint column that predicts it.

    Returns None when the columns are already in the task's order. The order is
    read from `label_map` when given (explicit beats implicit), else from the
    checkpoint's label names. Generic names (`LABEL_0`, `LABEL_1`, ...), which
    `transformers` writes when training data had no label names, carry no order:
    `LABEL_i` is taken as task label i, the order of GLUE's own label ids, and
    the sanity gate catches a checkpoint for which that is wrong.
    """
    if task.is_regression:
        return None
    columns = {int(i): str(name) for i, name in id2label.items()}
    if label_map:
        label_of_column = _apply_label_map(columns, task, label_map, teacher)
    elif all(_GENERIC.fullmatch(_normalise(name)) for name in columns.values()):
        label_of_column = {c: int(_GENERIC.fullmatch(_normalise(n))[1]) for c, n in columns.items()}
    else:
        index = {_canonical(name): i for i, name in enumerate(task.labels)}
        label_of_column = {c: index.get(_canonical(name)) for c, name in columns.items()}
    matched = list(label_of_column.values())
    if None in matched or sorted(matched) != list(range(task.num_labels)):
        how = "its label_map" if label_map else "its label names"
        raise ValueError(
            f"Teacher {teacher!r}: cannot match {how} to the task's labels.\n"
            f"  checkpoint labels: {columns}\n"
            + (f"  label_map:         {label_map}\n" if label_map else "")
            + f"  task {task.name!r} labels: {dict(enumerate(task.labels))}\n"
            f"Map every checkpoint label (name or id) to a different task label, e.g. "
            f"teachers.{teacher}.label_map='{_example_map(columns, task)}'."
        )
    alignment = [column for label, column in sorted((v, c) for c, v in label_of_column.items())]
    return None if alignment == list(range(task.num_labels)) else alignment


def _apply_label_map(columns: dict[int, str], task: TaskSpec, label_map: dict, teacher: str):
    """`label_map` keys are checkpoint column ids or names, values task label names (or ids)."""
    by_name = {_normalise(name): c for c, name in columns.items()}
    task_index = {_canonical(name): i for i, name in enumerate(task.labels)}
    label_of_column: dict[int, int | None] = {c: None for c in columns}
    for key, value in label_map.items():
        column = int(key) if str(key).isdigit() else by_name.get(_normalise(key))
        if column not in columns:
            raise ValueError(
                f"teachers.{teacher}.label_map: {key!r} is neither a column id nor a label of "
                f"the checkpoint, whose labels are {columns}."
            )
        label = value if isinstance(value, int) else task_index.get(_canonical(value))
        if label not in range(task.num_labels):
            raise ValueError(
                f"teachers.{teacher}.label_map: {value!r} is not a label of task {task.name!r}: "
                f"expected one of {list(task.labels)}."
            )
        label_of_column[column] = label
    return label_of_column


def _example_map(columns: dict[int, str], task: TaskSpec) -> str:
    pairs = ", ".join(f"{c}: {task.labels[c]}" for c in sorted(columns) if c < task.num_labels)
    return "{" + pairs + "}"


def check_labels(spec: TeacherSpec, task: TaskSpec, explain: bool = False) -> list[int] | None:
    """A checkpoint's head must have one column per task label, in a known order.

    Reads only the checkpoint's config, so it runs with the other input checks.
    Returns the label alignment (None: already in the task's order); `explain`
    logs how the order was found. A teacher that sead fine-tunes gets a head in
    the task's order, so it is not checked.
    """
    if spec.finetune:
        return None
    config = AutoConfig.from_pretrained(
        resolve(spec.source, spec.revision, patterns=("config.json",)),
        trust_remote_code=spec.trust_remote_code,
    )
    if task.is_multiple_choice or choices.is_choice_head(config):
        return _check_choice_head(spec, task, config)
    if config.num_labels != task.num_labels:
        raise ValueError(
            f"Teacher {spec.name!r} ({spec.source}) predicts {config.num_labels} labels, but "
            f"task {task.name!r} has {task.num_labels} ({list(task.labels) or 'regression'})."
        )
    alignment = align_labels(config.id2label, task, spec.label_map, spec.name)
    if explain and not task.is_regression:
        columns = alignment or range(task.num_labels)
        pairs = zip(task.labels, columns, strict=True)
        mapping = ", ".join(f"{config.id2label[column]} -> {label}" for label, column in pairs)
        generic = not spec.label_map and all(
            _GENERIC.fullmatch(_normalise(name)) for name in config.id2label.values()
        )
        note = " (unnamed labels: taken as task label ids; the gate checks them)" if generic else ""
        log.info("Teacher %s labels: %s%s", spec.name, mapping, note)
    return alignment


def _check_choice_head(spec: TeacherSpec, task: TaskSpec, config) -> None:
    """A multiple-choice checkpoint has one logit per choice: no label count or order to align
    (its `num_labels` and `id2label` are unused defaults), and only a multiple-choice task has
    a use for one."""
    architectures = config.architectures or []
    if not task.is_multiple_choice:
        raise ValueError(
            f"Teacher {spec.name!r} ({spec.source}) is a multiple-choice checkpoint "
            f"({architectures}), but task {task.name!r} is not multiple choice."
        )
    if not choices.is_choice_head(config):
        raise ValueError(
            f"Teacher {spec.name!r} ({spec.source}) is a {architectures or 'headless'} "
            f"checkpoint, but task {task.name!r} is multiple choice: it needs a *ForMultipleChoice "
            f"checkpoint, or teachers.{spec.name}.finetune=true to fine-tune one from a base model."
        )
    return None


# --------------------------------------------------------------------------------------------
# A teacher ready to predict.
# --------------------------------------------------------------------------------------------

CHECKPOINT, FINETUNED, STORE = "checkpoint", "finetuned", "store"  # where a teacher came from


@dataclass
class Teacher:
    """A teacher ready to predict: its files, what identifies them, how to read its columns."""

    spec: TeacherSpec
    model_dir: Path
    tokenizer_dir: Path
    model_id: str
    tokenizer_id: str
    origin: str = CHECKPOINT  # CHECKPOINT, FINETUNED (in this run) or STORE (reused)
    # Task label j is the checkpoint's column label_alignment[j]; None: same order.
    label_alignment: list[int] | None = None
    store_record: dict | None = None  # the store's record of a fine-tuned teacher
    params: int | None = None
    inference_seconds: float = 0.0  # forward passes while computing logits in this run
    inference_examples: int = 0

    @property
    def finetuned_now(self) -> bool:
        return self.origin == FINETUNED

    @property
    def examples_per_second(self) -> float | None:
        """Measured inference speed; None when every logit came from the cache."""
        if not self.inference_examples:
            return None
        return self.inference_examples / self.inference_seconds

    def align(self, logits: np.ndarray) -> np.ndarray:
        """Logits with columns in the task's label order."""
        return logits if self.label_alignment is None else logits[:, self.label_alignment]

    def load(self):
        remote = self.spec.trust_remote_code
        auto_class = choices.checkpoint_class(self.model_dir, remote)  # multiple choice or not
        model = auto_class.from_pretrained(self.model_dir, trust_remote_code=remote)
        self.params = count_parameters(model)
        self._time_forward_passes(model)
        return model.to(_device()), self.load_tokenizer()

    def load_tokenizer(self):
        return AutoTokenizer.from_pretrained(
            self.tokenizer_dir, trust_remote_code=self.spec.trust_remote_code
        )

    def _time_forward_passes(self, model) -> None:
        """Measure inference speed where it happens, whoever drives the batches."""
        started = []

        def before(module, args, kwargs):
            started.append(time.perf_counter())

        def after(module, args, kwargs, output):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.inference_seconds += time.perf_counter() - started.pop()
            self.inference_examples += len(kwargs["input_ids"])

        model.register_forward_pre_hook(before, with_kwargs=True)
        model.register_forward_hook(after, with_kwargs=True)


def prepare(
    spec: TeacherSpec,
    task: TaskSpec,
    splits: DatasetDict,
    store_dir,
    file_hashes: FileHashes | None = None,
    cache: SoftLabelCache | None = None,
) -> Teacher:
    """Resolve a teacher's checkpoint and label order, fine-tuning (or reusing) it when asked.

    `file_hashes` memoizes the content hashes that identify local checkpoints;
    `cache` receives a newly fine-tuned teacher's eval-split logits.
    """
    local = resolve(spec.source, spec.revision)
    tok_name = spec.tokenizer or spec.source
    tok_dir = resolve(tok_name, spec.revision, patterns=()) if spec.tokenizer else local
    tok_id = tokenizer_identity(tok_dir, file_hashes)
    if spec.finetune:
        base_id = identity(spec.source, local, file_hashes=file_hashes)
        return finetune(
            spec, task, splits, local, tok_dir, base_id, tok_id, store_dir, cache, file_hashes
        )
    model_id = identity(spec.source, local, file_hashes=file_hashes)
    teacher = Teacher(spec, local, tok_dir, model_id, tok_id)
    teacher.label_alignment = check_labels(spec, task, explain=True)
    return teacher


# --------------------------------------------------------------------------------------------
# The teacher store: fine-tune once, evaluate, keep; every later run and sweep job reuses it.
# --------------------------------------------------------------------------------------------


def teacher_train_split(spec: TeacherSpec, task: TaskSpec, splits: DatasetDict):
    """The examples a teacher is fine-tuned on: the train split, or its own slice of it."""
    args = spec.finetune_args
    train = splits[task.train_split]
    return data.subsample(train, args.max_train_samples, seed=args.train_subsample_seed)


def store_key(spec: TeacherSpec, task: TaskSpec, train, base_id: str, tok_id: str) -> dict:
    """Everything that shapes a fine-tuned teacher (not its name: equal settings, one entry)."""
    return {
        "base": base_id,
        "tokenizer": tok_id,
        "task": task.name,
        "data": data.input_fingerprint(train, task, ["label"]),
        "max_length": spec.max_length,
        "args": spec.finetune_args.store_key(),
        **choices.cache_key(task),  # multiple choice: how the choices are written
    }


def finetune(
    spec: TeacherSpec,
    task: TaskSpec,
    splits: DatasetDict,
    base_dir: Path,
    tok_dir: Path,
    base_id: str,
    tok_id: str,
    store_dir,
    cache: SoftLabelCache | None = None,
    file_hashes: FileHashes | None = None,
) -> Teacher:
    """Fine-tune `base_dir` on the task's train split once, evaluate it, and store it.

    The store entry `<store_dir>/<task>-<fingerprint>/` is keyed by `store_key`;
    its `sead_teacher.json` records the key, settings, train time and the
    teacher's metrics on the eval splits. An interrupted run resumes from its
    last Trainer checkpoint (in `<entry>.work/`); parallel jobs wait on a lock.
    """
    train = teacher_train_split(spec, task, splits)
    key = store_key(spec, task, train, base_id, tok_id)
    store = Path(store_dir)
    store.mkdir(parents=True, exist_ok=True)
    final = store / f"{task.name}-{fingerprint(key)}"
    with _locked(final, f"teacher {spec.name}"):
        if (final / STORE_MARKER).is_file():
            record = json.loads((final / STORE_MARKER).read_text())
            log.info("Teacher %s: reusing fine-tuned %s (%s)", spec.name, final, _scores(record))
            model_id = identity(str(final), final, file_hashes=file_hashes)
            return Teacher(spec, final, final, model_id, tok_id, STORE, store_record=record)
        work = Path(str(final) + ".work")
        last = get_last_checkpoint(work) if work.is_dir() else None
        resumed_from_step = _global_step(last)  # read now: training rotates checkpoints out
        log.info(
            "Teacher %s: fine-tuning %s on %s (%d examples, %s)%s",
            spec.name,
            spec.source,
            task.name,
            len(train),
            spec.finetune_args.store_key(),
            f", resuming from {last}" if last else "",
        )
        started = time.perf_counter()
        trainer = _teacher_trainer(spec, task, train, base_dir, tok_dir, work)
        output = trainer.train(resume_from_checkpoint=last)
        train_seconds = time.perf_counter() - started
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=store))
        try:
            # save_pretrained rather than Trainer.save_model, which adds a pickled training_args.bin
            trainer.model.save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)
            teacher = Teacher(spec, tmp, tmp, identity(str(tmp), tmp), tok_id, FINETUNED)
            # Without the run's cache (a caller that only wants the checkpoint), a throwaway one.
            cache = cache or SoftLabelCache(work / "eval-logits")
            evaluation = _evaluate_into_cache(teacher, task, splits, cache)
            teacher.store_record = {
                "teacher": spec.name,  # the first to ask for it; equal settings share the entry
                "base_model": spec.source,
                "key": key,
                "finetune_args": asdict(spec.finetune_args),
                "train_examples": len(train),
                "train_seconds": round(train_seconds, 1),
                "train_metrics": output.metrics,
                "global_step": trainer.state.global_step,
                "resumed_from_step": resumed_from_step,
                "evaluation": evaluation,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / STORE_MARKER).write_text(json.dumps(teacher.store_record, indent=2))
            if final.exists():
                shutil.rmtree(final)  # an incomplete entry (no marker) from a crashed run
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        teacher.model_dir = teacher.tokenizer_dir = final
        log.info(
            "Teacher %s: fine-tuned in %.0fs, %s; stored in %s",
            spec.name,
            train_seconds,
            _scores(teacher.store_record),
            final,
        )
        return teacher


def _evaluate_into_cache(teacher: Teacher, task: TaskSpec, splits, cache) -> dict:
    """The fine-tuned teacher's metrics on each eval split; its logits land in the cache,
    so the pipeline's own eval-split pass right after is a cache hit, not a second pass."""
    eval_splits = DatasetDict({split: splits[split] for split in task.eval_splits})
    entries = cached_logits(teacher, task, eval_splits, cache)
    scores = evaluate(task, {s: e.logits for s, e in entries.items()}, eval_splits)
    return {
        split: {
            "n_examples": len(ds),
            "data": data.input_fingerprint(ds, task, ["label"]),
            "metrics": scores[split],
        }
        for split, ds in eval_splits.items()
    }


def _scores(record: dict) -> str:
    return "; ".join(
        f"{split} " + " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
        for split, result in record.get("evaluation", {}).items()
    )


def _global_step(checkpoint: str | None) -> int | None:
    if checkpoint is None:
        return None
    return TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json")).global_step


@contextmanager
def _locked(path: Path, what: str):
    """Hold `<path>.lock`; say so when another job holds it, rather than hang silently."""
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Waiting for another job that is preparing %s (%s.lock)", what, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _teacher_trainer(spec, task, train, base_dir, tok_dir, work) -> Trainer:
    args = spec.finetune_args
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=spec.trust_remote_code)
    model = choices.model_class(task).from_pretrained(
        base_dir,
        trust_remote_code=spec.trust_remote_code,
        # A base that already has a head of another size (e.g. MNLI's, to fine-tune on RTE)
        # keeps its encoder and gets a fresh head.
        ignore_mismatched_sizes=True,
        **head_config(task),
    )
    encoded = data.tokenize(train, tokenizer, task, spec.max_length).remove_columns("idx")
    if task.is_multiple_choice:  # record queries with no gold candidate teach a teacher nothing
        encoded = encoded.select(np.flatnonzero(np.asarray(encoded["label"][:]) >= 0))
    training_args = TrainingArguments(
        output_dir=str(work),
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,  # transformers 5: a float < 1 is a ratio of all steps
        seed=args.seed,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=1,
        logging_steps=50,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        # multiple choice: its collator picks the inputs; the sampler reads choice_tokens
        remove_unused_columns=not task.is_multiple_choice,
        **choices.training_args(task),
    )
    trainer_class = choices.ChoiceTrainer if task.is_multiple_choice else Trainer
    return trainer_class(
        model=model,
        args=training_args,
        train_dataset=encoded,
        data_collator=choices.collator(task, tokenizer),
        processing_class=tokenizer,
    )


def head_config(task: TaskSpec) -> dict:
    """Output-layer settings for a model trained on `task` (labels named as the task's)."""
    if task.is_regression:
        return {"num_labels": 1, "problem_type": "regression"}
    if task.is_multiple_choice:
        return {}  # one logit per choice, whatever the count: no labels to name
    return {
        "num_labels": task.num_labels,
        "id2label": dict(enumerate(task.labels)),
        "label2id": {name: i for i, name in enumerate(task.labels)},
        "problem_type": "single_label_classification",
    }


# --------------------------------------------------------------------------------------------
# Logits, through the soft-label cache.
# --------------------------------------------------------------------------------------------


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
            "truncation": task.truncation,
            "truncation_side": tokenizer.truncation_side,
            "task": task.name,
            "split": split,
            "label_alignment": teacher.label_alignment,
            "precision": precision(_device(), cache.autocast),
            "data": data.input_fingerprint(ds, task),
            **choices.cache_key(task),  # multiple choice: formatting version, truncation
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
            return teacher.align(
                predict_logits(
                    model,
                    tokenizer,
                    encoded,
                    teacher.spec.batch_size,
                    f"Teacher {teacher.spec.name} on {split}",
                    autocast=cache.autocast,
                    partial=partial,
                )
            )

        about = {"teacher": teacher.spec.name, "source": teacher.spec.source}
        ids = data.example_ids(ds, task)
        entries[split] = cache.get_or_compute(keys[split], ids, compute, about)
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


# --------------------------------------------------------------------------------------------
# Evaluation and the sanity gate.
# --------------------------------------------------------------------------------------------


def evaluate(task: TaskSpec, logits: dict[str, np.ndarray], splits) -> dict[str, dict]:
    """The task's official metrics for logits of each split in `logits`."""
    return {
        split: metrics.score_split(task, splits[split], hard_predictions(task, scores))
        for split, scores in logits.items()
    }


def hard_predictions(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Label ids (classification) or scores (regression) from a model's logits."""
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def majority_baseline(task: TaskSpec, gold: np.ndarray) -> float:
    """The main metric of always predicting the most frequent gold label.

    Regression (stsb): 0, the correlation of any constant predictor (pearson of a
    constant is undefined; it carries no signal). Ties go to the lower label id.
    """
    if task.is_regression:
        return 0.0
    if task.is_multiple_choice:
        return choices.constant_choice_baseline(task, gold)
    majority = np.bincount(np.asarray(gold, dtype=np.int64), minlength=task.num_labels).argmax()
    with warnings.catch_warnings():  # f1/mcc of a constant predictor warn about zero division
        warnings.simplefilter("ignore")
        scores = metrics.compute(task.name, np.full(len(gold), majority), gold)
    return float(scores[task.main_metric])


class TeacherBelowFloor(ValueError):
    """A teacher too weak to learn from: a wrong checkpoint, label order or fine-tune."""


def gate(
    spec: TeacherSpec, task: TaskSpec, scores: dict[str, dict], splits, enabled: bool = True
) -> dict:
    """Check a teacher's main metric on every eval split against its floor.

    The floor is `min_metric` (score >= floor) when set, else the majority-class
    baseline (score > baseline, strictly). Raises `TeacherBelowFloor` when enabled
    and a split falls short; returns what was checked, for the results.
    """
    metric = task.main_metric
    checked = {}
    for split, split_scores in scores.items():
        baseline = majority_baseline(task, metrics.references(task, splits[split]))
        score = float(split_scores[metric])
        if spec.min_metric is None:
            passed = bool(score > baseline)
        else:
            passed = bool(score >= spec.min_metric)
        checked[split] = {"score": score, "baseline": baseline, "passed": passed}
    floor = "majority baseline" if spec.min_metric is None else spec.min_metric
    record = {"metric": metric, "floor": floor, "enabled": enabled, "splits": checked}
    failed = {split: c for split, c in checked.items() if not c["passed"]}
    if failed and enabled:
        raise TeacherBelowFloor(_gate_message(spec, task, metric, failed))
    if failed:
        log.warning("Teacher %s is below its floor (%s); gate disabled, kept.", spec.name, failed)
    return record


def _gate_message(spec: TeacherSpec, task: TaskSpec, metric: str, failed: dict) -> str:
    name = spec.name
    lines = [f"Teacher {name!r} ({spec.source}) fails the sanity gate on task {task.name!r}:"]
    for split, c in failed.items():
        if spec.min_metric is None:
            floor = f"above the majority-class baseline {c['baseline']:.4f}"
        else:
            floor = f"at least teachers.{name}.min_metric={spec.min_metric} (majority-class "
            floor += f"baseline: {c['baseline']:.4f})"
        lines.append(f"  {split}: {metric}={c['score']:.4f}, needs to be {floor}")
    if spec.finetune:
        lines.append(
            f"It was fine-tuned by sead: try other teachers.{name}.finetune_args "
            f"(lr, epochs, seed) or more training data."
        )
    else:
        lines.append(
            f"A wrong checkpoint, or its labels in another order? Check "
            f"teachers.{name}.checkpoints.{task.name} and teachers.{name}.label_map."
        )
    lines.append(
        f"To use it anyway: teachers.{name}.gate=false (or teacher_gate=false for every "
        f"teacher); another floor: teachers.{name}.min_metric=<value>."
    )
    return "\n".join(lines)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


if __name__ == "__main__":
    import sys

    import hydra

    @hydra.main(config_path="../conf", config_name="config", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        """Prepare the teachers and their logits (no distillation); print the teacher table."""
        from sead import pipeline, report

        inputs = pipeline.check_inputs(cfg)
        cache = SoftLabelCache(cfg.paths.logits_dir)
        _, records = pipeline.teacher_logits(cfg, inputs, cache)
        results = pipeline.teacher_results(inputs, records, cache)
        report.save_run(results, cfg, Path(cfg.paths.output_dir), name="teachers.json")
        print(report.teacher_table(results))

    from sead.run import exit_if_unknown_teachers

    exit_if_unknown_teachers(sys.argv[1:])
    main()
