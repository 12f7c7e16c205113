"""Which KV head's eviction costs the shipped NAMM its accuracy? The shipped NAMM with ONE (layer, head)
kept whole, for each of the five heads it keeps least of, on the 128 validation instances per task of
this folder (seed 500, 2k tokens, kv_retrieval + qa_f1; 5-10 min per head on 2 cores, 30 in all). A probe: forcing
a head raises the cache above 0.5.

    python results/lm-zoo-val128-2026-11-26/force_head.py OUT [L.H ...]   # default: 0.0 0.1 1.0 2.1 3.1
    namm compare results/lm-zoo-val128-2026-11-26/eval/namm OUT/force_2.1   # paired with the shipped NAMM

Each OUT/force_L.H is a `namm eval`-style folder (results.json, predictions.jsonl).
"""
import copy
import sys
from pathlib import Path

from namm.checkpoint import resolve_policy
from namm.evaluate import example_records, load_model, score_task, write_results, zoo_examples


def forced(base, heads):
    """``base`` (a NAMM) with the given (layer, kv head) pairs never evicted."""
    class Forced(type(base)):
        def select(self, layer, view):
            keep = super().select(layer, view)  # [B, H, N]; True = not evicted (tokens out of view too)
            for l, h in heads:
                if layer.layer_idx == l:
                    keep[:, h] = True
            return keep
    policy = copy.copy(base)  # the loaded NAMM as it is, only its class swapped
    object.__setattr__(policy, "__class__", Forced)
    return policy  # the twin of head_split/head_split_2k.py's namm_force, which cannot be imported (it runs on import)


out = Path(sys.argv[1])
specs = sys.argv[2:] or ["0.0", "0.1", "1.0", "2.1", "3.1"]
model, tok = load_model("zoo")
tasks = ("kv_retrieval", "qa_f1")
exs = {t: zoo_examples(tok, t, 128, seed=500, context_tokens=2048) for t in tasks}
for spec in specs:
    l, h = map(int, spec.split("."))
    pol = forced(resolve_policy("namm"), ((l, h),))
    res = {"policy": f"namm + layer {l} head {h} whole", "tasks": {}, "predictions": []}
    for t in tasks:
        r = score_task(model, tok, t, exs[t], policy=pol, batch_size=4)
        res["tasks"][t] = {"score": r["score"], "mean_cache_fraction": r["mean_cache_fraction"], "n": r["n"]}
        res["predictions"] += example_records(t, exs[t], r)
    res["mean_score"] = sum(v["score"] for v in res["tasks"].values()) / len(tasks)
    res["mean_cache_fraction"] = sum(v["mean_cache_fraction"] for v in res["tasks"].values()) / len(tasks)
    write_results(out / f"force_{spec}", res)
    print(spec, {t: (round(v["score"], 1), round(v["mean_cache_fraction"], 3)) for t, v in res["tasks"].items()},
          flush=True)
