"""Fast batched inference, shared by teachers (filling the cache) and the student.

Examples are sorted by length so each batch pads only to its own longest
example, run under `torch.inference_mode()`, and put back in dataset order.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def predict_logits(
    model, tokenizer, encoded: Dataset, batch_size: int = 128, desc: str = "Predicting"
) -> np.ndarray:
    """Logits `[len(encoded), num_labels]` in the dataset's order."""
    model.eval()
    device = next(model.parameters()).device
    columns = [c for c in MODEL_INPUTS if c in encoded.column_names]
    features = {c: encoded[c][:] for c in columns}  # plain lists: fast row access
    lengths = np.fromiter(map(len, features["input_ids"]), dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")  # longest first: memory peaks early
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    out = None
    with torch.inference_mode(), tqdm(total=len(order), desc=desc, unit="ex") as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collate([{c: features[c][i] for c in columns} for i in rows])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            logits = logits.float().cpu().numpy()
            if out is None:
                out = np.empty((len(order), logits.shape[-1]), dtype=np.float32)
            out[rows] = logits
            bar.update(len(rows))
    return out if out is not None else np.empty((0, model.config.num_labels), np.float32)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
