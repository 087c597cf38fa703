"""Hydra entry point: `python -m sead.run task=sst2 'teachers=[bert,roberta]'`.

Thin on purpose: all the work is in `sead.pipeline.run`, which tests call directly.
Returns the student's main metric so that Hydra sweepers (e.g. Optuna) can optimise it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from sead import pipeline

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    results = pipeline.run(cfg)
    first_split = results["eval_splits"][0]
    return results["student"]["metrics"][first_split][results["main_metric"]]


def unknown_teachers(args: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """Teacher names on the command line with no `conf/teachers/<name>.yaml`.

    Hydra reports a missing member of a config *list* without listing the
    choices, so sead checks `teachers=[...]` (and sweeps of such lists) itself.
    """
    overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    known = {p.stem for p in (conf_dir / "teachers").glob("*.yaml")}
    names: list[str] = []
    for override in overrides:
        if override.key_or_group != "teachers" or override.get_key_element() != "teachers":
            continue
        values = override.value()
        choices = list(override.sweep_iterator()) if override.is_sweep_override() else [values]
        for choice in choices:
            names += choice if isinstance(choice, list) else [choice]
    return sorted({str(n) for n in names} - known)


def exit_if_unknown_teachers(args: list[str]) -> None:
    """Stop a command line that names a teacher with no config, listing the ones there are."""
    missing = unknown_teachers(args)
    if missing:
        available = sorted(p.stem for p in (CONF_DIR / "teachers").glob("*.yaml"))
        sys.exit(
            f"Unknown teacher(s) {missing}: no conf/teachers/<name>.yaml. "
            f"Available teachers: {', '.join(available)}."
        )


if __name__ == "__main__":
    exit_if_unknown_teachers(sys.argv[1:])
    main()
