"""A cheap, different teacher for SST-2: TF-IDF + logistic regression (scikit-learn), written
as prediction files that sead reads as a teacher (`predictions:`; see sead/teachers/predictions.py).

It learns from the same labelled slice as the MiniLM teacher (the rows `data.max_train_samples`
keeps, `data.subsample_seed` 0), with fixed settings (no tuning, nothing seen of validation).
Its train-split probabilities are out-of-fold (5 folds): each row is labelled by a model that
did not see it, as a model run elsewhere on unseen text would. Validation gets the model fit
on the whole slice.

    python experiments/predictions_sst2_cpu/tfidf_teacher.py --out work/tfidf --train 4000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's sead, whatever is installed

from sead.data import subsample_rows  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "glue" / "sst2"
LABELS = ["negative", "positive"]  # column order of the files (SST-2's label ids)


def read(split: str) -> list[dict]:
    return [json.loads(line) for line in (SST2 / f"{split}.jsonl").read_text().splitlines()]


def model():
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=4.0, max_iter=1000),
    )


def write(path: Path, rows: list[dict], probs: np.ndarray) -> None:
    lines = [
        json.dumps({"idx": row["idx"], "probs": [round(float(p), 7) for p in pair]})
        for row, pair in zip(rows, probs / probs.sum(1, keepdims=True), strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=4000, help="= data.max_train_samples")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    train = read("train")
    if args.train and args.train < len(train):
        train = [train[i] for i in subsample_rows(len(train), args.train, seed=0)]
    validation = read("validation")
    texts, labels = [r["sentence"] for r in train], np.array([r["label"] for r in train])
    out_of_fold = cross_val_predict(model(), texts, labels, cv=5, method="predict_proba")
    fitted = model().fit(texts, labels)
    val_probs = fitted.predict_proba([r["sentence"] for r in validation])
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.jsonl", train, out_of_fold)
    write(args.out / "validation.jsonl", validation, val_probs)
    gold = np.array([r["label"] for r in validation])
    summary = {
        "train_rows": len(train),
        "train_out_of_fold_accuracy": float((out_of_fold.argmax(1) == labels).mean()),
        "validation_accuracy": float((val_probs.argmax(1) == gold).mean()),
        "seconds": round(time.perf_counter() - started, 1),
        "labels": LABELS,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
