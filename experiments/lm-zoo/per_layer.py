"""Where a NAMM spends its memory: kept / seen per layer and KV head, next to its kv_retrieval score.

    python experiments/lm-zoo/per_layer.py WEIGHTS [--context-tokens 1024] [--samples 16] [--seed 1000]

Held-out kv_retrieval instances, one prompt at a time. The zoo LM needs its last layer (3) whole to
retrieve (layer_split.py): this shows whether a NAMM learned that.
"""
import argparse
import json

import torch

from namm import models
from namm.checkpoint import resolve_policy
from namm.evaluation.text import score_task, task_examples
from namm.memory import memory
from namm.tasks import make

ap = argparse.ArgumentParser()
ap.add_argument("weights")
ap.add_argument("--context-tokens", type=int, default=1024)
ap.add_argument("--samples", type=int, default=16)
ap.add_argument("--seed", type=int, default=1000)
a = ap.parse_args()
model, tok = models.load("zoo")
policy = resolve_policy(a.weights)
task = make("kv_retrieval")
exs = task_examples(tok, "kv_retrieval", a.samples, a.seed, a.context_tokens)
kept = None  # [layers, heads] sums of kept / seen over updates and prompts
for ex in exs:
    ids = tok(task.prompt(ex), return_tensors="pt")
    with memory(model, policy) as mem, torch.no_grad():
        mem.generate(**ids, max_new_tokens=task.max_new_tokens, do_sample=False)
    per = torch.stack([torch.stack([h["kept"][0].float() / h["seen"][0].float() for h in layer.history]).mean(0)
                       for layer in mem.last_cache.layers])  # [layers, heads]
    kept = per if kept is None else kept + per
kept = kept / len(exs)
score = score_task(model, tok, task, exs, policy)["score"]
print(json.dumps({"weights": a.weights, "context_tokens": a.context_tokens, "samples": a.samples, "seed": a.seed,
                  "kv_retrieval": round(score, 1), "kept_by_layer": [round(float(x), 3) for x in kept.mean(1)],
                  "kept_by_layer_head": [[round(float(x), 3) for x in row] for row in kept],
                  "mean": round(float(kept.mean()), 3)}))
