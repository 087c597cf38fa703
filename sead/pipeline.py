"""The whole sead pipeline in one function: `run(cfg) -> results`.

Read it top to bottom: check the inputs, get each teacher's logits (from the
cache when they exist), combine them, distil the student, evaluate, save.
Two jobs stop part-way with the same checks and the same cache: `prepare_teachers`
(`stage=teachers`) and `compare_ensembles` (`stage=ensemble`).
`sead.run` is only the Hydra entry point around them, so tests call them directly.

The only module that knows every stage; it imports stages and kernel, never a command.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import DatasetDict
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from sead import (
    card,
    choices,
    data,
    distill,
    distributed,
    ensemble,
    export,
    metrics,
    models,
    report,
    speed,
    teachers,
    transfer,
)
from sead.cache import SoftLabelCache, check_settings
from sead.chunks import Shard
from sead.config import number
from sead.inference import count_parameters
from sead.tasks import TaskSpec, check_trainable, get_task
from sead.tracking import MetricsLog, epoch_report, evaluate, final_evaluations

log = logging.getLogger(__name__)

TEACHERS_FILE = "teachers.json"  # what `stage=teachers` saves, beside a full run's results.json


@dataclass
class Inputs:
    """Everything checked before any expensive work starts."""

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


def check_inputs(cfg: DictConfig) -> Inputs:
    """Task, teachers, ensembler and data, validated: bad input fails here, early."""
    task = get_task(cfg.task.name)
    check_trainable(task)
    check_settings(**OmegaConf.to_container(cfg.cache, resolve=True))
    stage = str(cfg.get("stage", "all"))
    if cfg.cache.get("shard") is not None and stage != "teachers":
        raise ValueError(
            f"cache.shard={cfg.cache.shard} fills one chunk set of each teacher-logit entry, for "
            f"stage=teachers jobs that share a cache; stage={stage} needs every entry whole. "
            "Run the shards with stage=teachers, then this job without cache.shard."
        )
    number(cfg.seed, "seed", int, 0, 2**32 - 1)
    specs = teachers.teacher_specs(cfg.get("teachers"), task)
    ensembler = ensemble.build(cfg.ensemble, task, [spec.name for spec in specs])
    plan = ensemble.fit_plan(cfg.ensemble, task)
    if plan.split == task.train_split:
        log.warning(
            "ensemble.fit_split=%s: fitted ensemblers will learn on the teachers' own training "
            "data and favour the teachers that overfit it most.",
            plan.split,
        )
    splits = data.load_splits(task, cfg.data, [task.train_split, *task.eval_splits, plan.split])
    # The transfer set; with transfer.labeled, the train split becomes the labelled slice.
    transfer_set = transfer.build(cfg.get("transfer"), task, splits)
    splits = transfer.apply(transfer_set, task, splits)
    for spec in specs:
        if isinstance(spec, teachers.PredictionsSpec):  # its files, read and checked now
            teachers.check_predictions(spec, task, _predicted_splits(cfg, task, splits, plan))
        else:
            models.require_installed(spec.source, f"teachers.{spec.name}.model")  # make models
            teachers.check_files(spec, task)  # a local folder holds config, weights, tokenizer
            teachers.check_labels(spec, task)  # label count and order, from the config alone
        if transfer_set.held_out and not spec.finetune:
            log.warning(
                "Teacher %s is a loaded checkpoint: sead cannot tell whether it was trained on "
                "the %d train labels that transfer.labeled hides; if it was, they are not hidden.",
                spec.name,
                transfer_set.held_out,
            )
    gold = {
        split: metrics.references(task, splits[split]) for split in [*task.eval_splits, plan.split]
    }
    diagnostics = data.load_diagnostics(task, cfg.data)
    return Inputs(task, specs, ensembler, splits, gold, plan, transfer_set, diagnostics)


def _predicted_splits(cfg: DictConfig, task: TaskSpec, splits: DatasetDict, plan) -> DatasetDict:
    """The splits a predictions teacher needs files for: the eval and fit splits for
    `stage=ensemble`, every loaded split (train, transfer parts) otherwise."""
    if str(cfg.get("stage", "all")) == "ensemble":
        return DatasetDict({s: splits[s] for s in dict.fromkeys([*task.eval_splits, plan.split])})
    return splits


def teacher_logits(cfg: DictConfig, inputs: Inputs, cache: SoftLabelCache, logit_splits=None):
    """Each teacher's logits for every split (fine-tuning or reading the cache as needed).

    Eval splits come first: a teacher must pass the sanity gate on them
    (`teachers.gate`) before its other splits are labelled, so a wrong checkpoint
    or label order stops the run before more time goes into it or into a student.
    `logit_splits` limits which other splits get logits (all loaded splits by
    default; teachers are still fine-tuned on the train split). Returns
    `{teacher: {split: logits}}` and a per-teacher results record.
    """
    task, splits = inputs.task, inputs.splits
    eval_splits = DatasetDict({split: splits[split] for split in task.eval_splits})
    others = [split for split in logit_splits or splits if split not in eval_splits]
    other_splits = DatasetDict({split: splits[split] for split in others})
    gate_every_teacher = bool(cfg.get("teacher_gate", True))
    logits: dict[str, dict[str, np.ndarray]] = {}
    records = {}
    seen: dict[tuple, str] = {}
    for spec in inputs.specs:
        gated = gate_every_teacher and spec.gate
        teacher = teachers.prepare(
            spec, task, splits, cfg.paths.teachers_dir, cache.file_hashes, cache, gate=gated
        )
        entries = teachers.cached_logits(teacher, task, eval_splits, cache)
        scores = teachers.evaluate(task, {s: e.logits for s, e in entries.items()}, splits)
        gate = teachers.gate(spec, task, scores, splits, gated)
        # The rest (train, transfer set: the bulk) is sharded over ranks or jobs (cache.shard).
        entries |= teachers.cached_logits(teacher, task, other_splits, cache, sharded=True)
        logits[spec.name] = {s: e.logits for s, e in entries.items() if e.logits is not None}
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
    return logits, records


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


def soft_label_cache(cfg: DictConfig) -> SoftLabelCache:
    """The teacher-logit cache with the run's `cfg.cache` settings.

    Storage dtype and compute precision are part of every cache key, so every stage builds
    its cache here: logits prepared by `stage=teachers` are the ones the full run reads.
    Under a multi-process launcher each rank fills its share of every missing entry (of
    this job's `cache.shard`, if any); a barrier ends each entry's fill.
    """
    cache = SoftLabelCache(cfg.paths.logits_dir, **OmegaConf.to_container(cfg.cache, resolve=True))
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
    distributed.init(cfg.train.get("ddp_timeout"))
    inputs = check_inputs(cfg)
    _check_distributed(inputs)
    cache = soft_label_cache(cfg)
    _, records = teacher_logits(cfg, inputs, cache)
    results = teacher_results(inputs, records, cache)
    results["warnings"] = report.warnings(results)
    if distributed.is_main_process():
        report.save_run(results, cfg, Path(cfg.paths.output_dir), name=TEACHERS_FILE)
    return results


def compare_ensembles(cfg: DictConfig) -> tuple[str, dict]:
    """`stage=ensemble`: every strategy against each teacher alone, from the teachers' logits.

    Only the eval splits and the fit split get logits (no student, so no train-split
    pass). Returns the printed table and its data.
    """
    inputs = check_inputs(cfg)
    task, names, plan = inputs.task, inputs.names, inputs.plan
    needed = list(dict.fromkeys([*task.eval_splits, plan.split]))
    cache = soft_label_cache(cfg)
    per_teacher, records = teacher_logits(cfg, inputs, cache, logit_splits=needed)
    logits = {split: _stacked(per_teacher, names, split) for split in needed}
    labels = {split: inputs.gold[split] for split in needed}
    rows, notes = ensemble.compare_strategies(cfg.ensemble, task, names, logits, labels, plan)
    table = report.comparison_table(task, rows, plan, notes)
    data = {"task": task.name, "fit_split": plan.split, "folds": plan.folds, "fold_seed": plan.seed}
    cached = {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses}
    return table, {**data, "rows": rows, "teachers": records, "cache": cached}


def run(cfg: DictConfig) -> dict | None:
    """Run the pipeline; returns the results (None on the ranks > 0 of a multi-process run)."""
    timings: dict[str, float] = {}
    stage = _stage_timer(timings)
    set_seed(int(cfg.seed))
    out_dir = Path(cfg.paths.output_dir)
    distributed.init(cfg.train.get("ddp_timeout"))
    main_process = distributed.is_main_process()  # the only one that writes
    metrics_log = MetricsLog(out_dir, enabled=main_process)
    metrics_log.config(cfg)

    # 1. Check every input that is cheap to check, before any expensive work.
    with stage("check"):
        inputs = check_inputs(cfg)
        card.check_settings(cfg.get("report"))
        distill.check_train(cfg.train)  # every train.* setting in range
        number(cfg.student.max_length, "student.max_length", int, 1)
        number(cfg.get("report", {}).get("speed_samples", 0), "report.speed_samples", int, 0)
        if export.enabled(cfg):
            export.backend(cfg.export)  # its packages are installed (or the fallback is allowed)
        distill.report_to(cfg.train)  # the trackers asked for are installed
        distill.check_student(cfg.student)  # student.keep_layers fits the checkpoint
        _check_distributed(inputs)
    task, splits = inputs.task, inputs.splits

    # 2. Teachers: fine-tune the ones that need it, then logits for every split (cached).
    # Multi-process: every rank computes its share of the chunks of each missing entry.
    cache = soft_label_cache(cfg)
    with stage("teachers"):
        logits, teacher_records = teacher_logits(cfg, inputs, cache)

    # 3. Ensemble: fitted on ensemble.fit_split (cross-fitted where that split is reported),
    #    then soft targets for the train split, with each teacher alone and mean_logits beside.
    with stage("ensemble"):
        ensembler, ensemble_results = _ensemble(cfg, inputs, logits)
        student_train, soft_targets, transfer_predictions = _student_data(
            inputs, logits, ensembler, float(cfg.train.temperature)
        )

    # 4. Student: distil on the soft targets with its own tokenizer.
    with stage("distill"):
        # Re-seeded here: the student's fresh head is drawn from the global RNG, which teacher
        # fine-tuning earlier in this process (or not, on a rerun) has advanced.
        set_seed(int(cfg.seed))
        model, tokenizer = distill.load_student(cfg.student, task)
        trainer = distill.distill(
            model,
            tokenizer,
            student_train,
            soft_targets,
            task=task,
            train_cfg=cfg.train,
            max_length=int(cfg.student.max_length),
            output_dir=out_dir / "trainer",
            seed=int(cfg.seed),
            callbacks=[metrics_log.callback()],
            eval_splits=DatasetDict({split: splits[split] for split in task.eval_splits}),
        )
        trainer.save_model(str(out_dir / "student"))  # the Trainer saves on rank 0 only
    if not main_process:
        return None

    # 5. Evaluate the student on every eval split with the task's official metrics.
    student_results = {"model": cfg.student.model, "params": count_parameters(model)}
    student_results["epoch_seconds"] = epoch_report(trainer).epoch_seconds  # steps only
    with stage("evaluate"):
        student_results["metrics"], student_results["examples_per_second"] = {}, {}
        student_results["eval_runtime_s"] = {}
        final = final_evaluations(trainer)  # the last epoch's pass ran these very weights
        for split in task.eval_splits:
            scored = final.get(split) or evaluate(
                model,
                tokenizer,
                task,
                splits[split],
                int(cfg.student.max_length),
                int(cfg.train.eval_batch_size),
                f"Student on {split}",
            )
            student_results["metrics"][split] = scored.metrics
            student_results["examples_per_second"][split] = round(scored.examples_per_second, 1)
            student_results["eval_runtime_s"][split] = round(scored.seconds, 3)
        if inputs.diagnostics:
            student_results["diagnostics"] = _diagnostics(cfg, inputs, model, tokenizer)
        student_results["floor"] = _student_floor(inputs, student_results["metrics"])

    # 6. Inference speedup: student and teachers timed on the same examples.
    speed_results = None
    if int(cfg.get("report", {}).get("speed_samples", 0)) > 0:
        with stage("speed"):
            speed_results = speed.compare(
                model,
                tokenizer,
                max_length=int(cfg.student.max_length),
                task=task,
                specs=inputs.specs,
                splits=splits,
                store_dir=cfg.paths.teachers_dir,
                n=int(cfg.report.speed_samples),
                batch_size=int(cfg.train.eval_batch_size),
                measured={n: r["examples_per_second"] for n, r in teacher_records.items()},
            )

    results = {
        **teacher_results(inputs, teacher_records, cache),
        "seed": int(cfg.seed),
        "ensemble": ensemble_results,
        "transfer": transfer.record(inputs.transfer, task, transfer_predictions, teacher_records),
        "student": student_results,
        "train": OmegaConf.to_container(cfg.train, resolve=True),
        "timings_s": timings,
        "speed": speed_results,
        "distributed": distributed.describe(),
    }
    if export.enabled(cfg):  # 7. ONNX fp32 + int8 beside student/, checked and timed
        with stage("export"):
            results["export"] = export.export_run(cfg, out_dir, splits)
    results["warnings"] = report.warnings(results)  # models that may have learned nothing
    report.save_run(results, cfg, out_dir)
    metrics_log.write("results", results=results)
    log.info("\n%s\n\n%s", report.teacher_table(results), report.summary_table(results))
    if report.transfer_summary(results):
        log.info(report.transfer_summary(results))
    if cfg.get("report", {}).get("push_to_hub"):
        results["hub_model_id"] = card.push_to_hub(out_dir / "student", cfg.report)
    return results


def _ensemble(cfg: DictConfig, inputs: Inputs, logits: dict) -> tuple[ensemble.Ensembler, dict]:
    """The ensembler fitted on the fit split, and its results.json record."""
    task, names, plan = inputs.task, inputs.names, inputs.plan
    splits = list(dict.fromkeys([*task.eval_splits, plan.split]))
    stacked = {split: _stacked(logits, names, split) for split in splits}
    eval_splits = list(task.eval_splits)

    def make():
        return ensemble.build(cfg.ensemble, task, names)

    fitted, scores = ensemble.assess(make, stacked, inputs.gold, eval_splits, inputs.plan)
    comparison = ensemble.baselines(task, names, stacked, inputs.gold, eval_splits)
    return fitted, ensemble.stage_record(cfg.ensemble, fitted, plan, scores, comparison)


def _student_data(inputs: Inputs, logits: dict, ensembler, temperature: float):
    """The student's training set (the train split, then any transfer set), its soft targets,
    and the ensemble's hard predictions on the transfer set (None without one)."""
    task, names = inputs.task, inputs.names
    train = inputs.splits[task.train_split]
    soft_targets = ensembler.combine(_stacked(logits, names, task.train_split), temperature)
    if task.is_multiple_choice:  # no mass on padding choices, whatever the strategy did
        soft_targets = choices.mask_targets(soft_targets, choices.n_choices(task, train))
    parts = [_stacked(logits, names, split) for split in inputs.transfer.splits()]
    if not parts:
        return train, soft_targets, None
    train = transfer.with_transfer(train, inputs.transfer.dataset, task)  # the parts, in order
    soft_targets = np.concatenate(
        [soft_targets, *(ensembler.combine(p, temperature) for p in parts)]
    )
    return train, soft_targets, np.concatenate([ensembler.predict(p) for p in parts])


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
            "teachers.<name>.checkpoints.<task> at the fine-tuned checkpoint it stored under "
            "paths.teachers_dir and set teachers.<name>.finetune=false."
        )


def _student_floor(inputs: Inputs, scores: dict[str, dict]) -> dict[str, dict]:
    """Per eval split, the student against the majority baseline (the teachers' floor):
    below it, or within noise of it, the student may have learned nothing."""
    task, metric = inputs.task, inputs.task.main_metric
    floor = {}
    for split in task.eval_splits:
        baseline = teachers.majority_baseline(task, inputs.gold[split])
        score = float(scores[split][metric])
        noise = metrics.noise_check(metric, score, baseline, len(inputs.splits[split]))
        floor[split] = {"score": score, "baseline": baseline, "below": score <= baseline}
        floor[split]["noise"] = noise
        if floor[split]["below"] or (noise and noise["within_noise"]):
            log.warning(report.student_warning(split, metric, floor[split]))
    return floor


def _diagnostics(cfg: DictConfig, inputs: Inputs, model, tokenizer) -> dict[str, dict]:
    """The student's metrics on each diagnostic set (axb, axg: read as RTE, label for label)."""
    scores = {}
    for name, ds in inputs.diagnostics.items():
        max_length, batch_size = int(cfg.student.max_length), int(cfg.train.eval_batch_size)
        scored = evaluate(
            model, tokenizer, get_task(name), ds, max_length, batch_size, f"Student on {name}"
        )
        scores[name] = scored.metrics
        log.info("Student on diagnostic %s: %s", name, scores[name])
    return scores


def _stage_timer(timings: dict):
    @contextmanager
    def stage(name: str):
        log.info("== %s ==", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            timings[name] = round(time.perf_counter() - start, 3)
            timings["total"] = round(sum(v for k, v in timings.items() if k != "total"), 3)

    return stage
