"""Can a NAMM tell the zoo LM's last layer apart from its token features alone?

    python experiments/lm-zoo/feature_separation.py OUT.json   # ~2 CPU minutes

Records the 25 NAMM features (age embedding + normalised attention spectrogram) of every cached token at
every update (evolution instances: seed 0, 8 kv_retrieval prompts of 1k tokens, n_up 128, full cache),
then fits, on 3/4 of the tokens, a linear and a 32-unit MLP classifier (class-balanced) for "token sits in
layer 3" and for each (layer, KV head); reports true-positive and true-negative rates on the other 1/4.
The normalisation is namm-zoo's (results/lm-zoo-2026-11-26/feature_separation.json was measured
with the first zoo NAMM's, in git history). A per-token probe only: the BAM also pools over a head's tokens.
"""
import json
import sys
from pathlib import Path

import torch

from namm import models
from namm.checkpoint import resolve_policy
from namm.evaluation.text import score_task, task_examples
from namm.policies import NAMM

model, tok = models.load("zoo")
exs = task_examples(tok, "kv_retrieval", 8, seed=0, context_tokens=1024)
shipped = resolve_policy("namm-zoo")
rows = []


class Recorder(NAMM):
    def scores(self, view):
        x = self.features(view)
        for b in range(x.shape[0]):
            for h in range(x.shape[1]):
                rows.append((view.layer_idx, h, x[b, h][view.in_view[b, h]].clone()))
        return super().scores(view)


score_task(model, tok, "kv_retrieval", exs, policy=Recorder(params=torch.zeros_like(shipped.params),
           mean=shipped.mean, var=shipped.var, mode="ragged", n_up=128), progress=False)
X = torch.cat([x for *_, x in rows])
layer = torch.cat([torch.full((len(x),), l) for l, _, x in rows])
head = torch.cat([torch.full((len(x),), h) for _, h, x in rows])


def probe(y: torch.Tensor, hidden: int = 0) -> dict:
    torch.manual_seed(0)
    idx = torch.randperm(len(y))
    tr, te = idx[: len(y) * 3 // 4], idx[len(y) * 3 // 4 :]
    net = torch.nn.Sequential(torch.nn.Linear(25, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)) if hidden \
        else torch.nn.Linear(25, 1)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    pos = y[tr].float().mean()
    w = torch.where(y[tr], 0.5 / pos, 0.5 / (1 - pos))
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(X[tr]).squeeze(-1), y[tr].float(), weight=w).backward()
        opt.step()
    with torch.no_grad():
        p = net(X[te]).squeeze(-1) > 0
    return {"tpr": round(float(p[y[te]].float().mean()), 3), "tnr": round(float((~p[~y[te]]).float().mean()), 3)}


out = {"tokens": len(X), "layer3_vs_rest": {"linear": probe(layer == 3), "mlp32": probe(layer == 3, 32)},
       "layer_head_vs_rest_linear": {f"{l}.{h}": probe((layer == l) & (head == h)) for l in range(4) for h in range(2)}}
print(json.dumps(out, indent=1))
Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + "\n")
