"""Write the NAMM variants the 128-instance validation compares (from the zoo-evolved weights, namm-zoo, unshifted to
generation 75 first):

    python experiments/lm-zoo/variants.py OUT_DIR

p5_-0.2 / p5_-0.1: namm.pool 5 (a token is kept when it or a cached neighbour within 2 places scores >= 0)
with the threshold shifted by -0.2 / -0.1. rank50: the NAMM's scores as a ranking only: shifted +10 so the
threshold keeps everything, then a top-k budget of 50% of tokens seen in every head alike.
"""
import sys
from dataclasses import replace
from pathlib import Path

from namm.checkpoint import SHIPPED_NAMMS, load_namm, save_namm

out = Path(sys.argv[1])
base = load_namm(SHIPPED_NAMMS["namm-zoo"]).shifted(-0.4)
for name, policy in {
    "p5_-0.2": replace(base, pool=5).shifted(-0.2),
    "p5_-0.1": replace(base, pool=5).shifted(-0.1),
    "rank50": replace(base, budget=0.5).shifted(10.0),
}.items():
    save_namm(out / f"{name}.safetensors", policy, {"note": f"variant {name} of the shipped NAMM (generation 75)"})
    print(out / f"{name}.safetensors", policy.describe())
