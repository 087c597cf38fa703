"""Sweeps as users run them: parallel jobs, a failing job, Optuna, and DDP with torchrun."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sead import toy

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TORCHRUN_2_PROCESSES = (sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2")  # fmt: skip


def _sead_run(*args, timeout=600, launcher=(sys.executable,)):
    proc = subprocess.run(
        [*launcher, "-m", "sead.run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    return proc


def _demo(tiny_assets, cache, *overrides):
    return [
        "experiment=demo",
        f"paths.demo_dir={tiny_assets}",
        f"paths.cache_dir={cache}",
        "train.epochs=1",
        "teachers.toy_bert.finetune_args.epochs=1",
        "teachers.toy_roberta.finetune_args.epochs=1",
        "data.max_train_samples=120",
        "data.max_eval_samples=60",
        "teacher_gate=false",  # one-epoch teachers on 120 examples are near chance
        *overrides,
    ]


def _logit_entries(cache: Path) -> list[str]:
    """Entries in the logit cache, temporary ones (dot-prefixed) included; not its bookkeeping."""
    bookkeeping = {".locks", "file_hashes.json", ".file_hashes.json.lock"}
    return sorted(p.name for p in (cache / "logits").iterdir() if p.name not in bookkeeping)


def test_parallel_sweep_records_the_failed_job_and_goes_on(tiny_assets, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep, cache = tmp_path / "multirun", tmp_path / "cache"
    good, bad = tiny_assets / "models" / "student", tmp_path / "no_such_student"
    proc = _sead_run(
        "-m",
        *_demo(tiny_assets, cache, f"student.model={good},{bad}"),
        "hydra/launcher=local_parallel",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # the sweep went on past the failure,
    assert "1 job(s) of the sweep failed: 1 " in proc.stderr  # and then says so
    ok, failed = (json.loads((sweep / str(i) / "results.json").read_text()) for i in (0, 1))
    assert ok["status"] == "ok" and failed["status"] == "failed"
    assert f"student.model={bad}" in failed["overrides"]
    assert failed["error"]["type"] in {"OSError", "FileNotFoundError"}
    assert str(bad) in failed["error"]["message"]
    assert failed["error"]["traceback"][-1].startswith(failed["error"]["type"])
    # Both jobs ran their teachers at the same time: each logit entry was computed once.
    assert _logit_entries(cache) == sorted(ok["teachers"][t]["cache"][s] for t in ok["teachers"]
                                           for s in ("train", "validation"))  # fmt: skip
    assert (sweep / "0" / "student" / "README.md").is_file()
    assert set(ok["speed"]["speedup"]) == {"toy_bert", "toy_roberta"}
    assert all(speedup > 0 for speedup in ok["speed"]["speedup"].values())
    events = [json.loads(x)["event"] for x in (sweep / "0" / "metrics.jsonl").open()]
    assert events[0] == "config" and events[-1] == "results" and "train" in events

    proc = subprocess.run(
        [sys.executable, "-m", "sead.report", str(sweep)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(sweep / "report.csv")
    assert table["status"].tolist() == ["ok", "failed"]
    assert table["student"].iloc[0] == pytest.approx(
        ok["student"]["metrics"]["validation"]["accuracy"]
    )
    assert (sweep / "models_sst2.png").is_file() and (
        sweep / "student_vs_student_model.png"
    ).is_file()


def test_single_run_failure_is_recorded_then_raised(tiny_assets, tmp_path):
    run_dir = tmp_path / "run"
    proc = _sead_run(
        *_demo(tiny_assets, tmp_path / "cache", f"data.dir={tmp_path / 'nowhere'}"),
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode != 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed"
    assert results["error"]["type"] == "FileNotFoundError"
    assert "nowhere" in results["error"]["message"]
    assert results["settings"]["task"] == "sst2"


def test_fail_fast_ends_the_sweep_with_the_error(tiny_assets, tmp_path):
    sweep = tmp_path / "multirun"
    proc = _sead_run(
        "-m",
        *_demo(tiny_assets, tmp_path / "cache", f"data.dir={tmp_path / 'nowhere'}"),
        "seed=1,2",
        "fail_fast=true",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode != 0
    assert "FileNotFoundError" in proc.stderr and "nowhere" in proc.stderr
    assert json.loads((sweep / "0" / "results.json").read_text())["status"] == "failed"


def test_optuna_sweep_counts_a_failed_trial_and_finds_the_best(tiny_assets, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "optuna"
    good, bad = tiny_assets / "models" / "student", tmp_path / "no_such_student"
    proc = _sead_run(
        "-m",
        *_demo(tiny_assets, tmp_path / "cache"),
        "hydra/sweeper=optuna",
        # Seeded random sampling visits both choices in two trials. (Not the grid sampler: the
        # plugin's study.tell on a failed trial that exhausts a grid raises Study.stop errors.)
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.direction=maximize",
        f"student.model=choice({good},{bad})",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_failure_rate=1.0",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert sorted(r["status"] for r in results) == ["failed", "ok"]
    (ok,) = [r for r in results if r["status"] == "ok"]
    best = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {ok['student']['metrics']['validation']['accuracy']}" in best

    # Under the rate, the study stops at its first failed trial, as in any Hydra app.
    stopped = tmp_path / "stopped"
    proc = _sead_run(
        "-m",
        *_demo(tiny_assets, tmp_path / "cache"),
        "hydra/sweeper=optuna",
        f"student.model={bad}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",  # a batch of one trial (the plugin's default is 2)
        "hydra.sweeper.max_failure_rate=0.0",
        f"hydra.sweep.dir={stopped}",
    )
    assert proc.returncode != 0 and str(bad) in proc.stderr
    assert [p.parent.name for p in stopped.glob("*/results.json")] == ["0"]


def _checkpoint_teachers(tmp_path) -> list[str]:
    """Overrides for two tiny teacher checkpoints (DDP fine-tunes no teacher)."""
    overrides = ["cache.chunk_size=16"]  # the 120 train rows in several chunks
    for name, kind, arch in (("bert", "wordpiece", "bert"), ("roberta", "bpe", "roberta")):
        path = tmp_path / f"finetuned_{name}"
        toy.build_tokenizer(kind, path)
        toy.build_tiny_model(arch, path, path, labels=["negative", "positive"], hidden_size=32,
                             num_layers=2, num_heads=2, intermediate_size=64)  # fmt: skip
        overrides += [
            f"teachers.toy_{name}.batch_size=8",  # a chunk holds whole batches
            f"teachers.toy_{name}.finetune=false",
            f"+teachers.toy_{name}.checkpoints.sst2={path}",
        ]
    return overrides


def _torchrun(assets, cache, run_dir, *overrides):
    """A demo run in two CPU processes (gloo): the finished process and its results."""
    proc = _sead_run(
        *_demo(assets, cache, *overrides),
        "train.batch_size=16",
        f"hydra.run.dir={run_dir}",
        launcher=TORCHRUN_2_PROCESSES,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc, json.loads((run_dir / "results.json").read_text())


def test_ddp_with_torchrun_shares_the_cache_fill_and_writes_results_once(tiny_assets, tmp_path):
    """Two CPU processes (gloo): each rank computes half the chunks of the train entries, one
    assembles each entry, and the entries equal a single process's byte for byte."""
    teachers = ["toy_bert", "toy_roberta"]
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    checkpoints = _checkpoint_teachers(tmp_path)
    proc, results = _torchrun(tiny_assets, cache, run_dir, *checkpoints)
    assert results["status"] == "ok"
    assert results["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert len(_logit_entries(cache)) == 4  # one per teacher and split, no temporary leftovers
    output = proc.stdout + proc.stderr
    # Each entry computed (or assembled) once, and read by the other rank.
    assert output.count("Cache miss") == 4 and output.count("Cache hit") == 4
    for rank_shard in ("0/2", "1/2"):  # both ranks filled their chunk set of each train entry
        assert output.count(f"chunk set {rank_shard}") == 2
    # Per teacher, the ranks ran the 120 train rows once between them (an idle rank takes the
    # other's unstarted chunks, so how they split depends on which rank starts first).
    ran = re.findall(r"Teacher (toy_\w+) on train \(shard ./2\): (\d+) examples", output)
    assert sorted(name for name, _ in ran) == ["toy_bert"] * 2 + ["toy_roberta"] * 2
    for teacher in teachers:
        assert sum(int(n) for name, n in ran if name == teacher) == 120, ran
    events = [json.loads(x)["event"] for x in (run_dir / "metrics.jsonl").open()]
    assert events.count("config") == 1 and events.count("results") == 1  # rank 0 only
    assert (run_dir / "student" / "model.safetensors").is_file()
    assert (run_dir / "student" / "README.md").is_file()

    single = tmp_path / "single"  # the same teachers in one process, threads alike (1)
    proc = _sead_run(*_demo(tiny_assets, single, *checkpoints), "stage=teachers",
                     f"hydra.run.dir={tmp_path / 'single_run'}")  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert _logit_entries(single) == _logit_entries(cache)  # the same fingerprints
    for fp in _logit_entries(cache):
        shared, alone = (root / "logits" / fp / "logits.safetensors" for root in (cache, single))
        assert shared.read_bytes() == alone.read_bytes(), fp


def test_ddp_trains_a_stage_that_learns_the_teachers_representations(tiny_assets, tmp_path):
    """The projections run inside the wrapped model's forward: DDP sees every parameter used
    there once (used outside it, the first step failed on both ranks)."""
    overrides = [*_checkpoint_teachers(tmp_path), "recipe=xtremedistil", "data.heldout=40"]
    _, results = _torchrun(tiny_assets, tmp_path / "cache", tmp_path / "run", *overrides)
    assert results["distributed"]["world_size"] == 2
    assert results["recipe"]["stages"][0]["name"] == "representations"


def test_ddp_refuses_teachers_it_would_have_to_fine_tune(tiny_assets, tmp_path):
    run_dir = tmp_path / "run"
    proc = _sead_run(
        *_demo(tiny_assets, tmp_path / "cache"),
        f"hydra.run.dir={run_dir}",
        launcher=TORCHRUN_2_PROCESSES,
        timeout=300,
    )
    assert proc.returncode != 0
    results = json.loads((run_dir / "results.json").read_text())
    assert "cannot do. Fine-tune them first" in results["error"]["message"]
    assert "toy_bert" in results["error"]["message"]
