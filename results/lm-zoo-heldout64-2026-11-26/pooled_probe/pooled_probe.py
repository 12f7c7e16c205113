"""Probe: the NAMM's scores max-pooled over neighbouring positions before the threshold, so a token is
kept when it or a neighbour within kernel//2 places scores >= 0, neighbours in position order among the
tokens still cached (runs of tokens survive together).
A probe, not a shipped option: the NAMM's answers drift mid-copy (qa_f1) or lose the end of a value.

    python pooled_probe.py TASKS N SEED WEIGHTS KERNEL:DELTA ...   # one JSON line per KERNEL:DELTA
    python results/lm-zoo-heldout64-2026-11-26/pooled_probe/pooled_probe.py kv_retrieval,qa_f1 32 500 \
        results/lm-zoo-stage3b-2026-11-26/evolve/namm.safetensors 1:0.4 3:0.0 5:-0.2 3:0.2   # ~7 min

KERNEL 1 is the plain NAMM shifted by DELTA (1:0.4 = the shipped weights). pooled_probe.json: the runs
of 2026-11-26 (validation seed 500, 32 instances per task, 2k tokens) with the full cache on the same
instances. Kernel 5, shift -0.2: qa_f1 97.6 (shipped 92.6, full 96.2) but kv_retrieval 81.2 (84.4, 84.4),
mean over the four tasks 53.43 vs 53.2 (full 55.25): the drift is fixed, the mean is not moved.
"""
import dataclasses
import json
import sys

import torch
import torch.nn.functional as F

from namm.checkpoint import load_namm
from namm.evaluate import load_model, score_task, zoo_examples
from namm.selection import threshold_ragged


def pooled(path, kernel, delta):
    base = load_namm(path).shifted(delta)
    cls = type(base)
    class Pooled(cls):
        def select(self, layer, view):
            s = self.scores(layer, view)  # [B,H,N], -inf out of view
            big = torch.iinfo(torch.long).max
            key = layer.pos.masked_fill(~view.in_view, big)
            order = key.argsort(-1)
            so = s.gather(-1, order)
            b, h, n = so.shape
            p = F.max_pool1d(so.reshape(b * h, 1, n), kernel, stride=1, padding=kernel // 2).reshape(b, h, n)
            sp = torch.empty_like(s).scatter_(-1, order, p)
            sp = sp.masked_fill(~view.in_view, float("-inf"))
            return threshold_ragged(sp, view.in_view, view.newest)

    return Pooled(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init})


model, tok = load_model("zoo")
tasks = sys.argv[1].split(",")
n, seed = int(sys.argv[2]), int(sys.argv[3])
W = sys.argv[4]
exs = {t: zoo_examples(tok, t, n, seed=seed, context_tokens=2048) for t in tasks}
for spec in sys.argv[5:]:
    kernel, delta = spec.split(":")
    pol = pooled(W, int(kernel), float(delta)) if int(kernel) > 1 else load_namm(W).shifted(float(delta))
    row = {"kernel": int(kernel), "delta": float(delta)}
    for t in tasks:
        r = score_task(model, tok, t, exs[t], policy=pol, batch_size=4)
        row[t] = round(r["score"], 1); row[t + "_cache"] = round(r["mean_cache_fraction"], 3)
    print(json.dumps(row), flush=True)
