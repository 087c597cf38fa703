"""How the student learns: a recipe of stages (`conf/recipe/<name>.yaml`), each with its own
objectives, data, epochs and learning rate, each able to stop early on the held-out slice.

* `single` (the default): one stage with the loss sead has always used (`train.alpha` mixes
  the ensemble's soft labels with the gold ones; transfer rows get the soft term alone), for
  `train.epochs` at `train.lr`, keeping the last epoch: the results of sead before recipes.
* `xtremedistil`: XtremeDistil's stages (Mukherjee & Hassan Awadallah, 2020) with several
  teachers: the teachers' sentence representations through a learned projection per teacher,
  then the ensemble's soft labels, then the gold labels; each stage keeps its best epoch on
  the held-out slice.
* `staged`: `xtremedistil` with the epoch caps sead's GLUE study ran (2, 2, 3), its best with a
  transfer set so far (experiments/sead_glue_cpu).

A stage's objectives are weights of `representations` (the teachers' cached sentence
vectors, `cache.representations`), `soft` (the ensemble's soft labels) and `hard` (the gold
labels), each the mean over the rows that have it (`sead.distill.objective_loss`). Its data
is the train split's rows (`labeled`), the transfer set's (`transfer`) or both (`all`); with
`min_words`, only those whose text (every text field, split on whitespace) has at least that
many words, on the held-out slice as in training: e.g. a last stage on the long rows, where a
student trained mostly on short phrases (SST-2's train split) falls behind its teachers.

With `select: true` a stage is scored on the held-out slice (`data.heldout`, or the data
folder's heldout split) after each epoch, as its `select_by` says: `auto`, by the task's main
metric, or by the held-out representation loss when representations are its only objective;
`soft_loss`, by the held-out loss against the ensemble's soft labels (the soft objective on
the held-out rows: smoother than a metric on a few hundred rows, which moves in steps of one
row and has a sampling noise of about a point on 1,000). It stops after `patience`
epochs without a better score and restores its best epoch; `results.json` records, per stage,
the epoch chosen and its held-out score. When the previous stage selected too (on anything but
the representation loss, after which the task head has never trained), the weights the stage
starts from count as its epoch 0, scored on the stage's own measure: a stage none of whose
epochs beats them gives them back (`kept: entry` in its record), so a stage that only hurts
on held-out changes nothing. The reported splits choose nothing.

Every stage checkpoints at each epoch's end in a work folder keyed by everything that shapes
the student (`work_dir`), and records its outcome there once done: a run killed in a stage
resumes from that stage's last epoch and ends where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file, save_file

from sead import distill, distributed, manifest, resume
from sead.cache import fingerprint
from sead.config import setting
from sead.data import tokenize
from sead.files import write_atomic
from sead.tasks import TaskSpec
from sead.tracking import epoch_report, evaluate, final_evaluations

log = logging.getLogger(__name__)

OBJECTIVES = ("representations", "soft", "hard")
DONE_FILE = "stage.json"  # a finished stage's record, written last
PROJECTIONS_FILE = "projections.safetensors"


@dataclass(frozen=True)
class StageSettings:
    """One stage of `cfg.recipe.stages`."""

    name: str
    objectives: dict[str, float] | None  # null: train.alpha's mix of soft and hard labels
    data: Literal["labeled", "transfer", "all"]
    epochs: float | None = setting(low=0, low_open=True)  # null: train.epochs
    lr: float | None = setting(low=0, low_open=True)  # null: train.lr
    freeze: tuple[str, ...]  # parameter-name prefixes kept frozen in this stage
    select: bool  # keep the best epoch on the held-out slice
    patience: int = setting(low=1)  # with select: epochs without a better score before stopping
    select_by: Literal["auto", "soft_loss"]  # with select: what scores an epoch (module doc)
    min_words: int = setting(low=0)  # only rows of at least this many words, held-out ones too

    def __post_init__(self):
        where = f"recipe stage {self.name!r}: objectives"
        if self.objectives is None:
            return
        unknown = sorted(set(self.objectives) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"{where} {unknown} unknown: expected some of {list(OBJECTIVES)}.")
        weights = list(self.objectives.values())
        if any(not np.isfinite(w) or w < 0 for w in weights) or not sum(weights) > 0:
            raise ValueError(
                f"{where}={self.objectives}: expected weights >= 0, at least one above 0."
            )
        if self.select_by == "soft_loss" and not self.trains_task_head:
            raise ValueError(
                f"recipe stage {self.name!r} has select_by: soft_loss, but learns only "
                f"{sorted(o for o, w in self.objectives.items() if w)}: its task head does not "
                "train, so its soft-label loss cannot choose an epoch. Use select_by: auto "
                "(the held-out representation loss)."
            )

    @property
    def learns_representations(self) -> bool:
        return bool(self.objectives and self.objectives.get("representations"))

    @property
    def trains_task_head(self) -> bool:
        """It learns labels (soft or hard), not only the teachers' representations."""
        return self.objectives is None or any(self.objectives.get(o) for o in ("soft", "hard"))

    @property
    def selects_on_representations(self) -> bool:
        """Scored by its held-out representation loss: representations are all it learns."""
        return (
            self.select_by == "auto" and self.learns_representations and not self.trains_task_head
        )

    @property
    def selected_on(self) -> str:
        """What scores its epochs on the held-out slice, as its record names it."""
        if self.select_by == "soft_loss":
            return "soft_loss"
        return "representation_loss" if self.selects_on_representations else "main_metric"


@dataclass(frozen=True)
class RecipeSettings:
    """`cfg.recipe` (conf/recipe/<name>.yaml): the student's stages, in order."""

    name: str
    representation_loss: Literal["mse", "cosine"]
    stages: tuple[StageSettings, ...]

    def __post_init__(self):
        if not self.stages:
            raise ValueError(f"recipe {self.name!r} has no stages: expected at least one.")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"recipe {self.name!r}: stage names {names} repeat one.")

    @property
    def needs_representations(self) -> bool:
        return any(stage.learns_representations for stage in self.stages)

    @property
    def needs_heldout(self) -> bool:
        return any(stage.select for stage in self.stages)

    @property
    def needs_heldout_soft_targets(self) -> bool:
        return any(stage.select and stage.select_by == "soft_loss" for stage in self.stages)


@dataclass
class StudentData:
    """What the stages learn from: the train split's rows then the transfer set's (`rows`),
    the ensemble's soft targets of each, and the teachers' vectors of each (when a stage
    learns representations); the held-out slice, with its vectors and soft targets when a
    stage selects on them."""

    rows: Dataset
    soft_targets: np.ndarray
    labeled: int  # the first `labeled` rows are the train split's
    representations: distill.Representations | None = None
    heldout: Dataset | None = None
    heldout_representations: distill.Representations | None = None
    heldout_soft_targets: np.ndarray | None = None

    def part(self, which: str, min_words: int = 0, task: TaskSpec | None = None) -> np.ndarray:
        """Row numbers of `which` rows (labeled, transfer or all), those of at least
        `min_words` words of `task`'s text only."""
        everything = np.arange(len(self.rows))
        rows = {
            "labeled": everything[: self.labeled],
            "transfer": everything[self.labeled :],
            "all": everything,
        }[which]
        return np.intersect1d(rows, long_enough(self.rows, min_words, task))


def long_enough(rows: Dataset, min_words: int, task: TaskSpec) -> np.ndarray:
    """Row numbers of `rows` whose text has at least `min_words` words (all of them for 0)."""
    everything = np.arange(len(rows))
    return everything if not min_words else everything[word_counts(rows, task) >= min_words]


def word_counts(rows: Dataset, task: TaskSpec) -> np.ndarray:
    """Per row, the words (whitespace-separated) of all the task's text fields together."""
    counts = np.zeros(len(rows), dtype=np.int64)
    for name in task.text_fields:
        values = rows[name][:]
        counts += np.array([len(v.split()) if isinstance(v, str) else 0 for v in values], int)
    return counts


@dataclass
class Trained:
    """The student after every stage, what each stage did, and the eval splits as the last
    epoch scored them when they are the final weights' (else {}: the caller scores them)."""

    model: torch.nn.Module
    stages: list[dict]
    final_evaluations: dict


def check(recipe: RecipeSettings, task: TaskSpec, heldout_given: bool, max_steps: int = -1) -> None:
    """What a recipe needs of the run, before any data loads: a held-out slice to choose on
    (`heldout_given`), a task whose examples have one vector each, and stage lengths that
    `train.max_steps` does not silently replace."""
    capped = [stage.name for stage in recipe.stages if stage.epochs is not None]
    if max_steps > 0 and capped:
        raise ValueError(
            f"recipe {recipe.name!r}: stage(s) {capped} set their own epochs, and "
            f"train.max_steps={max_steps} would replace them (it overrides epochs): set "
            "train.max_steps=-1, or those stages' epochs to null (each then runs max_steps)."
        )
    choosing = [stage.name for stage in recipe.stages if stage.select]
    if choosing and not heldout_given:
        raise ValueError(
            f"recipe {recipe.name!r}: stage(s) {choosing} have select: true, which chooses "
            "each stage's best epoch on a held-out slice of train, but the run has none: set "
            "data.heldout (a count or fraction of train, e.g. data.heldout=0.1), or give "
            "data.dir a heldout.jsonl."
        )
    for stage in recipe.stages:
        learns = {o for o, weight in (stage.objectives or {}).items() if weight}
        if learns == {"hard"} and stage.data == "transfer":
            raise ValueError(
                f"recipe stage {stage.name!r} learns gold labels only, on data=transfer, "
                "whose rows have none (the teachers label them): it would train on nothing. "
                "Use data: labeled or all, or give it a soft objective."
            )
        if stage.select and stage.select_by == "soft_loss" and task.is_multiple_choice:
            raise ValueError(
                f"recipe stage {stage.name!r} has select_by: soft_loss, which sead does not "
                f"take for multiple-choice tasks ({task.name}): use select_by: auto."
            )
        if stage.learns_representations and task.is_multiple_choice:
            raise ValueError(
                f"recipe stage {stage.name!r} learns the teachers' representations, which "
                f"sead does not take for multiple-choice tasks ({task.name}): use soft and "
                "hard objectives."
            )


def check_freeze(recipe: RecipeSettings, parameters: list[str]) -> None:
    """Each stage's `freeze` prefixes match some of the student's `parameters` (names), before
    the teachers run."""
    for stage in recipe.stages:
        _check_freeze(stage, parameters)


def _check_freeze(stage: StageSettings, parameters: list[str]) -> None:
    if stage.freeze and not any(name.startswith(stage.freeze) for name in parameters):
        raise ValueError(
            f"recipe stage {stage.name!r}: freeze={list(stage.freeze)} matches no parameter "
            f"of the student (they start with e.g. {parameters[0]})."
        )


def check_rows(
    recipe: RecipeSettings,
    task: TaskSpec,
    train: Dataset,
    transfer: Dataset | None,
    heldout: Dataset | None = None,
) -> None:
    """Each stage has rows to train on, and a selecting stage held-out rows to choose on, of
    at least its `min_words` words (before the teachers run): `train`'s rows, then the
    transfer set's (`transfer`, or None), and the held-out slice (`heldout`)."""
    labeled, size = len(train), 0 if transfer is None else len(transfer)
    for stage in recipe.stages:
        parts = {"labeled": [train], "transfer": [transfer], "all": [train, transfer]}
        having = sum(_at_least(part, stage.min_words, task) for part in parts[stage.data])
        if not having:
            longest = f" of at least {stage.min_words} words" if stage.min_words else ""
            raise ValueError(
                f"recipe stage {stage.name!r} trains on data={stage.data}, which has no rows"
                f"{longest} here ({labeled} labelled, {size} transfer): set a transfer set "
                "(transfer=...), another data for the stage, or a lower min_words."
            )
        choosing = stage.select and stage.min_words and heldout is not None
        if choosing and not _at_least(heldout, stage.min_words, task):
            raise ValueError(
                f"recipe stage {stage.name!r} selects on the held-out rows of at least "
                f"min_words={stage.min_words} words, and none of the {len(heldout)} held-out "
                f"rows of task {task.name!r} has that many: lower min_words, or give the "
                "held-out slice more rows (data.heldout)."
            )


def _at_least(rows: Dataset | None, min_words: int, task: TaskSpec) -> int:
    """How many of `rows` have at least `min_words` words (0 for no rows)."""
    return 0 if rows is None else len(long_enough(rows, min_words, task))


def work_dir(cache_dir, key: dict, run_dir) -> Path:
    """Where a student's stages checkpoint: one folder per everything that shapes it, in the
    cache, so that a rerun of the same student resumes there. A cache this process cannot
    write to (one shared read-only, with every teacher entry in it) still serves the run:
    the stages then checkpoint in the run folder, which a rerun cannot resume from."""
    students = Path(cache_dir) / "students"
    writable = students if students.is_dir() else Path(cache_dir)
    if writable.is_dir() and not os.access(writable, os.W_OK | os.X_OK):
        log.warning(
            "paths.cache_dir=%s is not writable: the student's stages checkpoint in %s "
            "instead, which a rerun cannot resume from.",
            cache_dir,
            Path(run_dir) / "stages",
        )
        return Path(run_dir) / "stages"
    return students / fingerprint(key)


def train(
    model,
    tokenizer,
    data: StudentData,
    *,
    recipe: RecipeSettings,
    settings: distill.TrainSettings,
    task: TaskSpec,
    max_length: int,
    seed: int,
    folder: Path,
    callbacks: list | None = None,
    eval_splits: DatasetDict | None = None,
) -> Trained:
    """Run the recipe's stages on `model` in order, each resuming from `folder` when an
    earlier run got there; returns the student and each stage's record."""
    records, projections, trainer = [], None, None
    # how every stage scores the student on the held-out slice
    scoring = {"task": task, "max_length": max_length, "temperature": settings.temperature,
               "batch_size": settings.eval_batch_size}  # fmt: skip
    for index, stage in enumerate(recipe.stages, 1):
        measure = partial(_score_now, model, tokenizer, data, stage, recipe, scoring)
        entry = _entry_point(records, stage, model, measure)
        stage_dir = folder / f"{index}-{stage.name}"
        done = stage_dir / DONE_FILE
        if done.is_file() and _intact(stage_dir / "final"):  # finished by an earlier run
            record = json.loads(done.read_text())
            model.load_state_dict(load_file(str(stage_dir / "final" / "model.safetensors")))
            projections = _load_projections(stage_dir / "final", projections)
            log.info("Stage %d (%s): done earlier, %s", index, stage.name, _summary(record))
            trainer = None
        else:
            trainer, projections = _stage_trainer(
                model, tokenizer, data, stage, recipe, projections, scoring,
                settings=settings, task=task, max_length=max_length, seed=seed,
                output_dir=stage_dir, callbacks=callbacks, eval_splits=eval_splits,
            )  # fmt: skip
            point = resume.latest(stage_dir, f"Student stage {stage.name}")  # verified, or None
            stopped = _stopped_at(point, stage)
            if stopped is not None:  # killed once it had stopped early: no epoch left to train
                trainer.args.num_train_epochs = stopped
            log.info(
                "Stage %d of %d (%s): %s on %s rows%s%s",
                index,
                len(recipe.stages),
                stage.name,
                stage.objectives or f"soft and hard labels (train.alpha={settings.alpha:g})",
                stage.data,
                f" of at least {stage.min_words} words" if stage.min_words else "",
                f", resuming from {point}" if point else "",
            )
            resume.train(trainer, point, f"the student's stage {stage.name}", setting="SEAD_CACHE")
            for parameter in model.parameters():  # what this stage froze, the next one trains
                parameter.requires_grad_(True)
            distill.check_finite(model, "The student")
            record = _record(index, stage, trainer, len(trainer.train_dataset))
            if distributed.is_main_process():  # one writer; every rank holds the same weights
                _finish(stage_dir, model, projections, record)
            distributed.barrier()  # the stage is recorded before any rank goes on
            log.info("Stage %d (%s): %s", index, stage.name, _summary(record))
        records.append(_keep_entry_unless_beaten(record, entry, model))
    last, kept_entry = recipe.stages[-1], records[-1].get("selection", {}).get("kept") == "entry"
    final = {}  # the last epoch's scores are the final weights' only if it kept them
    if trainer is not None and not last.select and not kept_entry:
        final = final_evaluations(trainer)
    return Trained(model, records, final)


def _stage_trainer(model, tokenizer, data, stage, recipe, projections, scoring, **common):
    """The stage's Trainer (the student, wrapped with projections when it learns
    representations, choosing its epoch by `scoring` when it selects), and the projections it
    trains."""
    rows = data.part(stage.data, stage.min_words, common["task"])
    settings = common.pop("settings")
    settings = replace(
        settings,
        lr=stage.lr if stage.lr is not None else settings.lr,
        epochs=stage.epochs if stage.epochs is not None else settings.epochs,
    )
    _check_freeze(stage, [name for name, _ in model.named_parameters()])  # after keep_layers
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(stage.freeze))
    trained = model
    reps = None
    if stage.learns_representations:
        reps = replace(data.representations, kind=recipe.representation_loss)
        trained = distill.WithProjections(model, reps.widths, reps.pooling)
        if projections is not None:  # carried over from the previous stage
            trained.projections.load_state_dict(projections.state_dict())
        projections = trained.projections
    heldout, heldout_rows = None, None
    if stage.select:
        heldout, heldout_rows = _heldout_scorer(trained, tokenizer, data, stage, recipe, scoring)
    trainer = distill.student_trainer(
        trained,
        tokenizer,
        data.rows.select(rows.tolist()),
        data.soft_targets[rows],
        settings=settings,
        objectives=None if stage.objectives is None else dict(stage.objectives),
        representations=reps,
        row_numbers=rows if reps is not None else None,
        heldout=heldout,
        heldout_rows=heldout_rows,
        patience=stage.patience if stage.select else None,
        **common,
    )
    return trainer, projections


def _heldout_scorer(trained, tokenizer, data: StudentData, stage, recipe, common):
    """A function scoring `trained` on the held-out slice, {"heldout": score}, higher better
    (the held-out losses are given negated); and the slice, tokenized."""
    task, max_length, batch_size = common["task"], common["max_length"], common["batch_size"]
    if data.heldout is None:
        raise ValueError(
            f"recipe stage {stage.name!r} has select: true, but the run has no held-out slice: "
            "set data.heldout (a count or fraction of train), or give data.dir a heldout.jsonl."
        )
    kept = long_enough(data.heldout, stage.min_words, task)  # all, or the long rows
    heldout = data.heldout if len(kept) == len(data.heldout) else data.heldout.select(kept)
    encoded = tokenize(heldout, tokenizer, task, max_length)
    if stage.selects_on_representations:
        reps = data.heldout_representations
        vectors = reps.vectors[torch.from_numpy(kept)]
        reps = replace(reps, vectors=vectors, kind=recipe.representation_loss)

        def representation_score() -> dict:
            loss = distill.heldout_representation_loss(
                trained, tokenizer, encoded, reps, batch_size
            )
            return {"heldout": -loss}

        return representation_score, encoded
    student = trained.student if isinstance(trained, distill.WithProjections) else trained

    def metric_score() -> dict:
        scored = evaluate(
            student, tokenizer, task, heldout, max_length, batch_size, "Held-out", encoded=encoded
        )
        if stage.select_by == "soft_loss":
            targets, temperature = data.heldout_soft_targets[kept], common["temperature"]
            loss = distill.soft_loss(scored.logits, targets, temperature, task)
            return {"heldout": -loss}
        return {"heldout": scored.metrics[task.main_metric]}

    return metric_score, encoded


def _score_now(model, tokenizer, data: StudentData, stage, recipe, scoring) -> float:
    """`model`'s held-out score as `stage` selects on it, higher better."""
    score, _ = _heldout_scorer(model, tokenizer, data, stage, recipe, scoring)
    return score()["heldout"]


def _stopped_at(point: Path | None, stage: StageSettings) -> int | None:
    """The epochs a selecting stage had run when its resume point was saved, if it had already
    stopped early then (`patience` held-out scores since its best): killed after its last
    checkpoint, before it was recorded. Resumed, it trains no further epoch, as it would not
    have."""
    if point is None or not stage.select:
        return None
    state = json.loads((point / "trainer_state.json").read_text())
    scores = [entry["eval_heldout"] for entry in state["log_history"] if "eval_heldout" in entry]
    since_best = len(scores) - 1 - scores.index(max(scores)) if scores else 0
    return round(state["epoch"]) if since_best >= stage.patience else None


def _record(index: int, stage: StageSettings, trainer, rows: int) -> dict:
    scores = [
        (round(entry["epoch"]), entry["eval_heldout"])
        for entry in trainer.state.log_history
        if "eval_heldout" in entry
    ]
    record = {
        "stage": index,
        "name": stage.name,
        "objectives": stage.objectives,
        "data": stage.data,
        "rows": rows,
        **({"min_words": stage.min_words} if stage.min_words else {}),
        "epochs_run": round(trainer.state.epoch or 0),
        "epoch_seconds": epoch_report(trainer).epoch_seconds,
    }
    if stage.select and scores:
        best_epoch, best = max(scores, key=lambda pair: pair[1])
        record["selection"] = {
            "on": stage.selected_on,
            "best_epoch": best_epoch,
            "heldout": _as_recorded(stage, best),
            "curve": [_as_recorded(stage, score) for _, score in scores],
        }
    return record


def _as_recorded(stage: StageSettings, score: float) -> float:
    """A held-out score as the selection compares it (higher better: losses negated), as the
    stage's record holds it (a loss as itself)."""
    return score if stage.selected_on == "main_metric" else -score


def _entry_point(records: list[dict], stage: StageSettings, model, score) -> tuple | None:
    """The held-out score a stage starts from, and the weights that have it: those the previous
    stage kept, when it selected too (on anything but the representation loss, after which the
    task head has never trained). They count as the stage's epoch 0: a stage that never beats
    them gives them back. The score is the previous stage's record when both stages measure
    alike (the same measure on the same rows of the slice); else `score()` measures the weights
    now."""
    previous = records[-1].get("selection") if records else None
    if not stage.select or stage.selects_on_representations or not previous:
        return None
    if previous["on"] == "representation_loss":
        return None
    same_slice = records[-1].get("min_words", 0) == stage.min_words
    if previous["on"] == stage.selected_on and same_slice:
        kept = previous.get("entry_heldout") if previous.get("kept") == "entry" else None
        recorded = previous["heldout"] if kept is None else kept
    else:
        recorded = _as_recorded(stage, score())
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return recorded, state


def _beats(on: str, score: float, other: float) -> bool:
    """Whether held-out `score` is better than `other`, both as records hold them: a metric
    is better higher, a loss lower."""
    return score > other if on == "main_metric" else score < other


def _keep_entry_unless_beaten(record: dict, entry: tuple | None, model) -> dict:
    """The stage's record; where none of its epochs beat the held-out score it started from,
    the model goes back to its entry weights, and the record says so (`kept: entry`)."""
    chosen = record.get("selection")
    if entry is None or not chosen or _beats(chosen["on"], chosen["heldout"], entry[0]):
        return record
    score, state = entry
    model.load_state_dict(state)
    log.info(
        "Stage %d (%s): no epoch beat the held-out %s it started from (%.4f against its best "
        "%.4f): the weights it started from are kept.",
        record["stage"], record["name"], chosen["on"], score, chosen["heldout"],
    )  # fmt: skip
    return record | {"selection": chosen | {"kept": "entry", "entry_heldout": score}}


def _summary(record: dict) -> str:
    chosen = record.get("selection")
    if not chosen:
        return f"{record['epochs_run']} epoch(s), the last kept"
    return (
        f"{record['epochs_run']} epoch(s), epoch {chosen['best_epoch']} kept (held-out "
        f"{chosen['on']} {chosen['heldout']:.4f})"
    )


def _finish(stage_dir: Path, model, projections, record: dict) -> None:
    """The stage's weights, then its record (last: a stage without one is not done); its
    checkpoints go."""
    saved = {"model.safetensors": model, PROJECTIONS_FILE: projections}

    def fill(folder: Path) -> None:
        for name, module in saved.items():
            if module is not None:
                state = {k: v.contiguous() for k, v in module.state_dict().items()}
                save_file(state, str(folder / name))

    # whole or absent, with the manifest `_intact` verifies before a later run takes it
    manifest.publish(stage_dir / "final", fill)
    write_atomic(stage_dir / DONE_FILE, json.dumps(record, indent=2) + "\n")
    for checkpoint in stage_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def _intact(final: Path) -> bool:
    """A finished stage's weights still match their manifest; if not, say so: the stage is
    trained again (its record is kept only with the weights it describes)."""
    try:
        manifest.verify(final)
    except manifest.DamagedFolder as err:
        log.warning("%s is damaged (%s): training that stage again.", final, err)
        return False
    return True


def _load_projections(final: Path, projections):
    path = final / PROJECTIONS_FILE
    if not path.is_file():
        return projections
    state = load_file(str(path))
    widths = {key.split(".")[0]: value.shape[0] for key, value in state.items()}
    hidden = next(v.shape[1] for k, v in state.items() if k.endswith("weight"))
    restored = torch.nn.ModuleDict({n: torch.nn.Linear(hidden, w) for n, w in widths.items()})
    restored.load_state_dict(state)
    return restored


def record_settings(recipe: RecipeSettings) -> dict:
    return asdict(recipe)
