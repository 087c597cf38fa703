"""`sead cache list|show|rm|verify|export` (`python -m sead.cache ...`): the soft-label cache
and the teacher store, inspected and pruned from the command line (`sead.cache` is the cache)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sead import chunks, prediction_files
from sead import representations as reps
from sead.cache import PARTIAL_PREFIX, SoftLabelCache
from sead.cache import __doc__ as cache_doc
from sead.chunks import PartialEntry
from sead.config import CONF_DIR
from sead.entry import CorruptEntry, entries, manifest_or_none, read_entry
from sead.files import folder_size, format_table, human_size
from sead.manifest import DamagedFolder, store_entries, store_row, verify_store_entry
from sead.tasks import get_task


def _row(folder: Path) -> list[str]:
    manifest = manifest_or_none(folder)
    if manifest is None:
        size = human_size(folder_size(folder))
        return [folder.name, "?", "?", "?", "?", "?", "?", size, "unreadable"]
    key, about = _dict(manifest.get("key")), _dict(manifest.get("about"))
    n_examples = manifest.get("n_examples")
    return [
        folder.name,
        str(about.get("teacher", key.get("model", "?"))),
        str(key.get("task", "?")),
        str(key.get("split", "?")),
        f"{n_examples:,}" if isinstance(n_examples, int) else "?",
        str(manifest.get("dtype", "?")),
        reps.describe_entry(manifest),
        human_size(folder_size(folder)),
        str(manifest.get("created", "?")),
    ]


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _fingerprint_and_record(folder: Path) -> tuple[str, dict]:
    """An entry's (or a partial entry's) fingerprint, and the key and about fields it records."""
    if folder.name.startswith(PARTIAL_PREFIX):  # its plan records teacher, task and split
        return folder.name.removeprefix(PARTIAL_PREFIX), chunks.read_plan(folder) or {}
    manifest = manifest_or_none(folder) or {}
    return folder.name, {**_dict(manifest.get("key")), **_dict(manifest.get("about"))}


def _select(root: Path, args, partial: bool = False) -> list[Path]:
    """Entries named by fingerprint (or a unique prefix) or matching the filters; with
    `partial`, entries being filled or interrupted too (`list` and `rm`)."""
    folders = entries(root) + (sorted(root.glob(f"{PARTIAL_PREFIX}*")) if partial else [])
    if args.fingerprints:
        chosen = []
        for prefix in args.fingerprints:
            matches = [p for p in folders if _fingerprint_and_record(p)[0].startswith(prefix)]
            if len(matches) != 1:
                found = "none" if not matches else ", ".join(p.name for p in matches)
                raise SystemExit(f"{prefix!r} must match exactly one entry in {root}: {found}.")
            chosen += matches
        return chosen
    filters = {k: getattr(args, k, None) for k in ("teacher", "task", "split")}
    filters = {k: v for k, v in filters.items() if v}
    if not filters and not getattr(args, "all", True):
        raise SystemExit(
            "Name entries to remove: fingerprints, --teacher/--task/--split, or --all."
        )
    recorded = {p: _fingerprint_and_record(p)[1] for p in folders}
    return [p for p in folders if all(str(recorded[p].get(k)) == v for k, v in filters.items())]


def _cmd_list(root: Path, args) -> int:
    chosen = _select(root, args, partial=True)
    rows = [_row(p) for p in chosen if not p.name.startswith(PARTIAL_PREFIX)]
    header = ["FINGERPRINT", "TEACHER", "TASK", "SPLIT", "EXAMPLES", "DTYPE", "REPRESENTATIONS"]
    header += ["SIZE", "CREATED"]
    print(format_table([header, *rows]) if rows else f"No cache entries in {root}.")
    partial_rows = [_partial_row(p) for p in chosen if p.name.startswith(PARTIAL_PREFIX)]
    if partial_rows:
        header = ["PARTIAL ENTRY", "TEACHER", "TASK", "SPLIT", "CHUNKS SAVED", "STATE"]
        print("\nEntries being filled, or interrupted:\n" + format_table([header, *partial_rows]))
    store_rows = [store_row(folder) for folder in _store_entries(args)]
    if store_rows:
        header = ["TEACHER STORE ENTRY", "TEACHER", "TASK", "TRAIN EXAMPLES", "SIZE", "CREATED"]
        print(f"\nTeacher store {args.store}:\n" + format_table([header, *store_rows]))
    return 0


def _partial_row(folder: Path) -> list[str]:
    """A partial entry: whose, how many of its chunks are saved, and whether anyone is on it."""
    about = chunks.read_plan(folder) or {}
    done, total = chunks.progress(folder)
    try:
        claimed = PartialEntry(folder, 0).claimed_elsewhere()
        state = f"filling ({len(claimed)} chunk(s) claimed)" if claimed else "idle: rerun to finish"
    except OSError:  # its chunks' locks cannot be opened without write access
        state = "unknown (no write access to its locks)"
    return [
        folder.name.removeprefix(PARTIAL_PREFIX),
        str(about.get("teacher", "?")),
        str(about.get("task", "?")),
        str(about.get("split", "?")),
        f"{done} of {'?' if total is None else total}",
        state,
    ]


def _store_entries(args) -> list[Path]:
    """The teacher store's entries (`--store`), unless entries were named by fingerprint."""
    if args.store is None or args.fingerprints:
        return []
    return store_entries(args.store, teacher=args.teacher, task=args.task)


def _cmd_show(root: Path, args) -> int:
    for folder in _select(root, args):
        manifest = manifest_or_none(folder)
        print(json.dumps(manifest, indent=2) if manifest else f"{folder}: manifest unreadable")
        for path in sorted(folder.iterdir()):
            print(f"  {path.name}  {human_size(path.stat().st_size)}")
    return 0


def _cmd_rm(root: Path, args) -> int:
    cache = SoftLabelCache(root)
    chosen = _select(root, args, partial=True)
    busy = [p.name for p in chosen if p.name.startswith(PARTIAL_PREFIX) and _claimed(p)]
    if busy:
        raise SystemExit(f"{', '.join(busy)}: being filled now (chunks claimed); nothing removed.")
    fps = [_fingerprint_and_record(p)[0] for p in chosen]
    if args.all and not (args.fingerprints or args.teacher or args.task or args.split):
        fps += [p.name.split(".")[1] for p in root.glob(".*.*") if p.is_dir()]  # killed writes
    for fp in dict.fromkeys(fps):
        cache.remove(fp)
        print(f"removed {fp}")
    n = len(dict.fromkeys(fps))
    print(f"{n} entr{'y' if n == 1 else 'ies'} removed from {root}.")
    return 0


def _claimed(folder: Path) -> bool:
    """Whether another process holds one of a partial entry's chunks (unknown: assume so)."""
    try:
        return bool(PartialEntry(folder, 0).claimed_elsewhere())
    except OSError:
        return True


def _cmd_verify(root: Path, args) -> int:
    bad = 0
    chosen = _select(root, args)
    for folder in chosen:
        try:
            read_entry(folder)
            print(f"ok   {folder.name}")
        except (CorruptEntry, FileNotFoundError) as err:
            bad += 1
            print(f"BAD  {folder.name}: {err}")
    print(f"{len(chosen) - bad} ok, {bad} bad in {root}." + (" Remove with `rm`." if bad else ""))
    stored = _store_entries(args)
    store_bad = 0
    for folder in stored:
        try:  # rehashed from the files, not from the memo: this is the check of last resort
            verify_store_entry(folder)
            print(f"ok   teacher {folder.name}")
        except DamagedFolder as err:
            store_bad += 1
            print(f"BAD  teacher {folder.name}: {err}")
    if stored:
        print(
            f"{len(stored) - store_bad} ok, {store_bad} bad in the teacher store {args.store}."
            + (" A run rebuilds a bad entry; or delete its folder." if store_bad else "")
        )
    return 1 if bad or store_bad else 0


def _cmd_export(root: Path, args) -> int:
    """Write the chosen entries as prediction files, and the teacher config that reads them."""
    if not (args.fingerprints or args.teacher or args.task or args.split):
        raise SystemExit("Name entries to export: fingerprints, or --teacher/--task/--split.")
    chosen = _select(root, args)
    if not chosen:
        raise SystemExit(f"No cache entry in {root} matches; see `list`.")
    single = args.output.suffix in prediction_files.SUFFIXES
    if single and len(chosen) > 1:
        raise SystemExit(
            f"{len(chosen)} entries match, one file ({args.output}) takes one: narrow it down "
            f"(--teacher/--task/--split or a fingerprint), or give a folder."
        )
    names: dict[tuple, Path] = {}  # every name checked before any file is written
    for folder in chosen:
        name = _export_name(manifest_or_none(folder) or read_entry(folder)[0])
        if name in names:
            raise SystemExit(
                f"Two entries for teacher {name[0]}, task {name[1]}, split {name[2]} "
                f"({names[name].name} and {folder.name}): export one by fingerprint."
            )
        names[name] = folder
    exported = []  # (teacher, task, split, file, format)
    for name, folder in names.items():
        _, logits, idx = read_entry(folder)
        teacher, task, split = name[0], get_task(name[1]), name[2]
        path = args.output if single else args.output / f"{'-'.join(name)}.{args.format}"
        fmt = prediction_files.write(path, idx, logits.astype(np.float32), task.is_regression)
        print(f"{folder.name} -> {path} ({len(idx):,} rows, format {fmt})")
        exported.append((teacher, task, split, path, fmt))
    _print_teacher_config(exported)
    return 0


def _export_name(manifest: dict) -> tuple[str, str, str]:
    """(teacher, task, split) of a cache entry: what its exported file is named by."""
    key, about = manifest["key"], manifest.get("about", {})
    return str(about.get("teacher", key.get("model"))), key["task"], key["split"]


def _print_teacher_config(written: list[tuple]) -> None:
    """The teacher config that reads the exported files back (one per teacher and task)."""
    by_teacher: dict[tuple, dict] = {}
    for teacher, task, split, path, fmt in written:
        by_teacher.setdefault((teacher, task.name, fmt), {})[split] = path
    for (teacher, task_name, fmt), files in by_teacher.items():
        labels = get_task(task_name).labels if get_task(task_name).kind == "classification" else ()
        print(f"\n# conf/teachers/{teacher}_files.yaml (task {task_name})\n{teacher}_files:")
        print("  predictions:")
        for split, path in files.items():
            print(f"    {split}: {Path(path).resolve()}")
        print(f"  format: {fmt}")
        if labels:
            print(f"  labels: [{', '.join(json.dumps(label) for label in labels)}]")  # "False"


def default_roots() -> tuple[Path, Path]:
    """`paths.logits_dir` and `paths.teachers_dir` of the composed config, so the CLI sees
    what runs use."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        paths = compose("config").paths
    return Path(paths.logits_dir), Path(paths.teachers_dir)


def main(argv: list[str] | None = None, prog: str = "python -m sead.cache") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=cache_doc.split("\n")[0])
    parser.add_argument("--root", type=Path, help="cache folder (default: paths.logits_dir)")
    parser.add_argument(
        "--store",
        type=Path,
        help="teacher store, which list and verify cover too (default: paths.teachers_dir, "
        "or <root>/../teachers with --root)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, helptext in [
        ("list", "entries with teacher, task, split, size, created"),
        ("show", "an entry's manifest and files"),
        ("rm", "remove entries by fingerprint, by teacher/task/split, or --all"),
        ("verify", "re-check every entry's checksums (exit 1 if any is bad)"),
        ("export", "write entries as prediction files a predictions teacher reads"),
    ]:
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("fingerprints", nargs="*", help="fingerprints or unique prefixes")
        sub.add_argument("--teacher")
        sub.add_argument("--task")
        sub.add_argument("--split")
        if name == "rm":
            sub.add_argument("--all", action="store_true", help="every entry and partial run")
        if name == "export":
            sub.add_argument(
                "-o",
                "--output",
                type=Path,
                required=True,
                help="a file (.jsonl, .npy, .safetensors) for one entry, or a folder",
            )
            sub.add_argument(
                "--format",
                choices=["jsonl", "npy", "safetensors"],
                default="jsonl",
                help="file type when --output is a folder (default jsonl)",
            )
    args = parser.parse_args(argv)
    if args.command == "show" and not args.fingerprints:
        parser.error("show needs a fingerprint (see `list`).")
    if args.root is None:
        root, store = default_roots()
    else:
        root, store = args.root, args.root.parent / "teachers"
    args.store = args.store or store
    command = {
        "list": _cmd_list,
        "show": _cmd_show,
        "rm": _cmd_rm,
        "verify": _cmd_verify,
        "export": _cmd_export,
    }
    return command[args.command](root, args)
