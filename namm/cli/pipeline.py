"""``namm pipeline``: evolve on language -> language -> video -> RL -> one report folder."""

from __future__ import annotations

import argparse
import time


def run(a: argparse.Namespace) -> None:
    from namm import config
    from namm.pipeline import load_pipeline_config, run_pipeline

    over = list(a.overrides)
    if a.out:
        over.append(f"out={a.out}")
    if a.reuse_weights:
        over.append("evolve.weights=shipped")
    if a.device:
        over.append(f"device={a.device}")
    cfg = load_pipeline_config(a.config, over)
    if a.check:
        print(config.dump(cfg))
        print("config OK (nothing was run)")
        return
    t0 = time.time()
    report = run_pipeline(cfg, a.config, resume=a.resume)
    print(f"\n{report.read_text().split('## Plots')[0]}")
    print(f"wrote {report} in {(time.time() - t0) / 60:.1f} min")
    if a.config is None:
        print("This was the embedded CPU-sized default. Full size: namm pipeline --config configs/pipeline_gpu.yaml "
              "(one GPU) or configs/pipeline_paper.yaml (paper models).")


def add_arguments(p: argparse.ArgumentParser, out_default: str | None = None) -> None:
    p.add_argument("--config", default=None, help="pipeline YAML (default: the embedded CPU-sized config)")
    p.add_argument("--out", default=out_default, help="report folder (default: the config's `out`)")
    p.add_argument("--reuse-weights", action="store_true", help="skip evolution: use the shipped NAMM weights")
    p.add_argument("--device", default=None, help="cpu | cuda | auto")
    p.add_argument("--resume", action="store_true",
                   help="continue the evolution in OUT/evolve, or reuse it when finished (then re-run the rest)")
    p.add_argument("--check", action="store_true", help="validate the config and print it; run nothing")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rl.episodes=10 language.samples=8")


def add(sub) -> None:
    p = sub.add_parser("pipeline", help="evolve on language, transfer zero-shot to video and RL, write one report")
    add_arguments(p)
    p.set_defaults(fn=run)
