"""A label ceiling for SST-2: the 6-layer student on `soft2_l6_full`'s 66,349 rows with every
row's gold label in place of the ensemble's soft labels (README, "a label ceiling").

A diagnostic, not a row of the study's blocks: it is saved in ceiling/ (one JSON per seed, as
each ends; a rerun skips the seeds there), records the CPU it ran on, and is read against
`soft2_l6_full`'s mean and the bar, never seed by seed. Run from the repository root:
    flock /tmp/sead-cpu.lock python experiments/sead_glue_cpu/ceiling.py --seeds 1,2,3
    flock /tmp/sead-cpu.lock python experiments/sead_glue_cpu/ceiling.py --condition gold4_l6_full
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # this checkout's sead, whatever is installed

from experiments import harness  # noqa: E402
from experiments.sead_glue_cpu import run as study  # noqa: E402

CONDITIONS = ("gold2_l6_full", "gold4_l6_full")  # the second only if the first misses the bar
TEACHER = ("minilm",)  # sead asks for a teacher; its labels carry loss weight 0 here


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--condition", default=CONDITIONS[0], choices=CONDITIONS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    seeds = study.parse_seeds(parser, args.seeds)
    saved, commit = harness.Units(HERE / "ceiling"), harness.code_commit()
    for seed in seeds:
        record = saved.get(
            f"sst2_{args.condition}_s{seed}",
            lambda seed=seed: (
                study.student_job("sst2", args.condition, seed, TEACHER) | {"commit": commit}
            ),
        )
        stages = (record.get("recipe") or {}).get("stages") or [{}]
        print(
            f"seed {seed}: {record['metric']} {record['score']:.4f} in {record['wall_s']:.0f} s;"
            f" held-out curve {stages[0].get('selection', {}).get('curve')}"
        )


if __name__ == "__main__":
    main()
