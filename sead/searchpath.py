"""Where sead's configs are found, and the check of the config names a command line asks for.

Hydra looks for configs along a search path: sead's own `conf/` (`sead.config.CONF_DIR`),
then a folder of the user's given with `--config-dir` (the API's `config_dir=`), then the
entries of `hydra.searchpath` (on the command line or in the primary config). The `sead`
command and `sead.api` build that path here, as Hydra's own command line does, so a teacher
in `my_conf/teachers/mine.yaml` is found by Hydra and by sead's checks alike.

Hydra reports a missing member of a config *list* (`teachers=[bert,nope]`) without listing
the choices, and never says which folders it searched; `unknown_choices` checks every
`group=name` override against the options found along the path, and `unknown_message` says
what is missing, the folders searched and what they hold (`sead.run` stops the command line
with it, `sead.api` raises it as a `ConfigError`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.config_repository import CachingConfigRepository
from hydra._internal.utils import create_config_search_path
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.config_store import ConfigStore
from hydra.core.default_element import GroupDefault
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from sead.config import CONF_DIR

# Sources of the search path that hold the user's configs or sead's (not Hydra's own, nor a
# plugin's), named in error messages.
CONFIG_PROVIDERS = (
    "main",
    "command-line",
    "hydra.searchpath in command-line",
    "hydra.searchpath in main",
)


# Hydra 1.3 deep-copies its config repository for every lookup of a group's options, and
# with it the ConfigStore singleton (its structured configs: Hydra's own and the plugins'):
# about 7 ms a copy, and `--help` makes 123 of them (0.9 s of its 1.3 s here). Hydra's own
# fix (facebookresearch/hydra#2928, after 1.3.2) stops copying the store; this does the same
# for 1.3 by letting a copy of the singleton be the singleton.
ConfigStore.__deepcopy__ = lambda self, memo: self


class ConfigError(ValueError):
    """A config that cannot be composed: an unknown option, a bad override, a missing folder.

    Raised by `sead.api` in place of Hydra's command-line exit; its message says what to fix.
    """


def search_path(config_dir: str | os.PathLike | None = None, config_path=None) -> ConfigSearchPath:
    """Hydra's config search path for sead, built as Hydra's command line builds it.

    `config_path` replaces sead's `conf/` (`--config-path`, absolute); `config_dir` adds a
    folder of the user's after it (`--config-dir`). Raises `ConfigError` for a folder that
    does not exist.
    """
    path = create_config_search_path(str(config_path or CONF_DIR))
    if config_dir is not None:
        folder = Path(config_dir).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"config_dir={str(config_dir)!r}: no such folder ({folder}).")
        # as Hydra's --config-dir: after sead's own configs, before the structured schema
        path.prepend("command-line", f"file://{folder}", anchor=SearchPathQuery(provider="schema"))
    return path


@dataclass(frozen=True)
class Options:
    """The options of each config group along a search path, and the folders searched."""

    repo: CachingConfigRepository
    folders: list[str]  # sead's conf/ and the user's, in the order Hydra searches them

    def of(self, group: str) -> list[str]:
        return sorted(self.repo.get_group_options(group, ObjectType.CONFIG))


def options(path: ConfigSearchPath, overrides: Sequence[str] = (), config_name="config") -> Options:
    """The config options along `path` and the `hydra.searchpath` that the overrides (or the
    primary config) add: Hydra's own config repository, as it is when Hydra composes."""
    loader = ConfigLoaderImpl(config_search_path=path)
    _, repo = loader._parse_overrides_and_create_caching_repo(config_name, list(overrides))
    folders = [
        source.full_path().removeprefix("file://")
        for source in repo.get_sources()
        if source.provider in CONFIG_PROVIDERS
    ]
    return Options(repo, folders)


def _choices(override: Override) -> list:
    """The option names an override of a group selects (one per choice of a sweep)."""
    if override.is_delete():
        return []
    try:
        values = (
            list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        )
    except HydraException:  # a glob or range sweep: Hydra expands it against the options itself
        return []
    names = []
    for value in values:
        names += value if isinstance(value, list) else [value]
    # null: Hydra refuses it for a group with a bare traceback; named here as an unknown option
    return ["null" if name is None else name for name in names if isinstance(name, str | None)]


def unknown_choices(found: Options, overrides: Iterable[str]) -> dict[str, list[str]]:
    """`{group: [names with no config]}` for each `group=name` override (`teachers=[a,b]`,
    `task=x`, sweeps of either) that names an option no folder on the path holds."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    asked: dict[str, list] = {}  # group -> the names the command line asks for
    for override in parsed:
        group = override.key_or_group
        if override.package is not None or "." in group or group.startswith("hydra"):
            continue  # a config value, or a group of Hydra's own (hydra/launcher=...)
        if found.of(group):  # else not a config group: a plain setting (seed=1, stage=...)
            asked.setdefault(group, []).extend(_choices(override))
    for name in asked.get("experiment", []):  # and what each experiment file's defaults name
        for group, names in _experiment_choices(found, name).items():
            if group not in asked:  # the command line's own choice replaces the experiment's
                asked.setdefault(group, []).extend(names)
    unknown: dict[str, list[str]] = {}
    for group, names in asked.items():
        known = found.of(group)
        for name in names:
            if name not in known and name not in unknown.get(group, []):
                unknown.setdefault(group, []).append(name)
    return unknown


def _experiment_choices(found: Options, name: str) -> dict[str, list]:
    """`{group: [names]}` that `experiment/<name>.yaml` chooses in its defaults list
    (`override /teachers: [a, b]`); {} for an experiment not on the path."""
    try:
        loaded = found.repo.load_config(f"experiment/{name}")
    except HydraException:
        return {}
    chosen: dict[str, list] = {}
    for default in (loaded.defaults_list or []) if loaded is not None else []:
        if isinstance(default, GroupDefault) and default.value is not None:
            value = default.value
            chosen[default.group.lstrip("/")] = list(value) if isinstance(value, list) else [value]
    return chosen


def misplaced_teachers(found: Options, names: Iterable[str]) -> list[str]:
    """An error for each `teachers/<name>.yaml` whose settings are not all under the key
    `<name>:` (a copy of another teacher's file, its key left as it was): Hydra would merge
    it into the teacher of that key, and the run would have one teacher fewer, silently."""
    errors = []
    for name in dict.fromkeys(names):
        loaded = found.repo.load_config(f"teachers/{name}")
        if loaded is None or loaded.header.get("package") is not None:
            continue  # unknown (reported apart), or placed by its own @package header
        keys = list(loaded.config.keys()) if loaded.config is not None else []
        if keys != [name]:
            errors.append(
                f"teachers/{name}.yaml in {loaded.path.removeprefix('file://')} puts its "
                f"settings under {keys}, "
                f"expected the key {name}: alone, so that teachers=[...,{name}] is its own "
                "teacher (a copy of another teacher's file keeps that teacher's key: rename it)."
            )
    return errors


def unknown_message(group: str, names: list[str], found: Options) -> str:
    """The error for options of `group` with no config: the folders searched, what they hold."""
    if names == ["null"]:
        return (
            f"{group}=null: a config group takes the name of one of its options "
            f"({', '.join(found.of(group))}), not null; ~{group} removes the group."
        )
    files = ", ".join(f"{group}/{name}.yaml" for name in names)
    where = "\n".join(f"  {folder}" for folder in found.folders)
    what = "teacher(s)" if group == "teachers" else f"{group} option(s)"
    under_key = f" (its settings under the key {names[0]}:)" if group == "teachers" else ""
    return (
        f"Unknown {what} {names}: no {files} in the config search path:\n{where}\n"
        f"Available {group}: {', '.join(found.of(group))}.\n"
        f"A config of your own goes in a folder of your own, e.g. my_conf/{group}/"
        f"{names[0]}.yaml{under_key}: pass it with --config-dir my_conf (sead.api: "
        "config_dir=) or 'hydra.searchpath=[file:///abs/path/my_conf]'."
    )
