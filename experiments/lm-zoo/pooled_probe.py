"""Probe: the NAMM's scores max-pooled over neighbouring positions before the threshold (``namm.pool``,
``namm.selection.neighbour_max``), so runs of tokens survive together. Not shipped: the NAMM's answers
drift mid-copy (qa_f1) or lose the end of a value, and pooling trades one for the other. Findings:
results/lm-zoo-heldout64-2026-11-26/pooled_probe.json.

    python experiments/lm-zoo/pooled_probe.py TASKS N SEED KERNEL:DELTA ...   # one JSON line per KERNEL:DELTA
    python experiments/lm-zoo/pooled_probe.py kv_retrieval,qa_f1 32 500 1:0.4 3:0.0 5:-0.2 3:0.2   # ~7 min

DELTA shifts the generation-75 weights (1:0.4 = namm-zoo, the zoo-evolved NAMM).
"""
import json
import sys
from dataclasses import replace

from namm import models
from namm.checkpoint import resolve_policy
from namm.evaluation.text import score_task, task_examples

model, tok = models.load("zoo")
tasks = sys.argv[1].split(",")
n, seed = int(sys.argv[2]), int(sys.argv[3])
exs = {t: task_examples(tok, t, n, seed=seed, context_tokens=2048) for t in tasks}
base = resolve_policy("namm-zoo").shifted(-0.4)
for spec in sys.argv[4:]:
    kernel, delta = spec.split(":")
    pol = replace(base, pool=int(kernel)).shifted(float(delta))
    row = {"kernel": int(kernel), "delta": float(delta)}
    for t in tasks:
        r = score_task(model, tok, t, exs[t], policy=pol, batch_size=4)
        row[t] = round(r["score"], 1)
        row[t + "_cache"] = round(r["mean_cache_fraction"], 3)
    print(json.dumps(row), flush=True)
