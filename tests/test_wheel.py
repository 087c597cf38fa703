"""The wheel, installed on its own, is all a user needs: `sead` composes, runs the demo end
to end, and takes a config folder of the user's own.

The wheel is built (`pip wheel --no-deps`) from a copy of the files a clean clone has,
installed with `pip install --no-deps --target` into an empty folder, and run from a folder
outside the repository by an interpreter started with `-S`: no `.pth` file of site-packages
runs, so no editable install of a checkout is on the path. PYTHONPATH holds the target
first, then site-packages for the dependencies (torch, transformers, Hydra...).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_FILES = ["pyproject.toml", "README.md", "sead", "conf"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: the installed setuptools builds it, so the test needs no network.
    command = ["wheel", "--no-deps", "--no-build-isolation", str(src), "-w", str(dist)]
    _pip(*command)
    (built,) = dist.glob("sead-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--no-deps", "--target", str(target), str(wheel))
    return target


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """A folder outside the repository, where the user runs sead."""
    return tmp_path_factory.mktemp("elsewhere")


def _pip(*args) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _run(installed: Path, cwd: Path, *args, script="sead", timeout=900):
    """`sead <args>` (or `python -<args>` with script=None) as the installed wheel runs it."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(installed), sysconfig.get_paths()["purelib"]]),
        "OMP_NUM_THREADS": "1",
        "SEAD_CACHE": str(cwd / "cache"),
    }
    env.pop("SEAD_DEMO_DIR", None)
    command = [sys.executable, "-S"]
    command += [str(installed / "bin" / script)] if script else []
    return subprocess.run(
        [*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_the_wheel_carries_the_configs_the_code_and_the_command(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"sead/conf/{p.relative_to(REPO / 'conf')}" for p in REPO.glob("conf/**/*.yaml")}
    code = {str(p.relative_to(REPO)) for p in REPO.glob("sead/**/*.py")}
    assert len(configs) > 50 and configs <= names, sorted(configs - names)
    assert code <= names, sorted(code - names)  # a new subpackage must be listed in pyproject
    assert "sead/metrics.py" in names  # the evaluate module, loaded by path
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "sead = sead.cli:main" in scripts


def test_the_installed_wheel_is_the_sead_that_runs(installed, user_dir):
    check = (
        "import sys, sead, sead.config\n"
        "print(sead.__file__)\n"
        "print(sead.config.CONF_DIR)\n"
        "print(any('editable' in type(f).__module__ for f in sys.meta_path))\n"
    )
    proc = _run(installed, user_dir, "-c", check, script=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    module, conf, editable = proc.stdout.split()
    assert Path(module).is_relative_to(installed) and not Path(module).is_relative_to(REPO)
    assert Path(conf) == installed / "sead" / "conf" and editable == "False"


def test_the_command_composes_and_answers_help(installed, user_dir):
    proc = _run(installed, user_dir, "--cfg", "job", "task=cb")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "name: cb" in proc.stdout and "bert:" in proc.stdout
    helped = _run(installed, user_dir, "--help")
    assert helped.returncode == 0 and "sead cache" in helped.stdout
    same = _run(installed, user_dir, "-m", "sead.run", "--cfg", "job", "task=cb", script=None)
    assert same.returncode == 0 and same.stdout == proc.stdout  # python -m sead.run, the same
    # The tools are there (each one's --help: tests/test_cli_flags.py); cache and models
    # import no torch, so they answer at once.
    for tool in ("cache", "models"):
        tool_help = _run(installed, user_dir, tool, "--help")
        assert tool_help.returncode == 0 and f"usage: sead {tool}" in tool_help.stdout


def test_the_demo_runs_end_to_end_and_a_teacher_of_ones_own_joins_it(installed, user_dir):
    built = _run(installed, user_dir, "toy", "demo_assets")
    assert built.returncode == 0, built.stderr[-3000:]
    demo = _run(installed, user_dir, "experiment=demo", "hydra.run.dir=demo_run")
    assert demo.returncode == 0, demo.stderr[-3000:]
    results = json.loads((user_dir / "demo_run" / "results.json").read_text())
    assert results["status"] == "ok" and results["student"]["metrics"]["validation"]["accuracy"]
    assert (user_dir / "demo_run" / "student" / "model.safetensors").is_file()

    # A teacher of the user's own, in a folder of the user's own, beside sead's toy_bert.
    teachers = user_dir / "my_conf" / "teachers"
    teachers.mkdir(parents=True)
    mine = (REPO / "conf" / "teachers" / "toy_roberta.yaml").read_text()
    (teachers / "mine.yaml").write_text(mine.replace("toy_roberta:", "mine:"))
    args = ["--config-dir", "my_conf", "experiment=demo", "teachers=[toy_bert,mine]"]
    own = _run(installed, user_dir, *args, "hydra.run.dir=own_run")
    assert own.returncode == 0, own.stderr[-3000:]
    results = json.loads((user_dir / "own_run" / "results.json").read_text())
    assert list(results["teachers"]) == ["toy_bert", "mine"] and results["status"] == "ok"

    unknown = _run(installed, user_dir, "--config-dir", "my_conf", "teachers=[mine,nope]")
    assert unknown.returncode == 1 and "Unknown teacher(s) ['nope']" in unknown.stderr
    assert str(user_dir / "my_conf") in unknown.stderr and "mine, minilm" in unknown.stderr

    listed = _run(installed, user_dir, "cache", "list")
    assert listed.returncode == 0 and "toy_bert" in listed.stdout
