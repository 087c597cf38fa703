"""The whole sead pipeline in one function: `run(cfg) -> results`.

Read it top to bottom: read every setting once (`sead.settings`: one typed object per config
group, checked), check the inputs, get each teacher's logits (from the cache when they exist),
combine them, distil the student, evaluate, save.
Two jobs stop part-way with the same checks and the same cache: `prepare_teachers`
(`stage=teachers`) and `compare_ensembles` (`stage=ensemble`).
`sead.run` is only the Hydra entry point around them, so tests call them directly.

The only module that knows every stage; it imports stages and kernel, never a command.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from sead import (
    card,
    checkpoints,
    choices,
    chunks,
    data,
    distill,
    distributed,
    ensemble,
    export,
    metrics,
    models,
    recipe,
    report,
    speed,
    teachers,
    timing,
    transfer,
)
from sead.cache import SoftLabelCache
from sead.chunks import Shard
from sead.config import CONF_DIR
from sead.files import warn_if_shared
from sead.inference import count_parameters
from sead.settings import Settings, read_settings
from sead.tasks import TaskSpec, get_task
from sead.tracking import MetricsLog, evaluate

log = logging.getLogger(__name__)

TEACHERS_FILE = "teachers.json"  # what `stage=teachers` saves, beside a full run's results.json


@dataclass
class Inputs:
    """Everything checked before any expensive work starts."""

    settings: Settings
    task: TaskSpec
    specs: list[teachers.TeacherSpec]
    ensembler: ensemble.Ensembler
    splits: DatasetDict
    gold: dict[str, np.ndarray]  # labels of each eval split and of the ensemble's fit split
    plan: ensemble.FitPlan  # where fitted ensemblers learn, and how that split is scored
    transfer: transfer.TransferSet | None = None  # extra text for the student (cfg.transfer)
    # data.diagnostics: evaluation-only sets (SuperGLUE axb/axg for RTE), by name
    diagnostics: DatasetDict = field(default_factory=DatasetDict)

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]


def check_inputs(settings: Settings) -> Inputs:
    """Teachers, ensembler and data, validated against the task: bad input fails here, early."""
    task, specs = settings.task, list(settings.teachers)
    ensembler = ensemble.build(settings.ensemble, task, [spec.name for spec in specs])
    # fitted ensemblers fit on the held-out slice when there is one (null ensemble.fit_split):
    # the run's, or every one that stage=ensemble compares
    fitting = ensembler.needs_fit or settings.run.stage == "ensemble"
    heldout_slice = data.HELDOUT if settings.data.has_heldout and fitting else None
    plan = ensemble.fit_plan(settings.ensemble, task, heldout_slice)
    for folder in ("cache_dir", "logits_dir", "teachers_dir"):  # stored work sead will trust
        warn_if_shared(getattr(settings.paths, folder), f"paths.{folder}")
    if plan.split == data.HELDOUT and not settings.data.has_heldout:
        raise ValueError(
            f"ensemble.fit_split={data.HELDOUT}, but the run has no held-out slice: set "
            "data.heldout (a count or fraction of train, e.g. data.heldout=0.1), or give "
            f"data.dir a {data.HELDOUT}.jsonl."
        )
    if plan.split == task.train_split:
        log.warning(
            "ensemble.fit_split=%s: fitted ensemblers will learn on the teachers' own training "
            "data and favour the teachers that overfit it most.",
            plan.split,
        )
    if ensembler.needs_fit and plan.split in task.eval_splits and settings.run.stage == "all":
        log.warning(
            "ensemble=%s is fitted on %s, the split the student is reported on: its soft labels "
            "carry that split's labels. Set data.heldout (a slice of train) to fit on instead.",
            ensembler.name,
            plan.split,
        )
    carved = settings.data.heldout is not None  # rows taken out of train
    if carved and not (settings.recipe.needs_heldout or fitting and plan.split == data.HELDOUT):
        log.warning(
            "data.heldout=%g takes rows out of train that nothing in this run chooses on "
            "(recipe %s selects no epoch, ensemble=%s is not fitted): the student and the "
            "teachers sead fine-tunes train without them.",
            settings.data.heldout,
            settings.recipe.name,
            ensembler.name,
        )
    heldout = [data.HELDOUT] if settings.recipe.needs_heldout else []  # stages choose on it
    recipe.check(settings.recipe, task, settings.data.has_heldout, settings.train.max_steps)
    wanted = settings.cache.representations if settings.recipe.needs_representations else None
    for spec in (s for s in specs if not isinstance(s, teachers.PredictionsSpec)):
        models.require_installed(spec.source, f"teachers.{spec.name}.model")  # make models
        teachers.check_files(spec, task)  # a local folder holds config, weights, tokenizer
        teachers.check_labels(spec, task, representations=wanted)  # from its config alone
    splits = data.load_splits(
        task, settings.data, [task.train_split, *task.eval_splits, plan.split, *heldout]
    )
    n_fit = len(splits[plan.split])  # cross-fitting needs a row per fold at least
    if fitting and plan.split in task.eval_splits and n_fit < plan.folds:
        raise ValueError(
            f"ensemble.folds={plan.folds}: the fit split {plan.split} has {n_fit} rows."
        )
    # The transfer set; with transfer.labeled, the train split becomes the labelled slice.
    transfer_set = transfer.build(settings.transfer, task, splits)
    splits = transfer.apply(transfer_set, task, splits)
    recipe.check_rows(
        settings.recipe, task, splits[task.train_split], transfer_set.dataset,
        splits.get(data.HELDOUT),
    )  # fmt: skip
    predicted = _predicted_splits(settings.run.stage, task, splits, plan)
    for spec in specs:
        if isinstance(spec, teachers.PredictionsSpec):  # its files, read and checked now
            teachers.check_predictions(spec, task, predicted)
        if transfer_set.held_out and not spec.finetune:
            log.warning(
                "Teacher %s is a loaded checkpoint: sead cannot tell whether it was trained on "
                "the %d train labels that transfer.labeled hides; if it was, they are not hidden.",
                spec.name,
                transfer_set.held_out,
            )
    loaded = [spec.name for spec in specs if not spec.finetune]
    if loaded and fitting and plan.split == data.HELDOUT and settings.data.heldout is not None:
        log.warning(
            "Fitted ensemblers learn on the held-out slice carved from train, but teacher(s) %s "
            "were not fine-tuned by sead without it: if they were trained on train, they have "
            "seen those rows, and the fit favours whichever memorised them most.",
            loaded,
        )
    gold = {
        split: metrics.references(task, splits[split]) for split in [*task.eval_splits, plan.split]
    }
    diagnostics = data.load_diagnostics(task, settings.data)
    return Inputs(settings, task, specs, ensembler, splits, gold, plan, transfer_set, diagnostics)


def _predicted_splits(stage: str, task: TaskSpec, splits: DatasetDict, plan) -> DatasetDict:
    """The splits a predictions teacher needs files for: the eval and fit splits for
    `stage=ensemble`, every loaded split (train, transfer parts) otherwise."""
    if stage == "ensemble":
        return DatasetDict({s: splits[s] for s in dict.fromkeys([*task.eval_splits, plan.split])})
    return splits


@dataclass
class TeacherOutputs:
    """What the teacher stage gives the rest: per teacher and split, logits (and sentence
    vectors, when a recipe stage learns them); per teacher, its results record and the prepared
    teacher (ready to load again: the speed stage times them)."""

    logits: dict[str, dict[str, np.ndarray]]
    vectors: dict[str, dict[str, np.ndarray]]
    records: dict[str, dict]
    prepared: dict[str, teachers.Teacher]


def teacher_logits(inputs: Inputs, cache: SoftLabelCache, logit_splits=None):
    """`teacher_outputs` without vectors: (logits, records, prepared)."""
    outputs = teacher_outputs(inputs, cache, logit_splits)
    return outputs.logits, outputs.records, outputs.prepared


def teacher_outputs(
    inputs: Inputs, cache: SoftLabelCache, logit_splits=None, representations=None
) -> TeacherOutputs:
    """Each teacher's logits for every split (fine-tuning or reading the cache as needed).

    Eval splits come first: a teacher must pass the sanity gate on them (`teachers.gate`)
    before its other splits are labelled, so a wrong checkpoint, file or label order stops the
    run before more time goes into it, into another teacher or into a student: file teachers
    go first. `logit_splits` limits which other splits get logits (all loaded splits by
    default; teachers are still fine-tuned on the train split). With `representations` (a
    `cache.RepresentationSpec`), each teacher's sentence vectors too, from the same pass."""
    task, splits, settings = inputs.task, inputs.splits, inputs.settings
    eval_splits = DatasetDict({split: splits[split] for split in task.eval_splits})
    others = [split for split in logit_splits or splits if split not in eval_splits]
    other_splits = DatasetDict({split: splits[split] for split in others})
    gate_every_teacher = settings.run.teacher_gate
    logits: dict[str, dict[str, np.ndarray]] = {}
    vectors: dict[str, dict[str, np.ndarray]] = {}
    records, prepared = {}, {}
    asked = {"representations": representations} if representations is not None else {}
    seen: dict[tuple, str] = {}
    # file teachers first (their gate needs no model); results go back in the teachers' order
    files_first = sorted(inputs.specs, key=lambda s: not isinstance(s, teachers.PredictionsSpec))
    for spec in files_first:
        gated = gate_every_teacher and spec.gate
        teacher = teachers.prepare(
            spec, task, splits, settings.paths.teachers_dir, cache.file_hashes, cache, gate=gated
        )
        prepared[spec.name] = teacher
        entries = teachers.cached_logits(teacher, task, eval_splits, cache, **asked)
        scores = teachers.evaluate(task, {s: e.logits for s, e in entries.items()}, splits)
        gate = teachers.gate(spec, task, scores, splits, gated)
        # The rest (train, transfer set: the bulk) is sharded over ranks or jobs (cache.shard).
        entries |= teachers.cached_logits(teacher, task, other_splits, cache, sharded=True, **asked)
        logits[spec.name] = {s: e.logits for s, e in entries.items() if e.logits is not None}
        vectors[spec.name] = {
            s: e.representations
            for s, e in entries.items()
            if getattr(e, "representations", None) is not None
        }
        records[spec.name] = _teacher_record(teacher, entries, scores, gate)
        if spec.finetune:  # what it was trained with, in effect, and on how much data
            records[spec.name]["finetune_settings"] = teachers.finetune_settings(spec, task, splits)
        same = (teacher.model_id, tuple(teacher.label_alignment or ()), spec.max_length)
        if same in seen:
            log.warning(
                "Teachers %s and %s are the same model: the ensemble counts it twice.",
                seen[same],
                spec.name,
            )
        seen.setdefault(same, spec.name)
    ordered = [{name: found[name] for name in inputs.names} for found in (logits, vectors, records)]
    return TeacherOutputs(*ordered, prepared)


def _teacher_record(teacher: teachers.Teacher, entries, scores, gate) -> dict:
    speed = teacher.examples_per_second
    store = teacher.store_record
    predictions = isinstance(teacher, teachers.PredictionsTeacher)
    return {
        "source": teacher.spec.source,
        "model_id": teacher.model_id,
        "origin": teacher.origin,  # checkpoint | finetuned (in this run) | store (reused)
        "finetuned": teacher.spec.finetune,
        "finetuned_now": teacher.finetuned_now,
        "finetune": {"store_dir": str(teacher.model_dir), **store} if store else None,
        "params": teacher.params,
        "label_alignment": teacher.label_alignment,
        # forward passes in this run; None when every logit came from the cache
        "examples_per_second": None if speed is None else round(speed, 1),
        "cache": {split: entry.fingerprint for split, entry in entries.items()},
        "cache_hit": {split: entry.hit for split, entry in entries.items()},
        # cache.shard: entries other jobs are still filling, as [chunks saved, chunks in all]
        **({"cache_pending": pending} if (pending := _pending(entries)) else {}),
        "metrics": scores,
        "gate": gate,
        # a teacher read from files: its format, and each split's file and content hash
        **({"predictions": teacher.record()} if predictions else {}),
    }


def _pending(entries) -> dict[str, list[int]]:
    return {split: list(e.pending) for split, e in entries.items() if e.pending is not None}


def teacher_results(inputs: Inputs, teacher_records: dict, cache: SoftLabelCache) -> dict:
    """What the teacher stage reports (the start of a full run's `results.json`)."""
    task = inputs.task
    return {
        "task": task.name,
        "benchmark": task.benchmark,
        "main_metric": task.main_metric,
        "eval_splits": list(task.eval_splits),
        "n_examples": {split: len(ds) for split, ds in inputs.splits.items()},
        "teachers": teacher_records,
        "cache": {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses},
    }


def soft_label_cache(settings: Settings) -> SoftLabelCache:
    """The teacher-logit cache with the run's `cache.*` settings.

    Storage dtype and compute precision are part of every cache key, so every stage builds
    its cache here: logits prepared by `stage=teachers` are the ones the full run reads. A stage
    that learns from representations asks for `settings.cache.representations` itself, and
    an entry stored with them serves a run that asks for logits only (one labelling for both).
    Under a multi-process launcher each rank fills its share of every missing entry (of
    this job's `cache.shard`, if any); a barrier ends each entry's fill.
    """
    cache = SoftLabelCache.from_settings(settings.paths.logits_dir, settings.cache)
    cache.serving = settings.cache.representations  # their entries serve logits-only runs too
    if distributed.is_distributed():
        job = cache.shard or Shard(0, 1)
        rank, world_size = distributed.rank(), distributed.world_size()
        cache.shard = job.among_ranks(rank, world_size, distributed.barrier)
    return cache


def prepare_teachers(cfg: DictConfig) -> dict:
    """`stage=teachers`: fine-tune the teachers that need it and cache their logits for
    every split, without distilling; saves `teachers.json` in the run folder.

    With `cache.shard=i/n`, only chunk set i of each missing entry (see `sead.chunks`); the job
    that finds every chunk saved assembles the entry.
    """
    settings = read_settings(cfg)
    distributed.init(settings.train.ddp_timeout)
    inputs = check_inputs(settings)
    _check_distributed(inputs)
    cache = soft_label_cache(settings)
    _, records, _ = teacher_logits(inputs, cache)
    results = teacher_results(inputs, records, cache)
    results["warnings"] = report.warnings(results)
    if distributed.is_main_process():
        out_dir = Path(settings.paths.output_dir)
        report.save_run(results, cfg, out_dir, name=TEACHERS_FILE)
    return results


def compare_ensembles(cfg: DictConfig) -> tuple[str, dict]:
    """`stage=ensemble`: every strategy against each teacher alone, from the teachers' logits.

    Only the eval splits and the fit split get logits (no student, so no train-split
    pass). Returns the printed table and its data.
    """
    settings = read_settings(cfg)
    inputs = check_inputs(settings)
    task, names, plan = inputs.task, inputs.names, inputs.plan
    needed = list(dict.fromkeys([*task.eval_splits, plan.split]))
    cache = soft_label_cache(settings)
    per_teacher, records, _ = teacher_logits(inputs, cache, logit_splits=needed)
    logits = {split: _stacked(per_teacher, names, split) for split in needed}
    labels = {split: inputs.gold[split] for split in needed}
    rows, notes = compare_strategies(inputs, logits, labels)
    table = report.comparison_table(task, rows, plan, notes)
    data = {"task": task.name, "fit_split": plan.split, "folds": plan.folds, "fold_seed": plan.seed}
    cached = {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses}
    return table, {**data, "rows": rows, "teachers": records, "cache": cached}


def run(cfg: DictConfig) -> dict | None:
    """Run the pipeline; returns the results (None on the ranks > 0 of a multi-process run)."""
    timings: dict[str, float] = {}
    stage = timing.stage_timer(timings)
    # 1. Check: every setting, read once into its stage's typed object (nothing else reads
    #    `cfg`), then every input that is cheap to check, before any expensive work.
    settings = read_settings(cfg)
    set_seed(settings.run.seed)
    out_dir = Path(settings.paths.output_dir)
    distributed.init(settings.train.ddp_timeout)
    main_process = distributed.is_main_process()  # the only one that writes
    metrics_log = MetricsLog(out_dir, enabled=main_process)
    metrics_log.config(cfg)
    student, train = settings.student, settings.train
    with stage("check"):  # the cheap checks first: before the data and its transfer set
        if settings.export.enabled:
            export.check(settings.export, settings.task)  # packages, split (before any work)
        distill.report_to(train)  # the trackers asked for are installed
        distill.check_precision(train)
        parameters = distill.check_student(student)  # student.keep_layers fits the checkpoint
        recipe.check_freeze(settings.recipe, parameters)  # its stages freeze some of them
        inputs = check_inputs(settings)
        _check_distributed(inputs)
    task, splits = inputs.task, inputs.splits

    # 2. Teachers: fine-tune the ones that need it, then logits for every split (cached).
    # Multi-process: every rank computes its share of the chunks of each missing entry.
    cache = soft_label_cache(settings)
    with stage("teachers"):
        wanted = settings.cache.representations if settings.recipe.needs_representations else None
        outputs = teacher_outputs(inputs, cache, representations=wanted)
        logits, teacher_records, prepared = outputs.logits, outputs.records, outputs.prepared

    # 3. Ensemble: fitted on ensemble.fit_split (cross-fitted where that split is reported),
    #    then soft targets for the train split, with each teacher alone and mean_logits beside.
    with stage("ensemble"):
        ensembler, ensemble_results = _ensemble(inputs, logits)
        student_data, transfer_predictions = _student_data(inputs, outputs, ensembler)

    # 4. Student: the recipe's stages on the soft targets (and the teachers' vectors), with
    #    its own tokenizer; each stage checkpoints in a work folder a rerun resumes from.
    with stage("distill"):
        # Re-seeded here: the student's fresh head is drawn from the global RNG, which teacher
        # fine-tuning earlier in this process (or not, on a rerun) has advanced.
        set_seed(settings.run.seed)
        model, tokenizer = distill.load_student(student, task)
        key = _student_key(settings, student_data)
        work = recipe.work_dir(settings.paths.cache_dir, key, out_dir)
        trained = recipe.train(
            model,
            tokenizer,
            student_data,
            recipe=settings.recipe,
            settings=train,
            task=task,
            max_length=student.max_length,
            seed=settings.run.seed,
            folder=work,
            callbacks=[metrics_log.callback()],
            eval_splits=DatasetDict({split: splits[split] for split in task.eval_splits}),
        )
        if main_process:  # whole, with its manifest, or absent; DDP ranks hold equal weights
            distill.save_student(model, tokenizer, out_dir / "student")
    if not main_process:
        return None

    # 5. Evaluate the student on every eval split with the task's official metrics.
    student_results = {"model": student.model, "params": count_parameters(model)}
    # training steps only, every stage's epochs in order (each stage's own: results["recipe"])
    student_results["epoch_seconds"] = [t for done in trained.stages for t in done["epoch_seconds"]]
    with stage("evaluate"):
        student_results["metrics"], student_results["examples_per_second"] = {}, {}
        student_results["eval_runtime_s"] = {}
        final = trained.final_evaluations  # the last epoch's pass ran these very weights
        for split in task.eval_splits:
            scored = final.get(split) or evaluate(
                model,
                tokenizer,
                task,
                splits[split],
                student.max_length,
                train.eval_batch_size,
                f"Student on {split}",
            )
            student_results["metrics"][split] = scored.metrics
            student_results["examples_per_second"][split] = round(scored.examples_per_second, 1)
            student_results["eval_runtime_s"][split] = round(scored.seconds, 3)
        if inputs.diagnostics:
            student_results["diagnostics"] = _diagnostics(inputs, model, tokenizer)
        student_results["floor"] = _student_floor(inputs, student_results["metrics"])

    # 6. Inference speedup: student and teachers timed on the same examples.
    speed_results = None
    if settings.report.speed_samples > 0:
        with stage("speed"):
            speed_results = speed.compare(
                model,
                tokenizer,
                max_length=student.max_length,
                task=task,
                teachers=prepared,
                splits=splits,
                n=settings.report.speed_samples,
                batch_size=train.eval_batch_size,
                measured={n: r["examples_per_second"] for n, r in teacher_records.items()},
            )

    results = {
        **teacher_results(inputs, teacher_records, cache),
        "seed": settings.run.seed,
        "ensemble": ensemble_results,
        "transfer": transfer.record(inputs.transfer, task, transfer_predictions, teacher_records),
        "student": student_results,
        "recipe": {"name": settings.recipe.name, "stages": trained.stages},
        "heldout": data.heldout_record(splits.get(data.HELDOUT), task, settings.data),
        "train": OmegaConf.to_container(cfg.train, resolve=True),  # as configured
        "timings_s": timings,
        "speed": speed_results,
        "distributed": distributed.describe(),
    }
    if settings.export.enabled:  # 7. ONNX fp32 + int8 beside student/, checked and timed
        with stage("export"):
            recorded = student_results["metrics"]  # the saved student must score them
            results["export"] = export.export_after_run(
                settings.export, task, settings.data, student.max_length, out_dir, splits, recorded
            )
    results["warnings"] = report.warnings(results)  # models that may have learned nothing
    report.save_run(results, cfg, out_dir)
    card.write_model_card(results, settings.report, out_dir / "student", student.max_length)
    metrics_log.write("results", results=results)
    log.info("\n%s\n\n%s", report.teacher_table(results), report.summary_table(results))
    if report.transfer_summary(results):
        log.info(report.transfer_summary(results))
    if settings.report.push_to_hub:
        results["hub_model_id"] = card.push_to_hub(out_dir / "student", settings.report)
    shutil.rmtree(work, ignore_errors=True)  # the student is saved: no stage to resume
    return results


def _ensemble(inputs: Inputs, logits: dict) -> tuple[ensemble.Ensembler, dict]:
    """The ensembler fitted on the fit split, and its results.json record."""
    task, names, plan = inputs.task, inputs.names, inputs.plan
    chosen = inputs.settings.ensemble
    splits = list(dict.fromkeys([*task.eval_splits, plan.split]))
    stacked = {split: _stacked(logits, names, split) for split in splits}
    eval_splits = list(task.eval_splits)

    def make():
        return ensemble.build(chosen, task, names)

    fitted, scores = ensemble.assess(make, stacked, inputs.gold, eval_splits, inputs.plan)
    comparison = ensemble.baselines(task, names, stacked, inputs.gold, eval_splits)
    return fitted, ensemble.stage_record(chosen, fitted, plan, scores, comparison)


def _student_data(inputs: Inputs, outputs: TeacherOutputs, ensembler):
    """What the student learns from (`recipe.StudentData`: the train split's rows, then any
    transfer set's, with the ensemble's soft targets and the teachers' vectors of each, and
    the held-out slice), and the ensemble's hard predictions on the transfer set (None
    without one)."""
    task, names, settings = inputs.task, inputs.names, inputs.settings
    temperature = settings.train.temperature
    train = inputs.splits[task.train_split]
    labeled = len(train)
    soft_targets = ensembler.combine(_stacked(outputs.logits, names, task.train_split), temperature)
    if task.is_multiple_choice:  # no mass on padding choices, whatever the strategy did
        soft_targets = choices.mask_targets(soft_targets, choices.n_choices(task, train))
    parts = [_stacked(outputs.logits, names, split) for split in inputs.transfer.splits()]
    predictions = None
    if parts:
        train = transfer.with_transfer(train, inputs.transfer.dataset, task)  # parts, in order
        combined = [ensembler.combine(part, temperature) for part in parts]
        soft_targets = np.concatenate([soft_targets, *combined])
        predictions = np.concatenate([ensembler.predict(part) for part in parts])
    rows_splits = [task.train_split, *inputs.transfer.splits()]
    heldout = inputs.splits.get(data.HELDOUT)
    student_data = recipe.StudentData(train, soft_targets, labeled, heldout=heldout)
    if heldout is not None and settings.recipe.needs_heldout_soft_targets:
        held = _stacked(outputs.logits, names, data.HELDOUT)
        student_data.heldout_soft_targets = ensembler.combine(held, temperature)
    if settings.recipe.needs_representations:
        student_data.representations = _vectors(inputs, outputs, ensembler, rows_splits)
        if heldout is not None:
            student_data.heldout_representations = _vectors(
                inputs, outputs, ensembler, [data.HELDOUT]
            )
    return student_data, predictions


def _vectors(inputs: Inputs, outputs: TeacherOutputs, ensembler, splits: list[str]):
    """The teachers' vectors of `splits`' rows, in order, for the representation objective;
    teachers without any (a predictions teacher) take part through their soft labels only."""
    spec = inputs.settings.cache.representations
    having = [n for n in inputs.names if all(s in outputs.vectors.get(n, {}) for s in splits)]
    if not having:
        raise ValueError(
            f"recipe {inputs.settings.recipe.name!r} learns the teachers' representations, but "
            f"none of the teachers {inputs.names} has any (prediction-file teachers have none)."
        )
    missing = [n for n in inputs.names if n not in having]
    if missing:
        log.info("Teachers %s have no representations: they teach through soft labels.", missing)
    columns = [np.concatenate([outputs.vectors[n][s] for s in splits]) for n in having]
    weights = dict(zip(inputs.names, map(float, ensembler.weights()), strict=True))
    weights = {n: weights[n] for n in having}
    if not sum(weights.values()) > 0:  # the soft labels come from teachers without vectors
        log.warning(
            "ensemble=%s gives the teachers with representations %s no weight %s: their "
            "representations count equally instead.", ensembler.name, having, weights,
        )  # fmt: skip
        weights = dict.fromkeys(having, 1.0)
    return distill.Representations(
        vectors=torch.from_numpy(np.concatenate(columns, axis=1).astype(np.float32)),
        widths={n: c.shape[1] for n, c in zip(having, columns, strict=True)},
        weights=weights,
        kind=inputs.settings.recipe.representation_loss,
        pooling=spec.pooling,
    )


def _student_key(settings: Settings, student_data: recipe.StudentData) -> dict:
    """Everything that shapes the student's training, and nothing else (not the run folder,
    nor logging): equal keys resume each other's stages."""
    train = asdict(settings.train)
    for option in ("logging_steps", "report_to", "dataloader_num_workers", "ddp_timeout"):
        train.pop(option)
    reps = student_data.representations
    return {
        "version": 1,
        "student": asdict(settings.student),
        # a folder replaced at the same path does not resume stages trained from the old one
        "student_weights": checkpoints.local_identity(settings.student.model),
        "task": settings.task.name,
        "rows": data.input_fingerprint(student_data.rows, settings.task, ["label"]),
        "labeled": student_data.labeled,
        "soft_targets": chunks.sha256(np.ascontiguousarray(student_data.soft_targets).tobytes()),
        "vectors": None if reps is None else chunks.sha256(reps.vectors.numpy().tobytes()),
        "heldout": None
        if student_data.heldout is None
        else data.input_fingerprint(student_data.heldout, settings.task, ["label"]),
        "heldout_soft_targets": None
        if student_data.heldout_soft_targets is None
        else chunks.sha256(np.ascontiguousarray(student_data.heldout_soft_targets).tobytes()),
        "recipe": asdict(settings.recipe),
        "train": train,
        "seed": settings.run.seed,
    }


def _stacked(logits: dict, names: list[str], split: str) -> np.ndarray:
    return np.stack([logits[name][split] for name in names])


def _check_distributed(inputs: Inputs) -> None:
    """Teachers are fine-tuned by one process; under a multi-process launcher, do it first.

    Every rank fills its share of the teachers' logits, but a Trainer started on one rank to
    fine-tune a teacher would wait for the others (DDP), and never start.
    """
    to_finetune = [spec.name for spec in inputs.specs if spec.finetune]
    if distributed.is_distributed() and to_finetune:
        raise ValueError(
            f"Teacher(s) {to_finetune} have finetune: true, which a multi-process run "
            f"(world size {distributed.world_size()}) cannot do. Fine-tune them first with a "
            "single-process run of the same task and data (sead ...), then point "
            "++teachers.<name>.checkpoints.<task>=<the fine-tuned checkpoint it stored under "
            "paths.teachers_dir> and set teachers.<name>.finetune=false."
        )


def _student_floor(inputs: Inputs, scores: dict[str, dict]) -> dict[str, dict]:
    """Per eval split, the student against the constant baseline (the teachers' floor):
    below it, or within noise of it, the student may have learned nothing."""
    task, metric = inputs.task, inputs.task.main_metric
    floor = {}
    for split in task.eval_splits:
        baseline = teachers.constant_baseline(task, inputs.gold[split])
        score = float(scores[split][metric])
        noise = metrics.noise_check(metric, score, baseline, len(inputs.splits[split]))
        floor[split] = {"score": score, "baseline": baseline, "below": score <= baseline}
        floor[split]["noise"] = noise
        if floor[split]["below"] or (noise and noise["within_noise"]):
            log.warning(report.student_warning(split, metric, floor[split]))
    return floor


def _diagnostics(inputs: Inputs, model, tokenizer) -> dict[str, dict]:
    """The student's metrics on each diagnostic set (axb, axg: read as RTE, label for label)."""
    scores = {}
    settings = inputs.settings
    for name, ds in inputs.diagnostics.items():
        max_length, batch_size = settings.student.max_length, settings.train.eval_batch_size
        scored = evaluate(
            model, tokenizer, get_task(name), ds, max_length, batch_size, f"Student on {name}"
        )
        scores[name] = scored.metrics
        log.info("Student on diagnostic %s: %s", name, scores[name])
    return scores


# --------------------------------------------------------------------------------------------
# `stage=ensemble`: every strategy against each teacher alone, from the teachers' logits.


def strategy_configs(chosen: ensemble.EnsembleSettings, task: TaskSpec) -> dict:
    """Every registered strategy that applies to the task, with its options: the chosen
    `ensemble=<name>` its command line's, the others their `conf/ensemble/<name>.yaml`."""
    configs = {}
    for name, cls in ensemble.ENSEMBLERS.items():
        if task.is_regression and not cls.supports_regression:
            continue
        path = CONF_DIR / "ensemble" / f"{name}.yaml"
        if name == chosen.name:
            configs[name] = chosen.strategy
        else:
            configs[name] = OmegaConf.load(path) if path.is_file() else {"name": name}
    return configs


def compare_strategies(inputs: Inputs, logits: dict, labels: dict) -> tuple[dict, list[str]]:
    """Each teacher alone, `mean_logits`, and every strategy that applies, scored alike.

    `logits[split]` is stacked `[n_teachers, n_examples, n_labels]` for the eval splits and
    the fit split. Returns a row per model and a note per strategy that could not run.
    """
    task, names, eval_splits = inputs.task, inputs.names, list(inputs.task.eval_splits)
    rows = ensemble.baselines(task, names, logits, labels, eval_splits)
    notes = []
    for name, strategy in strategy_configs(inputs.settings.ensemble, task).items():
        try:
            make = partial(ensemble.build, strategy, task, names)
            fitted, scores = ensemble.assess(make, logits, labels, eval_splits, inputs.plan)
        except ValueError as err:
            notes.append(f"{name}: skipped ({err})")
            continue
        rows[name] = {**fitted.describe(), **scores}
    return rows, notes
