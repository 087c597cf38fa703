"""Config helpers every floor of sead shares: where `conf/` is, and the unknown-key check."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path


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
