"""`python -m sead.report` on synthetic sweeps: CSV rows, seed statistics, failed jobs, plots."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from matplotlib.image import imread

from sead import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ok_job(task, temperature, seed, student, ensemble=0.80):
    """The parts of a successful run's results.json that the report reads."""
    return {
        "status": "ok",
        "task": task,
        "main_metric": "accuracy",
        "eval_splits": ["validation"],
        "overrides": [f"task={task}", f"train.temperature={temperature}", f"seed={seed}"],
        "settings": {
            "task": task,
            "teachers": "bert+roberta",
            "ensembler": "mean_logits",
            "student_model": "microsoft/xtremedistil-l6-h256-uncased",
            "temperature": temperature,
            "alpha": 0.5,
            "lr": 5e-5,
            "epochs": 3,
            "seed": seed,
        },
        "teachers": {
            "bert": {"params": 109_483_778, "metrics": {"validation": {"accuracy": 0.82}}},
            "roberta": {"params": 124_647_170, "metrics": {"validation": {"accuracy": 0.84}}},
        },
        "ensemble": {"name": "mean_logits", "metrics": {"validation": {"accuracy": ensemble}}},
        "student": {"params": 12_754_690, "metrics": {"validation": {"accuracy": student}}},
        "speed": {"speedup": {"bert": 5.1, "roberta": 5.3}},
    }


def _failed_job(task, temperature, seed):
    settings = _ok_job(task, temperature, seed, 0)["settings"]
    return {
        "status": "failed",
        "error": {"type": "OutOfMemoryError", "message": "CUDA out of memory.\nTried 2 GiB"},
        "overrides": [f"task={task}", f"train.temperature={temperature}", f"seed={seed}"],
        "settings": settings,
    }


@pytest.fixture
def sweep(tmp_path):
    """multirun/<n>/results.json: T in {1, 4} x seeds {1, 2}, plus one failed job (T=4, seed 3)."""
    jobs = [
        _ok_job("sst2", 1.0, 1, 0.70),
        _ok_job("sst2", 1.0, 2, 0.74),
        _ok_job("sst2", 4.0, 1, 0.80),
        _ok_job("sst2", 4.0, 2, 0.90),
        _failed_job("sst2", 4.0, 3),
    ]
    root = tmp_path / "multirun"
    for i, job in enumerate(jobs):
        (root / str(i)).mkdir(parents=True)
        (root / str(i) / "results.json").write_text(json.dumps(job))
    return root


def test_report_rows_seed_statistics_failed_job_and_plots(sweep):
    for i in (5, 10):  # numbered job folders sort numerically: 10 after 5
        (sweep / str(i)).mkdir()
        (sweep / str(i) / "results.json").write_text(json.dumps(_failed_job("sst2", 1.0, i)))
    written = report.build_report([sweep], sweep)
    table = pd.read_csv(written["csv"], dtype={"job": str})
    assert list(table["job"]) == ["0", "1", "2", "3", "4", "5", "10"]
    assert list(table["status"]) == ["ok"] * 4 + ["failed"] * 3
    assert table.loc[4, "error"] == "OutOfMemoryError: CUDA out of memory."
    assert table["teacher bert"].iloc[0] == pytest.approx(0.82)
    assert table["params student"].iloc[0] == 12_754_690
    assert table["speedup vs roberta"].iloc[0] == pytest.approx(5.3)
    # Mean and sample std over the two seeds of each temperature, on every row of the group.
    t4 = table[(table["temperature"] == 4.0) & (table["status"] == "ok")]
    assert t4["student mean"].tolist() == pytest.approx([0.85, 0.85])
    assert t4["student std"].tolist() == pytest.approx([0.0707107] * 2, rel=1e-5)
    assert t4["seeds"].tolist() == [2, 2]
    t1 = table[table["temperature"] == 1.0]
    assert t1["student mean"].tolist()[:2] == pytest.approx([0.72, 0.72])
    assert t1["student mean"].iloc[2:].isna().all()  # failed jobs carry no statistics

    assert written["csv"].stat().st_mode & 0o777 == 0o644  # readable by the rest of a team
    markdown = written["md"].read_text()
    assert "7 job(s), 3 failed" in markdown
    assert "| sst2 | 4 | 85.00 ± 7.07 | 2 |" in markdown
    assert "OutOfMemoryError" in markdown
    for name in ("student vs temperature", "models sst2"):
        path = written[name]
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert imread(path).shape[0] > 100  # decodes as an image, not just a header
        assert f"]({path.name})" in markdown


def test_a_killed_job_with_no_results_is_listed_as_missing(sweep):
    (sweep / "5" / ".hydra").mkdir(parents=True)  # what the OOM killer or a time limit leaves
    table = pd.DataFrame(report.job_rows(report.find_results([sweep])))
    assert list(table["job"]) == ["0", "1", "2", "3", "4", "5"]
    assert table.loc[5, "status"] == "missing" and "killed" in table.loc[5, "error"]
    assert "6 job(s), 2 failed" in report.build_report([sweep], sweep)["md"].read_text()


def test_a_shell_glob_of_a_sweep_reads_only_its_results_and_names_a_bad_one(sweep):
    """`sead report sweep/*` passes multirun.yaml, plots and reports too: skipped; a file
    named results.json that is not one is named, not a raw decode error."""
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "report.png").write_bytes(PNG_MAGIC)
    table = pd.DataFrame(report.job_rows(report.find_results(sorted(sweep.iterdir()))))
    assert list(table["job"]) == ["0", "1", "2", "3", "4"]
    (sweep / "1" / "results.json").write_bytes(PNG_MAGIC)
    with pytest.raises(ValueError, match=r"1/results.json is not a results.json that sead wrote"):
        report.job_rows(report.find_results([sweep]))


def test_report_without_a_seed_sweep_has_no_seed_columns(tmp_path):
    for i, temperature in enumerate((1.0, 2.0)):
        (tmp_path / f"run{i}").mkdir()
        job = _ok_job("rte", temperature, 42, 0.6 + i / 10)
        (tmp_path / f"run{i}" / "results.json").write_text(json.dumps(job))
    written = report.build_report([tmp_path / "run0", tmp_path / "run1"], tmp_path / "out")
    table = pd.read_csv(written["csv"])
    assert "student mean" not in table
    assert report.swept_columns(table) == ["temperature"]
    assert table["student"].tolist() == pytest.approx([0.6, 0.7])


def test_cli_writes_into_the_sweep_dir_and_names_a_missing_dir(sweep, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sead.report", str(sweep)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "# sead sweep report" in proc.stdout
    assert (sweep / "report.csv").is_file() and (sweep / "report.md").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "sead.report", str(empty)], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "No results.json under" in proc.stderr and str(empty) in proc.stderr


def _run_results(student=0.54, teacher=0.58, alpha=0.5):
    """A finished run's results.json, as far as the console tables and warnings read it."""
    floor = {"score": student, "baseline": 0.55, "below": student <= 0.55}
    floor["noise"] = {"n": 100, "level": 0.95, "interval": [0.45, 0.65], "within_noise": True}
    floor["noise"]["margin_examples"] = round((student - 0.55) * 100)
    gate_split = {"score": teacher, "baseline": 0.55, "passed": True}
    gate_split["noise"] = {**floor["noise"], "margin_examples": round((teacher - 0.55) * 100)}
    teacher_record = {
        "source": "base",
        "params": 22_700_000,
        "metrics": {"validation": {"accuracy": teacher}},
        "cache_hit": {"validation": False},
        "gate": {"metric": "accuracy", "floor": "majority baseline", "enabled": True},
        "origin": "finetuned",
    }
    teacher_record["gate"]["splits"] = {"validation": gate_split}
    student_record = {"params": 1000, "metrics": {"validation": {"accuracy": student}}}
    student_record["floor"] = {"validation": floor}
    return {
        "main_metric": "accuracy",
        "eval_splits": ["validation"],
        "teachers": {"minilm": teacher_record},
        "ensemble": {"name": "mean_logits", "metrics": {"validation": {"accuracy": teacher}}},
        "train": {"alpha": alpha},
        "transfer": {"size": 0},
        "student": student_record,
    }


def test_models_that_learned_nothing_are_warned_about_in_results_and_tables():
    results = _run_results()
    results["warnings"] = report.warnings(results)
    assert len(results["warnings"]) == 2
    teacher, student = results["warnings"]
    assert teacher.startswith("Teacher minilm may have learned nothing on validation")
    assert "a margin of +3 of 100 examples" in teacher
    assert student.startswith("The student learned nothing usable on validation")
    assert "0.5400, not above the constant baseline 0.5500" in student
    assert f"WARNING: {teacher}" in report.teacher_table(results)
    assert f"WARNING: {student}" in report.summary_table(results)
    within = _run_results(student=0.6)  # above the baseline, but by noise only
    assert report.warnings(within)[1].startswith("The student may have learned nothing")


def test_no_warning_for_models_clear_of_their_floor():
    results = _run_results(student=0.8, teacher=0.8)
    results["student"]["floor"]["validation"]["noise"]["within_noise"] = False
    results["teachers"]["minilm"]["gate"]["splits"]["validation"]["noise"]["within_noise"] = False
    assert report.warnings(results) == []


@pytest.mark.parametrize(
    "alpha, transfer, expected",
    [
        (0.5, 0, "distilled"),
        (0.0, 0, "gold labels only (alpha=0)"),
        (0.0, 500, "gold labels (alpha=0); transfer set distilled"),
    ],
)
def test_the_student_row_says_what_it_learned_from(alpha, transfer, expected):
    results = _run_results(student=0.8, alpha=alpha)
    results["transfer"]["size"] = transfer
    student_row = report.summary_table(results).splitlines()[-1]
    assert student_row.rstrip().endswith(expected)
