"""Typed settings: every option of every config group builds, a misspelt or missing key is
named with its group, and a default lives in conf/ only."""

import dataclasses
import shutil
import typing
from pathlib import Path

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from sead import config, pipeline
from sead.config import build, setting
from sead.settings import GROUPS, Settings, read_settings
from tests.helpers import CONF, compose, settings

# What an option needs besides itself to build (a task it has checkpoints for, its files...).
NEEDS = {
    ("teachers", "files"): [
        "++teachers.files.predictions.validation=preds.jsonl",
        "teachers.files.labels=[negative,positive]",
    ],
    ("transfer", "unlabeled_split"): ["transfer.labeled=100"],
    ("transfer", "files"): ["transfer.hub.path=imdb"],
}
NOT_TRAINABLE = {"axb", "axg"}  # diagnostic sets: evaluation only, refused as the task


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _every_option():
    groups = [g for g in GROUPS if g != "paths"] + ["paths", "experiment", "hparams_search"]
    return [(group, option) for group in groups for option in _options(group)]


def _select(group: str, option: str) -> list[str]:
    if group == "teachers":
        return [f"teachers=[{option}]"]
    if group == "task":  # a teacher sead fine-tunes exists for every task
        return [f"task={option}", "teachers=[minilm]"]
    return [f"{group}={option}"]


@pytest.mark.parametrize(("group", "option"), _every_option())
def test_every_option_of_every_group_builds_its_settings(group, option):
    cfg = compose([*_select(group, option), *NEEDS.get((group, option), [])])
    if option in NOT_TRAINABLE:
        with pytest.raises(ValueError, match="diagnostic set"):
            read_settings(cfg)
        return
    built = read_settings(cfg)
    assert isinstance(built, Settings)
    for field in dataclasses.fields(Settings):  # every group, typed, frozen
        value = getattr(built, field.name)
        for item in value if isinstance(value, tuple) else [value]:
            assert dataclasses.is_dataclass(item), field.name
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(item, dataclasses.fields(item)[0].name, None)


# --- a misspelt key in a YAML file, for every group -----------------------------------------

# group -> (its option to copy, the key to misspell, overrides the option needs)
MISSPELT = {
    "task": ("sst2", "name", []),
    "teachers": ("minilm", "max_length", []),
    "ensemble": ("vote", "smoothing", []),
    "student": ("minilm_l2", "keep_layers", []),
    "train": ("default", "ddp_timeout", []),
    "data": ("default", "subsample_seed", []),
    "transfer": ("augment", "word_dropout", []),
    "paths": ("default", "logits_dir", []),
    "cache": ("default", "chunk_size", []),
    "report": ("default", "speed_samples", []),
    "export": ("onnx", "atol", []),
}


@pytest.fixture(scope="module")
def conf_copy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conf") / "conf"
    shutil.copytree(CONF, folder)
    return folder


@pytest.mark.parametrize("group", sorted(MISSPELT))
def test_a_misspelt_key_in_a_yaml_file_is_named_with_its_group(group, conf_copy):
    option, key, overrides = MISSPELT[group]
    text = (conf_copy / group / f"{option}.yaml").read_text()
    typo = key[:-1] + key[-1] * 2  # ddp_timeout -> ddp_timeoutt
    assert f"{key}:" in text
    (conf_copy / group / "typo.yaml").write_text(text.replace(f"{key}:", f"{typo}:", 1))
    choice = "teachers=[typo]" if group == "teachers" else f"{group}=typo"
    if group == "teachers":  # a teacher's content sits under its own name
        path = conf_copy / group / "typo.yaml"
        path.write_text(path.read_text().replace(f"{option}:\n", "typo:\n", 1))
    with initialize_config_dir(config_dir=str(conf_copy), version_base="1.3"):
        cfg = hydra_compose("config", overrides=["paths.output_dir=/tmp/x", choice, *overrides])
    where = "teachers.typo" if group == "teachers" else group
    with pytest.raises(ValueError) as caught:
        read_settings(cfg)
    message = str(caught.value)
    assert where in message and typo in message, message
    assert "unknown" in message, message


def test_a_misspelt_key_of_the_main_config_is_named(conf_copy):
    with initialize_config_dir(config_dir=str(conf_copy), version_base="1.3"):
        cfg = hydra_compose("config", overrides=["paths.output_dir=/tmp/x", "+teacher_gat=true"])
    with pytest.raises(ValueError, match=r"main config .* unknown key\(s\) \['teacher_gat'\]"):
        read_settings(cfg)


# --- one value for each setting: conf/'s ---------------------------------------------------


def test_ddp_timeout_and_speed_samples_have_one_value_each_the_yamls():
    """They once had two (1800 in distill.py, 7200 in the YAML; 0 in pipeline.py, 256 in the
    YAML). Now conf/ holds the only one: the settings carry it, and without it a run stops."""
    train = yaml.safe_load((CONF / "train" / "default.yaml").read_text())
    report = yaml.safe_load((CONF / "report" / "default.yaml").read_text())
    assert (train["ddp_timeout"], report["speed_samples"]) == (7200, 256)
    built = read_settings(compose())
    assert (built.train.ddp_timeout, built.report.speed_samples) == (7200, 256)
    with pytest.raises(ValueError, match=r"train is missing key\(s\) \['ddp_timeout'\]"):
        read_settings(compose(["~train.ddp_timeout"]))
    with pytest.raises(ValueError, match=r"report is missing key\(s\) \['speed_samples'\]"):
        read_settings(compose(["~report.speed_samples"]))


def test_the_trainer_gets_the_yamls_ddp_timeout(tiny_cfg, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def record(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr("sead.distill.TrainingArguments", record)
    built = read_settings(tiny_cfg())
    from datasets import Dataset

    from sead import distill

    tiny = Dataset.from_dict({"sentence": ["a"], "label": [0], "idx": [0]})
    model, tokenizer = distill.load_student(built.student, built.task)
    with pytest.raises(Stop):
        distill.distill(
            model, tokenizer, tiny, __import__("numpy").ones((1, 2)) / 2, task=built.task,
            settings=built.train, max_length=8, output_dir=Path("/tmp/unused"), seed=1,
        )  # fmt: skip
    assert seen["ddp_timeout"] == 7200


def _settings_classes():
    """Every settings dataclass a group builds, nested ones too, with the group's folder."""
    from sead.cache import CacheSettings
    from sead.card import ReportSettings
    from sead.data import DataSettings
    from sead.distill import StudentSettings, TrainSettings
    from sead.ensemble import EnsembleSettings
    from sead.export import ExportSettings
    from sead.settings import Paths, RunSettings, TaskSettings
    from sead.teachers import FinetuneArgs, PredictionsSettings, TeacherSettings
    from sead.transfer import SETTINGS

    classes = [
        ("task", TaskSettings, None),
        ("teachers", TeacherSettings, None),
        ("teachers", PredictionsSettings, "predictions"),
        ("teachers", FinetuneArgs, "finetune_args"),
        ("ensemble", EnsembleSettings, None),
        ("student", StudentSettings, None),
        ("train", TrainSettings, None),
        ("data", DataSettings, None),
        ("paths", Paths, None),
        ("cache", CacheSettings, None),
        ("report", ReportSettings, None),
        ("export", ExportSettings, None),
        (None, RunSettings, None),
    ]
    return classes + [("transfer", cls, None) for cls in SETTINGS.values()]


def _set_keys(group, nested) -> set[str]:
    """Every key the shipped YAMLs of a group set (a teacher's under its name)."""
    if group is None:
        return set(yaml.safe_load((CONF / "config.yaml").read_text()))
    keys = set()
    for path in (CONF / group).glob("*.yaml"):
        node = yaml.safe_load(path.read_text()) or {}
        nodes = list(node.values()) if group == "teachers" else [node]
        for item in nodes:
            if nested == "predictions":  # a teacher read from files (conf/teachers/files.yaml)
                keys |= set(item) if nested in item else set()
            elif nested:
                keys |= set(item.get(nested) or {})
            else:
                keys |= set(item)
    return keys


@pytest.mark.parametrize(("group", "cls", "nested"), _settings_classes())
def test_no_default_in_code_for_a_key_that_conf_sets(group, cls, nested):
    """A default written in sead/ could drift from the YAML's; only keys that no shipped
    config sets may have one (`None`, not set; or an expert knob such as save_steps)."""
    set_in_conf = _set_keys(group, nested)
    for field in dataclasses.fields(cls):
        has_default = field.default is not dataclasses.MISSING
        if has_default and field.default is not None:
            assert field.name not in set_in_conf, f"{cls.__name__}.{field.name}"


# --- the builder itself -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Example:
    rate: float = setting(low=0, high=1)
    steps: int = setting(low=1)
    name: typing.Literal["a", "b"]
    tags: tuple[str, ...]
    flag: bool
    limit: int | None = setting(low=1, default=None)


def test_the_builder_converts_checks_ranges_and_names_group_and_key():
    made = build(Example, {"rate": 1, "steps": 3.0, "name": "a", "tags": "x", "flag": True}, "ex")
    assert made == Example(1.0, 3, "a", ("x",), True, None)
    assert isinstance(made.rate, float) and isinstance(made.steps, int)
    good = {"rate": 0.5, "steps": 2, "name": "b", "tags": [], "flag": False}
    for bad, message in [
        ({"rate": 2}, r"ex.rate=2 is not allowed: expected a number in \[0, 1\]"),
        ({"steps": 2.5}, r"ex.steps=2.5 is not allowed: expected an integer"),
        ({"name": "c"}, r"ex.name='c' is not allowed: expected one of \['a', 'b'\]"),
        ({"flag": "yes"}, r"ex.flag='yes' is not allowed: expected true or false"),
        ({"limit": 0}, r"ex.limit=0 is not allowed"),
        ({"stepz": 1}, r"(?s)ex has unknown key\(s\) \['stepz'\].*steps"),
    ]:
        with pytest.raises(ValueError, match=message):
            build(Example, {**good, **bad}, "ex")
    with pytest.raises(ValueError, match=r"ex is missing key\(s\) \['flag'\]"):
        build(Example, {k: v for k, v in good.items() if k != "flag"}, "ex")
    assert build(Example, OmegaConf.create(good), "ex").limit is None  # DictConfig too


def test_the_pipeline_reads_no_raw_config_value():
    """`.get(` on a config node, with a default in code, is how defaults drifted."""
    import re

    sead_dir = Path(config.__file__).parent
    pattern = re.compile(r"(cfg|_cfg|tcfg)\.get\(")
    found = [
        f"{path.relative_to(sead_dir)}:{n}"
        for path in sead_dir.rglob("*.py")
        if path.name != "config.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found
    assert pipeline.read_settings is read_settings
    assert settings("train").ddp_timeout == 7200
