"""The teacher store: fine-tune once, evaluate, keep; every later run and sweep job reuses it.

An entry `<teachers_dir>/<task>-<fingerprint>/` is keyed by everything that shapes the
fine-tuned model (`store_key`); its `sead_teacher.json`, written last, records the key,
settings, train time and eval metrics. Parallel jobs wait on a lock, and an interrupted
fine-tuning resumes from its last complete, verified Trainer checkpoint (`sead.resume`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from filelock import FileLock, Timeout
from transformers import AutoTokenizer, Trainer, TrainingArguments, set_seed

import sead.teachers.sanity as sanity
from sead import choices, data, manifest, resume
from sead.cache import FileHashes, SoftLabelCache, fingerprint
from sead.checkpoints import from_pretrained_with_new_head, identity
from sead.files import disk_space, open_to_team, write_atomic
from sead.manifest import STORE_MARKER
from sead.representations import RepresentationSpec
from sead.tasks import TaskSpec, head_config
from sead.teachers.logits import cached_logits
from sead.teachers.sanity import evaluate
from sead.teachers.spec import TeacherSpec
from sead.teachers.teacher import FINETUNED, STORE, Teacher
from sead.tracking import (
    EpochReport,
    epoch_report,
    eval_scorer,
    final_evaluations,
    optimiser_args,
)

log = logging.getLogger(__name__)

# STORE_MARKER (sead_teacher.json): an entry's record; without it an entry is incomplete


def teacher_train_split(spec: TeacherSpec, task: TaskSpec, splits: DatasetDict):
    """The examples a teacher is fine-tuned on: the train split, or its own slice of it."""
    args = spec.finetune_args
    train = splits[task.train_split]
    if args.max_train_samples and args.max_train_samples >= len(train):
        log.warning(
            "Teacher %s: finetune_args.max_train_samples=%d is not smaller than the %s split "
            "(%d examples): it trains on all of them, no slice.",
            spec.name,
            args.max_train_samples,
            task.train_split,
            len(train),
        )
    return data.subsample(train, args.max_train_samples, seed=args.train_subsample_seed)


def finetune_settings(spec: TeacherSpec, task: TaskSpec, splits: DatasetDict) -> dict:
    """The fine-tuning settings in effect (the recipe's defaults filled in), the data they
    train on, and a one-line `summary` of both for the log and the teacher table."""
    args = spec.finetune_args
    available = len(splits[task.train_split])
    sliced = bool(args.max_train_samples) and args.max_train_samples < available
    settings = {
        **args.store_key(),
        "max_train_samples": args.max_train_samples,
        "train_subsample_seed": args.train_subsample_seed,
        "train_examples": args.max_train_samples if sliced else available,
        "train_split_examples": available,
        "sliced": sliced,
    }
    if sliced:
        data_used = f"{args.max_train_samples:,} of {available:,} ex (slice seed "
        data_used += f"{args.train_subsample_seed})"
    elif args.max_train_samples:
        data_used = f"all {available:,} ex (slice {args.max_train_samples:,} > split)"
    else:
        data_used = f"all {available:,} ex"
    settings["summary"] = (
        f"{data_used} x {args.epochs:g} ep, lr {args.lr:g}, batch {args.batch_size}, "
        f"seed {args.seed}"
    )
    return settings


def store_key(spec: TeacherSpec, task: TaskSpec, train, base_id: str, tok_id: str) -> dict:
    """Everything that shapes a fine-tuned teacher (not its name: equal settings, one entry)."""
    return {
        # 2: fine-tuning seeded from the teacher's own seed at its start; entries from before
        # depended on what ran earlier in the process, so they are not reused.
        "recipe": 2,
        "base": base_id,
        "tokenizer": tok_id,
        "task": task.name,
        "data": data.input_fingerprint(train, task, ["label"]),
        "max_length": spec.max_length,
        "args": spec.finetune_args.store_key(),
        **choices.cache_key(task),  # multiple choice: how the choices are written
    }


def finetune(
    spec: TeacherSpec,
    task: TaskSpec,
    splits: DatasetDict,
    *,
    base_dir: Path,
    tok_dir: Path,
    base_id: str,
    tok_id: str,
    store_dir,
    cache: SoftLabelCache | None = None,
    file_hashes: FileHashes | None = None,
    gate: bool = False,
    representations: RepresentationSpec | None = None,
) -> Teacher:
    """Fine-tune `base_dir` (tokenizer `tok_dir`; identified as `base_id`, `tok_id`) on the
    task's train split once, evaluate it, and store it.

    The store entry `<store_dir>/<task>-<fingerprint>/` is keyed by `store_key`;
    its `sead_teacher.json` records the key, settings, train time and the
    teacher's metrics on the eval splits. An interrupted run resumes from its
    last Trainer checkpoint (in `<entry>.work/`); parallel jobs wait on a lock.
    Every file is listed with its size and hash (`sead.manifest`) and checked on reuse: a
    damaged entry is reported in one line and rebuilt. With `gate`, a teacher below its
    floor (`sanity.gate`) is not stored.
    `representations`: the run will ask the cache for vectors (`cached_logits`); the eval-split
    entries written here hold them too, so the run's own eval-split request is a hit.
    """
    train = teacher_train_split(spec, task, splits)
    key = store_key(spec, task, train, base_id, tok_id)
    store = Path(store_dir)
    final = store / f"{task.name}-{fingerprint(key)}"
    # A complete, verified entry is read without a lock, so a read-only store works.
    reused = _reuse(spec, final, tok_id, file_hashes, warn=True)
    if reused is not None:
        return reused
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _not_writable(store, err, f"teacher {spec.name}") from err
    with _locked(final, f"teacher {spec.name}"):
        reused = _reuse(spec, final, tok_id, file_hashes, warn=False)  # built while we waited
        if reused is not None:
            return reused
        work = Path(str(final) + ".work")
        # The newest checkpoint whose manifest verifies; damaged or unfinished ones are
        # reported in one line each and removed.
        last = resume.latest(work, f"Teacher {spec.name}")
        resumed_from_step = resume.global_step(last)  # read now: training rotates it out
        log.info(
            "Teacher %s: fine-tuning %s on %s: %s (%s)%s",
            spec.name,
            spec.source,
            task.name,
            finetune_settings(spec, task, splits)["summary"],
            spec.finetune_args.store_key(),
            f", resuming from {last}" if last else "",
        )
        started = time.perf_counter()
        # Without the run's cache (a caller that only wants the checkpoint), a throwaway one.
        cache = cache or SoftLabelCache(work / "eval-logits")
        eval_splits = DatasetDict({split: splits[split] for split in task.eval_splits})
        trainer = _teacher_trainer(
            spec, task, train, base_dir, tok_dir, work, eval_splits, autocast=cache.autocast
        )
        what = f"teacher {spec.name}'s fine-tuning"
        output = resume.train(trainer, last, what, setting="SEAD_CACHE (or paths.teachers_dir)")
        train_seconds = time.perf_counter() - started
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=store))
        try:
            # save_pretrained rather than Trainer.save_model, which adds a pickled training_args.bin
            size = resume.weight_bytes(trainer.model)
            with disk_space(store, f"teacher {spec.name}'s store entry", size, "SEAD_CACHE"):
                trainer.model.save_pretrained(tmp)
                trainer.processing_class.save_pretrained(tmp)
            teacher = Teacher(spec, tmp, tmp, identity(str(tmp), tmp), tok_id, FINETUNED)
            last_epoch = {s: e.logits for s, e in final_evaluations(trainer).items()}
            evaluation = _evaluate_into_cache(
                teacher, task, splits, cache, last_epoch, representations
            )
            teacher.store_record = {
                "teacher": spec.name,  # the first to ask for it; equal settings share the entry
                "base_model": spec.source,
                "key": key,
                "finetune_args": asdict(spec.finetune_args),
                "train_examples": len(train),
                "train_seconds": round(train_seconds, 1),
                # each epoch's training steps (this run's epochs only, when it resumed)
                "epoch_seconds": epoch_report(trainer).epoch_seconds,
                "train_metrics": output.metrics,
                "global_step": trainer.state.global_step,
                "resumed_from_step": resumed_from_step,
                "evaluation": evaluation,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            write_atomic(tmp / STORE_MARKER, json.dumps(teacher.store_record, indent=2))
            if gate:  # a teacher below its floor is not kept: no later run may reuse it
                scores = {split: result["metrics"] for split, result in evaluation.items()}
                try:
                    sanity.gate(spec, task, scores, splits, True)
                except sanity.TeacherBelowFloor:
                    shutil.rmtree(work, ignore_errors=True)
                    log.warning("Teacher %s fails the gate: not kept in the store.", spec.name)
                    raise
            manifest.write(tmp, file_hashes)  # sizes and hashes, verified on every reuse
            if final.exists():
                shutil.rmtree(final)  # an incomplete entry (no marker) from a crashed run
            open_to_team(tmp)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        teacher.model_dir = teacher.tokenizer_dir = final
        log.info(
            "Teacher %s: fine-tuned in %.0fs, %s; stored in %s",
            spec.name,
            train_seconds,
            _scores(teacher.store_record),
            final,
        )
        return teacher


def _reuse(spec, final: Path, tok_id: str, file_hashes, warn: bool) -> Teacher | None:
    """The stored teacher when its entry is complete and matches its manifest, else None."""
    if not (final / STORE_MARKER).is_file():
        return None
    try:
        manifest.verify(final, file_hashes)
        record = json.loads((final / STORE_MARKER).read_text())
    except (manifest.DamagedFolder, ValueError) as err:
        if warn:
            reason = " ".join(str(err).split())
            log.warning("Teacher store entry %s is damaged (%s); rebuilding it.", final, reason)
        return None
    log.info("Teacher %s: reusing fine-tuned %s (%s)", spec.name, final, _scores(record))
    model_id = identity(str(final), final, file_hashes=file_hashes)
    return Teacher(spec, final, final, model_id, tok_id, STORE, store_record=record)


def _not_writable(folder: Path, err: OSError, what: str) -> PermissionError:
    return PermissionError(
        f"Cannot write to the teacher store {folder} ({err.strerror or err}), where {what} "
        "must be fine-tuned and kept. Point SEAD_CACHE (or paths.cache_dir, or "
        "paths.teachers_dir) at a writable folder."
    )


def _evaluate_into_cache(
    teacher: Teacher, task: TaskSpec, splits, cache, last_epoch, representations=None
) -> dict:
    """The fine-tuned teacher's metrics on each eval split; its logits land in the cache,
    so the pipeline's own eval-split pass right after is a cache hit, not a second pass.

    `last_epoch`: the logits of the last epoch's evaluation, on these very weights with the
    cache's batches and precision; they become the entries, so no split is run twice.
    With `representations` (the entries the run will ask for), they hold no vectors and are
    not used: one cache pass computes logits and vectors, and the run's request is a hit."""
    eval_splits = DatasetDict({split: splits[split] for split in task.eval_splits})
    entries = cached_logits(
        teacher, task, eval_splits, cache, computed=last_epoch, representations=representations
    )
    scores = evaluate(task, {s: e.logits for s, e in entries.items()}, eval_splits)
    return {
        split: {
            "n_examples": len(ds),
            "data": data.input_fingerprint(ds, task, ["label"]),
            "metrics": scores[split],
        }
        for split, ds in eval_splits.items()
    }


def _scores(record: dict) -> str:
    return "; ".join(
        f"{split} " + " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
        for split, result in record.get("evaluation", {}).items()
    )


@contextmanager
def _locked(path: Path, what: str):
    """Hold `<path>.lock`; say so when another job holds it, rather than hang silently."""
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:  # an OSError too, so caught first
        log.info("Waiting for another job that is preparing %s (%s.lock)", what, path)
        lock.acquire()
    except OSError as err:  # a read-only store
        raise _not_writable(path.parent, err, what) from err
    try:
        yield
    finally:
        lock.release()


def _teacher_trainer(
    spec, task, train, base_dir, tok_dir, work, eval_splits=None, autocast=None
) -> Trainer:
    args = spec.finetune_args
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=spec.trust_remote_code)
    # Seeded from the teacher's own settings, not from whatever ran earlier in this process:
    # the fresh head's init comes from here (dropout and data order from the Trainer's seed),
    # so one store key always means the same weights, whatever the order of the teachers.
    set_seed(args.seed)
    model = from_pretrained_with_new_head(
        choices.model_class(task),
        base_dir,
        f"Teacher {spec.name}",
        trust_remote_code=spec.trust_remote_code,
        **head_config(task),  # a head of another size (MNLI's, to fine-tune on RTE): replaced
    )
    encoded = data.tokenize(train, tokenizer, task, spec.max_length).remove_columns("idx")
    if task.is_multiple_choice:  # record queries with no gold candidate teach a teacher nothing
        encoded = encoded.select(np.flatnonzero(np.asarray(encoded["label"][:]) >= 0))
    encoded = choices.with_lengths(encoded, task, args.group_by_length)
    training_args = TrainingArguments(
        output_dir=str(work),
        **optimiser_args(args),
        seed=args.seed,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=None,  # ResumePoints keeps the last one, once the new one is complete
        logging_steps=50,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        # the collator picks the model inputs; the sampler reads the lengths column
        remove_unused_columns=False,
        **choices.training_args(task, args.group_by_length),
    )
    scorer = None
    if eval_splits:
        # as the cache runs the stored teacher: the last epoch's pass becomes its entries
        scorer = eval_scorer(
            task, eval_splits, tokenizer, spec.max_length, spec.batch_size, autocast
        )
    trainer_class = choices.ChoiceTrainer if task.is_multiple_choice else choices.GroupedTrainer
    return trainer_class(
        model=model,
        args=training_args,
        train_dataset=encoded,
        data_collator=choices.collator(task, tokenizer),
        processing_class=tokenizer,
        # a loss line and the eval metrics every epoch, however short
        callbacks=[EpochReport(f"Teacher {spec.name}", scorer), resume.ResumePoints(keep=1)],
    )
