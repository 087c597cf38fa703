"""Loading splits from local jsonl in the HF schema, and the errors for bad data."""

import json
from pathlib import Path

import pytest

from sead.data import content_fingerprint, load_splits
from sead.tasks import get_task
from tests.helpers import settings

SST2 = get_task("sst2")
SHARED_SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "sst2"


def _write(folder: Path, split: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows(n, label=lambda i: i % 2):
    return [{"sentence": f"text {i}", "label": label(i), "idx": i} for i in range(n)]


def _cfg(folder, **kw):
    return settings("data", dir=str(folder), **kw)


def test_local_splits_load_and_subsample(tmp_path):
    _write(tmp_path, "train", _rows(50))
    _write(tmp_path, "validation", _rows(20))
    cfg = _cfg(tmp_path, max_train_samples=10, max_eval_samples=5)
    splits = load_splits(SST2, cfg, ["train", "validation"])
    assert (len(splits["train"]), len(splits["validation"])) == (10, 5)
    assert splits["train"]["idx"] == sorted(splits["train"]["idx"])  # order kept
    again = load_splits(SST2, cfg, ["train", "validation"])
    assert again["train"]["idx"] == splits["train"]["idx"]  # same subset every time


def test_missing_split_file_names_the_file(tmp_path):
    _write(tmp_path, "validation", _rows(4))
    with pytest.raises(FileNotFoundError, match=r"train\.jsonl.*found: validation\.jsonl"):
        load_splits(SST2, _cfg(tmp_path), ["train", "validation"])


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_splits(SST2, _cfg(tmp_path / "nope"), ["validation"])


def test_missing_field_names_task_field_and_file(tmp_path):
    _write(tmp_path, "validation", [{"text": "x", "label": 0, "idx": 0}])
    with pytest.raises(ValueError, match=r"'sst2'.*validation\.jsonl.*no field 'sentence'"):
        load_splits(SST2, _cfg(tmp_path), ["validation"])


def test_label_outside_label_set_is_rejected(tmp_path):
    _write(tmp_path, "validation", _rows(4, label=lambda i: [0, 1, 2, -1][i]))
    with pytest.raises(ValueError, match=r"label value\(s\) \[-1, 2\].*negative"):
        load_splits(SST2, _cfg(tmp_path), ["validation"])


def test_a_score_outside_the_tasks_scale_is_rejected(tmp_path):
    rows = [{"sentence1": f"a {i}", "sentence2": f"b {i}", "label": s, "idx": i} for i, s in
            enumerate([0.0, 5.0, 7.5, 2.5])]  # fmt: skip
    _write(tmp_path, "validation", rows)
    with pytest.raises(ValueError, match=r"label value\(s\) \[7.5\] are outside .* \[0, 5\]"):
        load_splits(get_task("stsb"), _cfg(tmp_path), ["validation"])


def test_content_fingerprint_follows_text_and_idx_not_labels(tmp_path):
    _write(tmp_path / "a", "validation", _rows(4))
    _write(tmp_path / "b", "validation", _rows(4, label=lambda i: 1 - i % 2))
    _write(tmp_path / "c", "validation", [*_rows(3), {"sentence": "x", "label": 0, "idx": 3}])
    prints = [
        content_fingerprint(
            load_splits(SST2, _cfg(tmp_path / d), ["validation"])["validation"], SST2.text_fields
        )
        for d in "abc"
    ]
    assert prints[0] == prints[1] != prints[2]


@pytest.mark.skipif(not SHARED_SST2.is_dir(), reason=f"real GLUE data not found at {SHARED_SST2}")
def test_real_sst2_loads_in_the_hf_schema():
    splits = load_splits(SST2, _cfg(SHARED_SST2, max_train_samples=300), ["train", "validation"])
    assert len(splits["train"]) == 300 and len(splits["validation"]) == 872
    assert set(splits["validation"]["label"]) == {0, 1}
    assert splits["validation"]["idx"][:3] == [0, 1, 2]


def test_unreadable_jsonl_names_the_file_and_line(tmp_path):
    (tmp_path / "validation.jsonl").write_text('{"sentence": "ok", "label": 0, "idx": 0}\n{oops\n')
    with pytest.raises(ValueError, match=r"validation\.jsonl\): line 2 is not JSON"):
        load_splits(SST2, _cfg(tmp_path), ["validation"])


def test_a_local_file_without_idx_is_numbered_by_row_before_the_heldout_carve(tmp_path):
    rows = [{"sentence": f"text {i}", "label": i % 2} for i in range(10)]  # no idx at all
    _write(tmp_path, "train", rows)
    splits = load_splits(SST2, _cfg(tmp_path, heldout=3), ["train", "heldout"])
    ids = sorted(splits["train"]["idx"][:] + splits["heldout"]["idx"][:])
    assert ids == list(range(10)) and len(splits["heldout"]) == 3  # the file's rows, each once


def test_a_line_separator_inside_a_string_is_text_not_a_new_line(tmp_path):
    """JSON writes U+2028 raw (ensure_ascii=False); JSON lines end at newlines only."""
    (tmp_path / "validation.jsonl").write_text(
        json.dumps({"sentence": "a line\u2028separator", "label": 1, "idx": 0}, ensure_ascii=False)
        + "\n"
    )
    splits = load_splits(SST2, _cfg(tmp_path), ["validation"])
    assert splits["validation"]["sentence"] == ["a line\u2028separator"]
