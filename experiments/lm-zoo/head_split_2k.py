"""Head-level probes at 2k tokens, validation seed 500, 16 instances of kv_retrieval and qa_f1 (~30 s per
probe): the whole cache in some heads, and recency at a budget (or the zoo-evolved NAMM, namm-zoo) in the rest.
Findings: results/lm-zoo-heldout64-2026-11-26/head_split_2k.json (full cache on the same instances:
kv 81.2, qa 99.5).

    python experiments/lm-zoo/head_split_2k.py rec0.33+L3full namm+3.1full ...   # one JSON line per probe and task
"""
import json
import sys

from namm import models
from namm.checkpoint import resolve_policy
from namm.evaluation.text import score_task, task_examples
from namm.policies import KeepWhole, Recency

model, tok = models.load("zoo")
tasks = ("kv_retrieval", "qa_f1")
exs = {t: task_examples(tok, t, 16, seed=500, context_tokens=2048) for t in tasks}
namm = resolve_policy("namm-zoo").shifted(-0.4)  # the generation-75 weights the probes used (namm-zoo = +0.4)
probes = {
    "rec0.33+L3full": KeepWhole(inner=Recency(n_up=128, budget=0.33), heads=((3, 0), (3, 1))),
    "rec0.4+3.0full": KeepWhole(inner=Recency(n_up=128, budget=0.4), heads=((3, 0),)),
    "rec0.4+3.1full": KeepWhole(inner=Recency(n_up=128, budget=0.4), heads=((3, 1),)),
    "namm+3.1full": KeepWhole(inner=namm, heads=((3, 1),)),
    "namm+3.0full": KeepWhole(inner=namm, heads=((3, 0),)),
}
for name in sys.argv[1:]:
    for t in tasks:
        r = score_task(model, tok, t, exs[t], policy=probes[name], batch_size=4)
        print(json.dumps({"probe": name, "task": t, "score": round(r["score"], 1),
                          "cache": round(r["mean_cache_fraction"], 3)}), flush=True)
