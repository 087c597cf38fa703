"""Transfer sets: extra text that the teacher ensemble labels for the student.

Distillation gains most where the student sees far more examples than there are gold
labels (XtremeDistil, TinyBERT): the teachers label extra text and the student learns
from their soft labels. `conf/transfer/<name>.yaml` picks where that text comes from:

* `unlabeled_split`: the task's own train split, of which only `labeled` examples keep
  their gold label; the rest is the transfer set. The labelled slice is then the only gold
  data anyone trains on: it replaces the train split, so the teachers sead fine-tunes learn
  from it alone, and the student's hard-label term sees nothing else. The hidden labels are
  kept aside (never in a dataset) to report the ensemble's agreement with them;
* `files`: local jsonl/csv/tsv files with the task's text fields (or plain text, one
  example a line, for single-sentence tasks), or a Hub dataset with a column mapping;
* `augment`: deterministic copies of the train text with word dropout, random swaps and
  masked-LM replacement by a fill-mask model.

`labeled` works with every source. The transfer set is in the task's schema with
`label = UNLABELED`, one split per part (`transfer_unlabeled_split`,
`transfer_files`, `transfer_augment`): teachers label each through the soft-label cache like
any split (the key holds its content, so the same text is labelled once per teacher, whatever
the run's other settings), and `sead.distill.kd_loss` drops the hard-label term for its rows.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, Value, concatenate_datasets, load_dataset

from sead import data, metrics
from sead.checkpoints import check_checkpoint, resolve
from sead.config import build as build_settings
from sead.config import container, setting
from sead.files import read_text, text_lines
from sead.tasks import MULTIPLE_CHOICE, UNLABELED, TaskSpec

log = logging.getLogger(__name__)

SPLIT = "transfer"  # each part of the transfer set is a split `transfer_<source>`
FILE_IDS = 10**12  # transfer files' first id: above any GLUE or SuperGLUE example id
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".txt": "text"}


@dataclass(frozen=True)
class TransferSettings:
    """`cfg.transfer` (conf/transfer/<source>.yaml), checked before any work starts.

    This class is `transfer=none`; each other source adds its own keys (`SETTINGS`), so that
    a key its YAML does not set is an error, not a silent default.
    """

    source: str  # none | unlabeled_split | files | augment
    labeled: int | None = setting(low=1)  # keep this many gold labels of the train split
    seed: int = setting(low=0)  # picks the labelled slice and the augmentations; not the run seed

    @classmethod
    def from_config(cls, cfg, task: TaskSpec) -> TransferSettings:
        """The settings class of `cfg.source`, built and checked against the task."""
        raw = container(cfg, "transfer")
        source = raw.get("source")
        if source not in SETTINGS:
            raise ValueError(f"transfer.source={source!r}: expected one of {list(SETTINGS)}.")
        settings = build_settings(SETTINGS[source], raw, "transfer")
        settings.check(task)
        return settings

    def check(self, task: TaskSpec) -> None:
        """Config mistakes, named, before the data is read."""
        if self.source not in SETTINGS or not isinstance(self, SETTINGS[self.source]):
            raise ValueError(f"transfer.source={self.source!r}: expected one of {list(SETTINGS)}.")
        if self.source == "none" and self.labeled is None:
            return
        if task.kind == MULTIPLE_CHOICE:
            what = (
                "transfer.labeled (gold labels on part of train) is"
                if (self.source == "none")
                else "transfer sets are"
            )
            raise ValueError(
                f"Task {task.name!r} is multiple choice: its examples are a context with "
                f"candidate answers, which unlabelled text cannot be paired into, so {what} "
                "not supported for it. Use transfer=none without transfer.labeled "
                "(data.max_train_samples takes a slice of train)."
            )
        if task.formatter is not None and self.source in ("files", "augment"):
            raise ValueError(
                f"transfer={self.source} is not supported for task {task.name!r}: its examples "
                f"are more than free text (fields {list(task.text_fields)}, with spans or "
                "per-answer ids that new or edited text would not match). Use "
                "transfer=unlabeled_split, or transfer=none."
            )
        if self.source == "unlabeled_split" and not self.labeled:
            raise ValueError(
                "transfer=unlabeled_split needs transfer.labeled=<number of gold labels to "
                "keep>, e.g. transfer.labeled=2000; the rest of the train split is unlabelled."
            )
        self._check_source(task)

    def _check_source(self, task: TaskSpec) -> None:
        """What a source's own keys must hold (none here)."""


@dataclass(frozen=True)
class UnlabeledSplitSettings(TransferSettings):
    """`transfer=unlabeled_split`: the train split's other rows, their labels hidden."""

    max_unlabeled: int | None = setting(low=1)  # a fixed random subset of them; null: all


@dataclass(frozen=True)
class FilesSettings(UnlabeledSplitSettings):
    """`transfer=files`: text from local files or a Hub dataset."""

    paths: tuple[str, ...]  # .jsonl/.json, .csv, .tsv with the task's fields; .txt a line each
    hub: dict  # {path, name, split}: load_dataset(path, name, split=split)
    columns: dict[str, str] | None  # task field -> column of the source

    def _check_source(self, task: TaskSpec) -> None:
        if bool(self.paths) == bool(self.hub_path):
            raise ValueError(
                "transfer=files needs exactly one of transfer.paths=[<file>, ...] (jsonl, csv, "
                "tsv or txt) and transfer.hub.path=<Hub dataset> (with hub.name, hub.split)."
            )
        for path in map(Path, self.paths):
            if path.suffix not in FILE_FORMATS:
                raise ValueError(
                    f"transfer.paths: {path} has an unknown extension: expected one of "
                    f"{sorted(FILE_FORMATS)}."
                )
            if not path.is_file():
                raise FileNotFoundError(f"transfer.paths: {path} does not exist.")
            if FILE_FORMATS[path.suffix] == "text" and len(task.text_fields) > 1:
                raise ValueError(
                    f"transfer.paths: {path} is plain text (one example a line), but task "
                    f"{task.name!r} takes sentence pairs {list(task.text_fields)}: use a jsonl, "
                    "csv or tsv file with those columns (or map them with transfer.columns)."
                )

    @property
    def hub_path(self) -> str | None:
        return self.hub.get("path")


@dataclass(frozen=True)
class AugmentSettings(UnlabeledSplitSettings):
    """`transfer=augment`: deterministic augmented copies of the (labelled) train text."""

    multiplier: int  # augmented copies of each train example
    word_dropout: float  # each word dropped with this probability
    swap: float  # round(swap * words) swaps of two random words
    mlm: float  # fraction of words masked and refilled by fill_mask_model
    fill_mask_model: str | None  # a checkpoint with a trained masked-LM head
    mlm_top_k: int = setting(low=1)
    mlm_batch_size: int = setting(low=1)

    def _check_source(self, task: TaskSpec) -> None:
        if not isinstance(self.multiplier, int) or self.multiplier < 1:
            raise ValueError(f"transfer.multiplier={self.multiplier!r}: expected an integer >= 1.")
        rates = {"word_dropout": self.word_dropout, "swap": self.swap, "mlm": self.mlm}
        for name, rate in rates.items():
            if not 0 <= float(rate) <= 1:
                raise ValueError(f"transfer.{name}={rate!r}: expected a fraction in [0, 1].")
        if not any(rates.values()):
            raise ValueError(
                "transfer=augment changes nothing: set at least one of transfer.word_dropout, "
                "transfer.swap or transfer.mlm above 0."
            )
        if self.mlm and not self.fill_mask_model:
            raise ValueError(
                f"transfer.mlm={self.mlm} needs transfer.fill_mask_model=<a masked-LM checkpoint "
                "(Hub id or local path)>, e.g. the student's or a teacher's pretrained model."
            )


# transfer.source -> its settings
SETTINGS: dict[str, type[TransferSettings]] = {
    "none": TransferSettings,
    "unlabeled_split": UnlabeledSplitSettings,
    "files": FilesSettings,
    "augment": AugmentSettings,
}


@dataclass
class TransferSet:
    """The gold-labelled train split to use, the transfer split, and what to report on them."""

    settings: TransferSettings
    train: Dataset  # the only gold-labelled training data (the labelled slice, when `labeled`)
    dataset: Dataset | None  # the transfer split (labels UNLABELED); None: no transfer set
    gold: np.ndarray | None = None  # per transfer row: its hidden / source label, or NaN
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # source -> row range
    held_out: int = 0  # train examples whose labels were hidden

    @property
    def size(self) -> int:
        return 0 if self.dataset is None else len(self.dataset)

    def splits(self) -> dict[str, Dataset]:
        """Each part as a split of its own (`transfer_unlabeled_split`, `transfer_augment`...),
        so a part that two settings share (the unlabelled rest, with or without augmented
        copies) is one cache entry per teacher, labelled once."""
        return {
            f"{SPLIT}_{name}": self.dataset.select(range(start, stop))
            for name, (start, stop) in self.parts.items()
            if stop > start
        }


def build(settings: TransferSettings, task: TaskSpec, splits: DatasetDict) -> TransferSet:
    """The transfer set the settings ask for (`source: none`: none, unless `labeled`)."""
    train = splits[task.train_split]
    first_new_idx = int(data.example_ids(train, task).max(initial=-1)) + 1  # not a train id
    parts: list[tuple[str, Dataset, np.ndarray | None]] = []
    held_out = 0
    if settings.labeled is not None:
        if settings.labeled >= len(train):
            raise ValueError(
                f"transfer.labeled={settings.labeled} keeps every one of the train split's "
                f"{len(train):,} examples: expected fewer, so that some are left unlabelled."
            )
        # whole groups (multirc's questions), the rows data.max_train_samples picks with that seed
        keep = data.subsample_rows(
            len(train), settings.labeled, settings.seed, data.row_groups(train, task)
        )
        rest = train.select(np.setdiff1d(np.arange(len(train)), keep).tolist())
        train = train.select(keep.tolist())
        held_out = len(rest)
        if settings.source == "none":  # the labelled slice alone, e.g. as a baseline
            rest = rest.select([])
        else:
            groups = data.row_groups(rest, task)  # multirc: whole questions
            rest = data.subsample(rest, settings.max_unlabeled, seed=settings.seed, groups=groups)
        parts.append(("unlabeled_split", rest, _labels(rest)))
        log.info(
            "Transfer: %d gold labels kept, %d hidden (%d of those examples used as transfer text)",
            len(train),
            held_out,
            len(rest),
        )
    if settings.source == "files":
        ds = read_files(settings, task)
        ds = data.subsample(ds, settings.max_unlabeled, seed=settings.seed)
        parts.append(("files", ds, _labels(ds) if "label" in ds.column_names else None))
    if settings.source == "augment":
        ds = augment(train, task, settings)
        parts.append(("augment", ds, _labels(ds)))
    transfer = TransferSet(settings, train, None, held_out=held_out)
    if parts and sum(len(ds) for _, ds, _ in parts):
        transfer.dataset, transfer.gold, transfer.parts = _concatenate(parts, task, first_new_idx)
    log.info("Transfer set (%s): %d examples %s", settings.source, transfer.size, transfer.parts)
    return transfer


def apply(transfer: TransferSet, task: TaskSpec, splits: DatasetDict) -> DatasetDict:
    """`splits` with the train split reduced to the labelled slice and the transfer split added."""
    return DatasetDict({**splits, task.train_split: transfer.train, **transfer.splits()})


def with_transfer(train: Dataset, transfer_ds: Dataset, task: TaskSpec) -> Dataset:
    """The student's training set: the gold-labelled train split, then the transfer split."""
    columns = [*task.text_fields, "label", "idx"]
    train = train.select_columns(columns).cast(transfer_ds.select_columns(columns).features)
    return concatenate_datasets([train, transfer_ds.select_columns(columns)])


def _labels(ds: Dataset) -> np.ndarray:
    return np.asarray(ds["label"][:], dtype=np.float64)


def _concatenate(parts, task: TaskSpec, first_new_idx: int):
    """One split in the task's schema, labels hidden, ids unique.

    Rows of the train split keep their ids; new text gets ids after every train example's,
    files' from a fixed base above them, so that their cache entry does not change with the
    train split (data.max_train_samples): a sweep over it labels the same files once.
    """
    label_type = Value("float32" if task.is_regression else "int64")
    datasets, golds, ranges, start = [], [], {}, 0
    for name, ds, gold in parts:
        if name == "unlabeled_split":
            ids = ds["idx"][:]
        elif name == "files":
            ids = list(range(max(first_new_idx, FILE_IDS), max(first_new_idx, FILE_IDS) + len(ds)))
        else:
            ids = list(range(first_new_idx, first_new_idx + len(ds)))
            first_new_idx += len(ds)
        columns = {f: ds[f][:] for f in task.text_fields}
        hidden = {"label": [UNLABELED] * len(ds), "idx": ids}
        datasets.append(Dataset.from_dict({**columns, **hidden}).cast_column("label", label_type))
        golds.append(np.full(len(ds), np.nan) if gold is None else gold)
        ranges[name] = (start, start + len(ds))
        start += len(ds)
    return concatenate_datasets(datasets), np.concatenate(golds), ranges


# --------------------------------------------------------------------------------------------
# Files and Hub datasets.
# --------------------------------------------------------------------------------------------


def read_files(settings: FilesSettings, task: TaskSpec) -> Dataset:
    """The text of `transfer.paths` (or `transfer.hub`), checked field by field."""
    if settings.hub_path:
        hub = settings.hub
        source = f"Hub dataset {hub['path']!r}"
        ds = load_dataset(hub["path"], hub.get("name"), split=hub.get("split") or "train")
        return _to_task_fields(ds, task, settings.columns or {}, source)
    return concatenate_datasets(
        [
            _to_task_fields(_read_file(Path(p)), task, settings.columns or {}, p)
            for p in settings.paths
        ]
    )


def _read_file(path: Path) -> Dataset:
    """One transfer file, refused with its name when it is empty, binary or not UTF-8 text."""
    kind = FILE_FORMATS[path.suffix]
    text = read_text(path, "Transfer file")  # UTF-8, or refused naming the byte
    if not text.strip():
        raise ValueError(f"Transfer file {path} is empty: expected at least one example.")
    if kind == "text":
        lines = [line.strip() for line in text_lines(text)]
        return Dataset.from_dict({"text": [line for line in lines if line]})
    options = {"delimiter": "\t", "quoting": 3} if kind == "tsv" else {}  # 3: csv.QUOTE_NONE
    if kind in ("csv", "tsv"):  # only an empty cell is missing: "NA" or "null" is text
        options |= {"keep_default_na": False, "na_values": [""]}
    try:
        return load_dataset(
            "csv" if kind == "tsv" else kind, data_files=str(path), split="train", **options
        )
    except Exception as err:  # datasets wraps the cause in several exception types
        raise ValueError(f"Could not read {path} as {kind}: {err.__cause__ or err}") from err


def _to_task_fields(ds: Dataset, task: TaskSpec, columns: dict, source: str) -> Dataset:
    """Rename the source's columns to the task's fields; fail naming what is missing."""
    if len(ds) == 0:
        raise ValueError(f"Transfer data {source} has no rows: expected at least one example.")
    unknown = sorted(set(columns) - {*task.text_fields, "label"})
    if unknown:
        raise ValueError(
            f"transfer.columns has key(s) {unknown}, which are not fields of task {task.name!r}: "
            f"expected some of {[*task.text_fields, 'label']} (task field -> column)."
        )
    if "label" in columns and columns["label"] not in ds.column_names:
        raise ValueError(
            f"transfer.columns.label={columns['label']!r}, but transfer data {source} has no "
            f"such column: found {ds.column_names}."
        )
    wanted = {f: columns.get(f, f) for f in task.text_fields}
    if list(ds.column_names) == ["text"] and len(task.text_fields) == 1:
        wanted = {task.text_fields[0]: "text"}  # plain text: one example a line
    missing = {f: c for f, c in wanted.items() if c not in ds.column_names}
    if missing:
        raise ValueError(
            f"Transfer data {source} has no column(s) {sorted(missing.values())} for task "
            f"{task.name!r}, which needs text fields {list(task.text_fields)}; found columns "
            f"{ds.column_names}. Map them with transfer.columns.<field>=<column>."
        )
    out = {field: ds[column][:] for field, column in wanted.items()}
    for field_name, values in out.items():
        bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(
                f"Transfer data {source}: field {wanted[field_name]!r} is empty or not text in "
                f"{len(bad)} row(s), e.g. data row {bad[0] + 1} (from 1, the header not "
                f"counted): expected a non-empty string."
            )
    label_column = columns.get("label", "label")
    if label_column in ds.column_names:  # gold labels, if any, only to score the ensemble
        out["label"] = _gold_labels(ds[label_column][:], task, label_column, source)
    out["idx"] = list(range(len(ds)))
    return Dataset.from_dict(out)


def _gold_labels(values: list, task: TaskSpec, column: str, source: str) -> list[float]:
    """A transfer file's own labels, row by row: label ids, or the task's label names (read as
    their ids, and logged); an empty cell, or -1 (the Hub's "no label", as in IMDB's
    unsupervised split or a GLUE test file), is no label (NaN). Anything else is refused
    naming the row, the column and what the task takes."""
    names = {name: i for i, name in enumerate(task.labels)}
    out, named = [], 0
    for row, value in enumerate(values, start=1):
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == -1:
            out.append(math.nan)
        elif isinstance(value, str) and value in names and not task.is_regression:
            out.append(float(names[value]))
            named += 1
        elif _is_label(value, task):
            out.append(float(value))
        else:
            expected = (
                "a number (a score)"
                if task.is_regression
                else f"a label id 0..{task.num_labels - 1} or a label name {list(task.labels)}"
            )
            raise ValueError(
                f"Transfer data {source}: data row {row} (from 1, the header not counted), "
                f"column {column!r} is {value!r}: expected "
                f"{expected} for task {task.name!r}, or an empty cell (no label). Fix the file, "
                f"or point transfer.columns.label at the column that holds the labels."
            )
    if named:
        what = f"{named} label names in column {column!r}"
        log.info("Transfer data %s: %s read as the task's label ids %s.", source, what, names)
    return out


def _is_label(value, task: TaskSpec) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if task.is_regression:
        return math.isfinite(value)
    return float(value).is_integer() and 0 <= value < task.num_labels  # a CSV column with gaps


# --------------------------------------------------------------------------------------------
# Augmentation: deterministic given transfer.seed, whatever the batching.
# --------------------------------------------------------------------------------------------


def augment(train: Dataset, task: TaskSpec, settings: AugmentSettings) -> Dataset:
    """`multiplier` augmented copies of each train example (each text field on its own).

    Each (example, copy, field) draws from its own random generator, seeded by
    `transfer.seed` and the example's id, so the result does not depend on order or batching.
    Masked-LM replacement runs first (batched), then word dropout, then random swaps.
    """
    ids, labels = train["idx"][:], train["label"][:]
    texts = {f: train[f][:] for f in task.text_fields}
    jobs = []  # (row in output, field, words, rng)
    rows = []
    for copy in range(settings.multiplier):
        for i, idx in enumerate(ids):
            rows.append({"idx": len(rows), "label": labels[i]})
            for f in task.text_fields:
                rng = random.Random(f"{settings.seed}|{idx}|{copy}|{f}")
                jobs.append((len(rows) - 1, f, texts[f][i].split(), rng))
    if settings.mlm:
        filled = FillMask(settings).replace([(words, rng) for _, _, words, rng in jobs])
        jobs = [(r, f, words, rng) for (r, f, _, rng), words in zip(jobs, filled, strict=True)]
    for r, f, words, rng in jobs:
        words = word_dropout(words, settings.word_dropout, rng)
        words = random_swap(words, settings.swap, rng)
        rows[r][f] = " ".join(words)
    return Dataset.from_list(rows)


def word_dropout(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """Each word dropped with probability `rate` (at least one word is kept)."""
    if not rate or len(words) < 2:
        return words
    kept = [w for w in words if rng.random() >= rate]
    return kept or [rng.choice(words)]


def random_swap(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """`round(rate * n_words)` swaps (at least one when rate > 0) of two random positions."""
    if not rate or len(words) < 2:
        return words
    words = list(words)
    for _ in range(max(1, round(rate * len(words)))):
        a, b = rng.sample(range(len(words)), 2)
        words[a], words[b] = words[b], words[a]
    return words


class FillMask:
    """Masked-LM word replacement: a fraction of the words are masked and refilled, in batches.

    A masked word is replaced by one of the model's `mlm_top_k` most likely whole-word tokens
    other than itself (drawn with the example's own generator).
    """

    def __init__(self, settings: TransferSettings):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        self.settings = settings
        check_checkpoint(settings.fill_mask_model, "transfer.fill_mask_model")
        path = resolve(settings.fill_mask_model, None)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
        if info["missing_keys"]:
            raise ValueError(
                f"transfer.fill_mask_model={settings.fill_mask_model!r} has no trained masked-LM "
                f"head (missing {sorted(info['missing_keys'])[:3]}...): its fills would be "
                "random words. Use a checkpoint pretrained with masked-LM (e.g. a BERT base)."
            )
        if self.tokenizer.mask_token is None:
            raise ValueError(
                f"transfer.fill_mask_model={settings.fill_mask_model!r}: its tokenizer has no "
                "mask token."
            )
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.eval().to(self.device)

    def replace(self, items: list[tuple[list[str], random.Random]]) -> list[list[str]]:
        """Each word list with its masked words replaced."""
        masked = [self._positions(words, rng) for words, rng in items]
        out = [list(words) for words, _ in items]
        batch = self.settings.mlm_batch_size
        todo = [i for i, positions in enumerate(masked) if positions]
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            fills = self._predict([(items[i][0], masked[i]) for i in chunk])
            for i, candidates in zip(chunk, fills, strict=True):
                rng = items[i][1]
                for position, options in zip(masked[i], candidates, strict=True):
                    options = [o for o in options if o != out[i][position].lower()]
                    if options:
                        out[i][position] = rng.choice(options)
        return out

    def _positions(self, words: list[str], rng: random.Random) -> list[int]:
        if not words:
            return []
        n = max(1, round(self.settings.mlm * len(words)))
        return sorted(rng.sample(range(len(words)), min(n, len(words))))

    @torch.inference_mode()
    def _predict(self, examples: list[tuple[list[str], list[int]]]) -> list[list[list[str]]]:
        """Per example, per masked word: the top-k whole-word fills, most likely first."""
        mask = self.tokenizer.mask_token
        texts = []
        for words, positions in examples:
            masked = set(positions)
            texts.append(" ".join(mask if i in masked else w for i, w in enumerate(words)))
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        input_ids = encoded["input_ids"]
        logits = self.model(**encoded.to(self.device)).logits.cpu()
        k = self.settings.mlm_top_k
        candidates = min(4 * k, logits.shape[-1])  # some are subwords or punctuation
        out = []
        for row, (_, positions) in enumerate(examples):
            at = (input_ids[row] == self.tokenizer.mask_token_id).nonzero().flatten()
            fills = []
            for position in at.tolist():
                top = logits[row, position].topk(candidates).indices.tolist()
                words = [
                    self.tokenizer.convert_tokens_to_string([t]).strip()
                    for t in self.tokenizer.convert_ids_to_tokens(top)
                ]
                fills.append([w for w in words if w.isalnum() and not w.startswith("##")][:k])
            fills += [[]] * (len(positions) - len(fills))  # masks cut off by truncation
            out.append(fills)
        return out


# --------------------------------------------------------------------------------------------
# What results.json records.
# --------------------------------------------------------------------------------------------


def record(
    transfer: TransferSet, task: TaskSpec, predictions: np.ndarray | None, teachers: dict
) -> dict:
    """Source, settings, sizes, the ensemble's agreement with known labels, cache entries.

    `predictions`: the ensemble's hard predictions on the transfer set (its parts in order);
    `teachers`: the teacher records of results.json (their entries for each part are listed).
    """
    settings = transfer.settings
    agreement = {}
    for name, (start, stop) in transfer.parts.items():
        if predictions is None or transfer.gold is None or start == stop:
            continue
        gold = transfer.gold[start:stop]
        known = ~np.isnan(gold)
        if known.any():
            refs = gold[known] if task.is_regression else gold[known].astype(np.int64)
            agreement[name] = {
                "n_examples": int(known.sum()),
                "labels": "of the source example" if name == "augment" else "gold (hidden)",
                **metrics.compute(task.name, predictions[start:stop][known], refs),
            }
    return {
        "source": settings.source,
        "settings": asdict(settings),
        "size": transfer.size,
        "parts": {name: stop - start for name, (start, stop) in transfer.parts.items()},
        "labeled": len(transfer.train),
        "labels_hidden": transfer.held_out,
        "unlabeled": transfer.size,
        # as the teacher store keys a fine-tuned teacher's training data: the two compare
        "labeled_data": data.input_fingerprint(transfer.train, task, ["label"]),
        "teachers_gold_data": {name: _gold_data(teacher) for name, teacher in teachers.items()},
        "ensemble_agreement": agreement,
        "cache": {
            name: {
                split: {"fingerprint": teacher["cache"][split], "hit": teacher["cache_hit"][split]}
                for split in transfer.splits()
                if split in teacher["cache"]
            }
            for name, teacher in teachers.items()
        },
    }


def _gold_data(teacher: dict) -> dict:
    """What gold data a teacher learnt from: the labelled slice (fine-tuned by sead on it, with
    the store key's content hash to prove it), or unknown (a loaded checkpoint)."""
    finetune = teacher.get("finetune")
    if not finetune:
        return {"controlled": False, "note": "loaded checkpoint: its training data is unknown"}
    return {
        "controlled": True,
        "train_examples": finetune["train_examples"],
        "train_data": finetune["key"]["data"],
    }
