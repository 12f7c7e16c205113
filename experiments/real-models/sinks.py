"""Is the shipped NAMM's loss on a real model the attention sinks it evicts? The NAMM with its first
``--sinks`` positions pinned (never evicted, every layer and head), on the same instances as a
``namm table`` run, so `namm compare` pairs them with that run's folders.

    python experiments/real-models/sinks.py --model smollm2-135m --tasks lm_continuation --samples 64 \
        --seed 3000 --context-tokens 2048 --out runs/real-table/smollm2/namm_sinks
    namm compare runs/real-table/smollm2/namm runs/real-table/smollm2/namm_sinks
"""
from __future__ import annotations

import argparse
from pathlib import Path

from namm import models, tasks
from namm.checkpoint import resolve_policy
from namm.evaluation.text import evaluate, write_results
from namm.policies import PinFirst

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="smollm2-135m")
ap.add_argument("--namm", default="namm-zoo")
ap.add_argument("--sinks", type=int, default=4)
ap.add_argument("--tasks", default="lm_continuation")
ap.add_argument("--samples", type=int, default=64)
ap.add_argument("--seed", type=int, default=3000)
ap.add_argument("--context-tokens", type=int, default=2048)
ap.add_argument("--batch-size", type=int, default=1)
ap.add_argument("--out", required=True)
a = ap.parse_args()

names = tasks.expand(a.tasks)
policy = PinFirst(inner=resolve_policy(a.namm), sinks=a.sinks)
model, tok = models.load(a.model)
res = evaluate(model, tok, policy, names, a.samples, a.seed, a.context_tokens, a.batch_size)
res.update(seed=a.seed, samples=a.samples, model=a.model, context_tokens=a.context_tokens)
write_results(Path(a.out), res)
print(f"{res['policy']}: mean score {res['mean_score']:.2f}, cache {res['mean_cache_fraction']:.3f}  "
      + "  ".join(f"{t}={v['score']:.1f}" + (f" (NLL {v['nll']:.3f})" if v.get("nll") is not None else "")
                  for t, v in res["tasks"].items()))
