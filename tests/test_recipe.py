"""Recipes: stages with their own objectives and data, held-out selection, resume."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from sead import checkpoints, data, distill, pipeline, recipe
from sead.config import build
from sead.settings import read_settings
from sead.tasks import get_task
from tests.helpers import compose

SST2 = get_task("sst2")
CONF = Path(__file__).resolve().parents[1] / "conf"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.stem for p in (CONF / "recipe").glob("*.yaml")])
def test_every_shipped_recipe_builds(name):
    settings = read_settings(compose([f"recipe={name}"]))
    assert settings.recipe.name == name and settings.recipe.stages


def test_the_default_recipe_is_one_stage_of_the_single_pass_loss():
    single = read_settings(compose()).recipe
    assert single.name == "single" and len(single.stages) == 1
    (stage,) = single.stages
    assert stage.objectives is None and stage.data == "all" and not stage.select
    assert not single.needs_representations and not single.needs_heldout


def test_the_shipped_staged_recipe_is_the_one_the_study_measured():
    # experiments/sead_glue_cpu/design.py's STAGED: xtremedistil with its caps cut to 2, 2, 3
    study = ["recipe=xtremedistil"] + [
        f"recipe.stages.{i}.epochs={n}" for i, n in enumerate((2, 2, 3))
    ]
    measured = read_settings(compose(study)).recipe
    shipped = read_settings(compose(["recipe=staged"])).recipe
    assert shipped.name == "staged" and shipped.stages == measured.stages
    assert shipped.representation_loss == measured.representation_loss


def _stage(**changes) -> dict:
    stage = {
        "name": "s",
        "objectives": {"soft": 1.0},
        "data": "all",
        "epochs": None,
        "lr": None,
        "freeze": [],
        "select": False,
        "patience": 1,
        "select_by": "auto",
        "min_words": 0,
    }
    return stage | changes


@pytest.mark.parametrize(
    "stage, message",
    [
        (_stage(objectives={"logits": 1.0}), r"objectives \['logits'\] unknown"),
        (_stage(objectives={"soft": -1.0}), r"expected weights >= 0"),
        (_stage(objectives={"soft": 0.0}), r"at least one above 0"),
        (_stage(data="unlabeled"), r"recipe.stages\[0\].data='unlabeled'"),
        (_stage(patience=0), r"recipe.stages\[0\].patience=0"),
        (_stage(select_by="loss"), r"recipe.stages\[0\].select_by='loss'"),
        (_stage(min_words=-1), r"recipe.stages\[0\].min_words=-1"),
        (
            _stage(objectives={"representations": 1.0}, select_by="soft_loss"),
            r"'s' has select_by: soft_loss, but learns only \['representations'\]",
        ),
        (_stage() | {"epoch": 3}, r"recipe.stages\[0\] has unknown key\(s\) \['epoch'\]"),
    ],
)
def test_a_bad_stage_is_named(stage, message):
    node = {"name": "mine", "representation_loss": "mse", "stages": [stage]}
    with pytest.raises(ValueError, match=message):
        build(recipe.RecipeSettings, node, "recipe")


def test_repeated_stage_names_and_no_stages_are_refused():
    with pytest.raises(ValueError, match="repeat"):
        build(recipe.RecipeSettings, {"name": "r", "representation_loss": "mse",
              "stages": [_stage(), _stage()]}, "recipe")  # fmt: skip
    with pytest.raises(ValueError, match="no stages"):
        build(recipe.RecipeSettings, {"name": "r", "representation_loss": "mse", "stages": []},
              "recipe")  # fmt: skip


# --------------------------------------------------------------------------------------------
# The held-out slice
# --------------------------------------------------------------------------------------------


def _data_settings(tmp_folder, **changes):
    node = {
        "dir": str(tmp_folder),
        "max_train_samples": None,
        "max_eval_samples": None,
        "subsample_seed": 0,
        "diagnostics": [],
        "diagnostics_dir": None,
        "heldout": None,
        "heldout_seed": 0,
    }
    return build(data.DataSettings, node | changes, "data")


def test_heldout_is_carved_from_train_by_count_or_fraction(tiny_assets):
    folder = tiny_assets / "data" / "sst2_toy"
    whole = data.load_splits(SST2, _data_settings(folder), ["train"])["train"]
    carved = {}
    for wanted, count in ((24, 24), (0.25, 60)):
        settings = _data_settings(folder, heldout=wanted)
        splits = data.load_splits(SST2, settings, ["train", "heldout"])
        train, heldout = splits["train"], splits["heldout"]
        assert len(heldout) == count and len(train) == len(whole) - count
        assert not set(train["idx"][:]) & set(heldout["idx"][:])
        assert sorted(train["idx"][:] + heldout["idx"][:]) == sorted(whole["idx"][:])
        carved[wanted] = heldout["idx"][:]
    again = data.load_splits(SST2, _data_settings(folder, heldout=24), ["heldout"])["heldout"]
    assert again["idx"][:] == carved[24]  # the same seed carves the same rows
    other = data.load_splits(SST2, _data_settings(folder, heldout=24, heldout_seed=1), ["heldout"])
    assert other["heldout"]["idx"][:] != carved[24]
    # data.max_eval_samples is for the eval splits: the held-out slice keeps its 24 rows
    small = _data_settings(folder, heldout=24, max_eval_samples=10)
    splits = data.load_splits(SST2, small, ["train", "validation", "heldout"])
    assert (len(splits["validation"]), len(splits["heldout"])) == (10, 24)


def test_heldout_errors_name_the_option(tiny_assets, tmp_path):
    folder = tiny_assets / "data" / "sst2_toy"
    with pytest.raises(ValueError, match=r"data.heldout=2.5 is not allowed: expected a count"):
        _data_settings(folder, heldout=2.5)
    with pytest.raises(ValueError, match=r"data.heldout=240 leaves 240 of the 240 rows"):
        data.load_splits(SST2, _data_settings(folder, heldout=240), ["train"])
    own = tmp_path / "own"
    own.mkdir()
    for name in ("train", "validation"):
        (own / f"{name}.jsonl").write_bytes((folder / f"{name}.jsonl").read_bytes())
    (own / "heldout.jsonl").write_bytes((folder / "validation.jsonl").read_bytes())
    with pytest.raises(ValueError, match=r"heldout.jsonl is one already: set data.heldout=null"):
        data.load_splits(SST2, _data_settings(own, heldout=10), ["train"])


def test_a_selecting_recipe_without_heldout_stops_in_the_check_stage(tiny_cfg, monkeypatch):
    monkeypatch.setattr(distill, "student_trainer", _forbidden)
    with pytest.raises(ValueError, match=r"select: true.*set data.heldout"):
        pipeline.run(tiny_cfg("recipe=xtremedistil"))


def test_max_steps_with_stages_that_set_their_epochs_is_refused_before_any_work(
    tiny_cfg, monkeypatch
):
    monkeypatch.setattr(distill, "student_trainer", _forbidden)
    monkeypatch.setattr(data, "load_splits", _forbidden)
    message = r"stage\(s\) \['representations', 'soft', 'hard'\] set their own epochs.*max_steps=3"
    with pytest.raises(ValueError, match=message):
        pipeline.run(tiny_cfg(*STAGED, "train.max_steps=3"))


def _forbidden(*args, **kwargs):
    raise AssertionError("training started")


# --------------------------------------------------------------------------------------------
# Stages, end to end on tiny models
# --------------------------------------------------------------------------------------------


def _weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _student_hash(run_dir: Path) -> str:
    from safetensors.torch import load_file

    state = load_file(str(run_dir / "student" / "model.safetensors"))
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].numpy().tobytes())
    return h.hexdigest()


STAGED = [
    "recipe=xtremedistil",
    "data.heldout=40",
    "recipe.stages.0.epochs=2",
    "recipe.stages.1.epochs=2",
    "recipe.stages.2.epochs=1",
    "report.speed_samples=0",
]


class EpochHashes(TrainerCallback):
    """Each epoch's weights of the student, by stage, as training goes."""

    def __init__(self):
        self.hashes = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        student = getattr(model, "student", model)
        self.hashes.append((round(state.epoch), _weights_hash(student)))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # after the Trainer restored the best checkpoint (load_best_model_at_end), before the
        # next stage trains the same student further
        self.final = _weights_hash(getattr(model, "student", model))


def test_the_staged_recipe_learns_representations_and_keeps_its_best_epochs(tiny_cfg, monkeypatch):
    seen = []
    real = distill.student_trainer

    def recording(*args, **kwargs):
        hashes = EpochHashes()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), hashes]
        trainer = real(*args, **kwargs)
        seen.append((trainer, hashes))
        return trainer

    monkeypatch.setattr(distill, "student_trainer", recording)
    import sead.recipe

    batch_sizes = []  # held-out scoring batches as train.eval_batch_size says (not 128)
    real_batches, real_evaluate = distill.length_sorted_batches, sead.recipe.evaluate
    monkeypatch.setattr(
        distill,
        "length_sorted_batches",
        lambda ids, size: batch_sizes.append(size) or real_batches(ids, size),
    )
    monkeypatch.setattr(
        sead.recipe, "evaluate", lambda *a, **k: batch_sizes.append(a[5]) or real_evaluate(*a, **k)
    )
    cfg = tiny_cfg(*STAGED, "train.eval_batch_size=7")  # fmt: skip
    results = pipeline.run(cfg)
    assert batch_sizes and set(batch_sizes) == {7}
    stages = results["recipe"]["stages"]
    assert [s["name"] for s in stages] == ["representations", "soft", "hard"]
    # the representation loss falls while the first stage trains
    first, _ = seen[0]
    losses = [e["loss"] for e in first.state.log_history if "loss" in e]
    assert losses[-1] < losses[0], losses
    for stage, (_, hashes) in zip(stages, seen, strict=True):
        chosen = stage["selection"]
        assert chosen["best_epoch"] == 1 + int(np.argmax(np.asarray(chosen["curve"]) * (
            -1 if chosen["on"] == "representation_loss" else 1)))  # fmt: skip
        # the weights the stage ends with are those of its best held-out epoch
        assert hashes.final == dict(hashes.hashes)[chosen["best_epoch"]]
    assert results["heldout"]["rows"] == 40
    # the saved student is an ordinary checkpoint: no projection in it, from_pretrained loads it
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    saved = Path(cfg.paths.output_dir) / "student"
    assert not [key for key in load_file(str(saved / "model.safetensors")) if "projection" in key]
    loaded = AutoModelForSequenceClassification.from_pretrained(saved)
    assert _weights_hash(loaded) == _student_hash(Path(cfg.paths.output_dir))


def _record_epoch_hashes(monkeypatch, heldout=None) -> list:
    """Each stage's `EpochHashes`, in order, as the run trains; `heldout` {n: scorer} replaces
    the n-th stage's held-out scorer (1-based)."""
    seen = []
    real = distill.student_trainer

    def recording(*args, **kwargs):
        hashes = EpochHashes()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), hashes]
        seen.append(hashes)
        if heldout and len(seen) in heldout:
            kwargs["heldout"] = heldout[len(seen)]
        return real(*args, **kwargs)

    monkeypatch.setattr(distill, "student_trainer", recording)
    return seen


def test_a_stage_that_never_beats_its_entry_on_heldout_gives_the_entry_weights_back(
    tiny_cfg, monkeypatch
):
    seen = _record_epoch_hashes(monkeypatch)
    real_scorer = recipe._heldout_scorer

    def worse_after_gold_labels(trained, tokenizer, data, stage, *rest):
        """The gold-label stage's epochs score below anything the soft stage can reach."""
        score, encoded = real_scorer(trained, tokenizer, data, stage, *rest)
        return (lambda: {"heldout": -1.0}) if stage.name == "hard" else score, encoded

    monkeypatch.setattr(recipe, "_heldout_scorer", worse_after_gold_labels)
    cfg = tiny_cfg(*STAGED, "recipe.stages.2.epochs=2")
    results = pipeline.run(cfg)
    soft, hard = results["recipe"]["stages"][1:]
    assert hard["selection"]["kept"] == "entry"
    assert hard["selection"]["entry_heldout"] == soft["selection"]["heldout"]
    assert hard["selection"]["heldout"] == -1.0
    # the saved student is the soft stage's kept weights, not the gold stage's best epoch
    assert seen[2].final != seen[1].final
    assert _student_hash(Path(cfg.paths.output_dir)) == seen[1].final
    # the entry rule only compares stages scored alike: the soft stage follows a
    # representation stage (another measure), so it keeps its own best epoch
    assert "kept" not in soft["selection"]


def test_stages_can_choose_on_the_heldout_soft_label_loss(tiny_cfg, monkeypatch):
    seen = _record_epoch_hashes(monkeypatch)
    by_loss = ["recipe.stages.1.select_by=soft_loss", "recipe.stages.2.select_by=soft_loss"]
    cfg = tiny_cfg(*STAGED, *by_loss, "recipe.stages.2.epochs=2")
    results = pipeline.run(cfg)
    reps, soft, hard = results["recipe"]["stages"]
    assert reps["selection"]["on"] == "representation_loss"  # select_by: auto
    for stage, hashes in zip((soft, hard), seen[1:], strict=True):
        chosen = stage["selection"]
        assert chosen["on"] == "soft_loss" and all(loss > 0 for loss in chosen["curve"])
        assert chosen["best_epoch"] == 1 + int(np.argmin(chosen["curve"]))  # lower is better
        assert hashes.final == dict(hashes.hashes)[chosen["best_epoch"]]
    # the stages are scored alike, so the gold-label stage keeps its entry unless it beats it
    kept = hard["selection"].get("kept") == "entry"
    assert kept == (hard["selection"]["heldout"] >= soft["selection"]["heldout"])
    final = hard["selection"]["entry_heldout"] if kept else hard["selection"]["heldout"]
    # ...and that score is the saved student's T^2 KL to the ensemble's held-out soft labels
    settings, inputs, scored = _saved_student_on_heldout(cfg)
    outputs = pipeline.teacher_outputs(inputs, pipeline.soft_label_cache(settings))
    ensembler, _ = pipeline._ensemble(inputs, outputs.logits)
    temperature = settings.train.temperature
    held = np.stack([outputs.logits[name][data.HELDOUT] for name in inputs.names])
    # (the toy teachers' loss is ~1e-6, where float32 rounding moves it by ~0.5%: a wrong
    # temperature would move it 4x, targets from other rows or gold labels by orders)
    targets = torch.as_tensor(ensembler.combine(held, temperature), dtype=torch.float32)
    log_student = torch.log_softmax(torch.as_tensor(scored.logits) / temperature, -1)
    kl = (targets * (targets.clamp_min(1e-30).log() - log_student)).sum(-1).mean()
    assert float(kl) * temperature**2 == pytest.approx(final, rel=0.02)


def test_a_stage_scores_its_entry_on_its_own_measure(tiny_cfg, monkeypatch):
    """After a stage chosen on the soft-label loss, the gold-label stage (chosen on the task's
    metric) scores the weights it starts from on that metric, and gives them back if none of
    its epochs beats them."""
    # the gold-label stage (the third trainer): every epoch scores below any accuracy
    seen = _record_epoch_hashes(monkeypatch, heldout={3: lambda: {"heldout": -1.0}})
    cfg = tiny_cfg(*STAGED, "recipe.stages.1.select_by=soft_loss", "recipe.stages.2.epochs=2")
    soft, hard = pipeline.run(cfg)["recipe"]["stages"][1:]
    assert soft["selection"]["on"] == "soft_loss" and hard["selection"]["on"] == "main_metric"
    assert hard["selection"]["kept"] == "entry" and hard["selection"]["heldout"] == -1.0
    assert _student_hash(Path(cfg.paths.output_dir)) == seen[1].final != seen[2].final
    _, _, scored = _saved_student_on_heldout(cfg)
    assert hard["selection"]["entry_heldout"] == scored.metrics["accuracy"]


def _saved_student_on_heldout(cfg):
    """The run's settings, inputs, and its saved student's evaluation on the held-out slice."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sead.tracking import evaluate

    settings = read_settings(cfg)
    inputs = pipeline.check_inputs(settings)
    saved = Path(cfg.paths.output_dir) / "student"
    student = AutoModelForSequenceClassification.from_pretrained(saved)
    tokenizer = AutoTokenizer.from_pretrained(saved)
    heldout = inputs.splits[data.HELDOUT]
    max_length = settings.student.max_length
    return settings, inputs, evaluate(student, tokenizer, SST2, heldout, max_length, 128, "x")


def test_soft_loss_selection_is_refused_for_multiple_choice():
    stage = build(recipe.StageSettings, _stage(select=True, select_by="soft_loss"), "s")
    recipe_settings = recipe.RecipeSettings("mine", "mse", (stage,))
    with pytest.raises(ValueError, match=r"select_by: soft_loss.*multiple-choice tasks \(copa\)"):
        recipe.check(recipe_settings, get_task("copa"), heldout_given=True)


def test_a_gold_label_stage_on_the_transfer_set_alone_is_refused():
    """Transfer rows have no gold labels: such a stage would train on a constant 0 loss."""
    stage = build(recipe.StageSettings, _stage(objectives={"hard": 1.0}, data="transfer"), "s")
    with pytest.raises(ValueError, match=r"stage 's' learns gold labels only, on data=transfer"):
        recipe.check(recipe.RecipeSettings("mine", "mse", (stage,)), SST2, heldout_given=True)
    for changes in ({"data": "all"}, {"objectives": {"hard": 1.0, "soft": 0.5}}):
        node = _stage(objectives={"hard": 1.0}, data="transfer") | changes
        fine = build(recipe.StageSettings, node, "s")
        recipe.check(recipe.RecipeSettings("mine", "mse", (fine,)), SST2, heldout_given=True)


def _toy_pairs(source: Path, folder: Path) -> Path:
    """An STS-B-shaped folder (sentence1, sentence2, a float score 0-5) from the toy reviews:
    pairs of the same sentiment score high, so the tiny teachers have something to learn."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in (source / f"{split}.jsonl").read_text().splitlines()]
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i, (a, b) in enumerate(zip(rows[0::2], rows[1::2], strict=True)):
                score = 4.5 if a["label"] == b["label"] else 0.5
                pair = {"sentence1": a["sentence"], "sentence2": b["sentence"]}
                f.write(json.dumps(pair | {"label": score + (i % 3) / 10, "idx": i}) + "\n")
    return folder


@pytest.mark.slow
def test_the_staged_recipe_runs_on_a_regression_task_with_augmented_pairs(
    tiny_cfg, tiny_assets, tmp_path
):
    """STS-B's block of the study: scores, not classes, at every stage and in the ensemble."""
    folder = _toy_pairs(tiny_assets / "data" / "sst2_toy", tmp_path / "stsb_toy")
    cfg = tiny_cfg(
        *STAGED, "task=stsb", f"data.dir={folder}", "ensemble=learned",
        "ensemble.fit_split=heldout", "transfer=augment", "transfer.multiplier=1",
    )  # fmt: skip
    results = pipeline.run(cfg)
    stages = results["recipe"]["stages"]
    assert [s["selection"]["on"] for s in stages] == [
        "representation_loss", "main_metric", "main_metric"
    ]  # fmt: skip
    for stage in stages[1:]:  # Pearson on the held-out rows: a correlation, in [-1, 1]
        assert all(-1 <= score <= 1 for score in stage["selection"]["curve"])
    metrics = results["student"]["metrics"]["validation"]
    assert set(metrics) >= {"pearson", "spearmanr"}
    # the saved student is a one-output regression head
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(Path(cfg.paths.output_dir) / "student")
    assert saved.num_labels == 1 and saved.problem_type == "regression"


def test_a_second_staged_run_has_no_cache_miss(tiny_cfg):
    pipeline.run(tiny_cfg(*STAGED, output="first"))
    again = pipeline.run(tiny_cfg(*STAGED, output="second"))
    assert again["cache"]["misses"] == 0
    assert all(all(t["cache_hit"].values()) for t in again["teachers"].values())


def test_entries_with_vectors_serve_a_run_that_asks_for_logits_only(tiny_cfg, tmp_path):
    plain = ["data.heldout=40", "report.speed_samples=0"]
    pipeline.run(tiny_cfg(*STAGED, output="staged"))  # labels every split, vectors too
    served = pipeline.run(tiny_cfg(*plain, output="served"))
    assert served["cache"]["misses"] == 0  # no teacher labels anything twice
    # the logits it read are those a logits-only pass computes: the same student comes out
    fresh = tiny_cfg(*plain, f"paths.cache_dir={tmp_path / 'fresh'}", output="fresh")
    assert pipeline.run(fresh)["cache"]["misses"] > 0
    assert _student_hash(tmp_path / "served") == _student_hash(tmp_path / "fresh")


class Kill(TrainerCallback):
    """Stops the process's training at one global step of one stage (a kill, in effect)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("killed")


def test_a_run_killed_mid_stage_resumes_and_ends_as_an_uninterrupted_one(
    tiny_cfg, monkeypatch, tmp_path
):
    whole = pipeline.run(tiny_cfg(*STAGED, output="whole"))
    calls = []
    real = distill.student_trainer

    def killed_in_stage_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the soft-label stage, in its second epoch
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Kill(step=5)]
        return real(*args, **kwargs)

    monkeypatch.setattr(distill, "student_trainer", killed_in_stage_two)
    killed = tiny_cfg(*STAGED, output="killed")
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(killed)
    monkeypatch.setattr(distill, "student_trainer", real)
    resumed = pipeline.run(tiny_cfg(*STAGED, output="resumed"))
    assert resumed["student"]["metrics"] == whole["student"]["metrics"]
    assert [s.get("selection") for s in resumed["recipe"]["stages"]] == [
        s.get("selection") for s in whole["recipe"]["stages"]
    ]
    assert _student_hash(tmp_path / "resumed") == _student_hash(tmp_path / "whole")
    assert not list((tmp_path / "cache" / "students").iterdir())  # the work folder is gone


class KillAfterStop(TrainerCallback):
    """Kills the process once the stage has stopped and loaded its best epoch, before the
    stage is recorded."""

    def on_train_end(self, args, state, control, **kwargs):
        raise KeyboardInterrupt("killed")


class KillInEpoch3(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.epoch > 2.3:
            raise KeyboardInterrupt("killed")


class EpochNow(TrainerCallback):
    """The epoch just ended, which the held-out scorer called after it scores."""

    epoch = 0

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch = round(state.epoch)


@pytest.mark.parametrize(
    "cap, patience, scores, stops_after, kill",
    [
        (4, 2, [0.5, 0.4, 0.3, 0.6], 3, KillInEpoch3()),  # one epoch without better so far
        (3, 1, [0.5, 0.4, 0.6], 2, KillAfterStop()),  # stopped after epoch 2, not yet recorded
    ],
)
def test_a_resumed_stage_keeps_counting_its_patience_where_it_was_killed(
    tiny_cfg, monkeypatch, tmp_path, cap, patience, scores, stops_after, kill
):
    """Early stopping's count of epochs without a better held-out score survives a kill: the
    resumed stage stops where the uninterrupted one did and keeps the same epoch."""
    soft = f"{{name: soft, objectives: {{soft: 1.0}}, data: all, epochs: {cap}, lr: null, "
    soft += f"freeze: [], select: true, patience: {patience}, select_by: auto, min_words: 0}}"
    overrides = ["data.heldout=40", f"recipe.stages=[{soft}]", "report.speed_samples=0"]
    real, killing = distill.student_trainer, []

    def scripted(*args, **kwargs):
        now = EpochNow()
        kwargs["heldout"] = lambda: {"heldout": scores[now.epoch - 1]}
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), now, *killing]
        return real(*args, **kwargs)

    monkeypatch.setattr(distill, "student_trainer", scripted)
    whole = pipeline.run(tiny_cfg(*overrides, output="whole"))
    (stage,) = whole["recipe"]["stages"]
    assert stage["epochs_run"] == stops_after and stage["selection"]["best_epoch"] == 1
    killing.append(kill)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(tiny_cfg(*overrides, output="killed"))
    killing.clear()
    resumed = pipeline.run(tiny_cfg(*overrides, output="resumed"))
    (again,) = resumed["recipe"]["stages"]
    assert (again["epochs_run"], again["selection"]) == (stops_after, stage["selection"])
    assert _student_hash(tmp_path / "resumed") == _student_hash(tmp_path / "whole")


def test_the_default_recipe_trains_as_the_single_pass_distillation(tiny_cfg, tmp_path):
    """recipe=single is `distill.distill` on the same rows: checkpoints at each epoch and the
    stage machinery change nothing in the weights."""
    cfg = tiny_cfg("report.speed_samples=0", output="recipe")
    results = pipeline.run(cfg)
    settings = read_settings(cfg)
    inputs = pipeline.check_inputs(settings)
    cache = pipeline.soft_label_cache(settings)
    outputs = pipeline.teacher_outputs(inputs, cache)
    ensembler, _ = pipeline._ensemble(inputs, outputs.logits)
    student_data, _ = pipeline._student_data(inputs, outputs, ensembler)
    torch.manual_seed(0)
    from transformers import set_seed

    set_seed(settings.run.seed)
    model, tokenizer = distill.load_student(settings.student, inputs.task)
    trainer = distill.distill(
        model,
        tokenizer,
        student_data.rows,
        student_data.soft_targets,
        task=inputs.task,
        settings=settings.train,
        max_length=settings.student.max_length,
        output_dir=tmp_path / "plain",
        seed=settings.run.seed,
    )
    assert _weights_hash(trainer.model) == _student_hash(tmp_path / "recipe")
    assert results["recipe"]["stages"][0]["epochs_run"] == settings.train.epochs
    assert json.loads((tmp_path / "recipe" / "results.json").read_text())["recipe"]


def test_a_cache_the_run_cannot_write_to_keeps_the_stages_in_the_run_folder(
    tiny_cfg, tmp_path, monkeypatch, caplog
):
    cfg = tiny_cfg("report.speed_samples=0", output="readonly")
    pipeline.prepare_teachers(cfg)  # every teacher entry is in the cache first
    monkeypatch.setattr(recipe.os, "access", lambda path, mode: False)  # as a read-only mount
    with caplog.at_level("WARNING"):
        results = pipeline.run(cfg)
    assert results["student"]["metrics"]
    (line,) = [r.getMessage() for r in caplog.records if "is not writable" in r.getMessage()]
    assert str(tmp_path / "readonly" / "stages") in line
    assert not (Path(cfg.paths.cache_dir) / "students").exists()


# --------------------------------------------------------------------------------------------
# min_words: a stage on the long rows only
# --------------------------------------------------------------------------------------------


def test_word_counts_add_up_every_text_field_and_parts_keep_the_long_rows():
    rows = Dataset.from_dict(
        {"sentence1": ["a b c", "a", "a b c d e"], "sentence2": ["d e", "b", ""], "label": [0] * 3}
    )
    pairs = get_task("mrpc")
    assert recipe.word_counts(rows, pairs).tolist() == [5, 2, 5]
    student_data = recipe.StudentData(rows, np.zeros((3, 2)), labeled=1, heldout=rows)
    assert student_data.part("all", 5, pairs).tolist() == [0, 2]
    assert student_data.part("transfer", 5, pairs).tolist() == [2]
    assert student_data.part("labeled", 6, pairs).tolist() == []
    assert student_data.part("all").tolist() == [0, 1, 2]  # min_words 0: every row
    assert recipe.long_enough(rows, 3, pairs).tolist() == [0, 2]
    assert recipe.long_enough(rows, 0, pairs).tolist() == [0, 1, 2]


def _long_rows_recipe(min_words: int, select: bool = True) -> recipe.RecipeSettings:
    stage = build(recipe.StageSettings, _stage(min_words=min_words, select=select), "s")
    return recipe.RecipeSettings("mine", "mse", (stage,))


def test_a_stage_with_no_rows_of_its_min_words_is_refused_with_its_name():
    rows = Dataset.from_dict({"sentence": ["one two three", "one"], "label": [0, 1]})
    short = Dataset.from_dict({"sentence": ["one two"], "label": [1]})
    recipe.check_rows(_long_rows_recipe(3), SST2, rows, None, rows)  # one row of 3 words each
    with pytest.raises(ValueError, match=r"stage 's' trains on data=all, which has no rows of "
                       r"at least 4 words here \(2 labelled, 0 transfer\)"):  # fmt: skip
        recipe.check_rows(_long_rows_recipe(4), SST2, rows, None, rows)
    none_held_out = (
        r"stage 's' selects on the held-out rows of at least min_words=3 words, and none of "
        r"the 1 held-out rows of task 'sst2'"
    )
    with pytest.raises(ValueError, match=none_held_out):
        recipe.check_rows(_long_rows_recipe(3), SST2, rows, None, short)
    recipe.check_rows(_long_rows_recipe(3, select=False), SST2, rows, None, short)  # no choice
    empty = rows.select([])  # an empty transfer set or held-out slice is counted, not a crash
    with pytest.raises(ValueError, match=r"no rows of at least 4 words here \(2 labelled, 0 tr"):
        recipe.check_rows(_long_rows_recipe(4), SST2, rows, empty, rows)
    with pytest.raises(ValueError, match=r"and none of the 0 held-out rows"):
        recipe.check_rows(_long_rows_recipe(3), SST2, rows, empty, empty)


def test_a_run_whose_stage_has_no_long_rows_stops_before_the_teachers(tiny_cfg, monkeypatch):
    monkeypatch.setattr(pipeline, "teacher_outputs", _forbidden)
    with pytest.raises(ValueError, match=r"stage 'hard' trains on data=labeled, which has no "
                       r"rows of at least 100 words"):  # fmt: skip
        pipeline.run(tiny_cfg(*STAGED, "recipe.stages.2.min_words=100"))


def _soft_stage(name: str, min_words: int) -> str:
    return (
        f"{{name: {name}, objectives: {{soft: 1.0}}, data: all, epochs: 2, lr: null, "
        f"freeze: [], select: true, patience: 1, select_by: auto, min_words: {min_words}}}"
    )


def test_a_long_rows_stage_trains_and_chooses_on_the_long_rows_only(tiny_cfg, monkeypatch):
    """A soft stage, then one on the rows of 12 words or more (a third of the toy rows): the
    second trains on those rows, scores its epochs on the held-out rows that long, and scores
    the weights it starts from on them too (the stage before chose on every held-out row)."""
    given = []
    real = distill.student_trainer

    def recording(model, tokenizer, train, *args, **kwargs):
        given.append((train, kwargs.get("heldout_rows")))
        if len(given) == 2:  # the long-rows stage: no epoch beats its entry
            kwargs["heldout"] = lambda: {"heldout": -1.0}
        return real(model, tokenizer, train, *args, **kwargs)

    monkeypatch.setattr(distill, "student_trainer", recording)
    stages = f"recipe.stages=[{_soft_stage('soft', 0)}, {_soft_stage('soft_long', 12)}]"
    cfg = tiny_cfg("data.heldout=40", "report.speed_samples=0", stages)
    results = pipeline.run(cfg)
    soft, long_rows = results["recipe"]["stages"]
    settings, inputs, scored = _saved_student_on_heldout(cfg)
    train, heldout = inputs.splits["train"], inputs.splits[data.HELDOUT]
    long_train = recipe.word_counts(train, SST2) >= 12
    long_heldout = recipe.word_counts(heldout, SST2) >= 12
    assert 0 < long_train.sum() < len(train) and 0 < long_heldout.sum() < len(heldout)
    assert "min_words" not in soft and long_rows["min_words"] == 12
    assert len(given[0][0]) == len(train) and len(given[0][1]) == len(heldout)
    assert long_rows["rows"] == len(given[1][0]) == long_train.sum()
    long_sentences = np.asarray(train["sentence"])[long_train].tolist()
    assert sorted(given[1][0]["sentence"]) == sorted(long_sentences)
    assert len(given[1][1]) == long_heldout.sum()
    # its entry (the soft stage's weights, which the student keeps) is scored on the long
    # held-out rows: not the soft stage's own score on every row
    chosen = long_rows["selection"]
    assert chosen["kept"] == "entry" and chosen["heldout"] == -1.0
    predicted = scored.logits.argmax(-1)[long_heldout]
    gold = np.asarray(heldout["label"])[long_heldout]
    assert chosen["entry_heldout"] == pytest.approx(float((predicted == gold).mean()))


def test_the_students_resume_key_follows_its_local_weights_not_only_its_path(tiny_assets, tmp_path):
    """A student folder replaced at the same path must not resume stages trained from the old
    weights: the key holds a local checkpoint's content hash (a Hub id its id and revision)."""
    import shutil

    folder = tmp_path / "student"
    shutil.copytree(tiny_assets / "models" / "student", folder)
    before = checkpoints.local_identity(str(folder))
    shutil.rmtree(folder)
    shutil.copytree(tiny_assets / "models" / "teacher_bert", folder)
    assert before is not None and checkpoints.local_identity(str(folder)) != before
    assert checkpoints.local_identity("microsoft/xtremedistil-l6-h256-uncased") is None


def test_the_heldout_slice_fits_a_fitted_ensembler_and_an_unused_one_is_warned_about(
    tiny_cfg, tiny_assets, caplog
):
    """With data.heldout, a fitted ensembler fits on the slice (validation's labels stay out of
    the student's soft labels); a slice nothing chooses on is said to cost training rows."""
    import logging

    def checked(*overrides):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            inputs = pipeline.check_inputs(read_settings(tiny_cfg(*overrides)))
        return inputs, caplog.text

    inputs, said = checked("ensemble=learned", "data.heldout=40")
    assert inputs.plan.split == data.HELDOUT and "takes rows out of train" not in said
    inputs, said = checked("ensemble=learned")
    assert inputs.plan.split == "validation" and "is fitted on validation, the split" in said
    _, said = checked("data.heldout=40")
    assert "data.heldout=40 takes rows out of train that nothing in this run chooses on" in said
    inputs, said = checked("stage=ensemble", "data.heldout=40")  # compares fitted ones too
    assert inputs.plan.split == data.HELDOUT and "takes rows out" not in said
    assert "were not fine-tuned by sead without it" not in said  # both fine-tuned here
    checkpoint = tiny_assets / "models" / "teacher_bert"  # a loaded teacher may have seen it
    loaded = [
        "teachers.toy_bert.finetune=false",
        f"+teachers.toy_bert.checkpoints.sst2={checkpoint}",
    ]
    _, said = checked("ensemble=learned", "data.heldout=40", *loaded)
    assert "teacher(s) ['toy_bert'] were not fine-tuned by sead without it" in said


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ensemble=learned", "ensemble.fold_seed=-1"], r"ensemble.fold_seed=-1 is not allowed"),
        (["ensemble=learned", "ensemble.folds=100000"], r"ensemble.folds=100000: the fit split"),
        (["teachers.toy_bert.min_metric=85"], r"teachers.toy_bert.min_metric=85.* not allowed"),
        ([*STAGED, "cache.representations.layer=-100"], r"cache.representations.layer=-100, but"),
    ],
)
def test_settings_that_only_failed_after_the_teachers_stop_the_check(tiny_cfg, overrides, message):
    """Each of these used to pass the check stage and fail once teachers were fine-tuned."""
    with pytest.raises(ValueError, match=message):
        pipeline.check_inputs(read_settings(tiny_cfg(*overrides)))
