"""Multiple-choice tasks (SuperGLUE copa and record): one (first, second) text per choice.

A multiple-choice model (`AutoModelForMultipleChoice`, any encoder) reads each choice as a
sequence pair and gives it one logit; the softmax over an example's choices is its prediction.
Logits are `[n_examples, n_choices]`, like a classifier's `[n_examples, n_labels]`, so the
teacher-logit cache, the ensemblers and the KD loss take them unchanged. How each task is
written as choices:

* copa: first = the premise; second = the choice after "because" (question "cause") or "so"
  ("effect"): "The man broke his toe." / "because he dropped a hammer on his foot." The
  question then reads as the running text encoders were pretrained on, with no prompt words to
  learn from 400 training examples (fairseq's RoBERTa COPA recipe writes it the same way).
* record: first = the cloze query with `@placeholder` replaced by the candidate entity; second
  = the passage (its `@highlight` markers as "- " lines). The passage is truncated, never the
  query, and each candidate entity of the passage is a choice (~14 per query, up to dozens).

record's candidate count varies, so its logits are padded to the split's largest count with
`PAD_LOGIT`: a finite value (the cache and ensemblers reject inf) whose softmax weight is 0.
The padding is derived from the data (`n_choices`), never stored beside the logits; soft
targets, the student's logits and its losses are masked with it. Batches group examples of
similar padded size (choices x tokens), so record's many candidates cost little padding.

Gold: copa's `label` is the right choice. record has `answers` (every surface form of the
masked entity) instead; its metric is the best token F1 / exact match of the predicted entity
over them, so its gold is the per-candidate credit table `[n, max_candidates, 2]`
(`metrics.record_credit`), and its training `label` is the first candidate that matches an
answer exactly (-100, ignored by the hard loss, where none does: KD still learns from those).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
)
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from sead import metrics
from sead.tasks import PAD_LOGIT, UNLABELED, TaskSpec  # PAD_LOGIT: the padding choice's logit

log = logging.getLogger(__name__)
# Part of every multiple-choice cache and teacher-store key: bump it when the way choices are
# written changes, so that logits and teachers made from the old texts are never reused.
FORMAT_VERSION = 1
COPA_CONNECTORS = {"cause": "because", "effect": "so"}
TRUNCATION = {"copa": "longest_first", "record": "only_second"}  # record: cut the passage only
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a model takes of a batch
CHOICE_TOKENS = "choice_tokens"  # column: an example's padded size, choices x longest choice
LENGTH = "length"  # column: a row's token count, for length-grouped training batches
_REQUIRED = {
    "copa": ("premise", "choice1", "choice2", "question", "label"),
    "record": ("passage", "query", "entities", "answers"),
}


# --------------------------------------------------------------------------------------------
# Data: checked on load, then written as per-choice text pairs.
# --------------------------------------------------------------------------------------------


def prepare(task: TaskSpec, ds: Dataset, split: str, source: str) -> Dataset:
    """Check a split in the HF `super_glue` schema; record gets its training `label` column."""
    missing = [field for field in _REQUIRED[task.name] if field not in ds.column_names]
    if missing:
        raise ValueError(
            f"Task {task.name!r}, split {split!r} ({source}) has no field(s) {missing}: expected "
            f"the HF super_glue schema {list(_REQUIRED[task.name])}, found {ds.column_names}."
        )
    where = f"Task {task.name!r}, split {split!r} ({source})"
    if task.name == "copa":
        questions = sorted(set(ds["question"][:]) - set(COPA_CONNECTORS))
        if questions:
            raise ValueError(f"{where}: question {questions[:3]} is not 'cause' or 'effect'.")
        bad = sorted(set(ds["label"][:]) - {0, 1})
        if bad:
            raise ValueError(
                f"{where}: label value(s) {bad[:5]} are not a choice (0: choice1, 1: choice2). "
                f"Test splits with hidden labels (-1) cannot be used for training or evaluation."
            )
        return ds
    entities, queries = ds["entities"][:], ds["query"][:]
    empty = [i for i, candidates in enumerate(entities) if not candidates]
    no_slot = [i for i, query in enumerate(queries) if "@placeholder" not in query]
    if empty or no_slot:
        rows = empty or no_slot
        what = "no candidate entities" if empty else "no @placeholder in its query"
        raise ValueError(f"{where}: row(s) {rows[:5]} have {what}.")
    labels = [_first_answer(c, a) for c, a in zip(entities, ds["answers"][:], strict=True)]
    unlabeled = [i for i, label in enumerate(labels) if label == UNLABELED]
    if len(unlabeled) == len(labels):
        raise ValueError(
            f"{where}: no query has a gold answer among its entities ('answers' is empty in "
            f"every row, as in a test split with hidden answers): expected answers to train on "
            f"and to score."
        )
    if unlabeled:
        log.warning(
            "%s: %d of %d queries have no gold answer among their entities (e.g. rows %s): "
            "they are scored, and not trained on.",
            where,
            len(unlabeled),
            len(labels),
            unlabeled[:5],
        )
    if "label" in ds.column_names:
        ds = ds.remove_columns("label")
    return ds.add_column("label", labels)


def _first_answer(candidates: list[str], answers: list[str]) -> int:
    gold = {metrics.normalize_answer(answer) for answer in answers}
    for i, candidate in enumerate(candidates):
        if metrics.normalize_answer(candidate) in gold:
            return i
    return UNLABELED


def choice_texts(task: TaskSpec, batch: dict) -> tuple[list[list[str]], list[list[str]]]:
    """For each example of a `datasets` batch, its choices' first and second texts."""
    if task.name == "copa":
        firsts, seconds = [], []
        for premise, question, *options in zip(
            batch["premise"], batch["question"], batch["choice1"], batch["choice2"], strict=True
        ):
            connector = COPA_CONNECTORS[question]
            firsts.append([premise] * len(options))
            seconds.append([f"{connector} {option[:1].lower()}{option[1:]}" for option in options])
        return firsts, seconds
    if task.name == "record":
        firsts = [
            [query.replace("@placeholder", entity) for entity in entities]
            for query, entities in zip(batch["query"], batch["entities"], strict=True)
        ]
        passages = [passage.replace("@highlight\n", "- ") for passage in batch["passage"]]
        return firsts, [[p] * len(f) for p, f in zip(passages, firsts, strict=True)]
    raise ValueError(f"Task {task.name!r} is not a multiple-choice task.")


def tokenize(ds: Dataset, tokenizer, task: TaskSpec, max_length: int) -> Dataset:
    """Per example: token ids of each choice (`[n_choices][length]`), `n_choices`, and its
    padded size `choice_tokens` (choices x longest choice), by which batches are grouped.

    Each batch is tokenized in one call over all its choices (the fast tokenizer's batch
    path) and split back by example. record's passage, the same for all of a query's
    candidates, is tokenized once per query (`SharedSecondEncoder`), not once per candidate.
    """
    shared = task.name == "record" and SharedSecondEncoder.supports(tokenizer)
    encoder = SharedSecondEncoder(tokenizer, max_length) if shared else None

    def encode(batch):
        firsts, seconds = choice_texts(task, batch)
        counts = [len(f) for f in firsts]
        pairs = [t for f in firsts for t in f], [t for s in seconds for t in s]
        if encoder is not None:
            flat = encoder(*pairs)
        else:
            flat = tokenizer(*pairs, truncation=TRUNCATION[task.name], max_length=max_length)
        bounds = np.cumsum([0, *counts])
        lengths = np.fromiter(map(len, flat["input_ids"]), dtype=np.int64)
        longest = np.maximum.reduceat(lengths, bounds[:-1]) if len(lengths) else lengths
        bounds = bounds.tolist()
        out = {
            key: [values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            for key, values in flat.items()
        }
        return {**out, "n_choices": counts, CHOICE_TOKENS: (longest * counts).tolist()}

    keep = {"label", "idx"}
    drop = [c for c in ds.column_names if c not in keep]
    return ds.map(encode, batched=True, remove_columns=drop, desc="Tokenizing choices")


def _find(sequence: list[int], part: list[int], start: int) -> int:
    for i in range(start, len(sequence) - len(part) + 1):
        if sequence[i : i + len(part)] == part:
            return i
    raise ValueError(
        f"Cannot find the token ids {part} in the tokenizer's pair template {sequence}."
    )


class SharedSecondEncoder:
    """Pair encoding (truncating the second text only) from each distinct text's tokens.

    record pairs every candidate's query with the same ~250-token passage; tokenizing each
    distinct text once and joining token ids with the tokenizer's own special tokens (read from
    its post-processor) gives the ids `tokenizer(first, second, truncation="only_second")`
    gives, at a fraction of the cost. A first text too long to leave room for any of the second
    is cut too (leaving half of `max_length` to the second), with a warning, where the
    tokenizer would raise.
    """

    def __init__(self, tokenizer, max_length: int):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_padding()
        self.backend.no_truncation()
        a, b = (self.backend.encode(t, add_special_tokens=False) for t in ("a", "b"))
        probe = self.backend.post_process(a, b, add_special_tokens=True)
        ids, types = probe.ids, probe.type_ids
        start_a = _find(ids, a.ids, 0)  # the special tokens are what surrounds the two texts
        end_a = start_a + len(a.ids)
        start_b = _find(ids, b.ids, end_a)
        end_b = start_b + len(b.ids)
        self.parts = [(ids[:start_a], types[:start_a]), (ids[end_a:start_b], types[end_a:start_b])]
        self.parts.append((ids[end_b:], types[end_b:]))
        self.types = (types[start_a], types[start_b])
        self.budget = max_length - sum(len(part) for part, _ in self.parts)
        self.max_length = max_length
        self.with_types = "token_type_ids" in tokenizer.model_input_names

    @staticmethod
    def supports(tokenizer) -> bool:
        return bool(getattr(tokenizer, "is_fast", False))

    def __call__(self, firsts: list[str], seconds: list[str]) -> dict[str, list]:
        distinct = list(dict.fromkeys(seconds))
        second_ids = dict(
            zip(distinct, self._ids(distinct), strict=True)
        )  # a passage: tokenized once
        (prefix, prefix_types), (middle, middle_types), (suffix, suffix_types) = self.parts
        out = {"input_ids": [], "attention_mask": []} | (
            {"token_type_ids": []} if self.with_types else {}
        )
        too_long = 0
        for first, second in zip(self._ids(firsts), map(second_ids.get, seconds), strict=True):
            if len(first) > self.budget:
                too_long += 1
                first = first[: self.budget - min(len(second), self.budget // 2)]
            second = second[: self.budget - len(first)]
            out["input_ids"].append(prefix + first + middle + second + suffix)
            out["attention_mask"].append([1] * len(out["input_ids"][-1]))
            if self.with_types:
                first_type, second_type = self.types
                out["token_type_ids"].append(
                    prefix_types + [first_type] * len(first) + middle_types
                    + [second_type] * len(second) + suffix_types
                )  # fmt: skip
        if too_long:
            log.warning(
                "%d record queries are longer than max_length=%d: truncating them too.",
                too_long,
                self.max_length,
            )
        return out

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]


def n_choices(task: TaskSpec, ds: Dataset) -> np.ndarray:
    """Number of choices of each example (copa: 2; record: its candidate entities)."""
    if task.name == "record":
        return np.fromiter(map(len, ds["entities"][:]), dtype=np.int64, count=len(ds))
    return np.full(len(ds), task.num_labels, dtype=np.int64)


def cache_key(task: TaskSpec) -> dict:
    """What else shapes a multiple-choice model's logits: how its choices are written."""
    if not task.is_multiple_choice:
        return {}
    return {"formatting": f"{task.name}-v{FORMAT_VERSION}", "truncation": TRUNCATION[task.name]}


# --------------------------------------------------------------------------------------------
# Gold and scoring.
# --------------------------------------------------------------------------------------------


def label_ids(labels: np.ndarray) -> np.ndarray:
    """Gold choice ids; for a credit table, each example's best-scoring candidate, or
    UNLABELED where no candidate earns credit (a query whose answer is not among them)."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels
    credit = labels[..., 0]
    return np.where(credit.max(-1) > 0, credit.argmax(-1), UNLABELED)


def constant_choice_baseline(task: TaskSpec, gold_: np.ndarray) -> float:
    """The main metric of always picking the same choice position, at its best position.

    copa: the majority choice. record: the best fixed candidate slot (padding earns nothing).
    """
    width = gold_.shape[1] if gold_.ndim > 1 else task.num_labels
    return max(
        metrics.compute(task.name, np.full(len(gold_), position), gold_)[task.main_metric]
        for position in range(width)
    )


# --------------------------------------------------------------------------------------------
# Models, batches and losses.
# --------------------------------------------------------------------------------------------


def training_args(task: TaskSpec, group_by_length: bool) -> dict:
    """The Trainer's sampling settings: with `group_by_length`, its `LengthGroupedSampler`.

    It shuffles the rows (`SeededLengthGroupedSampler`, through `GroupedTrainer`), cuts them
    into mega-batches of up to 50 batches and sorts each by padded
    size, so a batch pads to about its own rows' length instead of the longest of 32 random
    rows (on SST-2 sentences, ~1.06x the real tokens instead of ~3x), while the order of the
    batches stays random. The sizes come from a column (`with_lengths`): tokens, or choices x
    tokens for multiple choice (record: similar candidate counts batch together). Without it,
    the Trainer's own random batches.
    """
    if not group_by_length:
        return {}
    column = CHOICE_TOKENS if task.is_multiple_choice else LENGTH
    return {"train_sampling_strategy": "group_by_length", "length_column_name": column}


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """The Trainer's LengthGroupedSampler, its shuffle drawn from a generator seeded with the
    run seed and the epoch (the Trainer calls `set_epoch`), not from torch's global one.

    So an epoch's batches depend on nothing that ran before it: a run resumed from a checkpoint
    trains on the batches an uninterrupted run trains on, and every DDP rank cuts the same
    batches. (The Trainer's random sampler is seeded per epoch the same way, by accelerate.)
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class GroupedTrainer(Trainer):
    """A Trainer whose `group_by_length` batches come from `SeededLengthGroupedSampler`, with
    the sizes of the dataset's length column (`training_args`, `with_lengths`)."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or dataset is None:
            return super()._get_train_sampler(train_dataset)
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        lengths = dataset[self.args.length_column_name][:]
        seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
        return SeededLengthGroupedSampler(batch, list(lengths), seed)


def with_lengths(encoded: Dataset, task: TaskSpec, group_by_length: bool) -> Dataset:
    """`encoded` with the size column the grouped sampler reads (`training_args`): each row's
    token count, so the sampler need not read every row to find it. Multiple-choice rows carry
    theirs already (`CHOICE_TOKENS`); random batches need none."""
    if not group_by_length or task.is_multiple_choice:
        return encoded
    lengths = np.fromiter(map(len, encoded["input_ids"][:]), np.int64, len(encoded))
    return encoded.add_column(LENGTH, lengths.tolist())


def model_class(task: TaskSpec):
    """The Auto class whose head fits the task: one logit per choice, or one per label."""
    if task.is_multiple_choice:
        return AutoModelForMultipleChoice
    return AutoModelForSequenceClassification


def checkpoint_class(model_dir, trust_remote_code: bool = False):
    """A checkpoint's Auto class, read from its config: multiple choice heads say so there."""
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    return (
        AutoModelForMultipleChoice if is_choice_head(config) else AutoModelForSequenceClassification
    )


def is_choice_head(config) -> bool:
    return any(arch.endswith("ForMultipleChoice") for arch in config.architectures or ())


def padding_mask(counts: np.ndarray, width: int) -> np.ndarray:
    """`[n, width]` True where a choice exists."""
    return np.arange(width)[None, :] < np.asarray(counts)[:, None]


def pad_logits(logits: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
    """Logits widened to `width` columns, padding choices set to `PAD_LOGIT`."""
    out = np.full((len(logits), width), PAD_LOGIT, dtype=np.float32)
    out[:, : logits.shape[1]] = logits
    out[~padding_mask(counts, width)] = PAD_LOGIT
    return out


def mask_targets(targets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Soft targets with no mass on padding choices (whatever an ensembler did to them)."""
    masked = np.where(padding_mask(counts, targets.shape[1]), targets, 0.0)
    return masked / masked.sum(-1, keepdims=True)


def mask_logits(logits: torch.Tensor, choice_mask: torch.Tensor) -> torch.Tensor:
    """A model's logits with padding choices at `PAD_LOGIT` (out of every softmax)."""
    return logits.masked_fill(~choice_mask.bool(), PAD_LOGIT)


class ChoiceCollator:
    """Pads a batch to `[batch, choices, length]`: both the widest example and longest text.

    A padding choice is one pad token with attention on it (a fully masked row can give NaN
    in some attention kernels); `choice_mask` marks the real choices for the losses. Any
    `soft_targets` are cut to the batch's choices.
    """

    def __init__(self, tokenizer):
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            raise ValueError(f"Tokenizer {tokenizer.name_or_path!r} has no pad token.")

    def __call__(self, features: list[dict]) -> dict:
        counts = np.fromiter((len(f["input_ids"]) for f in features), np.int64, len(features))
        width = int(counts.max())
        sequences = [ids for f in features for ids in f["input_ids"]]
        lengths = np.fromiter(map(len, sequences), np.int64, len(sequences))
        # Where each token goes in the [batch * choices, length] grid, computed once per batch.
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        slots = np.repeat(np.arange(len(features)) * width, counts) + np.arange(len(sequences))
        slots -= starts
        rows = np.repeat(slots, lengths)
        columns = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        shape = (len(features) * width, int(lengths.max()))
        arrays = {}
        for key in (k for k in MODEL_INPUTS if k in features[0]):
            grid = np.full(shape, self.pad_id if key == "input_ids" else 0, dtype=np.int64)
            flat = itertools.chain.from_iterable(ids for f in features for ids in f[key])
            grid[rows, columns] = np.fromiter(flat, np.int64, len(rows))
            arrays[key] = grid.reshape(len(features), width, shape[1])
        if "attention_mask" in arrays:
            arrays["attention_mask"][:, :, 0] = 1  # padding choices attend to their pad token
        batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
        batch["choice_mask"] = torch.from_numpy(padding_mask(counts, width))
        if "label" in features[0]:
            batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
        if "soft_targets" in features[0]:
            targets = [f["soft_targets"][:width] for f in features]
            batch["soft_targets"] = torch.tensor(targets, dtype=torch.float32)
        return batch


def hard_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over choices; examples with no gold choice (-100) are left out."""
    valid = labels != UNLABELED
    if not valid.any():
        return logits.sum() * 0.0  # keeps the graph: a batch of ungolded record queries
    return F.cross_entropy(logits[valid].float(), labels[valid].long())


class ChoiceTrainer(GroupedTrainer):
    """Fine-tunes a multiple-choice teacher: cross-entropy over real choices only."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        choice_mask, labels = inputs.pop("choice_mask"), inputs.pop("labels")
        outputs = model(**inputs)
        loss = hard_loss(mask_logits(outputs.logits, choice_mask), labels)
        return (loss, outputs) if return_outputs else loss


class PaddingCollator(DataCollatorWithPadding):
    """Pads a batch to its longest row; the sampler's `LENGTH` column is not a model input."""

    def __call__(self, features: list[dict]) -> dict:
        return super().__call__([{k: v for k, v in f.items() if k != LENGTH} for f in features])


def collator(task: TaskSpec, tokenizer):
    """The padding collator for the task's model inputs (training and inference)."""
    if task.is_multiple_choice:
        return ChoiceCollator(tokenizer)
    return PaddingCollator(tokenizer, return_tensors="pt")
