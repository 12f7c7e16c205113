"""Where a NAMM spends its memory: kept / seen per layer and KV head, next to its kv_retrieval score.

    python results/lm-zoo-2026-11-26/per_layer.py WEIGHTS [--context-tokens 1024] [--samples 16] [--seed 1000]

Held-out kv_retrieval instances, one prompt at a time (greedy answers, the task's metric). The zoo LM
needs its last layer (3) whole to retrieve (layer_split.py): this shows whether a NAMM learned that.
"""
import argparse
import json

import torch

from namm import memory
from namm.checkpoint import load_namm
from namm.envs import metrics
from namm.envs.zoo_tasks import ZOO_TASKS, format_prompt
from namm.evaluate import load_model, task_metric, zoo_examples

ap = argparse.ArgumentParser()
ap.add_argument("weights")
ap.add_argument("--context-tokens", type=int, default=1024)
ap.add_argument("--samples", type=int, default=16)
ap.add_argument("--seed", type=int, default=1000)
a = ap.parse_args()
model, tok = load_model("zoo")
policy = load_namm(a.weights)
exs = zoo_examples(tok, "kv_retrieval", a.samples, a.seed, a.context_tokens)
kept = None  # [layers, heads] sums of kept / seen over updates and prompts
count, preds = 0, []
for ex in exs:
    ids = tok(format_prompt("kv_retrieval", ex), return_tensors="pt")
    with memory(model, policy) as mem, torch.no_grad():
        out = mem.generate(**ids, max_new_tokens=ZOO_TASKS["kv_retrieval"].max_new_tokens, do_sample=False)
    preds.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    per = torch.stack([torch.stack([h["kept"][0].float() / h["seen"][0].float() for h in layer.history]).mean(0)
                       for layer in mem.last_cache.layers])  # [layers, heads]
    kept = per if kept is None else kept + per
    count += 1
kept = kept / count
score = metrics.score(task_metric("kv_retrieval"), preds, [ex["answers"] for ex in exs])
res = {"weights": a.weights, "context_tokens": a.context_tokens, "samples": a.samples, "seed": a.seed,
       "kv_retrieval": round(score, 1), "kept_by_layer": [round(float(x), 3) for x in kept.mean(1)],
       "kept_by_layer_head": [[round(float(x), 3) for x in row] for row in kept], "mean": round(float(kept.mean()), 3)}
print(json.dumps(res))
