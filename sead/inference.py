"""Fast batched inference, shared by teachers (filling the cache) and the student.

Examples are sorted by length so each batch pads only to its own longest
example (SST-2 sentences average ~13 tokens: padding them all to 128 would do
~10x the work), and batches of short examples hold more of them, so that every
batch has about as many tokens as the first; they run under
`torch.inference_mode()` (with bf16/fp16 autocast on a GPU when asked), and the
logits are put back in dataset order.

Batches are grouped into chunks with fixed boundaries in that sorted order;
given a `PartialEntry`, each chunk is saved as it completes and reused on a
restart, so a killed run resumes with exactly the batches it would have run.

`predict` can also pool one hidden layer into a vector per example in the same forward pass
(`sead.representations`): a teacher's logits and representations cost one pass.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from sead import choices
from sead.choices import MODEL_INPUTS
from sead.chunks import PartialEntry
from sead.representations import OPTION, Outputs, RepresentationSpec, check_layer

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def precision(device: torch.device, autocast: str | None) -> str:
    """The dtype the forward pass really runs in (autocast is used on GPUs only)."""
    if autocast is None or device.type != "cuda":
        return "float32"
    return str(AUTOCAST_DTYPES[autocast]).removeprefix("torch.")


def default_device() -> torch.device:
    """Where teachers run: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def length_sorted_batches(input_ids: list, batch_size: int) -> list[np.ndarray]:
    """Row numbers, longest first, in batches of equal padded size.

    The first batch holds `batch_size` of the longest examples; each later one
    holds as many shorter examples as fit in the same number of padded tokens.
    Peak memory is that of the first batch, and the many short sentences run
    in large batches (on a CPU, a 128 x 8 token batch wastes much of a matmul).
    """
    lengths = np.fromiter(map(len, input_ids), dtype=np.int64, count=len(input_ids))
    return size_sorted_batches(lengths, batch_size)


def size_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """`length_sorted_batches` for any per-example padded size (tokens, or choices x tokens)."""
    order = np.argsort(-lengths, kind="stable")
    if not len(order):
        return []
    tokens_per_batch = batch_size * max(int(lengths[order[0]]), 1)
    batches, start = [], 0
    while start < len(order):
        size = max(tokens_per_batch // max(int(lengths[order[start]]), 1), 1)
        batches.append(order[start : start + size])
        start += size
    return batches


def _group(batches: list[np.ndarray], min_examples: int) -> list[list[np.ndarray]]:
    """Consecutive batches, grouped into chunks of at least `min_examples` (the last: fewer)."""
    chunks: list[list[np.ndarray]] = []
    size = 0
    for batch in batches:
        if not chunks or size >= min_examples:
            chunks.append([])
            size = 0
        chunks[-1].append(batch)
        size += len(batch)
    return chunks


def predict_logits(
    model,
    tokenizer,
    encoded: Dataset,
    batch_size: int = 128,
    desc: str = "Predicting",
    *,
    autocast: str | None = None,
    partial: PartialEntry | None = None,
) -> np.ndarray:
    """Logits `[len(encoded), num_labels]` in the dataset's order (`predict`'s logits).

    Multiple choice (`encoded` from `choices.tokenize`): `[len(encoded), max choices]`, padding
    choices at `choices.PAD_LOGIT`.
    """
    return predict(
        model, tokenizer, encoded, batch_size, desc, autocast=autocast, partial=partial
    ).logits


def predict(
    model,
    tokenizer,
    encoded: Dataset,
    batch_size: int = 128,
    desc: str = "Predicting",
    *,
    autocast: str | None = None,
    partial: PartialEntry | None = None,
    representations: RepresentationSpec | None = None,
) -> Outputs:
    """Logits in the dataset's order, as `predict_logits`; with `representations`, also one
    vector per example, `[len(encoded), hidden]` float32, from the same forward pass: the
    hidden state of `representations.layer`, pooled over the real tokens (`pool`).

    With `partial`, batches are grouped into chunks of at least `partial.chunk_size`
    examples that are saved as they complete and reused when already there; a chunk holds
    the logits and then the vectors, as the columns of one matrix.
    """
    model.eval()
    device = next(model.parameters()).device
    columns = [c for c in MODEL_INPUTS if c in encoded.column_names]
    features = {c: encoded[c][:] for c in columns}  # plain lists: fast row access
    multiple_choice = "n_choices" in encoded.column_names
    if multiple_choice and representations is not None:
        raise ValueError(
            f"{desc}: {OPTION} are one vector per example; multiple-choice inputs have one "
            "sequence per choice (see sead.representations.check_task)."
        )
    hidden = 0 if representations is None else _hidden_size(model, representations, desc)
    asked = {} if representations is None else {"output_hidden_states": True}
    if multiple_choice:  # [n, choices, length]: sort by choices x length, so batches are dense
        counts = np.asarray(encoded["n_choices"][:], dtype=np.int64)
        sizes = np.asarray(encoded[choices.CHOICE_TOKENS][:], dtype=np.int64)
        batches = size_sorted_batches(sizes, batch_size)
    else:
        batches = length_sorted_batches(features["input_ids"], batch_size)
    chunks = _group(batches, partial.chunk_size if partial else len(encoded))
    if partial is not None:
        layout = [np.asarray([len(b) for b in batches], np.int64), *batches]
        plan = {
            "n_examples": len(encoded),
            "batch_size": batch_size,
            "chunk_size": partial.chunk_size,
            "n_chunks": len(chunks),
            "batches_sha256": hashlib.sha256(b"".join(a.tobytes() for a in layout)).hexdigest(),
        }
        if representations is not None:  # a plan without vectors is what it always was
            plan["representations"] = {**representations.key(), "width": hidden}
        partial.start(plan)
    if multiple_choice:
        collate = choices.ChoiceCollator(tokenizer)
        width = int(counts.max(initial=1))
    else:
        collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        width = model.config.num_labels
    chunk_rows = [np.concatenate(chunk) for chunk in chunks]
    todo = partial.chunks_to_fill(len(chunks)) if partial else range(len(chunks))
    # a shard fills only its own chunks: the other rows stay NaN (and are never cached)
    fill = np.nan if partial and partial.shard else 0
    out = np.full((len(encoded), width + hidden), fill, np.float32)  # logits | vectors
    started = time.perf_counter()
    with (
        torch.inference_mode(),
        _autocast(device, autocast),
        tqdm(
            total=sum(len(chunk_rows[i]) for i in todo), desc=desc, unit="ex", unit_scale=True
        ) as bar,
    ):

        def compute(index: int) -> np.ndarray:
            if index not in todo:  # taken from another rank (`Shard.team`)
                bar.total += len(chunk_rows[index])
            parts = []
            for batch_rows in chunks[index]:
                batch = collate([{c: features[c][i] for c in columns} for i in batch_rows])
                batch.pop("choice_mask", None)
                batch = {k: v.to(device) for k, v in batch.items()}
                output = model(**batch, **asked)
                batch_logits = output.logits.float().cpu().numpy()
                if multiple_choice:  # each batch as wide as its widest example
                    batch_logits = choices.pad_logits(batch_logits, counts[batch_rows], width)
                if representations is not None:  # the columns after the logits
                    states = output.hidden_states[representations.layer]
                    mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
                    vectors = pool(states, mask, representations.pooling).cpu().numpy()
                    batch_logits = np.hstack([batch_logits, vectors])
                parts.append(batch_logits)
                bar.update(len(batch_rows))
            return np.concatenate(parts)

        ran = 0  # examples run through the model here (not read back from saved chunks)
        if partial is None:
            for index in todo:
                out[chunk_rows[index]] = compute(index)
                ran += len(chunk_rows[index])
        else:  # saved chunks are read back; the others are claimed, computed and saved
            for index, logits, computed in partial.fill(chunk_rows, compute):
                out[chunk_rows[index]] = logits
                ran += len(chunk_rows[index]) if computed else 0
                if not computed:
                    bar.update(len(chunk_rows[index]))
    seconds = time.perf_counter() - started
    shard = f" (shard {partial.shard})" if partial and partial.shard else ""
    log.info(
        "%s%s: %d examples in %.1fs (%.0f ex/s)",
        desc,
        shard,
        ran,
        seconds,
        ran / max(seconds, 1e-9),
    )
    logits = np.ascontiguousarray(out[:, :width])
    return Outputs(logits, np.ascontiguousarray(out[:, width:]) if hidden else None)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per row of `hidden` [batch, tokens, dim]: the mean over the real tokens
    (`attention_mask` 1; padding never counts), or the first real token's (`cls`; with left
    padding too), in float32."""
    hidden = hidden.float()
    if pooling == "cls":
        first = attention_mask.int().argmax(dim=1)  # the first 1 of each row
        return hidden[torch.arange(len(hidden), device=hidden.device), first]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def _hidden_size(model, representations: RepresentationSpec, desc: str) -> int:
    """The vectors' width; the layer checked against the model's, before any batch runs."""
    check_layer(representations.layer, model.config, desc)
    return int(model.config.hidden_size)


def _autocast(device: torch.device, autocast: str | None):
    if precision(device, autocast) == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[autocast])


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with `threads` intra-op threads (None or 0: the current count), then
    give the process back the count it had, whatever the block raised."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class ForwardTimer:
    """A model's forward passes timed where they happen, whoever drives the batches: the
    seconds they took and the examples they saw, added up until `detach()`. A teacher is
    timed so while it labels; the student so when it is compared with them (`sead.speed`)."""

    def __init__(self, model):
        self.seconds, self.examples, started = 0.0, 0, []

        def before(module, args, kwargs):
            started.append(time.perf_counter())

        def after(module, args, kwargs, output):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - started.pop()
            self.examples += len(kwargs["input_ids"])

        self._hooks = [
            model.register_forward_pre_hook(before, with_kwargs=True),
            model.register_forward_hook(after, with_kwargs=True),
        ]

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
