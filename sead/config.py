"""Config helpers every floor of sead shares: where `conf/` is, and the unknown-key check."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


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
