"""Probe: the NAMM's scores max-pooled over neighbouring positions before the threshold, so a token is
kept when it or a neighbour within kernel//2 places scores >= 0, neighbours in position order among the
tokens still cached (runs of tokens survive together).
Now the `namm.pool` option (`namm.selection.neighbour_max`); the probe first ran with its own copy of the
pooling, and the option reproduces its kernel-5 row exactly (kv 81.2, qa 97.6, cache 0.473 via `namm eval`).
Not shipped: the NAMM's answers drift mid-copy (qa_f1) or lose the end of a value, and pooling trades one for the other.

    python pooled_probe.py TASKS N SEED WEIGHTS KERNEL:DELTA ...   # one JSON line per KERNEL:DELTA
    python results/lm-zoo-heldout64-2026-11-26/pooled_probe/pooled_probe.py kv_retrieval,qa_f1 32 500 \
        results/lm-zoo-stage3b-2026-11-26/evolve/namm.safetensors 1:0.4 3:0.0 5:-0.2 3:0.2   # ~7 min

KERNEL 1 is the plain NAMM shifted by DELTA (1:0.4 = the shipped weights). pooled_probe.json: the runs
of 2026-11-26 (validation seed 500, 32 instances per task, 2k tokens) with the full cache on the same
instances. Kernel 5, shift -0.2: qa_f1 97.6 (shipped 92.6, full 96.2) but kv_retrieval 81.2 (84.4, 84.4),
mean over the four tasks 53.43 vs 53.2 (full 55.25): the drift is fixed, the mean is not moved.
"""
import json
import sys
from dataclasses import replace

from namm.checkpoint import load_namm
from namm.evaluate import load_model, score_task, zoo_examples

model, tok = load_model("zoo")
tasks = sys.argv[1].split(",")
n, seed = int(sys.argv[2]), int(sys.argv[3])
W = sys.argv[4]
exs = {t: zoo_examples(tok, t, n, seed=seed, context_tokens=2048) for t in tasks}
for spec in sys.argv[5:]:
    kernel, delta = spec.split(":")
    pol = replace(load_namm(W), pool=int(kernel)).shifted(float(delta))  # namm.pool: selection.neighbour_max
    row = {"kernel": int(kernel), "delta": float(delta)}
    for t in tasks:
        r = score_task(model, tok, t, exs[t], policy=pol, batch_size=4)
        row[t] = round(r["score"], 1)
        row[t + "_cache"] = round(r["mean_cache_fraction"], 3)
    print(json.dumps(row), flush=True)
