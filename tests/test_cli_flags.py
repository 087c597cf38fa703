"""Hydra's own command-line flags work on `python -m sead.run` as in any Hydra app.

sead reads `teachers=[...]` off the command line before Hydra does (to list the teachers
there are); these tests make sure that check never takes a flag's value for an override.
Each runs the real entry point in-process (`sead.run.cli` with `sys.argv` set), which is
what `python -m sead.run` calls.
"""

import logging
import pickle
import re
import shlex
import sys
from pathlib import Path

import pytest

from sead import cli, run, teachers
from sead.api import compose
from sead.config import CONF_DIR
from sead.tasks import get_task


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """Hydra's main configures logging (handlers, levels); undo that for the tests after."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    yield
    for logger, handlers, level, propagate, disabled in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


def _cli(monkeypatch, tmp_path, *args, command=("sead/run.py", run.cli)) -> int:
    """Run `python -m sead.run <args>` (or another command) in-process; its exit code (0
    when it returns)."""
    monkeypatch.chdir(tmp_path)  # anything Hydra writes lands in the test's folder
    program, entry_point = command
    monkeypatch.setattr(sys, "argv", [program, *args])
    try:
        entry_point()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


@pytest.mark.parametrize(
    "flags",
    [
        ["--cfg", "job"],
        ["--cfg=job"],
        ["-c", "job"],
        ["-cjob"],
        ["--cfg", "hydra"],
        ["--cfg", "all"],
        ["--cfg", "job", "--resolve"],
        ["--cfg", "job", "--package", "task"],
        ["--cfg", "job", "--package=task"],
        ["-c", "job", "-p", "task"],
        ["-cn", "config", "--cfg", "job"],
        ["--config-name", "config", "--cfg", "job"],
        ["--config-name=config", "--cfg", "job"],
        ["-cp", str(CONF_DIR), "--cfg", "job"],
        ["--config-path", str(CONF_DIR), "--cfg", "job"],
        ["-cd", str(CONF_DIR), "--cfg", "job"],
        ["--config-dir", str(CONF_DIR), "--cfg", "job"],
    ],
    ids=lambda flags: " ".join(flags).replace(str(CONF_DIR), "CONF"),
)
def test_hydra_config_flags_print_the_config(monkeypatch, tmp_path, capsys, flags):
    code = _cli(monkeypatch, tmp_path, "task=cb", "teachers=[minilm]", *flags)
    out = capsys.readouterr().out
    assert code == 0, out
    if "task" in flags or "--package=task" in flags:
        assert "name: cb" in out and "stage:" not in out  # only the task package
    elif "hydra" in flags:
        assert "hydra:" in out and "run:" in out
    else:
        assert "name: cb" in out and "minilm:" in out


def test_cfg_resolve_resolves_interpolations(monkeypatch, tmp_path, capsys):
    assert _cli(monkeypatch, tmp_path, "--cfg", "job", "--resolve", "paths.cache_dir=/c") == 0
    out = capsys.readouterr().out
    assert "/c/logits" in out and "${paths.cache_dir}" not in out


@pytest.mark.parametrize(
    "flags", [["--info"], ["--info", "defaults"], ["--info=searchpath"], ["--info", "config"]]
)
def test_hydra_info_flag(monkeypatch, tmp_path, capsys, flags):
    assert _cli(monkeypatch, tmp_path, "task=cb", *flags) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("flag", ["--help", "-h", "--hydra-help"])
def test_help_flags(monkeypatch, tmp_path, capsys, flag):
    assert _cli(monkeypatch, tmp_path, flag) == 0
    out = capsys.readouterr().out
    assert ("Powered by Hydra" in out) or ("Hydra" in out and "--cfg" in out)


@pytest.mark.parametrize(
    "args, printed",
    [(["--version"], "Hydra 1.3"), (["--cfg", "foo"], "invalid choice: 'foo'")],
)
def test_a_flag_that_stops_the_command_line_prints_once(
    monkeypatch, tmp_path, capsys, args, printed
):
    """sead reads the command line before Hydra does (to check config names), silently: the
    version, or argparse's error, is printed by Hydra alone, once."""
    _cli(monkeypatch, tmp_path, *args)
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count(printed) == 1


@pytest.mark.parametrize("command", ["python -m sead.run", "sead"])
@pytest.mark.parametrize("flag", ["-m", "--multirun"])
def test_multirun_flag_runs_a_sweep(monkeypatch, tmp_path, flag, command):
    """A sweep of two jobs that fail at once (no such stage): each records its failure and
    the sweep goes on (then exits 1), which is all this needs to show that -m reached Hydra."""
    entry = ("sead/run.py", run.cli) if command != "sead" else ("sead", cli.main)
    args = [flag, "stage=nope,other", "teachers=[minilm]"]
    assert _cli(monkeypatch, tmp_path, *args, command=entry) == 1
    failed = sorted(tmp_path.glob("multirun/*/*/*/results.json"))
    assert len(failed) == 2 and all('"failed"' in path.read_text() for path in failed)


def test_experimental_rerun_reads_its_file_not_an_override(monkeypatch, tmp_path, capsys):
    """The rerun's path is the flag's value: Hydra says the file is not a pickled config,
    rather than sead failing to parse the path as an override."""
    bad = tmp_path / "config.pickle"
    bad.write_bytes(pickle.dumps({"not": "a config"}))
    with pytest.raises(Exception) as error:
        _cli(monkeypatch, tmp_path, "--experimental-rerun", str(bad))
    assert "Error parsing override" not in str(error.value)


def test_unknown_teacher_check_reads_flag_values_as_hydra_does():
    for flags in (["--cfg", "job"], ["-c", "job"], ["-p", "task"], ["--info", "defaults"]):
        assert run.unknown_teachers([*flags, "teachers=[minilm,nope]"]) == ["nope"]
        assert run.unknown_teachers(["teachers=[minilm]", *flags]) == []
    # Another config folder or a rerun: Hydra checks the names against its own configs.
    assert run.unknown_teachers(["-cd", "/elsewhere", "teachers=[mine]"]) == []
    assert run.unknown_teachers(["--experimental-rerun", "x.pickle"]) == []


def test_cli_still_lists_the_teachers_when_a_flag_is_present(monkeypatch, tmp_path, capsys):
    code = _cli(monkeypatch, tmp_path, "--cfg", "job", "teachers=[minilm,nope]")
    assert code == 1


# --- the `sead` command (sead.cli): the same Hydra app, and the tools ----------------------


def _sead(monkeypatch, tmp_path, *args) -> int:
    """`sead <args>` in-process; its exit code (0 when it returns)."""
    return _cli(monkeypatch, tmp_path, *args, command=("sead", cli.main))


def test_sead_is_the_hydra_app(monkeypatch, tmp_path, capsys):
    assert _cli(monkeypatch, tmp_path, "--cfg", "job", "task=cb") == 0
    by_module = capsys.readouterr().out
    assert _sead(monkeypatch, tmp_path, "--cfg", "job", "task=cb") == 0
    assert capsys.readouterr().out == by_module
    assert _sead(monkeypatch, tmp_path, "--help") == 0
    out = capsys.readouterr().out
    assert all(f"sead {tool}" in out for tool in cli.TOOLS) and "Powered by Hydra" in out


@pytest.mark.parametrize("tool", sorted(cli.TOOLS))
def test_every_tool_answers_help_under_its_sead_name(monkeypatch, tmp_path, capsys, tool):
    assert _sead(monkeypatch, tmp_path, tool, "--help") == 0
    assert capsys.readouterr().out.startswith(f"usage: sead {tool}")


def test_sead_cache_list_reads_the_configured_cache(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SEAD_CACHE", str(tmp_path / "somewhere"))
    assert _sead(monkeypatch, tmp_path, "cache", "list") == 0
    assert f"No cache entries in {tmp_path / 'somewhere' / 'logits'}" in capsys.readouterr().out


@pytest.fixture
def my_conf(tmp_path):
    """A config folder of the user's own, outside sead: one teacher, `mine`."""
    teachers = tmp_path / "my_conf" / "teachers"
    teachers.mkdir(parents=True)
    (teachers / "mine.yaml").write_text("mine:\n  checkpoints: {cb: /models/mine-cb}\n")
    return tmp_path / "my_conf"


@pytest.mark.parametrize("how", ["--config-dir", "-cd", "hydra.searchpath"])
def test_a_teacher_of_ones_own_from_a_config_dir(monkeypatch, tmp_path, capsys, my_conf, how):
    searchpath = [f"hydra.searchpath=[file://{my_conf}]"]
    where = searchpath if how == "hydra.searchpath" else [how, "my_conf"]
    args = ["--cfg", "job", *where, "task=cb", "teachers=[mine,mpnet]"]
    assert _sead(monkeypatch, tmp_path, *args) == 0
    out = capsys.readouterr().out
    assert "mine:" in out and "/models/mine-cb" in out and "mpnet:" in out
    assert run.unknown_teachers(args) == []

    with pytest.raises(SystemExit) as refused:
        cli.main(["--cfg", "job", *where, "teachers=[mine,nope]"])
    error = str(refused.value.code)
    assert "Unknown teacher(s) ['nope']" in error
    assert str(my_conf) in error and str(CONF_DIR) in error  # every folder searched
    assert "mine, minilm" in error  # and what they hold


def test_a_copied_teacher_file_that_kept_the_other_teachers_key_is_refused(my_conf):
    """Two files under one key would merge into one teacher: the run would have one fewer."""
    copy = (my_conf / "teachers" / "mine.yaml").read_text()
    (my_conf / "teachers" / "mine2.yaml").write_text(copy)  # still under `mine:`
    (error,) = run.config_name_errors(["-cd", str(my_conf), "teachers=[mine,mine2]"])
    assert error.startswith(f"teachers/mine2.yaml in {my_conf} puts its settings under ['mine']")
    assert run.config_name_errors(["-cd", str(my_conf), "teachers=[mine,minilm]"]) == []


def test_a_teacher_an_experiment_file_names_is_checked_too(tmp_path):
    """Hydra's own message for a missing member of a list default names no choices."""
    experiments = tmp_path / "my_conf" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /teachers: [toy_bert, toy_robertta]\n"
    )
    where = ["-cd", str(tmp_path / "my_conf"), "experiment=mine"]
    (error,) = run.config_name_errors(where)
    assert error.startswith("Unknown teacher(s) ['toy_robertta']") and "toy_roberta" in error
    assert run.config_name_errors([*where, "teachers=[toy_bert]"]) == []  # replaced: not loaded
    assert run.config_name_errors(["experiment=demo"]) == []


def test_other_groups_are_checked_along_the_search_path_too():
    with pytest.raises(SystemExit) as refused:
        cli.main(["-m", "task=cb,nope", "student=tiny"])
    error = str(refused.value.code)
    assert "Unknown task option(s) ['nope']" in error and "superglue_rte" in error
    assert "Unknown student option(s) ['tiny']" in error and "xtremedistil_l6_h256" in error
    assert str(CONF_DIR) in error


def test_a_copy_of_hydras_config_store_is_the_store():
    """sead.searchpath keeps Hydra from deep-copying its ConfigStore on every group lookup
    (0.9 s of `--help`); a config stored after a repository was copied is still found."""
    import copy

    from hydra.core.config_store import ConfigStore

    from sead import searchpath

    found = searchpath.options(searchpath.search_path())
    store = ConfigStore.instance()
    assert copy.deepcopy(store) is store
    store.store(name="late", node={"x": 1}, group="sead_test_late")
    assert searchpath.Options(copy.deepcopy(found.repo), []).of("sead_test_late") == ["late"]


def test_the_readme_teacher_of_ones_own_works_as_written(monkeypatch, tmp_path, capsys):
    """README, "A teacher of your own": its yaml, saved where it says, and each of its
    command lines (printing the config, --cfg job, rather than running it)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("**A teacher of your own**") :]
    yaml_block = re.search(r"```yaml\n# (my_conf/\S+)\n(.*?)```", section, re.DOTALL)
    path, content = tmp_path / yaml_block.group(1), yaml_block.group(2)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    commands = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1).splitlines()
    assert len(commands) == 2
    for command in commands:
        words = shlex.split(command.replace("/abs/path/to/my_conf", str(tmp_path / "my_conf")))
        assert words[0] == "sead"
        assert _sead(monkeypatch, tmp_path, "--cfg", "job", *words[1:]) == 0, command
        out = capsys.readouterr().out
        assert "/path/to/my-sst2-checkpoint" in out and "mpnet:" in out, command
    # and the teacher it describes reads into settings (what the README leaves out: defaults)
    cfg = compose(["task=sst2", "teachers=[mine]"], config_dir=tmp_path / "my_conf")
    (spec,) = teachers.teacher_specs(cfg.teachers, get_task("sst2"))
    assert spec.source == "/path/to/my-sst2-checkpoint" and spec.finetune_args.lr == 2e-5


def test_a_group_set_to_null_is_named_not_a_hydra_traceback():
    """Hydra refuses `group=null` with a bare ValueError; sead says which group and options."""
    (error,) = run.config_name_errors(["train=null"])
    assert error.startswith("train=null: a config group takes the name of one of its options")
    assert "(default)" in error and "~train removes the group" in error
    assert run.config_name_errors(["hparams_search=optuna"]) == []
