"""Write the NAMM variants this folder compares, from the stage-3 generation-75 weights (unshifted).

    python results/lm-zoo-val128-2026-11-26/variants.py OUT_DIR

p5_-0.2 / p5_-0.1: namm.pool 5 (a token is kept when it or a cached neighbour within 2 places scores >= 0)
with the threshold shifted by -0.2 / -0.1. rank50: the NAMM's scores as a ranking only: shifted +10 so the
threshold keeps everything, then a top-k budget of 50% of tokens seen in every head alike.
The shipped NAMM is the same weights shifted +0.4 (`--policy namm`).
"""
import sys
from dataclasses import replace
from pathlib import Path

from namm.checkpoint import load_namm, save_namm

W = "results/lm-zoo-stage3b-2026-11-26/evolve/namm.safetensors"
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
base = load_namm(W)
for name, policy in {
    "p5_-0.2": replace(base, pool=5).shifted(-0.2),
    "p5_-0.1": replace(base, pool=5).shifted(-0.1),
    "rank50": replace(base, budget=0.5).shifted(10.0),
}.items():
    save_namm(out / f"{name}.safetensors", policy, {"note": f"variant {name} of {W}"})
    print(out / f"{name}.safetensors", policy.describe())
