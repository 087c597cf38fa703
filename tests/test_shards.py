"""One cache entry filled by several processes: job shards (`cache.shard=i/n`) and chunk claims.

The ranks of one `torchrun` run are covered with the DDP test in `test_sweeps.py`.
"""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sead.cache import SoftLabelCache
from sead.cache import tool as cache_tool
from sead.chunks import LOCK_DIR, Assembled, ChunkConflict, PartialEntry, Shard
from sead.entry import read_entry
from tests import cache_worker
from tests.helpers import compose, kill_after_chunks

CHUNK, BATCH = 16, 8  # the toy train split (240 rows) in about 15 chunks


@pytest.fixture(scope="module")
def teacher(tiny_assets, tmp_path_factory):
    """A teacher checkpoint with its classification head saved: every process loads the same."""
    folder = tmp_path_factory.mktemp("shard_teacher")
    source = tiny_assets / "models" / "teacher_bert"
    AutoModelForSequenceClassification.from_pretrained(source).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def single_fill(teacher, tiny_assets, tmp_path_factory):
    """The train logits as one uninterrupted process fills them (what shards must equal)."""
    root = tmp_path_factory.mktemp("single")
    return cache_worker.fill(teacher, tiny_assets / "data" / "sst2_toy", root, CHUNK, BATCH)


@pytest.fixture(scope="module")
def n_chunks(teacher, tiny_assets, tmp_path_factory) -> int:
    """How many chunks the train split's fill has (batches are length-sorted, so it varies)."""
    root = tmp_path_factory.mktemp("count")
    entry = cache_worker.fill(teacher, tiny_assets / "data" / "sst2_toy", root, CHUNK, BATCH, "0/2")
    assert entry.pending[1] > 8
    return entry.pending[1]


def _entries(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _worker(teacher, tiny_assets, root, shard=None, delay=0.0):
    args = [teacher, tiny_assets / "data" / "sst2_toy", root, CHUNK, BATCH, delay]
    return cache_worker.spawn("fill", *args, *([shard] if shard else []))


def _report(proc) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


# --- the shard setting ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0/1", "1/4", " 3 / 4 "])
def test_a_shard_is_chunk_set_i_of_n(value):
    shard = Shard.parse(value)
    assert 0 <= shard.index < shard.count and Shard.parse(None) is None


@pytest.mark.parametrize("value", ["4/4", "5/4", "1/0", "-1/2", "1", "a/b", "1/2/3"])
def test_a_bad_shard_is_refused_by_name(value):
    with pytest.raises(ValueError, match=r"cache.shard=.*expected 'i/n' with 0 <= i < n"):
        SoftLabelCache("unused", shard=value)


def test_shards_split_the_chunks_without_overlap_and_ranks_split_a_shard_again():
    for n in (1, 2, 3, 4):
        taken = [PartialEntry(Path("p"), 1, shard=Shard(i, n)).chunks_to_fill(10) for i in range(n)]
        assert sorted(sum(taken, [])) == list(range(10))
    job = Shard.parse("1/2")
    ranks = [job.among_ranks(r, 2, sync=None) for r in (0, 1)]
    assert [str(r) for r in ranks] == ["1/4", "3/4"]
    both = sum((PartialEntry(Path("p"), 1, shard=r).chunks_to_fill(12) for r in ranks), [])
    assert sorted(both) == PartialEntry(Path("p"), 1, shard=job).chunks_to_fill(12)


def test_a_shard_needs_stage_teachers_and_says_so_before_any_work(tiny_assets, tmp_path):
    cfg = compose(
        ["experiment=demo", f"paths.demo_dir={tiny_assets}", "cache.shard=1/4"],
        output_dir=str(tmp_path / "run"),
    )
    from sead import pipeline

    with pytest.raises(ValueError, match=r"cache.shard=1/4 .* stage=all needs every entry whole"):
        pipeline.run(cfg)
    assert not (tmp_path / "run" / "student").exists()


# --- claims ---------------------------------------------------------------------------------


def test_a_chunk_claimed_elsewhere_is_waited_for_then_read_not_computed(tmp_path):
    rows = [np.arange(i * 3, i * 3 + 3) for i in range(3)]
    partial = PartialEntry(tmp_path / ".partial-x", chunk_size=3)
    partial.start({"n_chunks": 3})
    claimed = threading.Event()

    def another_process_computes_chunk_1():
        other = FileLock(str(tmp_path / LOCK_DIR / ".partial-x.chunk-00001.lock"))
        with other:
            claimed.set()
            time.sleep(0.5)
            PartialEntry(tmp_path / ".partial-x", 3).save(
                1, rows[1], np.full((3, 2), 7, np.float32)
            )

    thread = threading.Thread(target=another_process_computes_chunk_1)
    thread.start()
    claimed.wait(10)
    computed = []

    def compute(index):
        computed.append(index)
        return np.full((3, 2), index, np.float32)

    filled = [(i, now) for i, logits, now in partial.fill(rows, compute)]
    thread.join()
    assert computed == [0, 2]  # never chunk 1
    assert filled == [(0, True), (2, True), (1, False)]  # chunk 1 last, once it was saved
    assert np.all(partial.load(1, rows[1]) == 7)


def test_a_shard_waiting_for_a_chunk_stops_when_another_process_assembled_the_entry(tmp_path):
    """Its chunks are gone because the entry is stored: it must not compute them again."""
    rows = [np.arange(i, i + 1) for i in range(2)]
    stored = tmp_path / "entry" / "manifest.json"
    partial = PartialEntry(tmp_path / ".partial-x", 1, shard=Shard(0, 1), stored=stored)
    partial.start({"n_chunks": 2})
    claimed = threading.Event()

    def another_process_finishes_and_assembles():
        with FileLock(str(tmp_path / LOCK_DIR / ".partial-x.chunk-00000.lock")):
            claimed.set()
            time.sleep(0.3)
            stored.parent.mkdir()
            stored.write_text("{}")
            PartialEntry(tmp_path / ".partial-x", 1).remove()

    thread = threading.Thread(target=another_process_finishes_and_assembles)
    thread.start()
    claimed.wait(10)
    computed = []
    with pytest.raises(Assembled):
        for _ in partial.fill(rows, lambda i: computed.append(i) or np.zeros((1, 2))):
            pass
    thread.join()
    assert computed == [1]  # chunk 1 before the entry was stored; never chunk 0


def test_a_shard_job_reads_the_entry_another_job_stored_while_it_started(tmp_path):
    """The race CI once hit: a job whose chunks were assembled and removed meanwhile must read
    the stored entry, not recreate the partial folder and compute its chunks again."""
    key, idx, about = {"model": "m", "task": "t", "split": "train"}, np.arange(2), None
    other_job = SoftLabelCache(tmp_path, chunk_size=1)
    stored = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    computed = []

    def compute(partial):  # what `inference.predict_logits` does with the partial entry
        other_job.get_or_compute(key, idx, lambda _: stored, about)  # it finishes first
        partial.start({"n_chunks": 2})
        rows = [np.arange(i, i + 1) for i in range(2)]
        return np.concatenate([out for _, out, _ in partial.fill(rows, computed.append)])

    entry = SoftLabelCache(tmp_path, chunk_size=1).fill_shard(key, idx, compute, about, Shard(0, 2))
    assert computed == [] and entry.pending is None
    assert np.array_equal(entry.logits, stored)
    assert not list(tmp_path.glob(".partial-*"))


def test_a_shard_job_refills_an_entry_that_failed_verification_and_only_its_own_chunks(tmp_path):
    """A manifest already there when the fill starts is the broken entry, not a finished one:
    job 0/2 computes its chunks and waits for job 1/2's, as with no entry at all; job 1/2
    then finds every chunk and assembles the entry."""
    key, idx = {"model": "m", "task": "t", "split": "train"}, np.arange(4)
    cache = SoftLabelCache(tmp_path, chunk_size=1)
    cache.get_or_compute(key, idx, lambda _: np.zeros((4, 2), np.float32))
    (cache.path(cache.fingerprint(key)) / "logits.safetensors").write_bytes(b"broken")
    computed = []

    def compute(partial):
        partial.start({"n_chunks": 4})
        rows = [np.arange(i, i + 1) for i in range(4)]

        def one(chunk):
            computed.append(chunk)
            return np.full((1, 2), 5.0 + chunk, np.float32)

        filled = partial.fill(rows, one)
        return np.concatenate([out for _, out, _ in sorted(filled, key=lambda t: t[0])])

    first = SoftLabelCache(tmp_path, chunk_size=1).fill_shard(key, idx, compute, None, Shard(0, 2))
    assert computed == [0, 2] and first.pending == (2, 4) and first.logits is None
    second = SoftLabelCache(tmp_path, chunk_size=1).fill_shard(key, idx, compute, None, Shard(1, 2))
    assert computed == [0, 2, 1, 3] and second.pending is None
    assert np.array_equal(second.logits, [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0], [8.0, 8.0]])


def test_an_idle_rank_takes_its_teams_unstarted_chunks_from_the_end_and_a_job_does_not(
    tmp_path,
):
    rows = [np.arange(i, i + 1) for i in range(8)]

    def fill(shard, folder):
        partial = PartialEntry(tmp_path / folder, chunk_size=1, shard=shard)
        partial.start({"n_chunks": 8})
        return [i for i, _, now in partial.fill(rows, lambda i: np.zeros((1, 2))) if now]

    rank_1 = Shard(0, 2).among_ranks(1, 2, sync=None)  # job 0/2, rank 1 of 2: chunk 2, 6
    assert str(rank_1) == "2/4" and rank_1.team == (0, 2)
    PartialEntry(tmp_path / "ranks", 1).start({"n_chunks": 8})
    PartialEntry(tmp_path / "ranks", 1).save(4, rows[4], np.zeros((1, 2)))  # rank 0 did chunk 4
    # its own chunks, then rank 0's (0, 4) not yet started, last first; never job 1/2's chunks
    assert fill(rank_1, "ranks") == [2, 6, 0]
    assert fill(Shard(0, 2), "job") == [0, 2, 4, 6]  # a job: its chunk set only


def test_another_plan_while_a_chunk_is_claimed_is_an_error_not_a_wipe(tmp_path):
    partial = PartialEntry(tmp_path / ".partial-x", chunk_size=3)
    partial.start({"batch_size": 8})
    partial.save(0, np.arange(3), np.zeros((3, 2), np.float32))
    with partial.claim(1, wait=False) as claimed:
        assert claimed
        with pytest.raises(ChunkConflict, match=r"batch_size and cache.chunk_size"):
            PartialEntry(tmp_path / ".partial-x", 3).start({"batch_size": 16})
    assert (tmp_path / ".partial-x" / "chunk-00000.safetensors").is_file()  # nothing lost
    PartialEntry(tmp_path / ".partial-x", 3).start({"batch_size": 16})  # idle: dropped
    assert not (tmp_path / ".partial-x" / "chunk-00000.safetensors").exists()


# --- job shards -----------------------------------------------------------------------------


def test_shards_in_turn_leave_a_partial_entry_then_the_last_assembles_it(
    teacher, tiny_assets, single_fill, n_chunks, tmp_path, capsys
):
    root = tmp_path / "cache"
    task_dir = tiny_assets / "data" / "sst2_toy"
    first = cache_worker.fill(teacher, task_dir, root, CHUNK, BATCH, "0/2")
    evens = len(range(0, n_chunks, 2))
    assert first.logits is None and first.pending == (evens, n_chunks)  # chunks 0, 2, 4...
    assert not _entries(root)

    cache_tool.main(["--root", str(root), "list"])
    listing = capsys.readouterr().out
    assert "No cache entries" in listing
    row = next(line for line in listing.splitlines() if line.startswith(first.fingerprint))
    assert row.split()[1:4] == ["toy_bert", "sst2", "train"]
    assert f" {evens} of {n_chunks} " in row and "idle: rerun to finish" in row

    second = cache_worker.fill(teacher, task_dir, root, CHUNK, BATCH, "1/2")
    assert second.pending is None and not second.hit  # assembled now
    assert np.array_equal(second.logits, single_fill)  # bitwise: same batches, same threads
    assert [p.name for p in _entries(root)] == [first.fingerprint]
    assert not list(root.glob(".partial-*")) and not list((root / LOCK_DIR).glob(".partial-*"))
    again = cache_worker.fill(teacher, task_dir, root, CHUNK, BATCH, "0/2")
    assert again.hit and np.array_equal(again.logits, single_fill)


@pytest.mark.slow
def test_concurrent_jobs_compute_every_chunk_once_and_equal_one_process(
    teacher, tiny_assets, single_fill, n_chunks, tmp_path
):
    """Shards 0/2 and 1/2 at once, plus a second 0/2 (a resubmitted job): no chunk twice."""
    root = tmp_path / "cache"
    procs = [_worker(teacher, tiny_assets, root, s, delay=0.2) for s in ("0/2", "1/2", "0/2")]
    reports = [_report(p) for p in procs]
    computed = sum((r["computed"] for r in reports), [])
    assert sorted(computed) == list(range(n_chunks))  # each chunk once, by one of the jobs
    assert set(reports[1]["computed"]) == set(range(1, n_chunks, 2))
    (entry,) = _entries(root)
    _, logits, _ = read_entry(entry)
    assert np.array_equal(logits, single_fill)
    assert not list(root.glob(".partial-*"))


@pytest.mark.slow
def test_a_killed_shard_job_is_redone_on_the_rerun_and_nothing_else_is(
    teacher, tiny_assets, single_fill, n_chunks, tmp_path
):
    root = tmp_path / "cache"
    child = _worker(teacher, tiny_assets, root, "1/2", delay=1.0)
    kill_after_chunks(child, root)
    done = sorted(int(p.stem.split("-")[1]) for p in root.glob(".partial-*/chunk-*"))
    odds = set(range(1, n_chunks, 2))
    assert 2 <= len(done) < len(odds) and set(done) <= odds

    rerun = _report(_worker(teacher, tiny_assets, root, "1/2"))  # its claims died with it
    assert sorted(rerun["computed"]) == sorted(odds - set(done))
    assert rerun["pending"] == [len(odds), n_chunks]
    last = _report(_worker(teacher, tiny_assets, root, "0/2"))
    assert last["computed"] == list(range(0, n_chunks, 2)) and last["pending"] is None
    (entry,) = _entries(root)
    assert np.array_equal(read_entry(entry)[1], single_fill)


def test_stage_teachers_jobs_share_the_fill_and_a_later_run_reads_it(
    teacher, tiny_assets, tmp_path
):
    """`python -m sead.run stage=teachers cache.shard=i/n` as jobs on a shared cache."""
    from sead import pipeline

    def job(name, *overrides):
        base = [
            "experiment=demo",
            f"paths.demo_dir={tiny_assets}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "teachers=[toy_bert]",
            "teachers.toy_bert.finetune=false",
            f"+teachers.toy_bert.checkpoints={{sst2: '{teacher}'}}",
            "teacher_gate=false",  # an untrained head
            f"cache.chunk_size={CHUNK}",
            f"teachers.toy_bert.batch_size={BATCH}",  # chunks hold whole batches
            "stage=teachers",
        ]
        cfg = compose([*base, *overrides], output_dir=str(tmp_path / name))
        return pipeline.prepare_teachers(cfg)["teachers"]["toy_bert"]

    first = job("job0", "cache.shard=0/2")
    # The eval split is filled whole (the sanity gate needs it); train is half there.
    (split, (done, total)), *more = first["cache_pending"].items()
    assert not more and split == "train" and done == len(range(0, total, 2))
    assert set(first["cache"]) == {"validation", "train"}
    second = job("job1", "cache.shard=1/2")
    assert "cache_pending" not in second and second["cache_hit"] == {
        "validation": True,
        "train": False,  # assembled by this job
    }
    later = job("later")
    assert later["cache_hit"] == {"validation": True, "train": True}
    assert json.loads((tmp_path / "job0" / "teachers.json").read_text())["teachers"]["toy_bert"][
        "cache_pending"
    ] == {"train": [done, total]}
