"""A teacher ready to predict: its files, what identifies them, how to read its columns."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from sead import choices
from sead.inference import count_parameters, default_device
from sead.teachers.spec import TeacherSpec

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
        return model.to(default_device()), self.load_tokenizer()

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
