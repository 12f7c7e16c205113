"""Where the zoo LM's memory matters: the whole cache in some layers, a recency window in the others.

    python results/lm-zoo-2026-11-26/layer_split.py   # ~3 CPU minutes; prints and writes layer_split.json

Held-out instances (seed 1000, 1k-token contexts, 16 per task), n_up 128. A hand-made probe, not a
shipped policy: it shows that a policy free to spend memory per layer can match the full cache at half
the memory, which a cap applied to every head alike (H2O, L2, StreamingLLM, recency) cannot.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from namm.evaluate import load_model, score_task, zoo_examples
from namm.policies.recency import Recency


@dataclass(frozen=True)
class LayerSplit(Recency):
    """Recency at ``budget`` in every layer except ``full_layers``, which keep everything."""

    full_layers: tuple[int, ...] = ()
    name: ClassVar[str] = "layer_split"

    def select(self, layer, view):
        if layer.layer_idx in self.full_layers:
            return torch.ones_like(view.in_view)
        return super().select(layer, view)


model, tok = load_model("zoo")
tasks = ("kv_retrieval", "qa_f1")
exs = {t: zoo_examples(tok, t, 16, seed=1000, context_tokens=1024) for t in tasks}
rows = []
for full, budget in [((), 0.5), ((0,), 0.33), ((1,), 0.33), ((2,), 0.33), ((3,), 0.33)]:
    pol = LayerSplit(n_up=128, budget=budget, full_layers=full)
    for t in tasks:
        r = score_task(model, tok, t, exs[t], policy=pol)
        rows.append({"full_layers": list(full), "other_layers_budget": budget, "task": t,
                     "score": round(r["score"], 1), "mean_cache_fraction": round(r["mean_cache_fraction"], 3)})
        print(rows[-1], flush=True)
Path(__file__).with_name("layer_split.json").write_text(json.dumps(rows, indent=1))
