"""`sead`, the command: a run (the Hydra app), or one of sead's tools.

    sead task=sst2 'teachers=[bert,roberta]'   # a run: exactly `python -m sead.run ...`
    sead -m train.temperature=1,2,4 seed=1,2   # a sweep; every Hydra flag works as in any app
    sead cache list                            # python -m sead.cache list
    sead export outputs/<date>/<time>          # python -m sead.export ...
    sead report multirun/<date>/<time>         # python -m sead.report ...
    sead models fetch                          # python -m sead.models fetch
    sead toy demo_assets                       # python -m sead.toy demo_assets

A first word that names a tool runs that tool (each takes --help); anything else goes to
Hydra (a tool's name is no valid override, so the two never clash). Each tool is imported
only when it runs: `sead --help` and `sead cache list` start without torch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _cache(argv: list[str]) -> int | None:
    from sead.cache import tool

    return tool.main(argv, prog="sead cache")


def _export(argv: list[str]) -> int | None:
    from sead import export

    return export.main(argv, prog="sead export")


def _report(argv: list[str]) -> int | None:
    from sead import report

    return report.main(argv, prog="sead report")


def _models(argv: list[str]) -> int | None:
    from sead import models

    return models.main(argv, prog="sead models")


def _toy(argv: list[str]) -> int | None:
    from sead import toy

    return toy.main(argv, prog="sead toy")


# name -> (what runs it, what it does); `sead --help` lists them (conf/config.yaml, hydra.help)
TOOLS: dict[str, tuple[Callable[[list[str]], int | None], str]] = {
    "cache": (_cache, "list, show, verify, remove and export cached teacher logits"),
    "export": (_export, "ONNX fp32 + int8 of a run's student, checked and timed"),
    "report": (_report, "tables and plots over a sweep's results"),
    "models": (_models, "install real weights offline (all-mpnet-base-v2)"),
    "toy": (_toy, "build the offline demo's assets"),
}


def main(argv: Sequence[str] | None = None) -> None:
    """`sead [TOOL] ARGS...`: the tool's exit status, or the Hydra app's."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        run_tool, _ = TOOLS[argv[0]]
        sys.exit(run_tool(argv[1:]))
    from sead import run

    sys.argv = [sys.argv[0], *argv]  # Hydra reads its command line from sys.argv
    run.cli()


if __name__ == "__main__":
    main()
