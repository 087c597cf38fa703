"""A teacher's logits for each split, through the soft-label cache.

Computed only on a cache miss; the key (`cache_keys`) holds everything that determines
the logits and nothing else, so every run and sweep job that changes only the student,
ensembler, temperature or seed reads the same entries.

Asked for representations (`sead.representations`), the entries hold one vector per example
too, from the same forward pass; a teacher read from prediction files has none, and takes
part through its soft labels alone.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import DatasetDict

import sead.teachers.predictions as predictions
from sead import choices, data
from sead.cache import CacheEntry, SoftLabelCache
from sead.inference import default_device, precision, predict
from sead.representations import Outputs, RepresentationSpec, check_task
from sead.tasks import TaskSpec
from sead.teachers.teacher import Teacher


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
            "precision": precision(default_device(), cache.autocast),
            "data": data.input_fingerprint(ds, task),
            **choices.cache_key(task),  # multiple choice: formatting version, truncation
        }
        for split, ds in splits.items()
    }


def cached_logits(
    teacher: Teacher | predictions.PredictionsTeacher,
    task: TaskSpec,
    splits: DatasetDict,
    cache: SoftLabelCache,
    sharded: bool = False,
    computed: dict[str, np.ndarray] | None = None,
    representations: RepresentationSpec | None = None,
) -> dict[str, CacheEntry]:
    """The teacher's logits for every split, computed only on a cache miss (a predictions
    teacher's are read from its files).

    `sharded`: this process computes only its chunk set (`cache.shard`) of each missing entry,
    while other ranks or jobs compute the rest; an entry still missing chunks then comes back
    with `pending` set and no logits.
    `computed`: per split, logits this very model has just produced with the cache's own
    settings (a fine-tuned teacher's last-epoch evaluation: same batches, precision and
    weights). A missing entry is stored from them, through the same checks, instead of
    running the model over the split again. They hold no vectors: with `representations`
    they are not used, and the one pass that fills an entry computes logits and vectors.
    `representations`: entries hold one vector per example too (`entry.representations`,
    float32 `[n, hidden]`), keyed apart from logits-only entries; usually
    `settings.cache.representations`, the configured spec. Refused for a multiple-choice task. A
    predictions teacher's entries come back with `representations=None` (it has no model).
    """
    check_task(task, representations)
    if isinstance(teacher, predictions.PredictionsTeacher):
        return predictions.cached_logits(teacher, task, splits, cache, representations)
    tokenizer = teacher.load_tokenizer()
    keys = cache_keys(teacher, task, splits, tokenizer, cache)
    reusable = {} if representations is not None else computed or {}
    model = None
    entries = {}
    for split, ds in splits.items():

        def compute(partial, ds=ds, split=split) -> Outputs:
            nonlocal model
            if split in reusable:
                return Outputs(teacher.align(reusable[split]))
            if model is None:
                model, _ = teacher.load()
            encoded = data.tokenize(ds, tokenizer, task, teacher.spec.max_length)
            outputs = predict(
                model,
                tokenizer,
                encoded,
                teacher.spec.batch_size,
                f"Teacher {teacher.spec.name} on {split}",
                autocast=cache.autocast,
                partial=partial,
                representations=representations,
            )
            return outputs._replace(logits=teacher.align(outputs.logits))

        about = {"teacher": teacher.spec.name, "source": teacher.spec.source}
        ids = data.example_ids(ds, task)
        if sharded and cache.shard is not None:
            entries[split] = cache.fill_shard(
                keys[split], ids, compute, about, cache.shard, representations
            )
        else:
            entries[split] = cache.get_or_compute(keys[split], ids, compute, about, representations)
    if teacher.params is None:
        teacher.params = _count_params_from_disk(teacher)
    return entries


def _count_params_from_disk(teacher: Teacher) -> int:
    """Parameter count without building the model: safetensors headers, or a `.bin`-only
    checkpoint's tensors loaded onto the meta device (shapes, no data; weights_only)."""
    from safetensors import safe_open

    total = 0
    for path in teacher.model_dir.glob("*.safetensors"):
        with safe_open(str(path), "np") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                total += int(np.prod(f.get_slice(name).get_shape()))
    if total:
        return total
    for path in teacher.model_dir.glob("pytorch_model*.bin"):  # not training_args.bin
        state = torch.load(path, map_location="meta", weights_only=True)
        total += sum(tensor.numel() for tensor in state.values())
    return total
