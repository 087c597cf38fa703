"""Predictions teachers: every file type and format, every check, and the cache identity."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from omegaconf import OmegaConf
from safetensors.numpy import save_file

from sead import prediction_files
from sead.cache import SoftLabelCache
from sead.choices import PAD_LOGIT
from sead.prediction_files import Layout, PredictionFileError
from sead.tasks import get_task
from sead.teachers import PredictionsSpec, check_predictions, predictions, teacher_specs

SST2, STSB = get_task("sst2"), get_task("stsb")
IDS = np.array([0, 5, 9, 3, 7])  # a subsampled split: ids neither a range nor sorted
LOGITS = np.array([[1.0, -1.0], [0.2, 0.3], [-2.0, 2.5], [0.0, 0.0], [3.0, 1.0]])


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def write(path, ids, values, fmt):
    """A prediction file in any of the three file types, as another program would write it."""
    if path.suffix == ".jsonl":
        rows = [{"idx": int(i), fmt: v} for i, v in zip(ids, _plain(values), strict=True)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".npy":
        np.save(path, np.asarray(values))
        np.save(prediction_files.idx_path(path), np.asarray(ids, dtype=np.int64))
    else:
        save_file({"idx": np.asarray(ids, dtype=np.int64), fmt: np.asarray(values)}, str(path))
    return path


def _plain(values):
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def split(ids=IDS):
    labels = [int(row.argmax()) for row in LOGITS[: len(ids)]]
    return Dataset.from_dict(
        {"sentence": [f"s{i}" for i in ids], "label": labels, "idx": [int(i) for i in ids]}
    )


def spec(files, task=SST2, **settings):
    settings.setdefault("format", None)  # the task's own (logits, or score for regression)
    cfg = {"t": {"predictions": {k: str(v) for k, v in files.items()}, **settings}}
    [made] = teacher_specs(OmegaConf.create(cfg), task)
    assert isinstance(made, PredictionsSpec)
    return made


def read(path, fmt="logits", ds=None, task=SST2, **settings):
    settings.setdefault("labels", ["negative", "positive"] if task.name == "sst2" else None)
    if settings["labels"] is None:
        del settings["labels"]
    made = spec({"validation": path}, task, format=fmt, **settings)
    return predictions.read_logits(made, task, "validation", split() if ds is None else ds)[0]


# --- every file type, every format ------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".npy", ".safetensors"])
@pytest.mark.parametrize("fmt", ["logits", "probs", "log_probs"])
def test_every_file_type_and_format_gives_the_teachers_distribution(tmp_path, suffix, fmt):
    values = {"logits": LOGITS, "probs": softmax(LOGITS), "log_probs": np.log(softmax(LOGITS))}
    path = write(tmp_path / f"p{suffix}", IDS, values[fmt].astype(np.float32), fmt)
    logits = read(path, fmt)
    assert logits.dtype == np.float32 and logits.shape == (5, 2)
    np.testing.assert_allclose(softmax(logits), softmax(LOGITS), atol=1e-5)
    if fmt == "logits":
        np.testing.assert_array_equal(logits, LOGITS.astype(np.float32))


def test_rows_come_back_in_the_splits_order_and_columns_by_label_name(tmp_path):
    order = [3, 0, 4, 2, 1]  # the file's rows shuffled, its columns swapped and renamed
    path = write(tmp_path / "p.jsonl", IDS[order], LOGITS[order][:, ::-1], "logits")
    logits = read(path, labels=["POS", "Negative"])  # synonyms and case, as checkpoint labels
    np.testing.assert_array_equal(logits, LOGITS.astype(np.float32))


def test_hard_labels_become_a_smoothed_one_hot(tmp_path):
    labels = ["positive", 0, 1, "negative", 0]  # a label name, or a column of the file
    path = write(tmp_path / "p.jsonl", IDS, labels, "label")
    probs = softmax(read(path, "label", smoothing=0.2))
    np.testing.assert_allclose(probs[:, 1], [0.9, 0.1, 0.9, 0.1, 0.1], atol=1e-6)
    npy = write(tmp_path / "p.npy", IDS, np.array([1, 0, 1, 0, 0]), "label")
    np.testing.assert_allclose(softmax(read(npy, "label", smoothing=0.2)), probs, atol=1e-6)


def test_zero_probabilities_are_clamped_at_epsilon(tmp_path):
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.3, 0.7], [0.9, 0.1]])
    path = write(tmp_path / "p.jsonl", IDS, probs, "probs")
    logits = read(path, "probs", epsilon=1e-4)
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits[0], np.log([1.0, 1e-4]), rtol=1e-6)
    hard = read(write(tmp_path / "h.jsonl", IDS, [1, 0, 1, 0, 0], "label"), "label", smoothing=0)
    np.testing.assert_allclose(hard[0], np.log([prediction_files.EPSILON, 1.0]), rtol=1e-6)


@pytest.mark.parametrize("suffix", [".jsonl", ".npy", ".safetensors"])
def test_regression_reads_one_score_a_row(tmp_path, suffix):
    stsb = get_task("stsb")
    ds = Dataset.from_dict(
        {"sentence1": ["a"] * 3, "sentence2": ["b"] * 3, "label": [1.0, 2.0, 3.0], "idx": [0, 1, 2]}
    )
    path = write(tmp_path / f"s{suffix}", [2, 0, 1], np.array([3.5, 1.5, 2.5]), "score")
    logits = read(path, "score", ds=ds, task=stsb, labels=None)
    np.testing.assert_array_equal(logits, [[1.5], [2.5], [3.5]])
    with pytest.raises(ValueError, match="format='probs': task 'stsb' takes score"):
        read(path, "probs", ds=ds, task=stsb, labels=None)


def test_multiple_choice_one_value_per_choice(tmp_path):
    layout = Layout(ids=np.array([0, 1, 2]), widths=np.array([2, 3, 1]), kind="multiple_choice")
    rows = [[0.1, 0.9], [1.0, 2.0, 3.0], [5.0]]  # record: as many values as candidates
    jsonl = write(tmp_path / "c.jsonl", [0, 1, 2], rows, "logits")
    logits = prediction_files.to_logits(prediction_files.read(jsonl, "logits"), layout, "logits")
    expected = [[0.1, 0.9, PAD_LOGIT], [1.0, 2.0, 3.0], [5.0, PAD_LOGIT, PAD_LOGIT]]
    np.testing.assert_allclose(logits, expected, rtol=1e-6)
    # arrays are as wide as the most choices; cells past a row's own choices are ignored
    padded = np.array([[0.1, 0.9, np.nan], [1.0, 2.0, 3.0], [5.0, np.nan, np.nan]])
    npy = write(tmp_path / "c.npy", [0, 1, 2], padded, "logits")
    from_npy = prediction_files.to_logits(prediction_files.read(npy, "logits"), layout, "logits")
    np.testing.assert_array_equal(from_npy, logits)
    with pytest.raises(PredictionFileError, match=r"line 1: expected 3 values \(one per choice\)"):
        bad = write(tmp_path / "b.jsonl", [1, 0, 2], rows, "logits")  # widths off by a row
        prediction_files.to_logits(prediction_files.read(bad, "logits"), layout, "logits")


def test_copa_predictions_teacher_needs_no_labels(tmp_path):
    copa = get_task("copa")
    ds = Dataset.from_dict({"idx": [0, 1], "label": [0, 1]})
    path = write(tmp_path / "c.jsonl", [0, 1], [[0.8, 0.2], [0.3, 0.7]], "probs")
    logits = read(path, "probs", ds=ds, task=copa, labels=None)
    np.testing.assert_allclose(softmax(logits), [[0.8, 0.2], [0.3, 0.7]], rtol=1e-5)
    with pytest.raises(ValueError, match="task 'copa' has no label names to match"):
        read(path, "probs", ds=ds, task=copa, labels=["a", "b"])


# --- every check: file, row, what was expected -------------------------------------------------


def test_missing_duplicate_and_unknown_ids_each_with_a_count_and_the_first_few(tmp_path):
    ids = [0, 5, 5, 9, 42, 43]  # 3 and 7 missing, 5 twice, 42 and 43 not in the split
    path = write(tmp_path / "p.jsonl", ids, LOGITS[[0, 1, 1, 2, 3, 4]], "logits")
    with pytest.raises(PredictionFileError) as err:
        read(path)
    message = str(err.value)
    assert str(path) in message and "split's 5 examples" in message
    assert "2 id(s) of the split are missing: 3, 7" in message
    assert "1 id(s) appear more than once: 5 (line 2, line 3)" in message
    assert "2 id(s) are not in the split: 42 (line 5), 43 (line 6)" in message


@pytest.mark.parametrize("suffix", [".jsonl", ".npy"])
def test_every_row_alike_is_checked_as_one_bad_row_would_be(tmp_path, suffix):
    """The whole-file fast path refuses what the row-by-row path refuses: booleans, and
    values that overflow float32 (the logits' type) although finite in float64."""
    path = write(tmp_path / f"b{suffix}", IDS, [[True, False]] * len(IDS), "logits")
    with pytest.raises(PredictionFileError, match=r"5 row\(s\) cannot be used"):
        read(path)
    path = write(tmp_path / f"o{suffix}", IDS, LOGITS * 1e300, "logits")
    with pytest.raises(PredictionFileError, match=r"finite numbers within float32"):
        read(path)


def test_scores_on_another_scale_are_refused_naming_the_file(tmp_path):
    """A cosine similarity in [-1, 1] passes the Pearson gate: its scale is checked."""
    ds = Dataset.from_dict(
        {"sentence1": ["a"] * 5, "sentence2": ["b"] * 5, "label": [0.0, 1, 2, 4, 5], "idx": IDS}
    )
    gold = np.array([0.0, 1, 2, 4, 5])
    fine = write(tmp_path / "s.jsonl", IDS, gold + 0.3, "score")  # a regressor's overshoot
    assert read(fine, "score", ds=ds, task=STSB).shape == (5, 1)
    cosine = write(tmp_path / "c.jsonl", IDS, gold / 5 * 2 - 1, "score")
    with pytest.raises(PredictionFileError, match=r"c.jsonl: 2 of 5 scores lie outside .*\[0, 5\]"):
        read(cosine, "score", ds=ds, task=STSB)


def test_many_missing_ids_list_the_first_few(tmp_path):
    ds = Dataset.from_dict({"sentence": ["x"] * 20, "label": [0] * 20, "idx": list(range(20))})
    path = write(tmp_path / "p.jsonl", [0], [[1.0, 0.0]], "logits")
    with pytest.raises(PredictionFileError, match=r"19 id\(s\) .* missing: 1, 2, 3, 4, 5 and 14"):
        read(path, ds=ds)


def test_extra_ids_ignore_takes_a_file_for_the_whole_split(tmp_path):
    ids = [*IDS, 100, 101]  # a file for the full train split; the run uses a slice of it
    path = write(tmp_path / "p.jsonl", ids, np.vstack([LOGITS, [[0, 1], [1, 0]]]), "logits")
    with pytest.raises(PredictionFileError, match="extra_ids: ignore"):
        read(path)
    np.testing.assert_array_equal(read(path, extra_ids="ignore"), LOGITS.astype(np.float32))


@pytest.mark.parametrize(
    ("fmt", "rows", "message"),
    [
        ("logits", [[1, 2, 3]], r"line 2: expected 2 values \(one per label\), got 3"),
        ("logits", [1.5], r"line 2: expected a list of 2 numbers, got 1.5"),
        ("logits", [["a", "b"]], r"line 2: expected a list of 2 numbers"),
        ("logits", [[float("nan"), 1.0]], r"line 2: values must be finite"),
        ("probs", [[0.7, 0.7]], r"line 2: probabilities must be >= 0 and sum to 1 .* sum 1.4"),
        ("probs", [[1.2, -0.2]], r"line 2: probabilities must be >= 0"),
        ("log_probs", [[0.5, -1.0]], r"line 2: log-probabilities must be <= 0"),
        ("label", ["neutral"], r"line 2: expected a column number or one of \['neg"),
        ("label", [2], r"line 2: label 2 is outside 0..1"),
    ],
)
def test_a_bad_row_names_the_file_row_and_what_was_expected(tmp_path, fmt, rows, message):
    good = {"logits": [0.0, 1.0], "probs": [0.5, 0.5], "log_probs": [-0.69315, -0.69315]}
    values = [good.get(fmt, 0), *rows, *[good.get(fmt, 1)] * 3]
    path = write(tmp_path / "p.jsonl", IDS, values, fmt)
    with pytest.raises(PredictionFileError, match=message) as err:
        read(path, fmt, labels=["negative", "positive"])
    assert str(path) in str(err.value) and "1 row(s) cannot be used" in str(err.value)


def test_many_bad_rows_are_counted(tmp_path):
    path = write(tmp_path / "p.npy", IDS, np.full((5, 2), np.inf), "logits")
    with pytest.raises(PredictionFileError, match=r"(?s)5 row\(s\).*row 0 and 4 more: .*finite"):
        read(path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"labels": ["negative", "neutral"]}, r"do not match the labels of task 'sst2'"),
        ({"labels": ["negative"]}, r"has 1 names, task 'sst2' has 2"),
        ({"labels": None}, r"teachers.t.labels is required: .* \['negative', 'positive'\]"),
        ({"format": "score"}, r"format='score': task 'sst2' takes logits, probs"),
        ({"extra_ids": "maybe"}, r"extra_ids='maybe'"),
        ({"smoothing": 1.0}, r"teachers.t.smoothing=1.0 is not allowed: .* in \[0, 1\)"),
        ({"checkpoints": {"sst2": "x"}}, r"unknown key\(s\) \['checkpoints'\]"),
    ],
)
def test_bad_settings_stop_at_the_check(tmp_path, settings, message):
    path = write(tmp_path / "p.jsonl", IDS, LOGITS, "logits")
    fmt = settings.pop("format", "logits")
    with pytest.raises(ValueError, match=message):
        read(path, fmt, **{"labels": ["negative", "positive"], **settings})


def test_bad_files_name_what_was_expected(tmp_path):
    checks = {
        write(tmp_path / "a.csv", IDS, LOGITS, "logits"): "unknown file type",
        tmp_path / "absent.jsonl": "no such file",
        tmp_path / "noids.npy": r"ids are missing: expected .*noids.idx.npy",
        write(tmp_path / "s.safetensors", IDS, LOGITS, "probs"): r"no tensor 'logits'",
    }
    np.save(tmp_path / "noids.npy", LOGITS)
    (tmp_path / "j.jsonl").write_text('{"idx": 0, "logits": [1, 2]}\nnot json\n')
    checks[tmp_path / "j.jsonl"] = "line 2: not JSON"
    (tmp_path / "k.jsonl").write_text('{"idx": "zero", "logits": [1, 2]}\n')
    checks[tmp_path / "k.jsonl"] = "line 1: idx must be an integer"
    (tmp_path / "f.jsonl").write_text('{"idx": 0, "probs": [1, 2]}\n')
    checks[tmp_path / "f.jsonl"] = r"line 1: expected an object with 'idx' and 'logits'"
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "obj.idx.npy", np.array([0]))
    checks[tmp_path / "obj.npy"] = "not a plain numeric .npy array"
    for path, message in checks.items():
        with pytest.raises(PredictionFileError, match=message):
            read(path)


def test_check_reads_every_split_the_run_needs_before_any_work(tmp_path):
    files = {"validation": write(tmp_path / "v.jsonl", IDS, LOGITS, "logits")}
    made = spec(files, labels=["negative", "positive"])
    splits = DatasetDict({"validation": split(), "train": split()})
    with pytest.raises(ValueError, match=r"no prediction file for split 'train'.*ions.train"):
        check_predictions(made, SST2, splits)
    check_predictions(made, SST2, DatasetDict({"validation": split()}))


def test_a_file_under_a_key_that_names_no_split_is_refused_not_left_unread(tmp_path):
    written = write(tmp_path / "v.jsonl", IDS, LOGITS, "logits")
    made = spec({"validation": written, "valid": written}, labels=["negative", "positive"])
    with pytest.raises(ValueError, match=r"predictions has files for \['valid'\], which name no"):
        check_predictions(made, SST2, DatasetDict({"validation": split()}))
    extra = spec({"validation": written, "test": written}, labels=["negative", "positive"])
    check_predictions(extra, SST2, DatasetDict({"validation": split()}))  # a split not run now


# --- the cache: the file's content is the teacher's identity -----------------------------------


def test_the_files_content_is_the_cache_identity(tmp_path):
    path = write(tmp_path / "p.jsonl", IDS, LOGITS, "logits")

    def logits_of(path, name="t"):
        """One run's read: a new cache object, since what a run computed is no hit for it."""
        made = spec({"validation": path}, labels=["negative", "positive"])
        made = dataclasses.replace(made, name=name)
        teacher = predictions.prepare(made, SST2)
        splits = DatasetDict({"validation": split()})
        cache = SoftLabelCache(tmp_path / "cache")
        return predictions.cached_logits(teacher, SST2, splits, cache)["validation"]

    first = logits_of(path)
    assert not first.hit
    moved = shutil.copy(path, tmp_path / "elsewhere.jsonl")  # another name, path and teacher
    again = logits_of(moved, name="renamed")
    assert again.hit and again.fingerprint == first.fingerprint
    write(moved, IDS, LOGITS * 2, "logits")  # edited: a new entry with the new logits
    edited = logits_of(moved)
    assert not edited.hit and edited.fingerprint != first.fingerprint
    np.testing.assert_array_equal(edited.logits, (LOGITS * 2).astype(np.float32))


def test_the_shipped_template_says_what_to_fill_in(tmp_path):
    from tests.helpers import compose

    cfg = compose(["teachers=[files]"])
    with pytest.raises(ValueError, match=r"teachers.files.predictions must map splits to files"):
        teacher_specs(cfg.teachers, SST2)
    path = write(tmp_path / "p.jsonl", IDS, LOGITS, "logits")
    cfg = compose(["teachers=[files]", f"++teachers.files.predictions.validation={path}"])
    with pytest.raises(ValueError, match=r"teachers.files.labels is required"):
        teacher_specs(cfg.teachers, SST2)
    cfg = compose(
        [
            "teachers=[files]",
            f"++teachers.files.predictions.validation={path}",
            "teachers.files.labels=[negative,positive]",
        ]
    )
    [made] = teacher_specs(cfg.teachers, SST2)
    check_predictions(made, SST2, DatasetDict({"validation": split()}))
