"""The whole sead pipeline in one function: `run(cfg) -> results`.

Read it top to bottom: check the inputs, get each teacher's logits (from the
cache when they exist), combine them, distil the student, evaluate, save.
`sead.run` is only the Hydra entry point around it, so tests call `run` directly.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import DatasetDict
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from sead import data, distill, ensemble, metrics, report, teachers
from sead.cache import SoftLabelCache
from sead.inference import count_parameters, predict_logits
from sead.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """Everything checked before any expensive work starts."""

    task: TaskSpec
    specs: list[teachers.TeacherSpec]
    ensembler: ensemble.Ensembler
    splits: DatasetDict
    gold: dict[str, np.ndarray]  # labels of each eval split and of the ensemble's fit split
    plan: ensemble.FitPlan  # where fitted ensemblers learn, and how that split is scored

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]


def check_inputs(cfg: DictConfig) -> Inputs:
    """Task, teachers, ensembler and data, validated: bad input fails here, early."""
    task = get_task(cfg.task.name)
    specs = teachers.teacher_specs(cfg.teachers, task)
    ensembler = ensemble.build(cfg.ensemble, task, [spec.name for spec in specs])
    plan = ensemble.fit_plan(cfg.ensemble, task)
    if plan.split == task.train_split:
        log.warning(
            "ensemble.fit_split=%s: fitted ensemblers will learn on the teachers' own training "
            "data and favour the teachers that overfit it most.",
            plan.split,
        )
    splits = data.load_splits(task, cfg.data, [task.train_split, *task.eval_splits, plan.split])
    for spec in specs:
        teachers.check_label_count(spec, task)
    gold = {split: np.asarray(splits[split]["label"]) for split in [*task.eval_splits, plan.split]}
    return Inputs(task, specs, ensembler, splits, gold, plan)


def teacher_logits(cfg: DictConfig, inputs: Inputs, cache: SoftLabelCache, logit_splits=None):
    """Each teacher's logits for every split (fine-tuning or reading the cache as needed).

    `logit_splits` limits which splits get logits (all loaded splits by default; teachers
    are still fine-tuned on the train split). Returns `{teacher: {split: logits}}` and a
    per-teacher results record.
    """
    task, splits, gold = inputs.task, inputs.splits, inputs.gold
    wanted = DatasetDict({split: splits[split] for split in logit_splits or splits})
    logits: dict[str, dict[str, np.ndarray]] = {}
    records = {}
    for spec in inputs.specs:
        teacher = teachers.prepare(spec, task, splits, cfg.paths.teachers_dir, cache.file_hashes)
        entries = teachers.cached_logits(teacher, task, wanted, cache)
        logits[spec.name] = {split: entry.logits for split, entry in entries.items()}
        records[spec.name] = {
            "source": spec.source,
            "model_id": teacher.model_id,
            "finetuned": spec.finetune,
            "finetuned_now": teacher.finetuned_now,
            "params": teacher.params,
            "cache": {split: entry.fingerprint for split, entry in entries.items()},
            "cache_hit": {split: entry.hit for split, entry in entries.items()},
            "metrics": {
                split: _score(task, _hard(task, logits[spec.name][split]), gold[split])
                for split in task.eval_splits
            },
        }
    return logits, records


def run(cfg: DictConfig) -> dict:
    timings: dict[str, float] = {}
    stage = _stage_timer(timings)
    set_seed(int(cfg.seed))
    out_dir = Path(cfg.paths.output_dir)

    # 1. Check every input that is cheap to check, before any expensive work.
    with stage("check"):
        inputs = check_inputs(cfg)
    task, splits, gold, names = inputs.task, inputs.splits, inputs.gold, inputs.names

    # 2. Teachers: fine-tune the ones that need it, then logits for every split (cached).
    cache = SoftLabelCache(cfg.paths.logits_dir, **OmegaConf.to_container(cfg.cache))
    with stage("teachers"):
        logits, teacher_results = teacher_logits(cfg, inputs, cache)

    # 3. Ensemble: fitted on ensemble.fit_split (cross-fitted where that split is reported),
    #    then soft targets for the train split, with each teacher alone and mean_logits beside.
    with stage("ensemble"):
        ensembler, ensemble_results = _ensemble(cfg, inputs, logits)
        soft_targets = ensembler.combine(
            _stacked(logits, names, task.train_split), float(cfg.train.temperature)
        )

    # 4. Student: distil on the soft targets with its own tokenizer.
    with stage("distill"):
        model, tokenizer = distill.load_student(cfg.student, task)
        trainer = distill.distill(
            model,
            tokenizer,
            splits[task.train_split],
            soft_targets,
            task,
            cfg.train,
            int(cfg.student.max_length),
            out_dir / "trainer",
            int(cfg.seed),
        )
        trainer.save_model(str(out_dir / "student"))

    # 5. Evaluate the student on every eval split with the task's official metrics.
    student_results = {"model": cfg.student.model, "params": count_parameters(model)}
    with stage("evaluate"):
        student_results["metrics"], student_results["examples_per_second"] = {}, {}
        for split in task.eval_splits:
            encoded = data.tokenize(splits[split], tokenizer, task, int(cfg.student.max_length))
            started = time.perf_counter()
            batch_size = int(cfg.train.eval_batch_size)
            student_logits = predict_logits(
                model, tokenizer, encoded, batch_size, f"Student on {split}"
            )
            speed = len(encoded) / (time.perf_counter() - started)
            student_results["metrics"][split] = _score(
                task, _hard(task, student_logits), gold[split]
            )
            student_results["examples_per_second"][split] = round(speed, 1)

    results = {
        "task": task.name,
        "benchmark": task.benchmark,
        "main_metric": task.main_metric,
        "eval_splits": list(task.eval_splits),
        "n_examples": {split: len(ds) for split, ds in splits.items()},
        "seed": int(cfg.seed),
        "teachers": teacher_results,
        "ensemble": ensemble_results,
        "student": student_results,
        "train": OmegaConf.to_container(cfg.train, resolve=True),
        "cache": {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses},
        "timings_s": timings,
    }
    report.save_run(results, cfg, out_dir)
    log.info("\n%s", report.summary_table(results))
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


def _stacked(logits: dict, names: list[str], split: str) -> np.ndarray:
    return np.stack([logits[name][split] for name in names])


def _hard(task, logits: np.ndarray) -> np.ndarray:
    """Label ids (classification) or scores (regression) from a model's logits."""
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def _score(task, predictions, references) -> dict[str, float]:
    return metrics.compute(task.name, predictions, references)


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
