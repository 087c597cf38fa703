"""Teacher representations: one vector per example, stored beside its logits in the cache.

A representation is a teacher's hidden state at one layer, pooled over the example's tokens
into one vector (`mean` over the real tokens, or the first token's, `cls`). Sentence-level
vectors need no token alignment, so a student can learn from teachers with different
tokenizers (MPNet beside MiniLM) through one projection per teacher.

They are computed in the same forward pass as the logits (`sead.inference.predict`), and
stored in the same cache entry (`sead.cache`), with the same guarantees: the entry's key gains
the layer, pooling and storage dtype (`RepresentationSpec.key`), so an entry with vectors and
one without never collide, and entries without vectors keep the fingerprints they always had.

What to store is `cache.representations` (conf/cache/default.yaml); whether to compute them at
all is the caller's choice (a recipe computes them only when a stage learns from them), so
every function takes `representations: RepresentationSpec | None`.

Multiple-choice tasks (copa, record) are refused: their examples are several
(question, choice) sequences, and one vector per example would have to pool across choices
of varying number, which means nothing to a student; see `check_task`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import numpy as np

OPTION = "cache.representations"
STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass(frozen=True)
class RepresentationSpec:
    """Which vectors a teacher's cache entries hold: `cache.representations`, a field of
    `sead.cache.CacheSettings` that `sead.config.build` checks (each key named
    `cache.representations.<key>`); its values live in conf/cache/default.yaml only.

    layer:   index into the model's hidden states: 0 is the embeddings, 1..n the layers' outputs,
             -1 the last layer (negative counts from the end, as in Python); checked against the
             model before any batch runs (`sead.inference.predict`).
    pooling: mean  the average over real tokens (the attention mask: padding never counts);
             cls   the first real token ([CLS] for BERT, <s> for RoBERTa and MPNet).
    dtype:   how vectors are stored: float16 (half the size, ~1e-3 relative rounding) or
             float32. In memory they are always float32.
    """

    layer: int
    pooling: Literal["mean", "cls"]
    dtype: Literal["float16", "float32"]

    def key(self) -> dict:
        """What the vectors add to a cache entry's key (and to its fill's plan)."""
        return {"layer": self.layer, "pooling": self.pooling, "storage_dtype": self.dtype}


def check_layer(layer: int, config, desc: str) -> None:
    """`cache.representations.layer` is one of the model's hidden states (from its config
    alone: checked before any teacher is fine-tuned or run)."""
    n_layers = getattr(config, "num_hidden_layers", None)
    if n_layers is not None and not -(n_layers + 1) <= layer <= n_layers:
        raise ValueError(
            f"{desc}: {OPTION}.layer={layer}, but the model has {n_layers} layers: hidden "
            f"states 0 (embeddings) to {n_layers}, or -1 to -{n_layers + 1} from the end (-1: "
            "the last layer)."
        )


class Outputs(NamedTuple):
    """One pass of a model over a split: logits, and the pooled vectors when asked for."""

    logits: np.ndarray  # [n_examples, n_labels]
    representations: np.ndarray | None = None  # [n_examples, hidden] float32

    @classmethod
    def of(cls, computed, representations: RepresentationSpec | None) -> Outputs:
        """A compute's result (logits, or Outputs) as float32, contiguous `Outputs`, with
        vectors only when asked for."""
        if not isinstance(computed, Outputs):
            computed = cls(computed)
        vectors = computed.representations if representations is not None else None
        return cls(np.ascontiguousarray(computed.logits, np.float32), float32(vectors))


def float32(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else np.ascontiguousarray(array, dtype=np.float32)


def check_task(task, representations: RepresentationSpec | None) -> None:
    """Refuse representations for a multiple-choice task, before any work."""
    if representations is not None and task.is_multiple_choice:
        raise ValueError(
            f"Task {task.name!r} is multiple choice: teacher representations are one vector per "
            f"example, and its examples are several (question, choice) sequences, so no vector "
            f"stands for one ({OPTION} is for classification and regression tasks). Use a "
            "recipe whose stages learn from soft and hard labels only."
        )


def spec_of(key: dict) -> RepresentationSpec | None:
    """The spec an entry's key was made with (None: an entry with logits only)."""
    record = key.get("representations")
    if record is None:
        return None
    return RepresentationSpec(record["layer"], record["pooling"], record["storage_dtype"])


def check_computed(vectors: np.ndarray | None, n_examples: int, where: str, dtype: str) -> None:
    """Never cache vectors every later run would silently inherit as garbage: the right
    shape, every value finite as stored in `dtype`."""
    if vectors is None:
        raise ValueError(f"{where}: representations were asked for, and none were computed.")
    if vectors.ndim != 2 or vectors.shape[0] != n_examples:
        raise ValueError(
            f"{where}: representations of shape {list(vectors.shape)} for {n_examples} "
            f"examples; expected [{n_examples}, hidden]."
        )
    bad, overflow = non_finite(vectors, dtype)
    if bad:
        raise ValueError(
            f"{where}: representations have non-finite values for {bad} examples; not cached."
            + (f" {overflow} Store them as float32: {OPTION}.dtype=float32." if overflow else "")
        )


def non_finite(values: np.ndarray, dtype: str) -> tuple[int, str]:
    """(examples with a value that is not finite as stored in `dtype`, and, when storing made
    them so, a sentence saying it): float16 turns anything beyond 65,504 into inf."""
    with np.errstate(over="ignore"):  # the overflow is what this counts
        bad = int((~np.isfinite(values.astype(STORAGE_DTYPES[dtype]))).any(axis=1).sum())
    overflow = bad and bool(np.isfinite(values).all())
    said = f"They are finite, beyond {dtype}'s range (65,504) only." if overflow else ""
    return bad, said


def record(vectors: np.ndarray, spec: RepresentationSpec) -> dict:
    """The manifest's record of the stored vectors: settings, shape, dtype, bytes."""
    return {
        **asdict(spec),
        "shape": list(vectors.shape),
        "size_bytes": int(vectors.nbytes),
    }


def check_stored(manifest: dict, tensors: dict, n_examples: int) -> str | None:
    """What is wrong with an entry's stored vectors against its manifest (None: nothing)."""
    expected = manifest.get("representations")
    vectors = tensors.get("representations")
    if expected is None:
        return None if vectors is None else "it holds representations its manifest does not list"
    if vectors is None:
        return "its manifest lists representations the file does not hold"
    if list(vectors.shape) != expected.get("shape") or vectors.dtype.name != expected.get("dtype"):
        return (
            f"representations are {vectors.dtype.name}{list(vectors.shape)}, the manifest says "
            f"{expected.get('dtype')}{expected.get('shape')}"
        )
    if len(vectors) != n_examples:
        return f"{len(vectors)} representations for {n_examples} examples"
    return None


def describe_entry(manifest: dict) -> str:
    """`python -m sead.cache list`'s column: the vectors an entry holds, or '-'."""
    stored = manifest.get("representations")
    if not isinstance(stored, dict):
        return "-"
    shape = stored.get("shape") or [None, "?"]
    return f"layer {stored.get('layer')}, {stored.get('pooling')}, {shape[-1]} wide"
