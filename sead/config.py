"""Config helpers every floor of sead shares: where `conf/` is, and typed settings.

Each config group is read once, at the door (`sead.pipeline.settings`), into a frozen
dataclass declared beside the stage that uses it (`distill.TrainSettings`,
`data.DataSettings`...): `build(TrainSettings, cfg.train, "train")`. The builder refuses an
unknown or a missing key naming the group and the key, converts each value to its field's
type and checks the range declared on the field (`setting(low=...)`). Defaults live in
`conf/` only, so a default written in code cannot drift from the one in the YAML.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from omegaconf import OmegaConf

T = TypeVar("T")


def conf_dir() -> Path:
    """sead's own configs: `sead/conf` in an installed wheel, else the checkout's `conf/`.

    `conf/` lives at the top of the repository and the wheel carries it as the package data
    `sead/conf` (pyproject.toml). A plain folder path, not `pkg://sead.conf`: in a checkout
    or an editable install `sead.conf` is no importable package, and Hydra reads a folder
    the same way from a wheel, a checkout and `--config-dir`.
    """
    package = Path(__file__).resolve().parent
    packaged = package / "conf"
    return packaged if packaged.is_dir() else package.parent / "conf"


CONF_DIR = conf_dir()


def check_keys(given: Iterable[str], known, where: str, what: str = "key") -> None:
    """Stop on a setting `where` does not take, naming it and every one it does.

    A misspelt option silently ignored is a run with the wrong settings, so every config
    dict sead reads (teachers, fine-tuning, transfer, ensemblers) goes through here.
    `known` is a list of names, or `{name: what it sets}` to list them one a line.
    """
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    if isinstance(known, Mapping):
        expected = ":\n" + "\n".join(f"  {name}: {about}" for name, about in known.items())
    else:
        expected = ": " + (", ".join(known) or "none")
    raise ValueError(f"{where} has unknown {what}(s) {unknown}; expected some of{expected}")


def check_like_defaults(values: Mapping, defaults: Mapping, prefix: str) -> None:
    """Each value of the same kind as its default (a flag a bool, a number a number, a word a
    string): `calibrate=no` is not silently true, `sharpness=abc` is named."""
    kinds = ((bool, "true or false"), ((int, float), "a number"), (str, "a string"))
    for key, value in values.items():
        default = defaults.get(key)
        for kind, expected in kinds:
            if default is not None and isinstance(default, kind):
                wrong = isinstance(value, bool) != isinstance(default, bool)
                if wrong or not isinstance(value, kind):
                    raise ValueError(f"{prefix}.{key}={value!r}: expected {expected}.")
                break


def number(value, option: str, kind=float, low=None, high=None, *, low_open=False, high_open=False):
    """`value` as `kind` (int or float), checked to be finite and within its range.

    A setting out of range (a zero temperature, a negative batch size) can run to the end and
    save a broken model, or fail late with a message that names no option; checked up front,
    the error names the option, the value and what is allowed.
    """
    left = "(" if low_open else "["
    right = ")" if high_open or high is None else "]"
    allowed = f"{'an integer' if kind is int else 'a number'}"
    if low is not None or high is not None:
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        allowed += f" in {span}"
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        converted = kind(value)
        if kind is int and float(value) != converted:
            raise ValueError
        bad = not math.isfinite(converted)
        if low is not None:
            bad |= converted <= low if low_open else converted < low
        if high is not None:
            bad |= converted >= high if high_open else converted > high
    except (TypeError, ValueError, OverflowError):
        bad = True
    if bad:
        raise ValueError(f"{option}={value!r} is not allowed: expected {allowed}.")
    return converted


# --------------------------------------------------------------------------------------------
# Typed settings: a config group -> a frozen dataclass, checked once, at the door.
# --------------------------------------------------------------------------------------------


def setting(
    *,
    low=None,
    high=None,
    low_open: bool = False,
    high_open: bool = False,
    help: str | None = None,  # noqa: A002 (the word every CLI uses)
    default=MISSING,
):
    """A settings field with its allowed range, for `build` to check: e.g.
    `lr: float = setting(low=0, low_open=True)`. Without `default` the key is required.

    A default belongs in `conf/`, not here: give one only for a key that no config file sets
    (then it is `None`, "not set", or an expert knob documented where it is declared).
    """
    span = {"low": low, "high": high, "low_open": low_open, "high_open": high_open}
    metadata = {RANGE: span, HELP: help}
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


RANGE, HELP = "sead_range", "sead_help"


def build(cls: type[T], node, where: str) -> T:
    """The frozen dataclass `cls` from a config node (a DictConfig or a plain mapping).

    Every key of `node` must be a field of `cls` and every field without a default must be a
    key of `node`; both errors name the group (`where`, e.g. "train" or "teachers.bert"; ""
    for the main config's own keys) and the key. Values are converted to the field's
    annotated type (int, float, bool, str, Path, Literal choices, Optional, tuples and lists,
    dicts, nested settings dataclasses) and checked against the field's range
    (`setting(low=..., high=...)`); then the class's own `__post_init__` checks whatever
    involves several fields.
    """
    group = where or "the main config (conf/config.yaml)"
    raw = container(node, group)
    declared = {f.name: f for f in fields(cls) if f.init}
    hints = get_type_hints(cls)
    check_keys(raw, {name: _describe(f, hints[name]) for name, f in declared.items()}, group)
    missing = [
        name
        for name, f in declared.items()
        if name not in raw and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ValueError(
            f"{group} is missing key(s) {missing}: every setting of {group} is set in conf/ "
            "(add it to the config file that sets the others)."
        )
    values = {}
    for name, value in raw.items():
        option = f"{where}.{name}" if where else name
        values[name] = _convert(value, hints[name], option)
        span = declared[name].metadata.get(RANGE)
        if span and isinstance(values[name], int | float) and not isinstance(values[name], bool):
            kind = int if isinstance(values[name], int) else float
            values[name] = number(value, option, kind, **span)  # the value as given, if bad
    return cls(**values)


def container(node, where: str) -> dict:
    """A config node (DictConfig or mapping; None: empty) as a plain dict, resolved."""
    if node is None:
        return {}
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, Mapping):
        raise ValueError(f"{where} must be a mapping of settings, got {node!r}.")
    return dict(node)


def _describe(f, hint) -> str:
    about = f.metadata.get(HELP) or _type_name(hint)
    required = f.default is MISSING and f.default_factory is MISSING
    return about if required else f"{about} (optional)"


def _type_name(hint) -> str:
    if get_origin(hint) is Literal:
        return " | ".join(map(str, get_args(hint)))
    if get_origin(hint) in (Union, UnionType):
        return " | ".join(_type_name(a) for a in get_args(hint))
    if hint is type(None):
        return "null"
    if get_origin(hint) in (tuple, list):
        return f"a list of {_type_name(get_args(hint)[0])}" if get_args(hint) else "a list"
    return getattr(hint, "__name__", str(hint))


def _convert(value, hint, option: str):
    """`value` as the annotated type `hint`, or a ValueError naming the option."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, UnionType):
        if value is None and type(None) in args:
            return None
        members, errors = [a for a in args if a is not type(None)], []
        for member in members:
            try:
                return _convert(value, member, option)
            except ValueError as error:
                errors.append(error)
        structured = get_origin(members[0]) in (tuple, list) or is_dataclass(members[0])
        if len(members) == 1 and structured:  # its own words: which item, what it must be
            raise errors[0]
        raise ValueError(f"{option}={value!r} is not allowed: expected {_type_name(hint)}.")
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and True not in args):
            return value
        raise ValueError(f"{option}={value!r} is not allowed: expected one of {list(args)}.")
    if is_dataclass(hint):
        return build(hint, value, option)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{option}={value!r} is not allowed: expected true or false.")
    if hint in (int, float):
        return number(value, option, hint)
    if hint in (str, Path):
        if isinstance(value, str) or (
            isinstance(value, int | float) and not isinstance(value, bool)
        ):
            return hint(str(value))
        raise ValueError(f"{option}={value!r} is not allowed: expected a string.")
    if origin in (tuple, list) or hint in (tuple, list):
        item = args[0] if args else Any
        items = value if isinstance(value, list | tuple) else [value]  # data.diagnostics=axb
        if isinstance(value, Mapping):
            raise ValueError(f"{option}={value!r} is not allowed: expected a list.")
        converted = [_convert(v, item, f"{option}[{i}]") for i, v in enumerate(items)]
        return tuple(converted) if (origin or hint) is tuple else converted
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{option}={value!r} is not allowed: expected a mapping.")
        if not args:
            return dict(value)
        return {
            _convert(k, args[0], option): _convert(v, args[1], f"{option}.{k}")
            for k, v in value.items()
        }
    raise TypeError(f"{option}: sead.config.build cannot read type {hint!r}.")
