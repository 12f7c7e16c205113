"""Where the zoo LM's memory matters: the whole cache in some layers, a recency window in the others.
Held-out instances (seed 1000, 1k-token contexts, 16 per task), n_up 128; ~3 CPU minutes. A probe, not a
policy: a policy free to spend memory per layer matches the full cache at half the memory, which a cap
applied to every head alike cannot. Findings: results/lm-zoo-2026-11-26/layer_split.json.

    python experiments/lm-zoo/layer_split.py OUT.json
"""
import json
import sys
from pathlib import Path

from namm import models
from namm.evaluation.text import score_task, task_examples
from namm.policies import KeepWhole, Recency

model, tok = models.load("zoo")
tasks = ("kv_retrieval", "qa_f1")
exs = {t: task_examples(tok, t, 16, seed=1000, context_tokens=1024) for t in tasks}
rows = []
for full, budget in [((), 0.5), ((0,), 0.33), ((1,), 0.33), ((2,), 0.33), ((3,), 0.33)]:
    pol = KeepWhole(inner=Recency(n_up=128, budget=budget), layers=full)
    for t in tasks:
        r = score_task(model, tok, t, exs[t], policy=pol)
        rows.append({"full_layers": list(full), "other_layers_budget": budget, "task": t,
                     "score": round(r["score"], 1), "mean_cache_fraction": round(r["mean_cache_fraction"], 3)})
        print(rows[-1], flush=True)
Path(sys.argv[1]).write_text(json.dumps(rows, indent=1))
