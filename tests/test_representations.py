"""Teacher representations in the soft-label cache: one pass, keyed apart, verified, resumable.

A teacher of hidden size 48 with its own (byte-level BPE) tokenizer stands in for a real one;
the student side of representation transfer is the lead's (issue 28, items 2-5).
"""

import hashlib
import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sead import data, inference, teachers, toy
from sead.cache import LOGITS_FILE, MANIFEST_FILE, SoftLabelCache, fingerprint, read_tensors
from sead.cache import tool as cache_tool
from sead.chunks import PartialEntry
from sead.representations import Outputs, RepresentationSpec, check_task
from sead.settings import GROUPS
from sead.tasks import get_task
from tests import cache_worker
from tests.helpers import compose, kill_after_chunks, settings, teacher_spec

SST2 = get_task("sst2")
WIDTH = 48  # the teacher's hidden size: the vectors' width
CHUNK, BATCH = 32, 16  # the toy train split (240 rows) in several chunks
VECTORS = RepresentationSpec(layer=-1, pooling="mean", dtype="float16")  # as conf/ sets them
# A logits-only key and its fingerprints as main computed them before representations existed
# (f63626b): old caches stay valid only if these never change.
KEY = {"model": "m@1", "tokenizer": "t", "task": "sst2", "split": "validation", "data": "d"}
PINNED = {"float32": "1e7ad59301c3efc31ae652e3", "float16": "499039b9fe3672482de7772d"}


@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory) -> Path:
    """A checkpoint with a classification head: RoBERTa-shaped, hidden 48, its own tokenizer."""
    folder = tmp_path_factory.mktemp("wide_teacher")
    toy.build_tokenizer("bpe", folder)
    toy.build_tiny_model(
        "roberta", folder, folder, hidden_size=WIDTH, num_layers=2, num_heads=2,
        intermediate_size=96, seed=7, labels=["negative", "positive"],
    )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def splits(tiny_assets) -> DatasetDict:
    data_settings = settings("data", dir=str(tiny_assets / "data" / "sst2_toy"))
    return data.load_splits(SST2, data_settings, ["train", "validation"])


def _teacher(folder: Path, root: Path):
    spec = teacher_spec("wide", folder, batch_size=BATCH)
    return teachers.prepare(spec, SST2, DatasetDict(), root / "teachers")


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _direct_vectors(folder: Path, ds, layer: int = -1) -> np.ndarray:
    """Mean-pooled hidden states, one example at a time (no padding at all)."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = data.tokenize(ds, tokenizer, SST2, max_length=64)
    rows = []
    with torch.inference_mode():
        for ids in encoded["input_ids"][:]:
            ids = torch.tensor([ids])
            out = model(
                input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True
            )
            rows.append(out.hidden_states[layer][0].mean(0).numpy())
    return np.stack(rows)


# --- the settings ---------------------------------------------------------------------------


def test_the_settings_live_in_conf_and_bad_ones_are_named():
    assert settings("cache").representations == VECTORS  # typed, as the run reads them
    for bad, message in [
        (
            {"pooling": "max"},
            r"cache.representations.pooling='max' is not allowed: expected one of "
            r"\['mean', 'cls'\]",
        ),
        ({"dtype": "int8"}, r"cache.representations.dtype='int8' is not allowed: expected one"),
        ({"layer": "last"}, r"cache.representations.layer='last' is not allowed: expected an int"),
        ({"layer": 1.5}, r"cache.representations.layer=1.5 is not allowed: expected an integer"),
        ({"layer": True}, r"cache.representations.layer=True is not allowed: expected an int"),
        ({"width": 3}, r"cache.representations has unknown key\(s\) \['width'\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            settings("cache", representations=bad)
    node = OmegaConf.to_container(compose().cache)
    del node["representations"]["dtype"]
    with pytest.raises(ValueError, match=r"cache.representations is missing key\(s\) \['dtype'\]"):
        GROUPS["cache"](node, SST2)


def test_logits_only_fingerprints_are_unchanged_and_vectors_are_keyed_apart(tmp_path):
    for dtype, pinned in PINNED.items():
        cache = SoftLabelCache(tmp_path, dtype=dtype)
        assert cache.fingerprint(KEY) == pinned  # as before this change: old entries stay valid
        assert cache.full_key(KEY) == {**KEY, "storage_dtype": dtype}
    cache = SoftLabelCache(tmp_path)
    keyed = {
        cache.fingerprint(KEY, RepresentationSpec(layer, pooling, dtype))
        for layer in (-1, 0, 2)
        for pooling in ("mean", "cls")
        for dtype in ("float16", "float32")
    }
    assert len(keyed) == 12 and PINNED["float32"] not in keyed


# --- one pass, cached, read back ------------------------------------------------------------


def test_vectors_are_cached_beside_the_logits_and_a_second_run_has_no_miss(
    wide_teacher, splits, tmp_path
):
    root = tmp_path / "cache"
    teacher = _teacher(wide_teacher, tmp_path)
    plain = teachers.cached_logits(teacher, SST2, splits, SoftLabelCache(root))
    cache = SoftLabelCache(root)
    first = teachers.cached_logits(teacher, SST2, splits, cache, representations=VECTORS)
    assert (cache.hits, cache.misses) == (0, 2)  # logits-only entries do not stand in
    for split, entry in first.items():
        n = len(splits[split])
        assert entry.representations.shape == (n, WIDTH)
        assert entry.representations.dtype == np.float32
        assert entry.fingerprint != plain[split].fingerprint
        np.testing.assert_array_equal(entry.logits, plain[split].logits)  # the same pass
        assert plain[split].representations is None
        keys = teachers.cache_keys(teacher, SST2, splits, teacher.load_tokenizer(), cache)
        # the logits-only entry's fingerprint is computed exactly as before this change
        assert plain[split].fingerprint == fingerprint({**keys[split], "storage_dtype": "float32"})
    # what was stored: fp16 vectors of the teacher's own hidden states, mean-pooled
    expected = _direct_vectors(wide_teacher, splits["validation"])
    np.testing.assert_allclose(first["validation"].representations, expected, atol=2e-3, rtol=2e-3)
    entry_dir = root / first["validation"].fingerprint
    manifest = json.loads((entry_dir / MANIFEST_FILE).read_text())
    assert manifest["representations"] == {
        "layer": -1, "pooling": "mean", "dtype": "float16",
        "shape": [len(splits["validation"]), WIDTH],
        "size_bytes": len(splits["validation"]) * WIDTH * 2,
    }  # fmt: skip
    assert manifest["key"]["representations"] == VECTORS.key()
    plain_manifest = json.loads(
        (root / plain["validation"].fingerprint / MANIFEST_FILE).read_text()
    )
    assert (
        "representations" not in plain_manifest and "representations" not in plain_manifest["key"]
    )

    again = SoftLabelCache(root)
    second = teachers.cached_logits(teacher, SST2, splits, again, representations=VECTORS)
    assert (again.hits, again.misses) == (2, 0)
    for split, entry in second.items():
        assert entry.hit
        np.testing.assert_array_equal(entry.representations, first[split].representations)
        np.testing.assert_array_equal(entry.logits, first[split].logits)


def test_mean_pooling_ignores_padding_and_cls_takes_the_first_real_token(wide_teacher, splits):
    model = AutoModelForSequenceClassification.from_pretrained(wide_teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(wide_teacher)
    ds = splits["validation"]
    encoded = data.tokenize(ds, tokenizer, SST2, max_length=64)
    batched = inference.predict(model, tokenizer, encoded, 16, representations=VECTORS)
    lengths = np.array([len(ids) for ids in encoded["input_ids"][:]])
    assert lengths.min() < lengths.max()  # rows padded in their batch exist
    alone = _direct_vectors(wide_teacher, ds)
    np.testing.assert_allclose(batched.representations, alone, atol=1e-5)  # padded == unpadded
    np.testing.assert_array_equal(
        batched.logits, inference.predict_logits(model, tokenizer, encoded, 16)
    )

    # `pool` on its own: padding on either side never counts
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])  # right-padded, left-padded
    mean = inference.pool(hidden, mask, "mean")
    torch.testing.assert_close(mean[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(mean[1], hidden[1, 1:].mean(0))
    cls = inference.pool(hidden, mask, "cls")
    torch.testing.assert_close(cls, torch.stack([hidden[0, 0], hidden[1, 1]]))

    first = RepresentationSpec(layer=0, pooling="cls", dtype="float32")
    embeddings = inference.predict(model, tokenizer, encoded, 16, representations=first)
    assert not np.allclose(embeddings.representations, batched.representations)
    with pytest.raises(ValueError, match=r"cache.representations.layer=3, but the model has 2"):
        inference.predict(
            model, tokenizer, encoded, 16, representations=RepresentationSpec(3, "mean", "float16")
        )


# --- kill, resume, shards, damage -----------------------------------------------------------


@pytest.mark.slow
def test_a_fill_killed_mid_way_resumes_to_the_same_vectors(
    wide_teacher, tiny_assets, tmp_path, monkeypatch
):
    task_dir = tiny_assets / "data" / "sst2_toy"
    root = tmp_path / "killed"
    args = [wide_teacher, task_dir, root, CHUNK, BATCH, 0.5]
    child = cache_worker.spawn("fill-vectors", *args, stdout=subprocess.DEVNULL)
    kill_after_chunks(child, root)
    done = len(list(root.glob(".partial-*/chunk-*.safetensors")))
    assert done >= 2 and not _entries(root)
    plan = json.loads(next(root.glob(".partial-*/plan.json")).read_text())["plan"]
    assert plan["representations"] == {**VECTORS.key(), "width": WIDTH}

    saved = []
    real = PartialEntry.save
    monkeypatch.setattr(
        PartialEntry, "save", lambda self, index, *a: saved.append(index) or real(self, index, *a)
    )
    resumed = cache_worker.fill(wide_teacher, task_dir, root, CHUNK, BATCH, representations=True)
    assert len(saved) > 0 and done + len(saved) == plan["n_chunks"]  # only the missing chunks
    fresh = tmp_path / "fresh"
    fresh = cache_worker.fill(wide_teacher, task_dir, fresh, CHUNK, BATCH, representations=True)
    assert not list(root.glob(".partial-*"))
    np.testing.assert_array_equal(resumed.representations, fresh.representations)
    np.testing.assert_array_equal(resumed.logits, fresh.logits)
    assert resumed.representations.shape == (240, WIDTH)


def test_shards_fill_vectors_too_and_the_last_assembles_them(wide_teacher, tiny_assets, tmp_path):
    task_dir = tiny_assets / "data" / "sst2_toy"
    single = cache_worker.fill(
        wide_teacher, task_dir, tmp_path / "one", CHUNK, BATCH, representations=True
    )
    root = tmp_path / "shared"
    first = cache_worker.fill(
        wide_teacher, task_dir, root, CHUNK, BATCH, "0/2", representations=True
    )
    assert first.logits is None and first.representations is None and first.pending[0] > 0
    assert first.fingerprint == single.fingerprint and not _entries(root)
    second = cache_worker.fill(
        wide_teacher, task_dir, root, CHUNK, BATCH, "1/2", representations=True
    )
    assert second.pending is None
    np.testing.assert_array_equal(second.representations, single.representations)
    np.testing.assert_array_equal(second.logits, single.logits)
    # the vectors' rows are the examples' own, whoever computed them
    ds = data.load_splits(SST2, settings("data", dir=str(task_dir)), ["train"])["train"]
    np.testing.assert_allclose(
        second.representations, _direct_vectors(wide_teacher, ds), atol=2e-3, rtol=2e-3
    )


def _tensor_span(path: Path, name: str) -> tuple[int, int]:
    """Byte offsets of tensor `name`'s data in a safetensors file."""
    blob = path.read_bytes()
    header = int.from_bytes(blob[:8], "little")
    start, end = json.loads(blob[8 : 8 + header])[name]["data_offsets"]
    return 8 + header + start, 8 + header + end


@pytest.mark.parametrize("how", ["flip_a_vector", "vectors_dropped", "manifest_shape"])
def test_damaged_vectors_are_detected_and_the_entry_is_rebuilt(
    wide_teacher, splits, tmp_path, caplog, capsys, how
):
    root = tmp_path / "cache"
    teacher = _teacher(wide_teacher, tmp_path)
    val = DatasetDict({"validation": splits["validation"]})
    good = teachers.cached_logits(teacher, SST2, val, SoftLabelCache(root), representations=VECTORS)
    entry_dir = root / good["validation"].fingerprint
    path, manifest_path = entry_dir / LOGITS_FILE, entry_dir / MANIFEST_FILE
    if how == "flip_a_vector":
        start, end = _tensor_span(path, "representations")
        blob = bytearray(path.read_bytes())
        blob[(start + end) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
    elif how == "vectors_dropped":  # a well-formed file, and a manifest that agrees with it
        tensors = load_file(str(path))
        del tensors["representations"]
        save_file(tensors, str(path))
        manifest = json.loads(manifest_path.read_text())
        payload = path.read_bytes()
        manifest.update(sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload))
        manifest_path.write_text(json.dumps(manifest))
    else:
        manifest = json.loads(manifest_path.read_text())
        manifest["representations"]["shape"] = [len(splits["validation"]), WIDTH + 1]
        manifest_path.write_text(json.dumps(manifest))

    assert cache_tool.main(["--root", str(root), "verify"]) == 1
    assert "BAD" in capsys.readouterr().out
    cache = SoftLabelCache(root)
    with caplog.at_level(logging.WARNING, logger="sead.cache"):
        again = teachers.cached_logits(teacher, SST2, val, cache, representations=VECTORS)
    assert "is unusable" in caplog.text and (cache.hits, cache.misses) == (0, 1)
    np.testing.assert_array_equal(
        again["validation"].representations, good["validation"].representations
    )
    assert cache_tool.main(["--root", str(root), "verify"]) == 0


# --- teachers without vectors, tasks without them, the store, the CLI -----------------------


def test_a_predictions_teacher_has_no_vectors_and_still_gives_its_logits(tmp_path, caplog):
    ids = [0, 5, 9]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"idx": i, "logits": [1.0, -float(i)]}) + "\n" for i in ids))
    cfg = OmegaConf.create(
        {
            "files": {
                "predictions": {"validation": str(path)},
                "format": "logits",
                "labels": ["negative", "positive"],
            }
        }
    )
    [spec] = teachers.teacher_specs(cfg, SST2)
    teacher = teachers.predictions.prepare(spec, SST2)
    ds = Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [0, 1, 0], "idx": ids})
    with caplog.at_level(logging.INFO, logger="sead.teachers.predictions"):
        entries = teachers.cached_logits(
            teacher,
            SST2,
            DatasetDict({"validation": ds}),
            SoftLabelCache(tmp_path / "cache"),
            representations=VECTORS,
        )
    entry = entries["validation"]
    assert entry.representations is None and entry.logits.shape == (3, 2)
    assert "no representations" in caplog.text and "soft labels" in caplog.text


def test_multiple_choice_tasks_refuse_vectors_before_any_work(tmp_path):
    for name in ("copa", "record"):
        with pytest.raises(ValueError, match=rf"Task '{name}' is multiple choice"):
            teachers.cached_logits(
                None, get_task(name), DatasetDict(), None, representations=VECTORS
            )
        check_task(get_task(name), None)  # without vectors: fine
    check_task(SST2, VECTORS)


def test_cache_list_shows_which_entries_hold_vectors(wide_teacher, splits, tmp_path, capsys):
    root = tmp_path / "cache"
    teacher = _teacher(wide_teacher, tmp_path)
    val = DatasetDict({"validation": splits["validation"]})
    plain = teachers.cached_logits(teacher, SST2, val, SoftLabelCache(root))["validation"]
    cls = RepresentationSpec(layer=1, pooling="cls", dtype="float32")
    with_cls = teachers.cached_logits(teacher, SST2, val, SoftLabelCache(root), representations=cls)
    assert cache_tool.main(["--root", str(root), "list"]) == 0
    out = capsys.readouterr().out
    assert "REPRESENTATIONS" in out.splitlines()[0]
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "layer 1, cls, 48 wide" in rows[with_cls["validation"].fingerprint]
    assert rows[plain.fingerprint].split()[6] == "-"  # logits only
    assert cache_tool.main(["--root", str(root), "show", with_cls["validation"].fingerprint]) == 0
    assert '"pooling": "cls"' in capsys.readouterr().out
    manifest, tensors, _ = read_tensors(root / with_cls["validation"].fingerprint)
    assert (
        tensors["representations"].dtype == np.float32 and manifest["representations"]["layer"] == 1
    )
    # export writes the logits, as before
    out_file = tmp_path / "exported.jsonl"
    fp = with_cls["validation"].fingerprint
    assert cache_tool.main(["--root", str(root), "export", fp, "-o", str(out_file)]) == 0
    assert len(out_file.read_text().splitlines()) == len(splits["validation"])


def test_a_store_teacher_fine_tuned_for_vectors_runs_its_eval_split_once(tiny_cfg, monkeypatch):
    """The store's own eval-split entries hold the vectors the run will ask for, so the run's
    request is a hit, and the eval split went through the cache once."""
    from sead import pipeline

    passes = []
    real = teachers.logits.predict
    monkeypatch.setattr(
        teachers.logits,
        "predict",
        lambda *a, **k: passes.append((a[4], k["representations"])) or real(*a, **k),
    )
    run = pipeline.read_settings(tiny_cfg())
    inputs = pipeline.check_inputs(run)
    cache = pipeline.soft_label_cache(run)
    vectors = run.cache.representations
    [spec] = [spec for spec in inputs.specs if spec.name == "toy_roberta"]
    teacher = teachers.prepare(
        spec, inputs.task, inputs.splits, run.paths.teachers_dir, cache.file_hashes,
        cache, representations=vectors,
    )  # fmt: skip
    assert passes == [("Teacher toy_roberta on validation", vectors)]  # computed, not reused
    eval_splits = DatasetDict({"validation": inputs.splits["validation"]})
    entries = teachers.cached_logits(
        teacher, inputs.task, eval_splits, cache, representations=vectors
    )
    assert len(passes) == 1 and cache.misses == 1  # read back from the cache: no second pass
    assert entries["validation"].representations.shape == (120, 32)  # the toy teacher's width


def test_outputs_without_vectors_are_refused_when_vectors_were_asked_for(tmp_path):
    cache = SoftLabelCache(tmp_path)
    ids = np.arange(3)
    logits = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="representations were asked for, and none were computed"):
        cache.get_or_compute(KEY, ids, lambda partial: logits, representations=VECTORS)
    bad = Outputs(logits, np.full((3, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-finite values for 3 examples"):
        cache.get_or_compute(KEY, ids, lambda partial: bad, representations=VECTORS)
    good = Outputs(logits, np.ones((3, 4), np.float32))
    entry = cache.get_or_compute(KEY, ids, lambda partial: good, representations=VECTORS)
    assert entry.representations.shape == (3, 4)
    with safe_open(str(tmp_path / entry.fingerprint / LOGITS_FILE), "np") as f:
        assert f.get_tensor("representations").dtype == np.float16  # stored in fp16
    assert not _entries(tmp_path)[1:]  # the refused ones left nothing behind


def test_teachers_with_vectors_but_no_ensemble_weight_count_equally_not_as_nan(caplog):
    """An ensembler can give every teacher with vectors weight 0 (the soft labels then come
    from a prediction-file teacher): their representation loss would be 0 / 0."""
    from types import SimpleNamespace

    from sead import distill, pipeline

    spec = RepresentationSpec(-1, "mean", "float16")
    inputs = SimpleNamespace(
        settings=SimpleNamespace(
            cache=SimpleNamespace(representations=spec),
            recipe=SimpleNamespace(name="staged", representation_loss="mse"),
        ),
        names=["bert", "judge"],
    )
    outputs = SimpleNamespace(vectors={"bert": {"train": np.ones((3, 4), np.float32)}})
    ensembler = SimpleNamespace(name="learned", weights=lambda: np.array([0.0, 1.0]))
    with caplog.at_level(logging.WARNING):
        reps = pipeline._vectors(inputs, outputs, ensembler, ["train"])
    assert reps.weights == {"bert": 1.0}
    assert "gives the teachers with representations ['bert'] no weight" in caplog.text
    projections = torch.nn.ModuleDict({"bert": torch.nn.Linear(2, 4)})
    projected = {"bert": projections["bert"](torch.ones(3, 2))}
    loss = distill.representation_loss(projected, {"bert": reps.vectors}, reps.weights, reps.kind)
    assert torch.isfinite(loss)
