"""A teacher ready to predict: its files, what identifies them, how to read its columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from sead import choices
from sead.inference import ForwardTimer, count_parameters, default_device
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
    # one per load: its forward passes while computing logits in this run
    timers: list[ForwardTimer] = field(default_factory=list, repr=False)

    @property
    def finetuned_now(self) -> bool:
        return self.origin == FINETUNED

    @property
    def examples_per_second(self) -> float | None:
        """Measured inference speed; None when every logit came from the cache."""
        examples = sum(timer.examples for timer in self.timers)
        return examples / sum(timer.seconds for timer in self.timers) if examples else None

    def align(self, logits: np.ndarray) -> np.ndarray:
        """Logits with columns in the task's label order."""
        return logits if self.label_alignment is None else logits[:, self.label_alignment]

    def load(self):
        remote = self.spec.trust_remote_code
        auto_class = choices.checkpoint_class(self.model_dir, remote)  # multiple choice or not
        model = auto_class.from_pretrained(self.model_dir, trust_remote_code=remote)
        self.params = count_parameters(model)
        self.timers.append(ForwardTimer(model))  # inference speed, measured where it happens
        return model.to(default_device()), self.load_tokenizer()

    def load_tokenizer(self):
        return AutoTokenizer.from_pretrained(
            self.tokenizer_dir, trust_remote_code=self.spec.trust_remote_code
        )
