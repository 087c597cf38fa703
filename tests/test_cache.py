"""The soft-label cache: hits, atomic entries, and corrupt entries never used."""

import json

import numpy as np
import pytest

from sead.cache import LOGITS_FILE, MANIFEST_FILE, SoftLabelCache, fingerprint

KEY = {"teacher": "t", "model": "m@1", "task": "sst2", "split": "validation", "data": "d"}
IDX = np.array([3, 1, 2])


class Counter:
    """A stand-in teacher that counts its forward passes."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return np.arange(6, dtype=np.float32).reshape(3, 2) + self.calls


def test_second_request_is_a_hit_with_no_compute(tmp_path):
    compute = Counter()
    first = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    second = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    assert (first.hit, second.hit, compute.calls) == (False, True, 1)
    np.testing.assert_array_equal(first.logits, second.logits)
    manifest = json.loads((tmp_path / first.fingerprint / MANIFEST_FILE).read_text())
    assert manifest["shape"] == [3, 2] and manifest["n_examples"] == 3
    assert manifest["key"] == KEY


def test_fingerprint_depends_on_every_key_field():
    base = fingerprint(KEY)
    assert fingerprint(dict(reversed(KEY.items()))) == base  # order does not matter
    for field in KEY:
        assert fingerprint({**KEY, field: "changed"}) != base, field


def test_no_temp_files_left_behind(tmp_path):
    SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, Counter())
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {fingerprint(KEY), f"{fingerprint(KEY)}.lock"}


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "delete"])
def test_corrupt_entry_is_detected_and_recomputed(tmp_path, damage, caplog):
    compute = Counter()
    entry = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    logits_path = tmp_path / entry.fingerprint / LOGITS_FILE
    blob = logits_path.read_bytes()
    if damage == "truncate":
        logits_path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        logits_path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
    elif damage == "manifest":
        (tmp_path / entry.fingerprint / MANIFEST_FILE).write_text("{not json")
    else:
        logits_path.unlink()
    again = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    assert not again.hit and compute.calls == 2
    assert "unusable" in caplog.text
    assert SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute).hit


def test_entry_for_another_example_order_is_not_used(tmp_path):
    compute = Counter()
    SoftLabelCache(tmp_path).get_or_compute(KEY, IDX, compute)
    again = SoftLabelCache(tmp_path).get_or_compute(KEY, IDX[::-1], compute)
    assert not again.hit and compute.calls == 2
