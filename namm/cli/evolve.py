"""``namm evolve --config CONFIG [--resume] [--out DIR] [key=value ...]``."""

from __future__ import annotations

import argparse
import os
import sys


def run(a: argparse.Namespace) -> None:
    from namm.evolution import evolve, load_config
    from namm.evolution.loop import WEIGHTS_FILE

    overrides = list(a.overrides) + ([f"run.out={a.out}"] if a.out else [])
    result = evolve(load_config(a.config, overrides), resume=a.resume)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if result.interrupted is not None:
        if main_rank:
            print(f"namm evolve: stopped by signal {result.interrupted} after generation {result.generation}; "
                  f"continue with --resume (state in {result.out})", file=sys.stderr)
        raise SystemExit(128 + result.interrupted)
    if main_rank:
        print(f"namm evolve: {result.generation} generations -> {result.out / WEIGHTS_FILE}")


def add(sub) -> None:
    p = sub.add_parser(
        "evolve", help="evolve a NAMM with CMA-ES (multi-GPU: torchrun -m namm.cli evolve ...)",
        description="Evolve a NAMM with CMA-ES. Overrides are dotted keys, e.g. evolution.population=8 "
        "stages.0.generations=5 data.passage_retrieval_en.samples=16.")
    p.add_argument("--config", required=True, help="YAML config (see configs/evolve_tiny.yaml, configs/evolve_paper.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder (same trajectory)")
    p.add_argument("--out", default=None, help="output folder (overrides run.out)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(fn=run)
