"""Head-level probes at 2k tokens, validation seed 500, 16 instances of kv_retrieval and qa_f1 (~30 s per probe):
the whole cache in some heads, and recency at a budget (or the unshifted generation-75 NAMM) in the rest.

    python results/lm-zoo-heldout64-2026-11-26/head_split/head_split_2k.py rec0.33+L3full namm+3.1full ...

Printed JSON lines; head_split_2k.json holds the run of 2026-11-26 (full cache on the same instances:
kv 81.2, qa 99.5). A probe, not a policy."""
import dataclasses
import json
import sys
from dataclasses import dataclass
from typing import ClassVar

from namm.checkpoint import load_namm
from namm.evaluate import load_model, score_task, zoo_examples
from namm.policies.recency import Recency


@dataclass(frozen=True)
class HeadSplit(Recency):
    full_heads: tuple = ()
    name: ClassVar[str] = "head_split"
    def select(self, layer, view):
        keep = super().select(layer, view)
        for l, h in self.full_heads:
            if layer.layer_idx == l:
                keep[:, h] = True
        return keep


def namm_force(path, full_heads):
    base = load_namm(path)
    cls = type(base)
    class Forced(cls):
        def select(self, layer, view):
            keep = super().select(layer, view)
            for l, h in full_heads:
                if layer.layer_idx == l:
                    keep[:, h] = True
            return keep
    return Forced(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init})


model, tok = load_model("zoo")
tasks = ("kv_retrieval", "qa_f1")
exs = {t: zoo_examples(tok, t, 16, seed=500, context_tokens=2048) for t in tasks}
W = "results/lm-zoo-stage3b-2026-11-26/evolve/namm.safetensors"
probes = {
  "rec0.33+L3full": HeadSplit(n_up=128, budget=0.33, full_heads=((3,0),(3,1))),
  "rec0.4+3.0full": HeadSplit(n_up=128, budget=0.4, full_heads=((3,0),)),
  "rec0.4+3.1full": HeadSplit(n_up=128, budget=0.4, full_heads=((3,1),)),
  "namm+3.1full": namm_force(W, ((3,1),)),
  "namm+3.0full": namm_force(W, ((3,0),)),
}
for name in sys.argv[1:]:
    pol = probes[name]
    for t in tasks:
        r = score_task(model, tok, t, exs[t], policy=pol, batch_size=4)
        print(json.dumps({"probe": name, "task": t, "score": round(r["score"], 1), "cache": round(r["mean_cache_fraction"], 3)}), flush=True)
