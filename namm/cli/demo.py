"""``namm demo``: the main job on the embedded default, exactly what ``make demo`` runs
(``namm pipeline --out runs/demo --resume``: a finished evolution in runs/demo/evolve is reused)."""

from __future__ import annotations

from .pipeline import add_arguments, run


def add(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded default (= make demo): evolve -> language -> "
                       "video -> RL -> runs/demo/report.md")
    add_arguments(p, out_default="runs/demo")
    p.set_defaults(fn=run, resume=True)
