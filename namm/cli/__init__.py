"""The ``namm`` command line, in one place: one module per command (group), listed in :data:`COMMANDS`.

Each module defines ``add(subparsers)``, which adds its parser(s) with ``set_defaults(fn=...)``; heavy
imports happen inside the command functions, so ``namm --help`` stays fast. Adding a command = one new
module here + one line in :data:`COMMANDS`. Bad input ends in one line naming the problem and the fix
(exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: list[str] = [
    "namm.cli.demo",       # demo: the main job on the embedded default (= make demo)
    "namm.cli.pipeline",   # pipeline: evolve -> language -> video -> RL -> report
    "namm.cli.evolve",     # evolve: CMA-ES
    "namm.cli.eval",       # eval, compare: language tasks, paired comparisons
    "namm.cli.heads",      # heads: the retrieval-head ranking --whole-heads reads
    "namm.cli.eval_video", # eval-video
    "namm.cli.rollout",    # rollout: Decision Transformers in Gym
    "namm.cli.models",     # models list / fetch
    "namm.cli.zoo",        # zoo train-lm / corpus / build-tasks / rl-data / train-dt / train-video
    "namm.cli.weights",    # replay, import-reference, shift-bias
]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="namm",
        description="Neural Attention Memory Models: evolved KV-cache eviction, evaluated across language, "
        "video and reinforcement learning.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        importlib.import_module(module).add(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury our own progress and error lines
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:  # bad input: one line, no traceback
        print(f"namm {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
