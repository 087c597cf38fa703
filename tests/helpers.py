"""Shared test helpers: compose the real configs with Hydra, as the CLI does."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from sead.config import CONF_DIR

CONF = CONF_DIR  # the checkout's conf/ (a wheel's sead/conf when sead is installed from one)


def compose(overrides=(), output_dir="/tmp/sead-test-output"):
    """The config `python -m sead.run <overrides>` would get (output_dir fixed for tests)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=[f"paths.output_dir={output_dir}", *overrides])


def sead_run(*args, timeout=300) -> subprocess.CompletedProcess:
    """`python -m sead.run <args>` as a user types it, its output captured as text."""
    command = [sys.executable, "-m", "sead.run", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def kill_after_chunks(child: subprocess.Popen, root: Path, chunks: int = 2, timeout=180) -> None:
    """SIGKILL a cache-filling process once `chunks` chunks are saved under `root`."""
    deadline = time.monotonic() + timeout
    while len(list(root.glob(".partial-*/chunk-*.safetensors"))) < chunks:
        assert child.poll() is None, child.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"no {chunks} chunks saved in {timeout} s"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def settings(group: str, *overrides: str, **values):
    """One group's typed settings as a run reads them (`sead.settings.GROUPS`): the real
    config, with `overrides` (`task=rte`, `transfer=files`...) and then `values` set in the
    group, e.g. `settings("data", dir="data/sst2", max_train_samples=300)`."""
    from omegaconf import OmegaConf

    from sead.settings import GROUPS, read_settings

    cfg = compose(list(overrides))
    node = OmegaConf.merge(OmegaConf.to_container(cfg[group], resolve=True), values)
    return GROUPS[group](node, read_settings(cfg).task)


def teacher_spec(name: str, source, **settings):
    """A `TeacherSpec` for a local checkpoint: `settings` over the plain ones a test does not
    vary (not fine-tuned, its own tokenizer, no revision, no remote code, length 64, batch 8)."""
    from sead.teachers import TeacherSpec

    plain = {"finetune": False, "tokenizer": None, "max_length": 64, "revision": None}
    plain |= {"trust_remote_code": False, "batch_size": 8}
    return TeacherSpec(name=name, source=str(source), **{**plain, **settings})


class Killed(Exception):
    """Stands for a SIGKILL at a chosen point of the work (raised by a patched function)."""


def cut_after(folder: Path, n_bytes: int) -> None:
    """Leave `folder` as a kill after its first `n_bytes` written bytes would: its files in
    the order they were written (mtime, then name), the one being written at that byte cut
    there, the later ones never created."""
    files = sorted(
        (p for p in Path(folder).rglob("*") if p.is_file()),
        key=lambda p: (p.stat().st_mtime_ns, p.name),
    )
    left = n_bytes
    for path in files:
        size = path.stat().st_size
        if left >= size:
            left -= size
        elif left > 0:
            os.truncate(path, left)
            left = 0
        else:
            path.unlink()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def stop_save(monkeypatch, n_bytes, at_save: int = 2) -> list[Path]:
    """Make the Trainer's `at_save`-th checkpoint save stop after `n_bytes` of its files (a
    float: that fraction of them), then raise `Killed`: a kill in the middle of the save,
    placed by bytes, not by timing a signal. Returns the folders saved so far (filled as it
    goes)."""
    from transformers import Trainer

    real = Trainer._save_checkpoint
    saved: list[Path] = []

    def save(self, model, trial):
        real(self, model, trial)
        saved.append(Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}")
        if len(saved) == at_save:
            total = folder_bytes(saved[-1])
            cut_after(saved[-1], int(n_bytes * total) if isinstance(n_bytes, float) else n_bytes)
            raise Killed(f"killed while saving {saved[-1]}")

    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    return saved


def prepare_teacher(cfg):
    """The one teacher of `cfg` prepared (fine-tuned and stored, or reused) as a run would."""
    from sead import pipeline, teachers

    inputs = pipeline.check_inputs(pipeline.read_settings(cfg))
    cache = pipeline.soft_label_cache(inputs.settings)
    (spec,) = inputs.specs
    return teachers.prepare(
        spec, inputs.task, inputs.splits, cfg.paths.teachers_dir, cache.file_hashes, cache
    )
