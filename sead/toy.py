"""A toy sentiment task and tiny random-init models, built in-process with no Hub access.

sead's pipeline (teacher fine-tuning, ensembling, distillation) needs a GLUE-style dataset,
base checkpoints and their tokenizers. Real ones come from the Hugging Face Hub, which the
offline demo and the test suite cannot reach. This module generates stand-ins in seconds:

* `make_toy_task` writes an sst2-shaped dataset of short templated reviews. Negation ("not
  good") and contrast ("good, but the ending was dull") make the label depend on word order,
  rare words are learned unevenly, and some labels are flipped or undecidable, so a tiny model
  learns it well but not perfectly, and two different models make different mistakes for an
  ensemble to fix.
* `build_tokenizer` and `build_tiny_model` make a WordPiece/BERT or byte-level BPE/RoBERTa
  tokenizer and a randomly initialised encoder that `Auto*.from_pretrained` loads like any
  Hub checkpoint.
* `build_demo_assets` (also `sead toy ROOT`) lays out everything the demo uses.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertTokenizerFast,
    DistilBertConfig,
    RobertaConfig,
    RobertaTokenizerFast,
)

from sead.files import open_to_team

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# The task: templated reviews whose label needs more than a bag of words.
# --------------------------------------------------------------------------------------------

NOUNS = (
    "movie", "film", "plot", "story", "acting", "cast", "script", "dialogue", "ending",
    "soundtrack", "direction", "pacing", "humor", "villain", "hero", "camera work",
)  # fmt: skip
NEUTRAL_ADJECTIVES = ("new", "long", "french", "animated", "recent", "whole", "second", "old")
# Sentiment adjectives come in three tiers of frequency (`_ADJECTIVE_WEIGHTS`): the rare ones are
# seen only a few dozen times in training, so models learn them unevenly and disagree on them.
POSITIVE_ADJECTIVES = (
    "good", "great", "funny", "charming", "wonderful",
    "brilliant", "moving", "clever", "delightful", "superb",
    "gripping", "beautiful", "fresh", "solid", "witty",
    "stunning", "heartfelt", "inventive", "elegant", "touching",
)  # fmt: skip
NEGATIVE_ADJECTIVES = (
    "bad", "boring", "dull", "awful", "terrible",
    "weak", "messy", "bland", "tedious", "clumsy",
    "lazy", "forgettable", "silly", "flat", "shallow",
    "predictable", "overlong", "sloppy", "tiresome", "hollow",
)  # fmt: skip
_ADJECTIVE_WEIGHTS = (3,) * 5 + (2,) * 5 + (1,) * 10
# (past tense, base form) so that "i loved" can be negated as "i did not love".
POSITIVE_VERBS = (("loved", "love"), ("enjoyed", "enjoy"), ("liked", "like"), ("admired", "admire"))
NEGATIVE_VERBS = (("hated", "hate"), ("disliked", "dislike"), ("regretted", "regret"))
INTENSIFIERS = ("very", "really", "quite", "truly", "remarkably", "so", "pretty", "rather")
NEGATORS = ("not", "never", "hardly")
FILLERS = (
    "honestly", "overall", "i think", "to be fair", "in the end", "frankly", "for what it is worth",
    "all things considered", "if you ask me", "as expected",
)  # fmt: skip
CONTRASTS = ("but", "yet", "though in the end", "however")

# Every word the generator can emit, for building vocabularies.
TOY_WORDS: tuple[str, ...] = tuple(
    sorted(
        {
            word
            for group in (
                NOUNS,
                NEUTRAL_ADJECTIVES,
                POSITIVE_ADJECTIVES,
                NEGATIVE_ADJECTIVES,
                [w for pair in POSITIVE_VERBS + NEGATIVE_VERBS for w in pair],
                INTENSIFIERS,
                NEGATORS,
                FILLERS,
                CONTRASTS,
                ("the", "a", "what", "this", "that", "it", "was", "is", "i", "did", "and"),
                ("far", "from", ",", ".", "!"),
            )
            for phrase in group
            for word in phrase.split()
        }
    )
)

LABEL_NOISE = 0.05  # labels flipped at random, as in any crowd-labelled set
# Shares of review shapes (the rest are single clauses), and of negated clauses. Negation and
# contrast are what a bag of words gets wrong; they are kept a minority so that a tiny model
# reliably lands well above the majority baseline before it has learned them fully.
MIXED = 0.04  # one thing praised, another panned, nothing to settle it: the label is a coin flip
CONTRAST = 0.25  # two opposed clauses joined by "but" and the like: the last one wins
AGREE = 0.25  # two clauses of the same polarity
NEGATION = 0.15  # "not good" for a negative clause, "did not hate" for a positive one


def _noun_phrase(rng: random.Random) -> str:
    det = rng.choice(("the", "the", "this", "that"))
    if rng.random() < 0.25:
        return f"{det} {rng.choice(NEUTRAL_ADJECTIVES)} {rng.choice(NOUNS)}"
    return f"{det} {rng.choice(NOUNS)}"


def _clause(rng: random.Random, polarity: int) -> str:
    """One clause whose sentiment is `polarity` (+1 or -1), possibly by negating its opposite."""
    negate = rng.random() < NEGATION
    word_polarity = -polarity if negate else polarity
    adjectives = POSITIVE_ADJECTIVES if word_polarity > 0 else NEGATIVE_ADJECTIVES
    adjective = rng.choices(adjectives, weights=_ADJECTIVE_WEIGHTS)[0]
    intensifier = f"{rng.choice(INTENSIFIERS)} " if rng.random() < 0.4 else ""
    form = rng.randrange(4)
    if form == 0:
        copula = rng.choice(("was", "is"))
        negation = f"{rng.choice(NEGATORS)} " if negate else ""
        return f"{_noun_phrase(rng)} {copula} {negation}{intensifier}{adjective}"
    if form == 1:
        past, base = rng.choice(POSITIVE_VERBS if word_polarity > 0 else NEGATIVE_VERBS)
        verb = f"did not {base}" if negate else past
        return f"i {verb} {_noun_phrase(rng)}"
    if form == 2 and negate:
        return f"{_noun_phrase(rng)} was far from {adjective}"
    if form == 2:
        return f"{rng.choice(('a', 'what a'))} {intensifier}{adjective} {rng.choice(NOUNS)}"
    negation = f"{rng.choice(NEGATORS)} " if negate else ""
    return f"it was {negation}{intensifier}{adjective}"


def _sentence(rng: random.Random, label: int) -> str:
    """A review for `label`: one clause, two that agree, two where the last one wins, or two
    that disagree with nothing to settle it (then `label` is arbitrary and no model can know it).
    """
    polarity = 1 if label == 1 else -1
    shape = rng.random()
    if shape < MIXED:
        first = rng.choice((1, -1))
        body = f"{_clause(rng, first)} and {_clause(rng, -first)}"
    elif shape < MIXED + CONTRAST:
        body = f"{_clause(rng, -polarity)} , {rng.choice(CONTRASTS)} {_clause(rng, polarity)}"
    elif shape < MIXED + CONTRAST + AGREE:
        body = f"{_clause(rng, polarity)} and {_clause(rng, polarity)}"
    else:
        body = _clause(rng, polarity)
    if rng.random() < 0.3:
        body = f"{rng.choice(FILLERS)} , {body}"
    return f"{body} {rng.choice(('.', '.', '!'))}"


def _examples(rng: random.Random, n: int) -> list[dict]:
    labels = [i % 2 for i in range(n)]  # balanced before the noise
    rng.shuffle(labels)
    rows = []
    for idx, label in enumerate(labels):
        sentence = _sentence(rng, label)
        if rng.random() < LABEL_NOISE:
            label = 1 - label
        rows.append({"sentence": sentence, "label": label, "idx": idx})
    return rows


def toy_sentences(n: int = 2000, seed: int = 12345) -> list[str]:
    """A corpus for training tokenizers: generated reviews plus every word at least once."""
    rng = random.Random(f"corpus-{seed}")
    return [" ".join(TOY_WORDS)] + [_sentence(rng, i % 2) for i in range(n)]


def make_toy_task(
    out_dir: str | Path, n_train: int = 2000, n_validation: int = 500, seed: int = 0
) -> Path:
    """Write `train.jsonl` and `validation.jsonl` in the GLUE sst2 schema (sentence, label, idx).

    Each split has its own string-seeded stream, so changing `n_train` leaves validation alone.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_validation)):
        rows = _examples(random.Random(f"sst2_toy-{seed}-{split}"), n)
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return out_dir


# --------------------------------------------------------------------------------------------
# Tokenizers and models.
# --------------------------------------------------------------------------------------------


def build_tokenizer(kind: str, out_dir: str | Path, corpus: Iterable[str] | None = None) -> Path:
    """Save a `wordpiece` (uncased BERT) or `bpe` (byte-level RoBERTa) tokenizer for `corpus`.

    WordPiece gets every corpus word whole plus single characters, so unseen words still
    tokenize; BPE is trained, so its pieces differ from WordPiece's and the two kinds of model
    see the text differently.
    """
    out_dir = Path(out_dir)
    corpus = list(toy_sentences() if corpus is None else corpus)
    if kind == "wordpiece":
        words = sorted({w for line in corpus for w in re.findall(r"\w+|[^\w\s]", line.lower())})
        chars = sorted({c for w in words for c in w})
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tokens = list(dict.fromkeys(specials + words + chars + [f"##{c}" for c in chars]))
        tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})
    elif kind == "bpe":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=1000,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        bpe.train_from_iterator(corpus, trainer=trainer)
        trained = json.loads(bpe.to_str())["model"]
        merges = [
            tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]
        ]
        tokenizer = RobertaTokenizerFast(vocab=trained["vocab"], merges=merges)
    else:
        raise ValueError(f"Unknown tokenizer kind {kind!r}: expected 'wordpiece' or 'bpe'.")
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_model(
    arch: str,
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    max_position: int = 128,
    seed: int = 0,
    num_labels: int | None = None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Save a random-init `arch` encoder with a copy of its tokenizer, like a Hub checkpoint.

    Without `num_labels` (or `labels`) it is a base model, to be fine-tuned with a fresh head;
    with them it already has a classification head, standing in for a fine-tuned teacher.
    `out_dir` may equal `tokenizer_dir`.
    """
    out_dir = Path(out_dir)
    tokenizer_args = {"model_max_length": max_position}
    if arch == "distilbert":
        # DistilBERT has no segment embeddings, so its tokenizer must not emit them.
        tokenizer_args["model_input_names"] = ["input_ids", "attention_mask"]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, **tokenizer_args)
    shared = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    size = {"hidden_size": hidden_size, "num_hidden_layers": num_layers}  # BERT's names
    size |= {"num_attention_heads": num_heads, "intermediate_size": intermediate_size}
    if arch == "bert":
        config = BertConfig(**size, max_position_embeddings=max_position, **shared)
    elif arch == "roberta":
        config = RobertaConfig(
            **size,
            # RoBERTa numbers positions from pad_token_id + 1.
            max_position_embeddings=max_position + tokenizer.pad_token_id + 1,
            type_vocab_size=1,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **shared,
        )
    elif arch == "distilbert":
        config = DistilBertConfig(
            dim=hidden_size,
            n_layers=num_layers,
            n_heads=num_heads,
            hidden_dim=intermediate_size,
            max_position_embeddings=max_position,
            **shared,
        )
    else:
        raise ValueError(f"Unknown arch {arch!r}: expected 'bert', 'roberta' or 'distilbert'.")

    if labels is not None:
        num_labels = len(labels)
    if num_labels is not None:
        names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(num_labels)]
        config.num_labels = num_labels
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if num_labels is None:
            # RoBERTa's classification head ignores the pooler: leave it out, as the Hub does.
            extra = {"add_pooling_layer": False} if arch == "roberta" else {}
            model = AutoModel.from_config(config, **extra)
        else:
            model = AutoModelForSequenceClassification.from_config(config)
    # transformers 5 always writes safetensors (`model.safetensors`).
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# --------------------------------------------------------------------------------------------
# The demo's assets.
# --------------------------------------------------------------------------------------------

# name -> how to build it. The teachers differ in tokenizer, architecture and shape so that they
# err differently; the student is smaller than both.
DEMO_MODELS: dict[str, dict] = {
    "teacher_bert": {
        "kind": "wordpiece",
        "arch": "bert",
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 128,
        "seed": 1,
    },
    "teacher_roberta": {
        "kind": "bpe",
        "arch": "roberta",
        "hidden_size": 48,
        "num_layers": 3,
        "num_heads": 2,
        "intermediate_size": 96,
        "seed": 2,
    },
    "student": {
        "kind": "wordpiece",
        "arch": "bert",
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 64,
        "seed": 3,
    },
}
_DATA_FILES = ("train.jsonl", "validation.jsonl")
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _complete(path: Path, files: Sequence[str]) -> bool:
    return all((path / name).is_file() for name in files)


def _build_atomically(target: Path, files: Sequence[str], build, force: bool) -> bool:
    """Run `build(tmp_dir)` and move the result to `target`, unless a complete one is there.

    Readers never see a half-written `target`, and a build that dies leaves only a temp dir.
    Returns whether it built anything.
    """
    if not force and _complete(target, files):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging)
        open_to_team(staging)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            target.replace(old / target.name)
            shutil.rmtree(old)
        staging.replace(target)
    except OSError:
        # Lost a race with a concurrent builder: fine, as long as its result is complete.
        if not _complete(target, files):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _build_model_dir(out_dir: Path, kind: str, arch: str, **model_args) -> None:
    build_tokenizer(kind, out_dir)
    build_tiny_model(arch, out_dir, out_dir, **model_args)


def build_demo_assets(root: str | Path, force: bool = False) -> dict[str, Path]:
    """Build the demo's dataset and base models under `root`, skipping those already complete.

    Returns `data` (the sst2_toy directory) and one path per entry of `DEMO_MODELS`.
    """
    root = Path(root)
    paths = {"data": root / "data" / "sst2_toy"}
    if _build_atomically(paths["data"], _DATA_FILES, make_toy_task, force):
        logger.info("Built the toy sst2 task in %s", paths["data"])

    for name, spec in DEMO_MODELS.items():
        paths[name] = root / "models" / name
        build = functools.partial(_build_model_dir, **spec)
        if _build_atomically(paths[name], _MODEL_FILES, build, force):
            logger.info("Built %s in %s", name, paths[name])
    return paths


def main(argv: Sequence[str] | None = None, prog: str = "python -m sead.toy") -> None:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build the offline demo's assets: a toy sentiment task in the SST-2 schema "
        "and tiny base models (two teachers, a student), for `sead experiment=demo`.",
    )
    parser.add_argument("root", type=Path, help="folder to build in (the demo reads demo_assets/)")
    parser.add_argument("--force", action="store_true", help="rebuild what is already there")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = build_demo_assets(args.root, force=args.force)
    logger.info("Demo assets ready: %s", ", ".join(f"{k}={v}" for k, v in paths.items()))


if __name__ == "__main__":
    main()
