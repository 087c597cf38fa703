"""A teacher's configuration: `cfg.teachers.<name>` -> `TeacherSpec`, checked before any work.

Everything a teacher needs from the config is read and checked here, so a missing
checkpoint, a misspelt key or a bad fine-tuning setting stops the run before anything
expensive starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sead import prediction_files
from sead.config import CONF_DIR, build, container, setting
from sead.tasks import TaskSpec

TEACHER_DEFAULTS = "teacher_defaults.yaml"  # in conf/: what a teacher file may leave out


@dataclass(frozen=True)
class FinetuneArgs:
    """How sead fine-tunes a base model (`teachers.<name>.finetune_args`): each teacher's
    config sets its recipe (the GLUE one: lr 2e-5, 3 epochs, batch 32, 10% warmup); the
    max length is the teacher's."""

    lr: float = setting(low=0, low_open=True)
    epochs: float = setting(low=0, low_open=True)
    batch_size: int = setting(low=1)
    weight_decay: float = setting(low=0)
    warmup_ratio: float = setting(low=0, high=1, high_open=True)
    seed: int = setting(low=0, high=2**32 - 1)
    # Length-grouped batches (`choices.training_args`): ~2x faster on short sentences, but a
    # different order of examples, so part of the store key. false: random batches, as sead
    # trained before this setting existed.
    group_by_length: bool
    # A fixed random slice of the (already subsampled) train split, for a deliberately weak
    # teacher or data-slice ensembles; null: all of it. `train_subsample_seed` picks the slice.
    max_train_samples: int | None = setting(low=1, default=None)
    train_subsample_seed: int | None = setting(low=0, default=None)
    # How often a resumable Trainer checkpoint is written (no config sets it). It does not
    # change the model, so it is left out of the store key: changing it never retrains a
    # stored teacher.
    save_steps: int = setting(low=1, default=500)

    @classmethod
    def from_config(cls, teacher: str, raw) -> FinetuneArgs:
        return build(cls, raw, f"teachers.{teacher}.finetune_args")

    def store_key(self) -> dict:
        """The settings that shape the fine-tuned model. Not `save_steps`, nor the slice
        settings: the store key holds the training data the slice selects, by content."""
        left_out = {"save_steps", "max_train_samples", "train_subsample_seed"}
        return {k: v for k, v in asdict(self).items() if k not in left_out}


@dataclass(frozen=True)
class TeacherSettings:
    """`teachers.<name>` for a model teacher (conf/teachers/<name>.yaml), as written there."""

    finetune: bool = setting(help="fine-tune `model` on the task (true) or use `checkpoints`")
    tokenizer: str | None = setting(help="another tokenizer than the checkpoint's own")
    revision: str | None = setting(help="the checkpoint's Hub branch, tag or commit")
    max_length: int = setting(low=1, help="truncation length, for fine-tuning and inference")
    batch_size: int = setting(low=1, help="inference batch size")
    trust_remote_code: bool = setting(help="allow custom model code from the checkpoint")
    gate: bool = setting(help="check the teacher against its floor after its eval logits")
    min_metric: float | None = setting(  # every main metric lies in [-1, 1] (not percent)
        low=-1, high=1, help="floor on the main metric; null: best constant prediction"
    )
    finetune_args: FinetuneArgs = setting(help="fine-tuning settings: lr, epochs, batch_size...")
    # Only some teachers need these:
    model: str | None = setting(default=None, help="the base model sead fine-tunes")
    checkpoints: dict[str, str] | None = setting(
        default=None, help="task -> fine-tuned checkpoint (Hub id or local path)"
    )
    label_map: dict | None = setting(
        default=None, help="checkpoint label (name or id) -> task label name"
    )
    seeds: tuple[int, ...] | None = setting(
        default=None, help="one teacher <name>_s<seed> per seed (finetune: true only)"
    )


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
    finetune_args: FinetuneArgs | None = None  # what sead fine-tunes with (finetune: true)
    label_map: dict | None = None
    gate: bool = True
    min_metric: float | None = None


def with_defaults(raw: dict) -> dict:
    """A model teacher's settings over conf/teacher_defaults.yaml: a file of one's own needs
    only what differs (`checkpoints` or `model`), `finetune_args` key by key."""
    defaults = OmegaConf.load(CONF_DIR / TEACHER_DEFAULTS)
    return OmegaConf.to_container(OmegaConf.merge(defaults, raw))


def teacher_specs(teachers_cfg: DictConfig, task: TaskSpec) -> list[TeacherSpec]:
    """Turn `cfg.teachers` into specs, failing early on anything missing or misspelt."""
    teachers = container(teachers_cfg, "teachers")
    if not teachers:
        raise ValueError("No teachers configured: pass e.g. 'teachers=[bert,roberta]'.")
    specs = []
    for name, raw in teachers.items():
        raw = container(raw, f"teachers.{name}")
        if "predictions" in raw:  # a teacher read from files, not a model
            specs.append(predictions_spec(name, raw, task))
            continue
        settings = build(TeacherSettings, with_defaults(raw), f"teachers.{name}")
        source, label_map = _source(name, settings, task), settings.label_map or None
        spec = TeacherSpec(
            name, source, **_shared(settings, TeacherSpec) | {"label_map": label_map}
        )
        args = spec.finetune_args
        if args.max_train_samples is not None and args.train_subsample_seed is None:
            raise ValueError(
                f"teachers.{name}.finetune_args.max_train_samples={args.max_train_samples} "
                f"needs ++teachers.{name}.finetune_args.train_subsample_seed=<seed>: which slice."
            )
        if spec.label_map and spec.finetune:
            raise ValueError(
                f"teachers.{name}.label_map is set, but teachers.{name}.finetune is true: sead "
                f"builds a fine-tuned teacher's head in the task's label order, so there is "
                f"nothing to map. Remove the label_map, or set finetune=false."
            )
        specs += _seed_variants(spec, settings.seeds)
    names = [spec.name for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"Teacher name(s) {repeated} appear more than once in {names}.")
    return specs


@dataclass(frozen=True)
class PredictionsSettings:
    """`teachers.<name>` for a teacher read from files (conf/teachers/files.yaml).

    Only `predictions` and `format` are required (`labels` too, for classification, as the
    check below says); the reading knobs after it are optional: no shipped config sets them,
    and their defaults are `sead.prediction_files`' own.
    """

    predictions: dict[str, str] = setting(help="split -> file (.jsonl, .npy, .safetensors)")
    format: str | None = setting(
        help=f"{', '.join(prediction_files.FORMATS)}; null: logits (score for regression)"
    )
    labels: tuple[str, ...] | None = setting(
        default=None, help="the files' columns by label name (required for classification)"
    )
    smoothing: float = setting(low=0, high=1, high_open=True, default=0.1)
    epsilon: float = setting(
        low=0, high=1, low_open=True, high_open=True, default=prediction_files.EPSILON
    )
    tolerance: float = setting(low=0, low_open=True, default=prediction_files.TOLERANCE)
    extra_ids: str = setting(default="error", help="error or ignore: ids the split lacks")
    gate: bool = setting(default=True, help="check the teacher against its floor")
    min_metric: float | None = setting(
        low=-1, high=1, default=None, help="floor; null: best constant prediction"
    )


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


def predictions_spec(name: str, raw: dict, task: TaskSpec) -> PredictionsSpec:
    """`teachers.<name>` with `predictions:`, its settings checked against the task."""
    where = f"teachers.{name}"
    settings = build(PredictionsSettings, raw, where)
    if not settings.predictions:
        raise ValueError(
            f"{where}.predictions must map splits to files, e.g. "
            f"{{train: preds/train.jsonl, {task.eval_splits[0]}: preds/validation.jsonl}}."
        )
    kinds = "score" if task.is_regression else "logits, probs, log_probs or label"
    fmt = settings.format or ("score" if task.is_regression else "logits")
    if (fmt == "score") != task.is_regression or fmt not in prediction_files.FORMATS:
        raise ValueError(f"{where}.format={fmt!r}: task {task.name!r} takes {kinds}.")
    if task.kind == "classification" and not settings.labels:
        raise ValueError(
            f"{where}.labels is required: the files' columns by label name, e.g. "
            f"labels: {list(task.labels)} (task {task.name!r}'s order)."
        )
    if settings.labels and task.kind != "classification":
        raise ValueError(f"{where}.labels: task {task.name!r} has no label names to match.")
    if settings.extra_ids not in ("error", "ignore"):
        raise ValueError(f"{where}.extra_ids={settings.extra_ids!r}: expected error or ignore.")
    files = {split: Path(path).expanduser() for split, path in settings.predictions.items()}
    shared = _shared(settings, PredictionsSpec) | {"format": fmt, "labels": settings.labels}
    return PredictionsSpec(name, files, **shared)


def _shared(settings, spec_class) -> dict:
    """The settings a spec takes as they are: the fields both classes declare."""
    names = {f.name for f in fields(spec_class)} & {f.name for f in fields(settings)}
    return {name: getattr(settings, name) for name in names}


def _source(name: str, settings: TeacherSettings, task: TaskSpec) -> str:
    if settings.finetune:
        if not settings.model:
            raise ValueError(
                f"Teacher {name!r} has finetune: true but no 'model' to fine-tune "
                f"(expected teachers.{name}.model=<Hub id or local path>)."
            )
        return settings.model
    checkpoints = settings.checkpoints or {}
    if not checkpoints.get(task.name):
        # Public fine-tuned SuperGLUE checkpoints are rare; base models fine-tuned by sead are not.
        hint = (
            f" The configs list no public {task.benchmark} checkpoint fine-tuned on "
            f"{task.name!r} that sead has checked; fine-tuning the base model is the usual route: "
            f"teachers.{name}.finetune=true (model: {settings.model or '<set one>'})."
            if task.benchmark == "super_glue"
            else ""
        )
        raise ValueError(
            f"Teacher {name!r} has no checkpoint for task {task.name!r}: it lists "
            f"checkpoints for {sorted(checkpoints) or 'no task'}. Set "
            f"++teachers.{name}.checkpoints.{task.name}=<Hub id or local path>, or "
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
    option, seeds = f"teachers.{spec.name}.seeds", list(seeds)  # integers (the builder's)
    if not all(0 <= seed < 2**32 for seed in seeds):
        raise ValueError(f"{option}={seeds}: expected seeds in [0, 2**32 - 1].")
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
