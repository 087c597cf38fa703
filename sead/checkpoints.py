"""Where a checkpoint's files are, and what identifies them.

Teachers, the transfer set's fill-mask model and the cache keys all need the same two
answers: a local folder with the files (`resolve`; a Hub id is snapshot-downloaded), and a
name that changes exactly when the files do (`identity`, `tokenizer_identity`).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from sead.manifest import FileHashes, hash_files

log = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("config.json", "*.safetensors", "*.bin")
CODE_PATTERN = "*.py"  # the modeling code trust_remote_code runs: part of what a local model is
TOKENIZER_PATTERNS = (
    "tokenizer*.json",
    "vocab*",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "*.model",
)


def resolve(name_or_path: str, revision: str | None, patterns=WEIGHT_PATTERNS) -> Path:
    """A local directory holding the model's files (a Hub id is snapshot-downloaded).

    `snapshot_download` resolves a branch or tag `revision` (null: main) to the
    commit it points to now and returns `snapshots/<commit>/`, so `identity`
    names the exact weights even when the branch moves.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if is_local(name_or_path):
        raise FileNotFoundError(f"Model path {_where(name_or_path)} is not a directory.")
    from huggingface_hub import snapshot_download

    allow = [*patterns, *TOKENIZER_PATTERNS]
    return Path(snapshot_download(name_or_path, revision=revision, allow_patterns=allow))


def is_local(name_or_path: str) -> bool:
    """A path, not a Hub id: it exists, is absolute, starts with . or ~, or has more than one
    / (a Hub id is `name` or `namespace/name`)."""
    path = Path(name_or_path).expanduser()
    return (
        path.exists()
        or path.is_absolute()
        or name_or_path.startswith((".", "~"))
        or name_or_path.count("/") > 1
    )


def _where(name_or_path: str) -> str:
    """The path as given, and where a relative one was looked for."""
    relative = not Path(name_or_path).expanduser().is_absolute()
    return f"{name_or_path!r}" + (f" (relative to {Path.cwd()})" if relative else "")


def check_checkpoint(
    name_or_path: str, option: str, revision: str | None = None, tokenizer: bool = True
) -> None:
    """A checkpoint can be loaded, checked before any work: a local folder holds its config,
    weights (and tokenizer), or else says what it lacks; a Hub id's config is in the local
    Hugging Face cache or on the Hub (an offline machine, or a mistyped id, stops here).

    Run in the check stage for every teacher and the student, so the last teacher's bad path
    stops the run before the first is fine-tuned. Errors name the option.
    """
    if not is_local(name_or_path):
        _check_hub(name_or_path, revision, option)
        return
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{option}={_where(name_or_path)} is not a directory.")
    lacks = []
    if not (path / "config.json").is_file():
        lacks.append("config.json")
    if not any(p.is_file() for pattern in WEIGHT_PATTERNS[1:] for p in path.glob(pattern)):
        lacks.append("weights (*.safetensors or *.bin)")
    if tokenizer and not _has_tokenizer(path):
        lacks.append(f"tokenizer files ({', '.join(TOKENIZER_PATTERNS)})")
    if lacks:
        raise FileNotFoundError(
            f"{option}={name_or_path!r} is not a checkpoint folder: it has no {', '.join(lacks)}."
        )


def check_tokenizer(name_or_path: str, option: str) -> None:
    """A tokenizer set apart from its checkpoint: a local folder holds tokenizer files (a Hub
    id is left to loading)."""
    if not is_local(name_or_path):
        return
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{option}={_where(name_or_path)} is not a directory.")
    if not _has_tokenizer(path):
        raise FileNotFoundError(
            f"{option}={name_or_path!r} has no tokenizer files ({', '.join(TOKENIZER_PATTERNS)})."
        )


def _has_tokenizer(path: Path) -> bool:
    return any(p.is_file() for pattern in TOKENIZER_PATTERNS for p in path.glob(pattern))


def _check_hub(repo_id: str, revision: str | None, option: str) -> None:
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo_id, "config.json", revision=revision)
    except (OSError, ValueError) as err:  # not found, offline and not cached, not an id
        reason = " ".join(str(err).split())
        raise FileNotFoundError(
            f"{option}={repo_id!r} cannot be had: {reason} Expected a local checkpoint folder, "
            "or a Hub id reachable from here (offline: a local path)."
        ) from err


def identity(
    name_or_path: str,
    local_dir: Path,
    patterns=WEIGHT_PATTERNS,
    file_hashes: FileHashes | None = None,
) -> str:
    """What a checkpoint is: Hub id + resolved commit, or a content hash of local files."""
    commit = local_dir.name
    is_snapshot = len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    if Path(name_or_path).expanduser().is_dir() or not is_snapshot:
        files = [p for pattern in patterns for p in local_dir.glob(pattern) if p.is_file()]
        if not files:
            raise FileNotFoundError(f"No {'/'.join(patterns)} files in {local_dir}.")
        files += sorted(p for p in local_dir.glob(CODE_PATTERN) if p.is_file())
        return "sha256:" + hash_files(files, file_hashes)
    return f"{name_or_path}@{commit}"  # snapshot folders are named by commit


def local_identity(name_or_path: str) -> str | None:
    """A local checkpoint folder's content hash; None for a Hub id (named by id and revision)."""
    folder = Path(name_or_path).expanduser()
    return identity(name_or_path, folder) if folder.is_dir() else None


def tokenizer_identity(tok_dir: Path, file_hashes: FileHashes | None = None) -> str:
    """Content hash of a tokenizer's files (vocabulary, merges, special tokens, settings)."""
    files = [p for pattern in TOKENIZER_PATTERNS for p in tok_dir.glob(pattern) if p.is_file()]
    if not files:
        raise FileNotFoundError(
            f"No tokenizer files ({', '.join(TOKENIZER_PATTERNS)}) in {tok_dir}: set "
            f"the teacher's 'tokenizer' to a Hub id or folder that has them."
        )
    return "sha256:" + hash_files(files, file_hashes)


def from_pretrained_with_new_head(model_class, source, who: str, **kwargs):
    """`model_class.from_pretrained(source, **kwargs)` for a base model that gets a fresh
    task head (a teacher sead fine-tunes, the student).

    That head is expected, so transformers' LOAD REPORT table of MISSING head weights is
    replaced by one line saying so; an error in loading is still raised as transformers raises it.
    """
    with _no_load_report():  # a head of another size (a 2-label checkpoint for STS-B) too
        model, info = model_class.from_pretrained(
            source, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    new = sorted({*info.get("missing_keys", ()), *(k[0] for k in info.get("mismatched_keys", ()))})
    # The encoder's own weights (under base_model_prefix, bar the pooler, which sentence-
    # embedding checkpoints drop) are not a head: missing, they start random, which is said.
    base = f"{model.base_model_prefix}." if model.base_model_prefix else None
    body = [k for k in new if base and k.startswith(base) and ".pooler." not in f".{k}"]
    if body:
        log.warning(
            "%s: %d weights of the encoder itself are missing from %s and start random (%s): "
            "a damaged or mismatched checkpoint?",
            who,
            len(body),
            source,
            ", ".join(body[:4]) + (", ..." if len(body) > 4 else ""),
        )
    new = [k for k in new if k not in body]
    if new:
        heads = sorted({key.rsplit(".", 1)[0] for key in new})
        log.info(
            "%s: a new task head (%s) is initialised on %s, as expected for a base model; "
            "training learns it.",
            who,
            ", ".join(heads),
            Path(str(source)).name or source,
        )
    unused = sorted(info.get("unexpected_keys", ()))
    if unused:  # e.g. a pretraining head the task model has no use for
        log.info("%s: %d checkpoint weights unused (%s)", who, len(unused), ", ".join(unused[:4]))
    return model


# Model types whose position ids start after the padding index (RoBERTa's scheme): their
# usable length is max_position_embeddings - (pad_token_id + 1), 512 for roberta-base.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet",
                     "data2vec-text", "longformer", "ibert"}  # fmt: skip


def check_max_length(config, max_length: int, option: str, source: str) -> None:
    """Refuse a truncation length beyond what the model's position embeddings hold, before
    any work (the model would fail on the first long batch with a tensor-size error)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return  # relative or rotary positions: no fixed table
    if config.model_type in _OFFSET_POSITIONS:
        positions -= (config.pad_token_id or 0) + 1
    if max_length > positions:
        raise ValueError(
            f"{option}={max_length}, but {source} holds {positions} positions "
            f"(max_position_embeddings of its config): expected {option} <= {positions}."
        )


@contextmanager
def _no_load_report():
    def drop(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()

    logger = logging.getLogger("transformers.modeling_utils")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
