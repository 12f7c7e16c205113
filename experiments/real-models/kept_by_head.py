"""How much of the context each (layer, head) still holds when the scored tokens begin: kept / seen at the
context's last update, per policy, replayed on recorded full-cache attention (namm.replay.replay).

A policy's cache fraction is averaged over updates, so a threshold NAMM that keeps more early and less late
can match a budget policy's mean fraction while holding far less when the answer or continuation starts.

    python experiments/real-models/kept_by_head.py --namm runs/linear-ema0.99/namm.safetensors --budget 0.439
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from namm import models, tasks
from namm.checkpoint import load_namm
from namm.drivers.trace import record
from namm.evaluation.text import prompt_ids
from namm.policies import make_policy
from namm.replay import replay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=5000)
    ap.add_argument("--context-tokens", type=int, default=512)
    ap.add_argument("--n-up", type=int, default=128)
    ap.add_argument("--namm", nargs="*", default=[], help="NAMM weights files")
    ap.add_argument("--baselines", default="h2o")
    ap.add_argument("--budget", type=float, default=0.44, help="the baselines' budget")
    a = ap.parse_args()
    model, tok = models.load(a.model, "lm", device="cpu", dtype=torch.float32)
    task = tasks.make("lm_continuation")
    exs = task.examples(tok, a.samples, seed=a.seed, context_tokens=a.context_tokens)
    pols = {f: load_namm(f, n_up=a.n_up) for f in a.namm}
    pols.update({f"{b}@{a.budget:g}": make_policy(b, n_up=a.n_up, budget=a.budget) for b in a.baselines.split(",")})
    share: dict[str, list[torch.Tensor]] = {k: [] for k in pols}
    for ex in exs:
        meta, tensors = record(model, prompt_ids(tok, task, ex, 10**9), n_up=a.n_up)
        u = meta["num_updates"] - 1
        seen = float(min(meta.get("length", 10**9), (u + 1) * a.n_up))
        for k, pol in pols.items():
            out = replay(pol, meta, tensors)
            share[k] += [out[f"keep.{u}.{l}"].sum(-1).float().flatten() / seen for l in range(meta["num_layers"])]
    print(f"{a.model}, {a.samples} files (seed {a.seed}), {a.context_tokens}-token contexts, n_up {a.n_up}: "
          "kept / seen per (layer, head) at the context's last update")
    for k, v in share.items():
        x = torch.cat(v).numpy()
        print(f"  {k}: min {x.min():.3f}  p10 {np.percentile(x, 10):.3f}  median {np.median(x):.3f}  "
              f"p90 {np.percentile(x, 90):.3f}  max {x.max():.3f}  (under 0.1: {(x < 0.1).mean():.0%})")


if __name__ == "__main__":
    main()
