"""Helper for tests/test_evolution.py: run several evolutions inside ONE torchrun process group.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/evolution/dist_evolve.py CONFIG \
        RUN key=value ... RUN key=value ...

Each ``RUN`` group is a list of config overrides (give each its own ``run.out``).
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch.distributed as td

from namm.evolution import evolve
from namm.evolution.config import load_config


def main(argv: list[str]) -> None:
    config, rest = argv[0], argv[1:]
    runs, cur = [], None
    for a in rest:
        if a == "RUN":  # not "--run": torchrun would take it for an abbreviation of its --run-path
            cur = []
            runs.append(cur)
        else:
            cur.append(a)
    td.init_process_group("gloo")  # shared by every run below (evolve() then leaves it open)
    try:
        for overrides in runs:
            evolve(load_config(config, overrides))
    finally:
        td.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
