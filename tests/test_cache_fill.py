"""Filling the cache from real (tiny) teachers: fingerprints, Hub revisions, speed path, resume."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sead import checkpoints, data, inference, pipeline, teachers
from sead.cache import SoftLabelCache
from sead.chunks import PartialEntry
from sead.tasks import get_task
from tests import cache_worker
from tests.helpers import compose, kill_after_chunks, settings

# --- fingerprints, through the pipeline's own key building ----------------------------------


def fingerprints(cfg, label_alignment=None, truncation_side=None) -> dict:
    """{(teacher, split): fingerprint} for a composed config, as `pipeline.run` keys its cache."""
    run = pipeline.read_settings(cfg)
    inputs = pipeline.check_inputs(run)
    cache = pipeline.soft_label_cache(run)
    out = {}
    for spec in inputs.specs:
        teacher = teachers.prepare(
            spec, inputs.task, inputs.splits, cfg.paths.teachers_dir, cache.file_hashes
        )
        teacher.label_alignment = label_alignment
        tokenizer = teacher.load_tokenizer()
        tokenizer.truncation_side = truncation_side or tokenizer.truncation_side
        keys = teachers.cache_keys(teacher, inputs.task, inputs.splits, tokenizer, cache)
        out.update({(spec.name, split): cache.fingerprint(key) for split, key in keys.items()})
    return out


@pytest.fixture
def teacher_cfg(tiny_assets, tmp_path):
    """The demo config with one ready (not fine-tuned) teacher at `checkpoint`."""

    def make(*overrides, checkpoint=None, output="run"):
        checkpoint = checkpoint or tiny_assets / "models" / "teacher_bert"
        return compose(
            [
                "experiment=demo",
                f"paths.demo_dir={tiny_assets}",
                f"paths.cache_dir={tmp_path / 'cache'}",
                "teachers=[toy_bert]",
                "teachers.toy_bert.finetune=false",
                f"+teachers.toy_bert.checkpoints={{sst2: '{checkpoint}', cola: '{checkpoint}'}}",
                *overrides,
            ],
            output_dir=str(tmp_path / output),
        )

    return make


def test_fingerprint_ignores_student_ensembler_lr_seed_output_and_batch_size(teacher_cfg):
    base = fingerprints(teacher_cfg())
    assert len(set(base.values())) == 2  # train and validation
    for overrides, output in [
        (["student=xtremedistil_l6_h384"], "run"),
        (["ensemble=mean_probs"], "run"),
        (["train.lr=1e-3", "train.temperature=4", "train.alpha=0.9"], "run"),
        (["seed=7"], "run"),
        ([], "another_output_dir"),
        (["teachers.toy_bert.batch_size=8"], "run"),  # batches differ only at float eps
        (["cache.chunk_size=16"], "run"),
        (["cache.autocast=bf16"], "run"),  # a CPU run: autocast is a GPU setting
    ]:
        assert fingerprints(teacher_cfg(*overrides, output=output)) == base, overrides


def test_fingerprint_changes_with_each_thing_that_changes_the_logits(
    teacher_cfg, tiny_assets, tmp_path
):
    source = tiny_assets / "models" / "teacher_bert"
    base = fingerprints(teacher_cfg())
    train, val = ("toy_bert", "train"), ("toy_bert", "validation")

    def changed(fps: dict) -> set:
        return {k for k in fps if fps[k] != base[k]}

    # The weights' content, not their path: a copy hits, an edited copy misses.
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    assert fingerprints(teacher_cfg(checkpoint=copy)) == base
    weights = load_file(str(copy / "model.safetensors"))
    name = next(iter(weights))
    save_file({**weights, name: weights[name] + 1e-3}, str(copy / "model.safetensors"))
    assert changed(fingerprints(teacher_cfg(checkpoint=copy))) == {train, val}

    # The tokenizer's files.
    retok = tmp_path / "retok"
    shutil.copytree(source, retok)
    tok_config = json.loads((retok / "tokenizer_config.json").read_text())
    (retok / "tokenizer_config.json").write_text(json.dumps({**tok_config, "do_lower_case": False}))
    assert changed(fingerprints(teacher_cfg(checkpoint=retok))) == {train, val}

    # Truncation side: in the tokenizer's files, and in the key on its own.
    (retok / "tokenizer_config.json").write_text(
        json.dumps({**tok_config, "truncation_side": "left"})
    )
    assert changed(fingerprints(teacher_cfg(checkpoint=retok))) == {train, val}
    assert changed(fingerprints(teacher_cfg(), truncation_side="left")) == {train, val}

    assert changed(fingerprints(teacher_cfg("teachers.toy_bert.max_length=32"))) == {train, val}
    assert changed(fingerprints(teacher_cfg(), label_alignment=[1, 0])) == {train, val}
    assert changed(fingerprints(teacher_cfg("cache.dtype=float16"))) == {train, val}

    # The task, and the data: a subset of train changes train's entry only.
    cola = fingerprints(teacher_cfg("task=cola"))
    assert set(cola.values()).isdisjoint(base.values())
    assert changed(fingerprints(teacher_cfg("data.max_train_samples=100"))) == {train}
    edited = tmp_path / "edited_data"
    shutil.copytree(tiny_assets / "data" / "sst2_toy", edited)
    rows = (edited / "validation.jsonl").read_text().splitlines()
    first = json.loads(rows[0])
    rows[0] = json.dumps({**first, "sentence": first["sentence"] + " really"})
    (edited / "validation.jsonl").write_text("\n".join(rows) + "\n")
    assert changed(fingerprints(teacher_cfg(f"data.dir={edited}"))) == {val}


def test_fingerprint_changes_with_the_split_name_alone(teacher_cfg, tmp_path):
    cfg = teacher_cfg()
    inputs = pipeline.check_inputs(pipeline.read_settings(cfg))
    cache = SoftLabelCache(tmp_path)
    teacher = teachers.prepare(inputs.specs[0], inputs.task, inputs.splits, tmp_path)
    tokenizer = teacher.load_tokenizer()
    same_rows = DatasetDict({"a": inputs.splits["train"], "b": inputs.splits["train"]})
    keys = teachers.cache_keys(teacher, inputs.task, same_rows, tokenizer, cache)
    assert cache.fingerprint(keys["a"]) != cache.fingerprint(keys["b"])


def test_precision_in_the_key_is_what_the_forward_pass_runs_in():
    assert inference.precision(torch.device("cpu"), "bf16") == "float32"
    assert inference.precision(torch.device("cuda"), None) == "float32"
    assert inference.precision(torch.device("cuda"), "bf16") == "bfloat16"
    assert inference.precision(torch.device("cuda"), "fp16") == "float16"


# --- Hub checkpoints: identified by the commit their revision resolves to -------------------


@pytest.fixture
def fake_hub(tmp_path, tiny_assets, monkeypatch):
    """An offline HF cache for `org/tiny`: main -> commit a..., tag v1 -> commit b..."""
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    repo = hub / "models--org--tiny"
    commits = {"main": "a" * 40, "v1": "b" * 40}
    for ref, commit in commits.items():
        shutil.copytree(tiny_assets / "models" / "teacher_bert", repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return repo, commits


def test_hub_revision_resolves_to_its_commit(fake_hub):
    repo, commits = fake_hub
    for revision, commit in [(None, "a" * 40), ("main", "a" * 40), ("v1", "b" * 40)]:
        local = checkpoints.resolve("org/tiny", revision)
        assert local == repo / "snapshots" / commit
        assert checkpoints.identity("org/tiny", local) == f"org/tiny@{commit}"


def test_a_local_checkpoints_identity_follows_its_weights_and_modeling_code(tiny_assets, tmp_path):
    """What trust_remote_code would run is part of what a local model is: an edited
    modeling_*.py gives another identity, so logits cached with the old code are not reused."""
    local = tmp_path / "model"
    shutil.copytree(tiny_assets / "models" / "teacher_bert", local)
    plain = checkpoints.identity(str(local), local)
    (local / "modeling_custom.py").write_text("SCALE = 1\n")
    with_code = checkpoints.identity(str(local), local)
    (local / "modeling_custom.py").write_text("SCALE = 2\n")
    assert len({plain, with_code, checkpoints.identity(str(local), local)}) == 3


def test_hub_teacher_fingerprint_follows_the_commit(fake_hub, teacher_cfg):
    repo, commits = fake_hub
    main = fingerprints(teacher_cfg(checkpoint="org/tiny"))
    assert fingerprints(teacher_cfg("teachers.toy_bert.revision=main", checkpoint="org/tiny")) == (
        main
    )
    assert (
        fingerprints(teacher_cfg(f"teachers.toy_bert.revision={'a' * 40}", checkpoint="org/tiny"))
        == main
    )
    tag = fingerprints(teacher_cfg("teachers.toy_bert.revision=v1", checkpoint="org/tiny"))
    assert set(tag.values()).isdisjoint(main.values())  # same files, another commit
    (repo / "refs" / "main").write_text(commits["v1"])  # the branch moved
    assert fingerprints(teacher_cfg(checkpoint="org/tiny")) == tag


# --- inference: length-sorted, chunked, back in dataset order -------------------------------


@pytest.fixture(scope="module")
def tiny_teacher(tiny_assets):
    folder = tiny_assets / "models" / "teacher_bert"
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    task = get_task("sst2")
    ds = data.load_splits(
        task, settings("data", dir=str(tiny_assets / "data" / "sst2_toy")), ["validation"]
    )
    encoded = data.tokenize(ds["validation"], tokenizer, task, max_length=64)
    return model, tokenizer, encoded


def test_sorted_batches_give_each_example_its_own_logits_in_dataset_order(tiny_teacher):
    model, tokenizer, encoded = tiny_teacher
    logits = inference.predict_logits(model, tokenizer, encoded, batch_size=16)
    with torch.inference_mode():
        for i in [0, 1, 57, len(encoded) - 1]:  # one example at a time: no padding at all
            ids = torch.tensor([encoded[i]["input_ids"]])
            alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
            np.testing.assert_allclose(logits[i], alone.numpy(), atol=1e-5)

    ids = encoded["input_ids"][:]
    batches = inference.length_sorted_batches(ids, 16)
    longest = [max(len(ids[i]) for i in batch) for batch in batches]
    assert longest == sorted(longest, reverse=True)  # each batch pads to similar lengths
    assert len(batches[0]) == 16 and len(batches[-1]) > 16  # short ones: larger batches
    budget = 16 * longest[0]
    assert all(len(b) * n <= budget for b, n in zip(batches, longest, strict=True))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(encoded)))


def test_chunked_run_equals_a_single_pass_bitwise(tiny_teacher, tmp_path):
    model, tokenizer, encoded = tiny_teacher
    whole = inference.predict_logits(model, tokenizer, encoded, batch_size=16)
    partial = PartialEntry(tmp_path / "p", chunk_size=40)
    chunked = inference.predict_logits(model, tokenizer, encoded, 16, partial=partial)
    assert np.array_equal(whole, chunked)
    assert 1 < partial.saved <= -(-len(encoded) // 40)
    again = PartialEntry(tmp_path / "p", chunk_size=40)
    assert np.array_equal(
        inference.predict_logits(model, tokenizer, encoded, 16, partial=again), whole
    )
    assert (again.reused, again.saved) == (partial.saved, 0)


# --- resume after SIGKILL -------------------------------------------------------------------


@pytest.mark.slow
def test_fill_killed_mid_way_resumes_from_its_chunks_and_equals_an_uninterrupted_run(
    tiny_assets, tmp_path, monkeypatch
):
    # A teacher with its classification head saved: every process loads the same model.
    teacher = tmp_path / "teacher"
    source = tiny_assets / "models" / "teacher_bert"
    AutoModelForSequenceClassification.from_pretrained(source).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(source).save_pretrained(teacher)
    task_dir = tiny_assets / "data" / "sst2_toy"

    root, chunk, batch = tmp_path / "killed", 32, 16
    args = [teacher, task_dir, root, chunk, batch, 0.5]
    child = cache_worker.spawn("fill", *args, stdout=subprocess.DEVNULL)
    kill_after_chunks(child, root)
    done = len(list(root.glob(".partial-*/chunk-*.safetensors")))
    assert done >= 2
    assert not [p for p in root.iterdir() if p.is_dir() and p.name[0] != "."]  # no entry yet

    counts = {"reused": 0, "saved": 0}
    load, save = PartialEntry.load, PartialEntry.save

    def counting_load(self, *args):
        logits = load(self, *args)
        counts["reused"] += logits is not None
        return logits

    def counting_save(self, *args):
        counts["saved"] += 1
        return save(self, *args)

    monkeypatch.setattr(PartialEntry, "load", counting_load)
    monkeypatch.setattr(PartialEntry, "save", counting_save)
    resumed = cache_worker.fill(teacher, task_dir, root, chunk, batch)
    assert not list(root.glob(".partial-*"))  # assembled, then cleaned up
    resumed_counts = dict(counts)

    counts.update(reused=0, saved=0)
    uninterrupted = cache_worker.fill(teacher, task_dir, tmp_path / "fresh", chunk, batch)
    n_chunks = counts["saved"]
    assert done < n_chunks  # it was killed mid-way
    assert resumed_counts == {"reused": done, "saved": n_chunks - done}
    assert np.array_equal(resumed, uninterrupted)
