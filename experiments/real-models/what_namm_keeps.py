"""What a policy keeps on a real model: per managed layer, the kept share and whether the attention sinks
(the first tokens) survive, on held-out lm_continuation files, next to the per-file NLL.

    python experiments/real-models/what_namm_keeps.py --model smollm2-135m --policy namm --out runs/keeps
    python experiments/real-models/what_namm_keeps.py --model gemma3-270m --policy h2o --budget 0.5 ...

One file at a time (batch 1), the memory running exactly as in evaluation (updates every n_up tokens,
inside the target too), so the NLL equals the evaluation's for that file. Writes OUT/keeps.json (per
layer: kept share over updates, share of KV heads holding position 0, share of the first 4 positions
kept, at the end of the sequence) and OUT/keeps.png.
"""
import argparse
import json
from pathlib import Path

import torch

from namm import models
from namm.checkpoint import resolve_policy
from namm.evaluation.text import prompt_ids, task_examples
from namm.memory import memory
from namm.plots import save_bars
from namm.tasks import make

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="smollm2-135m")
ap.add_argument("--policy", default="namm")
ap.add_argument("--budget", type=float, default=None)
ap.add_argument("--context-tokens", type=int, default=2048)
ap.add_argument("--samples", type=int, default=8)
ap.add_argument("--seed", type=int, default=3000)
ap.add_argument("--sinks", type=int, default=4, help="how many first positions count as attention sinks")
ap.add_argument("--out", required=True)
a = ap.parse_args()

model, tok = models.load(a.model)
policy = resolve_policy(a.policy, **({} if a.budget is None else {"budget": a.budget}))
task = make("lm_continuation")
positions = model.config.get_text_config(decoder=True).max_position_embeddings
exs = task_examples(tok, "lm_continuation", a.samples, a.seed, a.context_tokens)
layers: dict[int, dict[str, list[float]]] = {}
nll: list[float] = []
with torch.no_grad():
    for ex in exs:
        target = tok(task.target(ex), add_special_tokens=False)["input_ids"]
        prompt = prompt_ids(tok, task, ex, positions - len(target))
        k = len(target)
        ids = torch.tensor([prompt + target], device=model.device)
        with memory(model, policy) as mem:  # as in evaluation: updates every n_up tokens, inside the target too
            logits = mem.forward(input_ids=ids, logits_to_keep=k + 1).logits[0, :-1].float()
        nll.append(-float(logits.log_softmax(-1).gather(-1, ids[0, -k:, None]).mean()))
        for layer in mem.last_cache.memory_layers:
            if not layer.managed:
                continue
            live = layer.valid[0] & (layer.pos[0] >= 0)  # [H, N]
            first = [(live & (layer.pos[0] == p)).any(-1).float() for p in range(a.sinks)]  # a.sinks x [H]
            kept = torch.stack([h["kept"][0].float() / h["seen"][0].float() for h in layer.history]).mean()
            d = layers.setdefault(layer.layer_idx, {"kept": [], "pos0": [], "sinks": []})
            d["kept"].append(float(kept))
            d["pos0"].append(float(first[0].mean()))
            d["sinks"].append(float(torch.stack(first).mean()))

mean = {i: {k: round(sum(v) / len(v), 3) for k, v in d.items()} for i, d in sorted(layers.items())}
doc = {"model": a.model, "policy": policy.describe(), "context_tokens": a.context_tokens, "samples": len(exs),
       "seed": a.seed, "nll": round(sum(nll) / len(nll), 4), "nll_per_file": [round(x, 4) for x in nll],
       "kept_mean": round(sum(m["kept"] for m in mean.values()) / len(mean), 3), "layers": mean}
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
(out / "keeps.json").write_text(json.dumps(doc, indent=1) + "\n")
save_bars(out / "keeps.png", [f"{i}" for i in mean], {"kept share": [m["kept"] for m in mean.values()],
          f"first {a.sinks} positions kept": [m["sinks"] for m in mean.values()]},
          title=f"{a.model}, {policy.describe()}: per managed layer", xlabel="layer")
print(json.dumps({k: v for k, v in doc.items() if k != "layers"}))
for i, m in mean.items():
    print(f"layer {i:2d}  kept {m['kept']:.3f}  pos0 kept in {m['pos0']:.2f} of heads  "
          f"first-{a.sinks} kept {m['sinks']:.2f}")
