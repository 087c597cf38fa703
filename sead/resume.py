"""Resume points: Trainer checkpoints that count only once complete, and are verified before use.

A `transformers.Trainer` writes `checkpoint-<step>/` file by file, in place: a kill or a full
disk in the middle leaves a folder that looks like a checkpoint (a `config.json` alone, a
truncated `optimizer.pt`), and a flipped byte later goes unseen. Resuming from either fails
with a raw error, or silently trains on from damaged weights. Here a checkpoint is a resume
point only when its manifest (`sead.manifest`: every file's size and hash) was written after
the Trainer finished writing it, and its files still match that manifest when it is used.

Any Trainer in sead uses it in three steps (teacher fine-tuning does, in `teachers/store.py`):

    point = resume.latest(work_dir, "Teacher bert")      # the newest verified checkpoint, or None
    trainer = Trainer(..., args=TrainingArguments(output_dir=work_dir, save_strategy="steps",
                      save_total_limit=None), callbacks=[resume.ResumePoints(keep=1)])
    output = resume.train(trainer, point, "teacher bert's fine-tuning", setting="SEAD_CACHE")

`latest` logs one line for each damaged or incomplete checkpoint it skips, and removes it (a
later save of that step, or the Trainer's own bookkeeping, must not trip on it); it falls
back to the previous complete one, or to None: start over. `ResumePoints` does the rotation
`save_total_limit` would, but only after the new checkpoint's manifest is written, so the
previous complete checkpoint exists until the new one is complete. `train` resumes from the
point and turns a full disk into one line (`sead.files.DiskFull`).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback, TrainerState

from sead import distributed, manifest
from sead.files import disk_space

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # the Trainer's PREFIX_CHECKPOINT_DIR-<step>


def checkpoints(output_dir) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-<step>/` in `output_dir`, newest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT.match(p.name))]
    return sorted((step, path) for step, path in found if path.is_dir())[::-1]


def latest(output_dir, what: str) -> Path | None:
    """The newest checkpoint in `output_dir` whose manifest verifies, or None (start over).

    Each newer one that does not verify (no manifest: its save never finished; a file
    missing, resized or changed since) is reported in one line and removed. The best
    checkpoint it names (`load_best_model_at_end` restores it at the end) must verify too:
    else no epoch can be chosen as it was, and every checkpoint goes (start over).
    """
    for _, path in checkpoints(output_dir):
        reason = _damaged(path)
        if reason is not None:
            log.warning(
                "%s: checkpoint %s is not a resume point (%s); removed, falling back to the "
                "previous complete checkpoint, if any.",
                what,
                path,
                reason,
            )
            _remove([path])
            continue
        best = TrainerState.load_from_json(str(path / "trainer_state.json")).best_model_checkpoint
        best = None if best is None else Path(output_dir) / Path(best).name
        reason = None if best is None or best == path else _damaged(best)
        if reason is not None:
            log.warning(
                "%s: the best checkpoint %s, which the end of training restores, is damaged "
                "(%s): every checkpoint is removed and training starts over.",
                what,
                best,
                reason,
            )
            _remove([p for _, p in checkpoints(output_dir)])
            return None
        return path
    return None


def _damaged(path: Path) -> str | None:
    """Why a checkpoint does not verify against its manifest, in one line; None: it does."""
    try:
        manifest.verify(path)
    except manifest.DamagedFolder as err:
        reason = " ".join(str(err).split())
        if reason.startswith(manifest.MANIFEST):  # written last: the save did not finish
            reason = f"incomplete, no {manifest.MANIFEST}: its save was interrupted"
        return reason
    return None


def _remove(paths: list[Path]) -> None:
    if distributed.is_main_process():  # one writer
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)


def global_step(point: Path | None) -> int | None:
    """The step a resume point was saved at (None: no point)."""
    if point is None:
        return None
    return TrainerState.load_from_json(str(Path(point) / "trainer_state.json")).global_step


class ResumePoints(TrainerCallback):
    """Marks each checkpoint the Trainer saves as complete (its manifest, written last), then
    keeps the newest `keep` complete ones, and the best one (`load_best_model_at_end`). Pass
    `save_total_limit=None` to the Trainer: its own rotation deletes the previous checkpoint
    before the new one is marked complete."""

    def __init__(self, keep: int = 1):
        if keep < 1:
            raise ValueError(f"ResumePoints(keep={keep}): keep at least one checkpoint.")
        self.keep = keep

    def on_train_begin(self, args, state, control, **kwargs):
        if args.save_total_limit is not None:
            raise ValueError(
                f"save_total_limit={args.save_total_limit} with ResumePoints: set it to None "
                f"and pass ResumePoints(keep={args.save_total_limit}), which rotates only after "
                "the new checkpoint is complete."
            )

    def on_save(self, args, state, control, **kwargs):
        distributed.barrier()  # every rank has written its files (its RNG state) into it
        if not args.should_save:  # one process writes (rank 0)
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        manifest.write(folder)
        complete = [
            path for _, path in checkpoints(args.output_dir) if (path / manifest.MANIFEST).is_file()
        ]
        best = state.best_model_checkpoint  # load_best_model_at_end reloads it: never removed
        for path in complete[self.keep :]:
            if best is None or path.resolve() != Path(best).resolve():
                shutil.rmtree(path, ignore_errors=True)


def weight_bytes(model) -> int:
    """What a model's weights take on disk (safetensors: their bytes, plus a small header)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def checkpoint_bytes(model) -> int:
    """About what one checkpoint takes: the weights, and AdamW's two moments per trainable
    weight (float32); the scheduler, RNG and trainer state are small beside them."""
    moments = sum(2 * 4 * p.numel() for p in model.parameters() if p.requires_grad)
    return weight_bytes(model) + moments


def train(trainer, point: Path | None, what: str, setting: str | None = None):
    """`trainer.train()`, resumed from `point` (from `latest`); a full disk while it saves a
    checkpoint is reported in one line naming the folder and the space a checkpoint needs."""
    if not any(isinstance(cb, ResumePoints) for cb in trainer.callback_handler.callbacks):
        raise ValueError(f"{what}: the Trainer has no ResumePoints callback to mark checkpoints.")
    folder = trainer.args.output_dir
    needed = checkpoint_bytes(trainer.model)
    with disk_space(folder, f"a checkpoint of {what}", needed, setting):
        return trainer.train(resume_from_checkpoint=None if point is None else str(point))
