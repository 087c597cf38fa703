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
