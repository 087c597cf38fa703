"""Distil the student: a `transformers.Trainer` whose loss mixes soft and hard labels.

loss = alpha * T^2 * KL(ensemble_T || student_T) + (1 - alpha) * CE(student, gold)

(regression: alpha * MSE(student, ensemble score) + (1 - alpha) * MSE(student, gold)).
Multiple choice (copa, record) is the same over each example's choice softmax, with padding
choices masked out of both terms (see sead/choices.py).
The T^2 factor keeps the soft term's gradients on the same scale as the hard
term's when T changes (Hinton et al., 2015).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import (
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)

from sead import choices, data
from sead.tasks import TaskSpec
from sead.teachers import head_config

log = logging.getLogger(__name__)


def kd_loss(
    student_logits: torch.Tensor,
    soft_targets: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    regression: bool = False,
    choice_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The distillation loss for one batch (see the module docstring).

    `choice_mask` (multiple choice): `[batch, choices]`, False for padding choices.
    """
    if regression:
        prediction = student_logits.squeeze(-1).float()
        soft = F.mse_loss(prediction, soft_targets.squeeze(-1).float())
        hard = F.mse_loss(prediction, labels.float())
        return alpha * soft + (1 - alpha) * hard
    if choice_mask is not None:
        student_logits = choices.mask_logits(student_logits.float(), choice_mask)
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    soft = F.kl_div(log_student, soft_targets.float(), reduction="batchmean") * temperature**2
    if choice_mask is not None:
        hard = choices.hard_loss(student_logits, labels)  # record: some queries have no gold
    else:
        hard = F.cross_entropy(student_logits.float(), labels.long())
    return alpha * soft + (1 - alpha) * hard


class DistillationTrainer(Trainer):
    """A Trainer whose batches carry `soft_targets` beside the gold `labels`."""

    def __init__(self, *args, temperature: float, alpha: float, regression: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature = temperature
        self.alpha = alpha
        self.regression = regression

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        soft_targets = inputs.pop("soft_targets")
        labels = inputs.pop("labels")
        choice_mask = inputs.pop("choice_mask", None)  # multiple choice only
        outputs = model(**inputs)
        loss = kd_loss(
            outputs.logits,
            soft_targets,
            labels,
            self.temperature,
            self.alpha,
            self.regression,
            choice_mask=choice_mask,
        )
        return (loss, outputs) if return_outputs else loss


def load_student(student_cfg, task: TaskSpec):
    """The student model (with a fresh head for the task) and its own tokenizer."""
    remote = bool(student_cfg.get("trust_remote_code", False))
    revision = student_cfg.get("revision")
    model = choices.model_class(task).from_pretrained(
        student_cfg.model, revision=revision, trust_remote_code=remote, **head_config(task)
    )
    tokenizer = AutoTokenizer.from_pretrained(
        student_cfg.get("tokenizer") or student_cfg.model,
        revision=revision,
        trust_remote_code=remote,
    )
    return model, tokenizer


def distill(
    model,
    tokenizer,
    train: Dataset,
    soft_targets: np.ndarray,
    task: TaskSpec,
    train_cfg,
    max_length: int,
    output_dir: Path,
    seed: int,
    callbacks: list | None = None,
) -> DistillationTrainer:
    """Train `model` on `train` with the ensemble's `soft_targets` (rows in `train` order).

    Under `torchrun` / `accelerate launch` the Trainer trains with DDP on every rank.
    """
    encoded = data.tokenize(train, tokenizer, task, max_length).remove_columns("idx")
    encoded = encoded.add_column("soft_targets", soft_targets.astype(np.float32).tolist())
    args = TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=float(train_cfg.lr),
        num_train_epochs=float(train_cfg.epochs),
        max_steps=int(train_cfg.get("max_steps", -1)),
        per_device_train_batch_size=int(train_cfg.batch_size),
        weight_decay=float(train_cfg.weight_decay),
        warmup_steps=float(train_cfg.warmup_ratio),
        lr_scheduler_type=train_cfg.get("lr_scheduler", "linear"),
        seed=seed,
        save_strategy="no",
        logging_steps=int(train_cfg.get("logging_steps", 50)),
        report_to=report_to(train_cfg),
        remove_unused_columns=False,  # keep soft_targets for compute_loss
        dataloader_num_workers=int(train_cfg.get("dataloader_num_workers", 0)),
        bf16=bool(train_cfg.get("bf16", False)),
        fp16=bool(train_cfg.get("fp16", False)),
        use_cpu=not torch.cuda.is_available(),
        ddp_timeout=int(train_cfg.get("ddp_timeout", 1800)),
        **choices.training_args(task),
    )
    trainer = DistillationTrainer(
        model=model,
        args=args,
        train_dataset=encoded,
        data_collator=choices.collator(task, tokenizer),
        processing_class=tokenizer,
        temperature=float(train_cfg.temperature),
        alpha=float(train_cfg.alpha),
        regression=task.is_regression,
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


def report_to(train_cfg) -> list[str]:
    """`train.report_to` as the Trainer takes it (`none`, one name, or a list of them).

    Checked against the installed trackers, so that a missing package stops the run before
    the teachers, not when the Trainer starts.
    """
    from transformers.integrations import get_available_reporting_integrations

    value = train_cfg.get("report_to") or "none"
    names = [value] if isinstance(value, str) else [str(v) for v in value]
    names = [] if names in (["none"], []) else names
    available = get_available_reporting_integrations()
    missing = [name for name in names if name != "all" and name not in available]
    if missing:
        raise ValueError(
            f"train.report_to={names} but {missing} is not installed "
            f"(pip install {' '.join(missing)}); installed trackers: {available or 'none'}. "
            "metrics.jsonl is written in any case."
        )
    return names
