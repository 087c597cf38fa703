"""The soft-label cache: hits, atomic verified entries, storage, locking, resume, CLI."""

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from safetensors.numpy import load_file, save_file

import sead.manifest
from sead.cache import (
    FILE_HASHES,
    LOGITS_FILE,
    MANIFEST_FILE,
    FileHashes,
    SoftLabelCache,
    fingerprint,
)
from sead.cache import tool as cache_tool
from sead.chunks import LOCK_DIR, PartialEntry
from sead.manifest import hash_files
from sead.representations import Outputs, RepresentationSpec
from tests import cache_worker

REPO = Path(__file__).resolve().parents[1]
KEY = {"model": "m@1", "tokenizer": "t", "task": "sst2", "split": "validation", "data": "d"}
IDX = np.array([3, 1, 2])


class Counter:
    """A stand-in teacher that counts its forward passes."""

    def __init__(self, n=3):
        self.calls = 0
        self.n = n

    def __call__(self, partial):
        assert isinstance(partial, PartialEntry)
        self.calls += 1
        return self.values(self.calls)

    def values(self, call: int) -> np.ndarray:
        """The logits returned by the `call`-th compute (distinct per call)."""
        return np.arange(2 * self.n, dtype=np.float32).reshape(self.n, 2) / 7 + call


def test_second_request_is_a_hit_with_no_compute(tmp_path):
    compute = Counter()
    first = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute, {"teacher": "bert"})
    second = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    assert (first.hit, second.hit, compute.calls) == (False, True, 1)
    np.testing.assert_array_equal(first.logits, second.logits)
    np.testing.assert_array_equal(second.idx, IDX)
    manifest = json.loads((tmp_path / first.fingerprint / MANIFEST_FILE).read_text())
    assert manifest["shape"] == [3, 2] and manifest["n_examples"] == 3
    assert manifest["dtype"] == "float32" and manifest["key"] == {**KEY, "storage_dtype": "float32"}
    assert manifest["about"] == {"teacher": "bert"}
    assert len(manifest["sha256"]) == 64 and len(manifest["idx"]["sha256"]) == 64
    stored = load_file(str(tmp_path / first.fingerprint / LOGITS_FILE))
    np.testing.assert_array_equal(stored["idx"], IDX)  # not a range: kept as a column


def test_fingerprint_depends_on_every_key_field():
    base = fingerprint(KEY)
    assert fingerprint(dict(reversed(KEY.items()))) == base  # order does not matter
    for field in KEY:
        assert fingerprint({**KEY, field: "changed"}) != base, field


def test_no_temp_files_left_behind(tmp_path):
    cache = SoftLabelCache(tmp_path)
    entry = cache.get_or_compute(KEY, IDX, Counter())
    assert {p.name for p in tmp_path.iterdir()} == {entry.fingerprint, LOCK_DIR}
    assert {p.name for p in (tmp_path / entry.fingerprint).iterdir()} == {
        LOGITS_FILE,
        MANIFEST_FILE,
    }


def _damage(entry_dir: Path, how: str) -> None:
    logits_path, manifest_path = entry_dir / LOGITS_FILE, entry_dir / MANIFEST_FILE
    blob = logits_path.read_bytes()
    manifest = json.loads(manifest_path.read_text())
    if how == "truncate":
        logits_path.write_bytes(blob[: len(blob) // 2])
    elif how == "flip":
        logits_path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
    elif how == "manifest_garbage":
        manifest_path.write_text("{not json")
    elif how == "manifest_missing":
        manifest_path.unlink()
    elif how == "logits_missing":
        logits_path.unlink()
    elif how == "shape_edited":
        manifest_path.write_text(json.dumps({**manifest, "shape": [3, 3]}))
    elif how == "idx_edited":
        manifest_path.write_text(json.dumps({**manifest, "idx": {"range": [0, 3]}}))
    elif how == "old_format":
        manifest_path.write_text(json.dumps({**manifest, "manifest_version": 1}))
    elif how == "valid_file_other_values":  # a well-formed file that is not the one recorded
        tensors = load_file(str(logits_path))
        save_file({**tensors, "logits": tensors["logits"] + 1}, str(logits_path))
    else:
        raise AssertionError(how)


DAMAGES = [
    "truncate",
    "flip",
    "manifest_garbage",
    "manifest_missing",
    "logits_missing",
    "shape_edited",
    "idx_edited",
    "old_format",
    "valid_file_other_values",
]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_entry_is_reported_in_one_line_and_recomputed(tmp_path, damage, caplog):
    compute = Counter()
    entry = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    _damage(tmp_path / entry.fingerprint, damage)
    with caplog.at_level(logging.WARNING, logger="sead.cache"):
        again = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    assert not again.hit and compute.calls == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert entry.fingerprint in warnings[0] and "unusable" in warnings[0]
    np.testing.assert_array_equal(again.logits, compute.values(2))
    assert SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute).hit


def test_entry_for_another_example_order_is_not_used(tmp_path):
    compute = Counter()
    SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    again = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX[::-1], compute)
    assert not again.hit and compute.calls == 2


def test_float16_storage_is_its_own_entry_and_returns_what_later_hits_read(tmp_path):
    compute = Counter()
    f32 = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    f16_cache = SoftLabelCache(tmp_path, dtype="float16")
    first = f16_cache.get_or_compute(KEY, IDX, compute)
    again = SoftLabelCache(tmp_path, dtype="float16").get_or_compute(KEY, IDX, compute)
    assert first.fingerprint != f32.fingerprint and not first.hit and again.hit
    assert first.logits.dtype == np.float32
    np.testing.assert_array_equal(first.logits, again.logits)  # the miss returns the stored values
    np.testing.assert_allclose(first.logits, compute.values(2), rtol=1e-3)
    stored = load_file(str(tmp_path / first.fingerprint / LOGITS_FILE))
    assert stored["logits"].dtype == np.float16


def test_sst2_train_sized_entry_is_well_under_a_megabyte(tmp_path):
    n = 67_349  # SST-2 train, idx 0..n-1: stored as a range, not a column
    rng = np.random.default_rng(0)
    entry = SoftLabelCache(tmp_path).get_or_compute(
        KEY, np.arange(n), lambda partial: rng.normal(size=(n, 2))
    )
    size = sum(p.stat().st_size for p in (tmp_path / entry.fingerprint).iterdir())
    assert size < 600_000, size  # 67,349 x 2 float32 = 538,792 bytes + header + manifest
    assert "idx" not in load_file(str(tmp_path / entry.fingerprint / LOGITS_FILE))


@pytest.mark.parametrize(
    "logits, message",
    [
        (np.array([[0.0, np.nan], [1, 2], [3, 4]]), "non-finite values for 1 examples"),
        (np.zeros((2, 2)), r"shape \[2, 2\] for 3 examples"),
    ],
)
def test_bad_teacher_output_is_refused_not_cached(tmp_path, logits, message):
    cache = SoftLabelCache(tmp_path)
    with pytest.raises(ValueError, match=message):
        cache.get_or_compute(KEY, IDX, lambda partial: logits)
    assert not (tmp_path / cache.fingerprint(KEY)).exists()


@pytest.mark.parametrize("storage", ["logits", "vectors"])
def test_values_beyond_float16s_range_are_refused_not_stored_as_inf(tmp_path, storage):
    """Finite outputs that float16 storage would turn into inf: refused, naming the setting,
    and nothing (entry or chunks) left for a rerun to read back."""
    big = np.array([[1e5, 0.0], [1.0, 2.0], [3.0, 4.0]], np.float32)
    cache = SoftLabelCache(tmp_path, dtype="float16" if storage == "logits" else "float32")
    spec = RepresentationSpec(-1, "mean", "float16") if storage == "vectors" else None

    def compute(partial):
        partial.start({"n_chunks": 1})
        (_, out, _), *_ = partial.fill([np.arange(3)], lambda chunk: big)
        return Outputs(np.zeros((3, 2), np.float32), big) if spec else out

    setting = "cache.dtype" if storage == "logits" else "cache.representations.dtype"
    with pytest.raises(ValueError, match=rf"beyond float16's range .* {setting}=float32"):
        cache.get_or_compute(KEY, IDX, compute, representations=spec)
    fp = cache.fingerprint(KEY, spec)
    assert not cache.path(fp).exists() and not cache.partial_path(fp).exists()


def test_temp_dir_of_a_killed_writer_is_cleaned_up(tmp_path):
    cache = SoftLabelCache(tmp_path)
    stale = tmp_path / f".{cache.fingerprint(KEY)}.abc123"
    stale.mkdir()
    (stale / LOGITS_FILE).write_bytes(b"half")
    cache.get_or_compute(KEY, IDX, Counter())
    assert not stale.exists()


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            {"dtype": "int8"},
            r"cache.dtype=.int8. is not allowed: expected one of \[.float32., .float16.\]",
        ),
        (
            {"chunk_size": 0},
            "cache.chunk_size=0 is not allowed: expected an integer in \\[1, inf\\)",
        ),
        ({"autocast": "fp8"}, "cache.autocast='fp8' is not allowed: expected bf16 | fp16 | null"),
    ],
)
def test_bad_cache_settings_are_named(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        SoftLabelCache(tmp_path, **setting)


# --- chunks of an entry in progress ---------------------------------------------------------


def test_chunks_are_reused_only_when_intact_and_under_the_same_plan(tmp_path, caplog):
    rows, logits = np.array([4, 0, 2]), np.ones((3, 2), np.float32)
    partial = PartialEntry(tmp_path / "p", chunk_size=3)
    partial.start({"plan": 1})
    partial.save(0, rows, logits)
    partial.save(1, rows + 1, logits)
    chunk1 = tmp_path / "p" / "chunk-00001.safetensors"
    blob = bytearray(chunk1.read_bytes())
    blob[-1] ^= 0xFF
    chunk1.write_bytes(bytes(blob))

    resumed = PartialEntry(tmp_path / "p", chunk_size=3)
    resumed.start({"plan": 1})
    np.testing.assert_array_equal(resumed.load(0, rows), logits)
    assert resumed.load(0, rows[::-1]) is None  # other examples: not this chunk
    assert resumed.load(1, rows + 1) is None and "checksum" in caplog.text
    assert resumed.load(2, rows) is None and resumed.reused == 1

    replanned = PartialEntry(tmp_path / "p", chunk_size=3)
    replanned.start({"plan": 2})  # e.g. another batch size: batches would differ
    assert replanned.load(0, rows) is None


# --- two real processes ---------------------------------------------------------------------


def test_two_processes_racing_for_one_entry_compute_it_once(tmp_path):
    counter, barrier = tmp_path / "computed.txt", tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "SEAD_TEST_COUNTER": str(counter)}
    procs = [cache_worker.spawn("race", tmp_path / "c", barrier, env=env) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert len(counter.read_text().splitlines()) == 1  # exactly one process computed
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["logits"] == results[1]["logits"]
    waiter = outputs[[r["hit"] for r in results].index(True)][1]
    assert "being computed by another process; waiting" in waiter


# --- content hashes of checkpoints ----------------------------------------------------------


def test_file_hashes_are_memoized_until_a_file_changes(tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 1000)
    memo = FileHashes(tmp_path / FILE_HASHES)
    digest = hash_files([weights], memo)
    assert digest == hash_files([weights])  # same value as without a memo

    def no_rehash(paths):
        raise AssertionError("rehashed an unchanged file")

    monkeypatch.setattr(sead.manifest, "_hash_contents", no_rehash)
    assert hash_files([weights], FileHashes(tmp_path / FILE_HASHES)) == digest
    monkeypatch.undo()

    weights.write_bytes(b"y" * 1000)  # same size, new contents and mtime
    assert hash_files([weights], memo) != digest
    (tmp_path / FILE_HASHES).write_text("{damaged")  # a bad memo is ignored, then rewritten
    assert hash_files([weights], memo) == hash_files([weights])


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def filled(tmp_path):
    cache = SoftLabelCache(tmp_path / "logits")
    bert = cache.get_or_compute(KEY, IDX, Counter(), {"teacher": "bert"})
    rte = cache.get_or_compute({**KEY, "task": "rte"}, IDX, Counter(), {"teacher": "roberta"})
    return cache, bert.fingerprint, rte.fingerprint


def _cli(capsys, root, *args):
    code = cache_tool.main(["--root", str(root), *args])
    return code, capsys.readouterr().out


def test_cli_list_and_show(filled, capsys):
    cache, bert, rte = filled
    code, out = _cli(capsys, cache.root, "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == [
        "FINGERPRINT", "TEACHER", "TASK", "SPLIT", "EXAMPLES", "DTYPE", "REPRESENTATIONS",
        "SIZE", "CREATED",
    ]  # fmt: skip
    assert sorted(row.split()[:7] for row in rows) == sorted(  # logits only: no vectors, "-"
        [
            [bert, "bert", "sst2", "validation", "3", "float32", "-"],
            [rte, "roberta", "rte", "validation", "3", "float32", "-"],
        ]
    )
    code, out = _cli(capsys, cache.root, "show", bert[:8])
    assert code == 0 and json.loads(out[: out.rindex("}") + 1])["fingerprint"] == bert
    assert LOGITS_FILE in out


def test_cli_verify_flags_a_damaged_entry(filled, capsys):
    cache, bert, rte = filled
    assert _cli(capsys, cache.root, "verify")[0] == 0
    _damage(cache.path(rte), "flip")
    code, out = _cli(capsys, cache.root, "verify")
    assert code == 1 and f"ok   {bert}" in out and f"BAD  {rte}" in out


def test_cli_rm_by_filter_fingerprint_and_all(filled, capsys):
    cache, bert, rte = filled
    with pytest.raises(SystemExit, match="Name entries to remove"):
        _cli(capsys, cache.root, "rm")
    _cli(capsys, cache.root, "rm", "--teacher", "roberta")
    assert cache.path(bert).exists() and not cache.path(rte).exists()
    _cli(capsys, cache.root, "rm", bert)
    assert not cache.path(bert).exists()
    cache.partial_path("abc").mkdir()
    code, out = _cli(capsys, cache.root, "rm", "--all")
    assert code == 0 and not cache.partial_path("abc").exists()


def _interrupted(cache, key, teacher) -> str:
    """A partial entry, as a fill killed after its first chunk leaves it."""
    fp = cache.fingerprint(key)
    partial = PartialEntry(cache.partial_path(fp), 1, about={"teacher": teacher, **key})
    partial.start({"n_chunks": 2})
    partial.save(0, np.array([0]), np.zeros((1, 2), np.float32))
    return fp


def test_cli_rm_takes_partial_entries_by_fingerprint_and_filter_and_spares_busy_ones(
    filled, capsys
):
    cache, bert, rte = filled
    mine = _interrupted(cache, {**KEY, "split": "train"}, "bert")
    theirs = _interrupted(cache, {**KEY, "split": "test"}, "roberta")
    code, out = _cli(capsys, cache.root, "list", "--teacher", "bert")
    assert bert in out and mine in out and rte not in out and theirs not in out

    _cli(capsys, cache.root, "rm", "--all", "--teacher", "bert")  # bert's only
    assert not cache.path(bert).exists() and not cache.partial_path(mine).exists()
    assert cache.path(rte).exists() and cache.partial_path(theirs).exists()

    lock = FileLock(str(cache.root / LOCK_DIR / f".partial-{theirs}.chunk-00001.lock"))
    with lock, pytest.raises(SystemExit, match="being filled now .* nothing removed"):
        _cli(capsys, cache.root, "rm", theirs[:10])  # a worker holds a chunk: not pulled away
    assert cache.partial_path(theirs).exists()
    _cli(capsys, cache.root, "rm", theirs[:10])
    assert not cache.partial_path(theirs).exists() and cache.path(rte).exists()


def test_cli_list_shows_a_damaged_manifest_as_a_row_not_a_crash(filled, capsys):
    cache, bert, rte = filled
    (cache.path(rte) / MANIFEST_FILE).write_text(json.dumps({"key": "x", "about": None}))
    code, out = _cli(capsys, cache.root, "list")
    assert code == 0 and bert in out
    assert [line.split()[1:5] for line in out.splitlines() if rte in line] == [["?"] * 4]


def test_make_cache_list_runs_the_cli(filled):
    cache, bert, _ = filled
    proc = subprocess.run(
        ["make", "-s", "cache-list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "SEAD_CACHE": str(cache.root.parent)},
    )
    assert proc.returncode == 0, proc.stderr
    assert bert in proc.stdout


def test_an_empty_split_is_cached_too(tmp_path):
    def compute(partial):
        return np.zeros((0, 2), np.float32)

    assert not SoftLabelCache(tmp_path).get_or_compute(KEY, [], compute).hit
    entry = SoftLabelCache(tmp_path).get_or_compute(KEY, [], compute)
    assert entry.hit and entry.logits.shape == (0, 2)


def test_an_entry_computed_in_this_run_is_not_a_hit_when_read_back(tmp_path):
    """A fine-tuned teacher's eval logits are computed into the cache, then read by the
    pipeline: on an empty cache that is one computation, not a miss and a hit."""
    compute = Counter()
    run = SoftLabelCache(tmp_path)
    first = run.get_or_compute(KEY, IDX, compute)
    again = run.get_or_compute(KEY, IDX, compute)
    assert (first.hit, again.hit, compute.calls) == (False, False, 1)
    assert (run.hits, run.misses) == (0, 1)
    later = SoftLabelCache(tmp_path)  # the next run reads it: a hit
    assert later.get_or_compute(KEY, IDX, compute).hit and (later.hits, later.misses) == (1, 0)
