"""A teacher's configuration: `cfg.teachers.<name>` -> `TeacherSpec`, checked before any work.

Everything a teacher needs from the config is read and checked here, so a missing
checkpoint, a misspelt key or a bad fine-tuning setting stops the run before anything
expensive starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sead import prediction_files
from sead.config import check_keys, number
from sead.tasks import TaskSpec


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
    # Length-grouped batches (`choices.training_args`): ~2x faster on short sentences, but a
    # different order of examples, so part of the store key. false: random batches, as sead
    # trained before this setting existed.
    group_by_length: bool = True
    # How often a resumable Trainer checkpoint is written. It does not change the model, so it
    # is left out of the store key: changing it never retrains a stored teacher.
    save_steps: int = 500

    @classmethod
    def from_config(cls, teacher: str, raw: dict | None) -> FinetuneArgs:
        raw = dict(raw or {})
        check_keys(raw, [f.name for f in fields(cls)], f"teachers.{teacher}.finetune_args")
        kinds = {f.name: type(f.default) for f in fields(cls) if f.default is not None}
        kinds["max_train_samples"] = int
        for name, value in raw.items():
            if kinds.get(name) is bool and not isinstance(value, bool):
                raise ValueError(
                    f"teachers.{teacher}.finetune_args.{name}={value!r}: expected true or false."
                )
        try:
            return cls(
                **{
                    name: None if value is None else kinds[name](value)
                    for name, value in raw.items()
                }
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"teachers.{teacher}.finetune_args: {err}") from err

    def check(self, teacher: str) -> None:
        """Each setting in its range, named, before any teacher is fine-tuned."""
        where = f"teachers.{teacher}.finetune_args"
        for option, allowed in FINETUNE_RANGES.items():
            value = getattr(self, option)
            if value is not None:
                number(value, f"{where}.{option}", **allowed)

    def store_key(self) -> dict:
        """The settings that shape the fine-tuned model. Not `save_steps`, nor the slice
        settings: the store key holds the training data the slice selects, by content."""
        left_out = {"save_steps", "max_train_samples", "train_subsample_seed"}
        return {k: v for k, v in asdict(self).items() if k not in left_out}


FINETUNE_RANGES = {
    "lr": dict(kind=float, low=0, low_open=True),
    "epochs": dict(kind=float, low=0, low_open=True),
    "batch_size": dict(kind=int, low=1),
    "weight_decay": dict(kind=float, low=0),
    "warmup_ratio": dict(kind=float, low=0, high=1, high_open=True),
    "seed": dict(kind=int, low=0, high=2**32 - 1),
    "max_train_samples": dict(kind=int, low=1),
    "train_subsample_seed": dict(kind=int, low=0),
    "save_steps": dict(kind=int, low=1),
}

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
        if "predictions" in tcfg:  # a teacher read from files, not a model
            specs.append(predictions_spec(name, tcfg, task))
            continue
        check_keys(tcfg, TEACHER_KEYS, f"teachers.{name}")
        spec = TeacherSpec(
            name=name,
            source=_source(name, tcfg, task),
            finetune=bool(tcfg.get("finetune", False)),
            tokenizer=tcfg.get("tokenizer"),
            max_length=number(tcfg.get("max_length", 128), f"teachers.{name}.max_length", int, 1),
            revision=tcfg.get("revision"),
            trust_remote_code=bool(tcfg.get("trust_remote_code", False)),
            batch_size=number(tcfg.get("batch_size", 128), f"teachers.{name}.batch_size", int, 1),
            finetune_args=FinetuneArgs.from_config(name, tcfg.get("finetune_args")),
            label_map=tcfg.get("label_map") or None,
            gate=bool(tcfg.get("gate", True)),
            min_metric=None if tcfg.get("min_metric") is None else float(tcfg["min_metric"]),
        )
        spec.finetune_args.check(name)
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


PREDICTION_KEYS = {
    "predictions": "split -> prediction file (.jsonl, .npy, .safetensors)",
    "format": f"what the files hold: {', '.join(prediction_files.FORMATS)} (score: regression)",
    "labels": "the files' columns by label name, matched to the task's labels by name",
    "smoothing": "format label: the one-hot is (1 - smoothing) on the label + smoothing / k",
    "epsilon": f"probabilities are clamped to at least this before the log "
    f"(default {prediction_files.EPSILON:g})",
    "tolerance": f"how far probabilities may sum from 1 (default {prediction_files.TOLERANCE:g})",
    "extra_ids": "error (default) or ignore: rows whose idx the split does not have",
    "gate": "check the teacher against its floor (min_metric) on the eval splits",
    "min_metric": "floor on the task's main metric; null: the majority-class baseline",
}


@dataclass(frozen=True)
class PredictionsSpec:
    """A teacher whose outputs are read from files (`sead.teachers.predictions`): any model,
    run anywhere. There is nothing to fine-tune, tokenize or time."""

    name: str
    files: dict[str, Path]  # split -> prediction file
    format: str
    labels: tuple[str, ...] | None = None  # the files' columns, by name
    smoothing: float = 0.1
    epsilon: float = prediction_files.EPSILON
    tolerance: float = prediction_files.TOLERANCE
    extra_ids: str = "error"
    gate: bool = True
    min_metric: float | None = None
    finetune: bool = False  # what every stage asks of a teacher; never true here
    max_length: int | None = None

    @property
    def source(self) -> str:
        return "predictions"


def predictions_spec(name: str, tcfg: dict, task: TaskSpec) -> PredictionsSpec:
    """`teachers.<name>` with `predictions:`, its settings checked against the task."""
    check_keys(tcfg, PREDICTION_KEYS, f"teachers.{name}")
    where = f"teachers.{name}"
    files = tcfg.get("predictions") or {}
    if not isinstance(files, dict) or not files:
        raise ValueError(
            f"{where}.predictions must map splits to files, e.g. "
            f"{{train: preds/train.jsonl, {task.eval_splits[0]}: preds/validation.jsonl}}."
        )
    kinds = "score" if task.is_regression else "logits, probs, log_probs or label"
    fmt = str(tcfg.get("format") or ("score" if task.is_regression else "logits"))
    if (fmt == "score") != task.is_regression or fmt not in prediction_files.FORMATS:
        raise ValueError(f"{where}.format={fmt!r}: task {task.name!r} takes {kinds}.")
    labels = tcfg.get("labels")
    if task.kind == "classification" and not labels:
        raise ValueError(
            f"{where}.labels is required: the files' columns by label name, e.g. "
            f"labels: {list(task.labels)} (task {task.name!r}'s order)."
        )
    if labels and task.kind != "classification":
        raise ValueError(f"{where}.labels: task {task.name!r} has no label names to match.")
    extra_ids = str(tcfg.get("extra_ids", "error"))
    if extra_ids not in ("error", "ignore"):
        raise ValueError(f"{where}.extra_ids={extra_ids!r}: expected error or ignore.")
    try:
        spec = PredictionsSpec(
            name=name,
            files={str(split): Path(str(path)).expanduser() for split, path in files.items()},
            format=fmt,
            labels=tuple(str(label) for label in labels) if labels else None,
            smoothing=float(tcfg.get("smoothing", 0.1)),
            epsilon=float(tcfg.get("epsilon", prediction_files.EPSILON)),
            tolerance=float(tcfg.get("tolerance", prediction_files.TOLERANCE)),
            extra_ids=extra_ids,
            gate=bool(tcfg.get("gate", True)),
            min_metric=None if tcfg.get("min_metric") is None else float(tcfg["min_metric"]),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err
    if not 0.0 <= spec.smoothing < 1.0 or not 0.0 < spec.epsilon < 1.0:
        raise ValueError(f"{where}: smoothing must be in [0, 1) and epsilon in (0, 1).")
    return spec


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
    option = f"teachers.{spec.name}.seeds"
    if isinstance(seeds, str | int) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"{option}={seeds!r}: expected a list of seeds, e.g. [1, 2, 3].")
    seeds = [number(seed, option, int, 0, 2**32 - 1) for seed in seeds]
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(
            f"{option}={seeds} repeats seed(s) {repeated}: each seed is one teacher "
            f"({spec.name}_s<seed>), and one seed twice is the same teacher twice. List each "
            "seed once."
        )
    return [
        replace(
            spec,
            name=f"{spec.name}_s{seed}",
            finetune_args=replace(spec.finetune_args, seed=seed),
        )
        for seed in seeds
    ]
