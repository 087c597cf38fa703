"""Distil the student: a `transformers.Trainer` whose loss mixes soft and hard labels.

loss = alpha * T^2 * KL(ensemble_T || student_T) + (1 - alpha) * CE(student, gold)

(regression: alpha * MSE(student, ensemble score) + (1 - alpha) * MSE(student, gold)).
Multiple choice (copa, record) is the same over each example's choice softmax, with padding
choices masked out of both terms (see sead/choices.py).
The T^2 factor keeps the soft term's gradients on the same scale as the hard
term's when T changes (Hinton et al., 2015).

Transfer-set rows (`sead.transfer`) have no gold label (label -100): their loss is the
soft term alone (alpha = 1). A batch's loss is the mean over its examples of each
example's own loss, so an unlabelled example weighs as much as a labelled one, and a
batch of labelled examples gets exactly the formula above.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    EarlyStoppingCallback,
    PreTrainedModel,
    SchedulerType,
    TrainingArguments,
)
from transformers.utils import ModelOutput

from sead import choices, data, manifest, models, resume
from sead.checkpoints import (
    check_checkpoint,
    check_max_length,
    check_tokenizer,
    from_pretrained_with_new_head,
)
from sead.config import setting
from sead.files import disk_space
from sead.inference import length_sorted_batches, pool
from sead.tasks import UNLABELED, TaskSpec, head_config
from sead.tracking import EpochReport, eval_scorer, optimiser_args

log = logging.getLogger(__name__)


def row_losses(
    student_logits: torch.Tensor,
    soft_targets: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    regression: bool = False,
    choice_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per example: the soft term (T^2 KL, or the squared error to the ensemble's score), the
    hard term (cross-entropy or squared error to the gold label; 0 without one), and whether
    the example has a gold label.

    `choice_mask` (multiple choice): `[batch, choices]`, False for padding choices; a record
    query with no gold candidate has label -100 and, like a transfer row, has no hard term.
    """
    labelled = labels != UNLABELED
    if regression:
        prediction = student_logits.squeeze(-1).float()
        soft = (prediction - soft_targets.squeeze(-1).float()) ** 2
        hard = torch.where(labelled, prediction - labels.float(), 0.0) ** 2
    else:
        if choice_mask is not None:
            student_logits = choices.mask_logits(student_logits.float(), choice_mask)
        log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
        kl = F.kl_div(log_student, soft_targets.float(), reduction="none").sum(-1)
        soft = kl * temperature**2
        hard = F.cross_entropy(
            student_logits.float(), labels.long(), ignore_index=UNLABELED, reduction="none"
        )
    return soft, hard, labelled


def soft_loss(
    student_logits: np.ndarray, soft_targets: np.ndarray, temperature: float, task: TaskSpec
) -> float:
    """The soft objective on whole rows, averaged over them (T^2 KL to the ensemble's soft
    labels, or the squared error to its score): a stage's held-out soft-label score."""
    logits = torch.as_tensor(np.asarray(student_logits, dtype=np.float32))
    unlabelled = torch.full((len(logits),), UNLABELED)
    soft, _, _ = row_losses(
        logits, torch.as_tensor(soft_targets), unlabelled, temperature, task.is_regression
    )
    return float(soft.mean())


def kd_loss(
    student_logits: torch.Tensor,
    soft_targets: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    regression: bool = False,
    choice_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The single-pass distillation loss for one batch (see the module docstring)."""
    soft, hard, labelled = row_losses(
        student_logits, soft_targets, labels, temperature, regression, choice_mask
    )
    # Per example: alpha * soft + (1 - alpha) * hard, or soft alone without a gold label.
    soft_weight = torch.where(labelled, alpha, 1.0)
    return (soft_weight * soft + (1 - soft_weight) * hard).mean()


def objective_loss(
    weights: dict[str, float],
    soft: torch.Tensor,
    hard: torch.Tensor,
    labelled: torch.Tensor,
    representations: torch.Tensor | None = None,
) -> torch.Tensor:
    """A stage's loss: each objective's mean over the examples that have it, weighted.

    soft: every example; hard: the examples with a gold label (none in a batch: 0);
    representations: the batch's representation loss (`representation_loss`).
    """
    total = soft.new_zeros(())
    if weights.get("soft"):
        total = total + weights["soft"] * soft.mean()
    if weights.get("hard"):
        gold = hard[labelled].mean() if labelled.any() else hard.sum() * 0.0
        total = total + weights["hard"] * gold
    if weights.get("representations"):
        total = total + weights["representations"] * representations
    return total


def representation_loss(
    projected: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    weights: dict[str, float],
    kind: str,
) -> torch.Tensor:
    """The student's pooled vectors, through each teacher's projection (`projected`), against
    that teacher's vectors: mean squared error (`mse`) or 1 - cosine similarity (`cosine`),
    averaged over the teachers with the ensemble's weights."""
    total = next(iter(projected.values())).new_zeros((), dtype=torch.float32)
    for name, target in targets.items():
        predicted = projected[name].float()
        if kind == "mse":
            loss = F.mse_loss(predicted, target.float())
        else:
            loss = (1 - F.cosine_similarity(predicted, target.float(), dim=-1)).mean()
        total = total + weights[name] * loss
    return total / sum(weights[name] for name in targets)


class WithProjections(torch.nn.Module):
    """The student and, while it learns the teachers' representations, one linear map per
    teacher from its pooled vector to that teacher's width (384 -> 768 for MPNet). The Trainer
    trains and checkpoints both; only `student` is ever saved as the model.

    The projections run inside `forward` (outputs `projected`, per teacher): DDP marks a
    parameter ready only when it is used in the wrapped module's forward."""

    def __init__(self, student, widths: dict[str, int], pooling: str):
        super().__init__()
        self.student = student
        self.config = student.config  # what the Trainer reads of a model
        self.pooling = pooling  # as the teachers' vectors were pooled: mean | cls
        hidden = int(student.config.hidden_size)
        self.projections = torch.nn.ModuleDict(
            {name: torch.nn.Linear(hidden, width) for name, width in widths.items()}
        )

    def forward(self, **inputs) -> ProjectedOutput:
        outputs = self.student(**inputs, output_hidden_states=True)
        pooled = pool(outputs.hidden_states[-1], inputs["attention_mask"], self.pooling)
        projected = {name: layer(pooled) for name, layer in self.projections.items()}
        return ProjectedOutput(outputs.logits, outputs.hidden_states, projected)


@dataclass
class ProjectedOutput(ModelOutput):
    """`WithProjections`' outputs: a ModelOutput of its own fields, which DDP can rebuild."""

    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    projected: dict[str, torch.Tensor] | None = None


@dataclass
class Representations:
    """The teachers' vectors of every training row (`[rows, sum of widths]`, looked up by the
    batch's `row` column) and how to weigh each teacher."""

    vectors: torch.Tensor
    widths: dict[str, int]  # teacher -> width, in the order of `vectors`' columns
    weights: dict[str, float]  # teacher -> weight (the ensemble's, or equal)
    kind: str  # mse | cosine
    pooling: str  # how the student's vector is pooled: mean | cls (as the teachers')

    def targets(self, rows: torch.Tensor, device) -> dict[str, torch.Tensor]:
        parts = torch.split(self.vectors[rows.cpu()], list(self.widths.values()), dim=-1)
        return {name: part.to(device) for name, part in zip(self.widths, parts, strict=True)}

    def loss(self, projected: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """The batch's representation loss: the student's projected vectors (`WithProjections`'
        `projected`) against rows `rows`' teacher vectors."""
        targets = self.targets(rows, next(iter(projected.values())).device)
        return representation_loss(projected, targets, self.weights, self.kind)


class DistillationTrainer(choices.GroupedTrainer):
    """A Trainer whose batches carry `soft_targets` beside the gold `labels`.

    `objectives` None: the single-pass loss (`kd_loss`, train.alpha). Else a stage's weights
    of `representations`, `soft` and `hard` (`objective_loss`); with representations, the
    model is a `WithProjections` and batches carry each row's number (`row`). `heldout`: a
    function scoring the model on the held-out slice, run where the Trainer evaluates (each
    epoch), so its early stopping and best-epoch restore choose on it.
    """

    def __init__(
        self,
        *args,
        temperature: float,
        alpha: float,
        regression: bool,
        objectives: dict[str, float] | None = None,
        representations: Representations | None = None,
        heldout=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.temperature = temperature
        self.alpha = alpha
        self.regression = regression
        self.objectives = objectives
        self.representations = representations
        self.heldout = heldout

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        soft_targets = inputs.pop("soft_targets")
        labels = inputs.pop("labels")
        choice_mask = inputs.pop("choice_mask", None)  # multiple choice only
        rows = inputs.pop("row", None)  # representation stages only
        outputs = model(**inputs)
        if self.objectives is None:
            loss = kd_loss(
                outputs.logits,
                soft_targets,
                labels,
                self.temperature,
                self.alpha,
                self.regression,
                choice_mask=choice_mask,
            )
        else:
            soft, hard, labelled = row_losses(
                outputs.logits, soft_targets, labels, self.temperature, self.regression,
                choice_mask,
            )  # fmt: skip
            learned = None
            if self.objectives.get("representations"):
                learned = self.representations.loss(outputs.projected, rows)
            loss = objective_loss(self.objectives, soft, hard, labelled, learned)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Student training loss is {loss.item()} at step {self.state.global_step + 1} "
                f"(train.lr={self.args.learning_rate}, train.temperature={self.temperature}, "
                f"train.alpha={self.alpha}): stopped; nothing was saved."
            )
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """The held-out score (`heldout`) where the Trainer evaluates; else the Trainer's own."""
        if self.heldout is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in self.heldout().items()}
        self.log(metrics)
        handler = self.callback_handler
        self.control = handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


@dataclass(frozen=True)
class StudentSettings:
    """`cfg.student` (conf/student/<name>.yaml): the checkpoint the student starts from."""

    model: str  # Hub id or local path
    tokenizer: str | None  # null: the model's own
    revision: str | None  # Hub branch, tag or commit; null: main
    max_length: int = setting(low=1)
    trust_remote_code: bool
    keep_layers: tuple[int, ...] | None  # build the student from these encoder layers only


def load_student(student: StudentSettings, task: TaskSpec):
    """The student model (with a fresh head for the task) and its own tokenizer.

    With `student.keep_layers` the student is the checkpoint cut down to those encoder layers
    (see `keep_encoder_layers`), for when no small pretrained checkpoint of the family exists.
    """
    remote = student.trust_remote_code
    model = from_pretrained_with_new_head(
        choices.model_class(task),
        student.model,
        "Student",
        revision=student.revision,
        trust_remote_code=remote,
        **head_config(task),
    )
    if student.keep_layers is not None:
        model = keep_encoder_layers(model, list(student.keep_layers), source=student.model)
    tokenizer = AutoTokenizer.from_pretrained(
        student.tokenizer or student.model, revision=student.revision, trust_remote_code=remote
    )
    return model, tokenizer


def check_student(student: StudentSettings) -> list[str]:
    """Fail before the teachers run when the student's checkpoint cannot be read, or when
    `student.keep_layers` cannot apply to it; returns its parameter names (which a recipe
    stage's `freeze` prefixes must match).

    Reads only the checkpoint's config, and finds the layer list on a weightless (meta) copy.
    """
    remote = student.trust_remote_code
    source = student.model
    models.require_installed(source, "student.model")  # installed by `make models`
    check_checkpoint(source, "student.model", student.revision, tokenizer=not student.tokenizer)
    if student.tokenizer:
        check_tokenizer(student.tokenizer, "student.tokenizer")
    try:
        config = AutoConfig.from_pretrained(
            source, revision=student.revision, trust_remote_code=remote
        )
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0]
        raise (OSError if isinstance(err, OSError) else ValueError)(
            f"student.model={source!r} cannot be loaded: {reason} Expected a local checkpoint "
            "folder or a Hub id reachable from here (offline: a local path, e.g. "
            "student=minilm_l2 or student.model=<folder>)."
        ) from err
    check_max_length(config, student.max_length, "student.max_length", source)
    if student.keep_layers is not None:
        _check_keep_layers(list(student.keep_layers), config.num_hidden_layers, source)
        config.num_hidden_layers = len(student.keep_layers)  # the cut-down student's names
    with torch.device("meta"):
        skeleton = AutoModelForSequenceClassification.from_config(config, trust_remote_code=remote)
    if student.keep_layers is not None:
        _layer_list(skeleton, source)
    return [name for name, _ in skeleton.named_parameters()]


def keep_encoder_layers(model: PreTrainedModel, keep_layers: list[int], source: str = "the model"):
    """A copy of `model` with only the encoder layers `keep_layers` (DistilBERT-style init).

    Embeddings, pooler and head are copied as they are; layer i of the new encoder is layer
    `keep_layers[i]` of the old one (DistilBERT, Sanh et al. 2019, kept every other layer).
    The new model is built from its own config (`num_hidden_layers` set), so it is an
    ordinary model of its family: `save_pretrained` / `from_pretrained` round-trip it.
    """
    n_layers = model.config.num_hidden_layers
    _check_keep_layers(keep_layers, n_layers, source)
    layer_list = _layer_list(model, source)
    prefix = layer_list + "."
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep_layers)
    smaller = type(model)(config)
    source_state = model.state_dict()

    def source_key(key: str) -> str:
        if not key.startswith(prefix):
            return key
        index, rest = key[len(prefix) :].split(".", 1)
        return f"{prefix}{keep_layers[int(index)]}.{rest}"

    smaller.load_state_dict({key: source_state[source_key(key)] for key in smaller.state_dict()})
    log.info("Student: layers %s of %s's %d (%s)", keep_layers, source, n_layers, layer_list)
    return smaller


def _layer_list(model, source: str) -> str:
    """The name of the model's encoder layer list (`bert.encoder.layer` and the like)."""
    n_layers = model.config.num_hidden_layers
    layer_lists = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList)
        and len(module) == n_layers
        and name.rsplit(".", 1)[-1] in ("layer", "layers")
    ]
    if len(layer_lists) != 1:
        raise ValueError(
            f"student.keep_layers: cannot find the encoder layer list of {source} "
            f"({type(model).__name__}): expected exactly one ModuleList named 'layer' or "
            f"'layers' with num_hidden_layers={n_layers} entries, found {layer_lists or 'none'}. "
            "Use a smaller checkpoint instead, or set student.keep_layers=null."
        )
    return layer_lists[0]


def _check_keep_layers(keep_layers: list, n_layers: int, source: str) -> None:
    problem = None
    if not keep_layers:
        problem = "is empty"
    elif not all(isinstance(i, int) and not isinstance(i, bool) for i in keep_layers):
        problem = "must hold integer layer indices"
    elif any(not 0 <= i < n_layers for i in keep_layers):
        problem = f"has indices outside 0..{n_layers - 1}"
    elif len(set(keep_layers)) != len(keep_layers):
        problem = "repeats a layer"
    elif keep_layers != sorted(keep_layers):
        problem = "must be in increasing order (layers keep their order)"
    if problem:
        raise ValueError(
            f"student.keep_layers={keep_layers} {problem}: {source} has {n_layers} layers "
            f"(num_hidden_layers); give distinct indices in 0..{n_layers - 1}, e.g. "
            f"[0, {n_layers - 1}]."
        )


def student_trainer(
    model,
    tokenizer,
    train: Dataset,
    soft_targets: np.ndarray,
    *,
    task: TaskSpec,
    settings: TrainSettings,
    max_length: int,
    output_dir: Path,
    seed: int,
    callbacks: list | None = None,
    eval_splits: DatasetDict | None = None,
    objectives: dict[str, float] | None = None,
    representations: Representations | None = None,
    row_numbers: np.ndarray | None = None,
    heldout=None,
    heldout_rows: Dataset | None = None,
    patience: int | None = None,
) -> DistillationTrainer:
    """The Trainer that distils `model` on `train` with the ensemble's `soft_targets` (rows in
    `train` order), ready to train: see `distill` and `sead.recipe`.

    It checkpoints at each epoch's end in `output_dir` (a run resumes from there). With
    `objectives`, a recipe stage's loss (`objective_loss`); with `representations`, the
    teachers' vectors of rows `row_numbers`. With `heldout` (a function scoring the model on
    the held-out slice, `heldout_rows`) each epoch is scored on it, training stops after
    `patience` epochs without a better score, and the best epoch's weights are restored.
    """
    group_by_length = settings.group_by_length
    encoded = data.tokenize(train, tokenizer, task, max_length).remove_columns("idx")
    encoded = encoded.add_column("soft_targets", soft_targets.astype(np.float32).tolist())
    encoded = choices.with_lengths(encoded, task, group_by_length)
    if row_numbers is not None:  # where each row's teacher vectors are
        encoded = encoded.add_column("row", np.asarray(row_numbers).tolist())
    selecting = heldout is not None
    args = TrainingArguments(
        output_dir=str(output_dir),
        **optimiser_args(settings),
        max_steps=settings.max_steps,
        lr_scheduler_type=settings.lr_scheduler,
        seed=seed,
        save_strategy="epoch",  # resume points; a run killed mid-epoch redoes that epoch
        save_total_limit=None,  # ResumePoints rotates, once a new checkpoint is complete
        eval_strategy="epoch" if selecting else "no",
        load_best_model_at_end=selecting,
        # a resumed stage goes on counting its epochs without a better score where it left off
        restore_callback_states_from_checkpoint=selecting,
        metric_for_best_model="heldout" if selecting else None,
        greater_is_better=True,
        logging_steps=settings.logging_steps,
        report_to=report_to(settings),
        remove_unused_columns=False,  # keep soft_targets for compute_loss (and the lengths)
        dataloader_num_workers=settings.dataloader_num_workers,
        bf16=settings.bf16,
        fp16=settings.fp16,
        use_cpu=not torch.cuda.is_available(),
        ddp_timeout=settings.ddp_timeout,
        **choices.training_args(task, group_by_length),
    )
    scorer = None
    if eval_splits:
        scorer = eval_scorer(task, eval_splits, tokenizer, max_length, settings.eval_batch_size)
    stopping = [EarlyStoppingCallback(early_stopping_patience=patience)] if selecting else []
    trainer = DistillationTrainer(
        model=model,
        args=args,
        train_dataset=encoded,
        # the Trainer evaluates this split; `heldout` scores it (DistillationTrainer.evaluate)
        eval_dataset=heldout_rows if selecting else None,
        data_collator=choices.collator(task, tokenizer),
        processing_class=tokenizer,
        temperature=settings.temperature,
        alpha=settings.alpha,
        regression=task.is_regression,
        objectives=objectives,
        representations=representations,
        heldout=heldout,
        callbacks=[
            EpochReport("Student", scorer),
            resume.ResumePoints(keep=1),  # the newest complete checkpoint (and the best one)
            *stopping,
            *(callbacks or []),
        ],
    )
    return trainer


def heldout_representation_loss(
    model: WithProjections, tokenizer, encoded: Dataset, reps: Representations, batch_size: int
) -> float:
    """The representation loss of `model` on the held-out rows `encoded` (in `reps`' row
    order), averaged over rows, in batches of `batch_size` (train.eval_batch_size): a
    representation stage's held-out score."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    columns = [c for c in choices.MODEL_INPUTS if c in encoded.column_names]
    features = {c: encoded[c][:] for c in columns}
    collate = choices.PaddingCollator(tokenizer, return_tensors="pt")  # no multiple choice here
    total = 0.0
    with torch.inference_mode():
        for rows in length_sorted_batches(features["input_ids"], batch_size):
            batch = collate([{c: features[c][i] for c in columns} for i in rows])
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = reps.loss(model(**batch).projected, torch.from_numpy(rows))
            total += float(loss) * len(rows)
    model.train(was_training)
    return total / max(len(encoded), 1)


def distill(model, tokenizer, train: Dataset, soft_targets: np.ndarray, **settings):
    """Train `model` on `train` with the ensemble's `soft_targets` (rows in `train` order).

    `settings` are `student_trainer`'s: `task`, `settings` (`TrainSettings`), `max_length` (the
    student's truncation length), `output_dir`, `seed`, and optionally `callbacks` and
    `eval_splits`. Each epoch logs its loss and, with `eval_splits`, the student's metrics on
    them; the last epoch's are the final model's (`tracking.final_evaluations`). Under
    `torchrun` / `accelerate launch` the Trainer trains with DDP on every rank.
    """
    trainer = student_trainer(model, tokenizer, train, soft_targets, **settings)
    trainer.train()
    check_finite(trainer.model, "The student")
    return trainer


def save_student(model, tokenizer, folder: Path) -> None:
    """The trained student (weights, config, tokenizer) saved whole or not at all, with a
    manifest of its files' sizes and hashes that export and every reuse verify.

    Written under a temporary name and renamed (`manifest.publish`): a kill or a full disk
    while saving leaves no `student/`, never a half-written one. One process calls this
    (rank 0: under DDP every rank holds the same weights).
    """

    def save(tmp) -> None:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    with disk_space(
        folder.parent, "saving the student", resume.weight_bytes(model), "hydra.run.dir"
    ):
        manifest.publish(folder, save)


@dataclass(frozen=True)
class TrainSettings:
    """`cfg.train` (conf/train/default.yaml): the student's optimisation and distillation.

    Every setting is checked before the teachers run: a zero temperature or an alpha above 1
    would otherwise train to the end and save a broken student.
    """

    lr: float = setting(low=0, low_open=True)
    epochs: float = setting(low=0)  # 0 only with max_steps >= 1 (checked below)
    max_steps: int = setting(low=-1)  # > 0 overrides epochs
    batch_size: int = setting(low=1)
    group_by_length: bool  # batches of similar length (HF LengthGroupedSampler)
    eval_batch_size: int = setting(low=1)
    weight_decay: float = setting(low=0)
    warmup_ratio: float = setting(low=0, high=1, high_open=True)  # >= 1 would be steps
    lr_scheduler: str
    # Below 0.1 the soft targets are one-hot to float precision for any logit gap above 2
    # (e^-20) and the T^2 factor shrinks the KD term 100-fold: hard labels with a vanishing
    # weight, and T -> 0 overflows (z / T). Above 100 KD has long become logit matching (its
    # high-T limit), and p_student - p_teacher, of order 1 / T, drowns in float32 rounding.
    temperature: float = setting(low=0.1, high=100)
    alpha: float = setting(low=0, high=1)
    logging_steps: int = setting(low=1)
    report_to: str | tuple[str, ...]  # the Trainer's trackers: none, one name, or a list
    bf16: bool
    fp16: bool
    dataloader_num_workers: int = setting(low=0)
    ddp_timeout: int = setting(low=1)  # seconds ranks wait for each other under torchrun

    def __post_init__(self):
        if self.max_steps == 0:
            raise ValueError("train.max_steps=0 is not allowed: expected -1 (use epochs) or >= 1.")
        if self.max_steps < 0 and self.epochs <= 0:
            raise ValueError(
                f"train.epochs={self.epochs:g} is not allowed: expected a number in (0, inf) "
                "(or set train.max_steps >= 1)."
            )
        if self.bf16 and self.fp16:
            raise ValueError(
                "train.bf16=true and train.fp16=true: expected at most one mixed precision."
            )
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(
                f"train.lr_scheduler={self.lr_scheduler!r} is not allowed: expected one of "
                f"{list(SCHEDULERS)}."
            )


# The Trainer's schedulers that run on their own: the others need an evaluation strategy
# (reduce_lr_on_plateau, greedy) or lr_scheduler_kwargs (cosine_with_min_lr and its warmup
# twin, warmup_stable_decay), which the student's Trainer does not take.
SCHEDULERS = tuple(
    s.value
    for s in SchedulerType
    if s.value not in {"reduce_lr_on_plateau", "greedy", "cosine_with_min_lr",
                       "cosine_warmup_with_min_lr", "warmup_stable_decay"}
)  # fmt: skip


def check_finite(model, what: str) -> None:
    """Refuse to save (or report on) weights with NaN or inf in them."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(
            f"{what} has non-finite weights in {len(bad)} tensor(s), e.g. {bad[0]}: not saved."
        )


def report_to(train: TrainSettings) -> list[str]:
    """`train.report_to` as the Trainer takes it (`none`, one name, or a list of them).

    Checked against the installed trackers, so that a missing package stops the run before
    the teachers, not when the Trainer starts.
    """
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    value = train.report_to
    names = [value] if isinstance(value, str) else list(value)
    names = [name for name in names if name != "none"]
    unknown = [name for name in names if name != "all" and name not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise ValueError(
            f"train.report_to: {unknown} is not a tracker the Trainer knows: expected none, "
            f"all or any of {sorted(INTEGRATION_TO_CALLBACK)}."
        )
    available = get_available_reporting_integrations()
    missing = [name for name in names if name != "all" and name not in available]
    if missing:
        raise ValueError(
            f"train.report_to={names} but the package of {missing} is not installed; "
            f"installed trackers: {available or 'none'}. metrics.jsonl is written in any case."
        )
    return names


def check_precision(train: TrainSettings) -> None:
    """Say, before any work, that `train.fp16` does nothing without a GPU: the Trainer then
    trains the student in float32 (bf16 is the CPU's mixed precision)."""
    if train.fp16 and not torch.cuda.is_available():
        log.warning(
            "train.fp16=true needs a CUDA GPU; on this CPU the student trains in float32 "
            "(train.bf16=true is mixed precision on a CPU)."
        )
