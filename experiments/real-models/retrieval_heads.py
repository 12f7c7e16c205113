"""Which (layer, KV head)s read the evidence when a real LM answers a retrieval question, with the full cache.

For each calibration instance (train-split haystacks; the families given, never the held-out one) the prompt and
its gold answer run teacher-forced through one full-cache pass (namm.drivers.trace.record). A head's score is the
attention the answer's queries put on the evidence's tokens (the needle's value, the chain's values), averaged over
query heads and instances. Writes ``heads.json`` (every head's score, best first) and ``heads.csv`` to ``--out``;
``namm eval|table --whole-heads F --heads OUT/heads.json`` uses it (the shipped ``namm/weights/heads-*.json`` are
these runs' files for smollm2-135m and gemma3-270m).

    python experiments/real-models/retrieval_heads.py --tasks ruler_niah_multikey,ruler_vt --samples 16 \\
        --out runs/retrieval-heads
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch
from tqdm import tqdm

from namm import models, tasks
from namm.adapters import adapter_for
from namm.drivers.trace import record


def evidence_spans(prompt: str, values: list[str]) -> list[tuple[int, int]]:
    """Character spans of each value's one occurrence in the prompt's context (the question may repeat a value,
    as ruler_vt's does: the first occurrence is the evidence)."""
    spans = []
    for v in values:
        i = prompt.find(v)
        if i >= 0:
            spans.append((i, i + len(v)))
    return spans


def head_scores(model, tok, task_id: str, n: int, seed: int, context_tokens: int, n_up: int) -> torch.Tensor:
    """``[L, H]`` mean attention of the answer's queries on the evidence tokens (one full-cache pass each)."""
    task = tasks.make(task_id)
    exs = task.examples(tok, n, seed=seed, context_tokens=context_tokens, split="train")
    total = None
    for ex in tqdm(exs, desc=task_id, leave=False):
        text = task.prompt(ex, tok)
        enc = tok(text, add_special_tokens=not task.chat_wrapped(tok), return_offsets_mapping=True)
        ids = enc["input_ids"]
        if len(ids) > context_tokens + 256:  # evaluation would middle-truncate it (prompt_ids): offsets would shift
            raise ValueError(f"{task_id}: the prompt was truncated; raise --context-tokens' limit")
        target = tok(" " + task.target(ex), add_special_tokens=False)["input_ids"]
        spans = evidence_spans(text, ex["answers"])
        ev = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if any(a < e and b > s for s, e in spans)]
        if not ev:
            continue
        meta, tens = record(model, ids + target, n_up=n_up, dtype=torch.float32)
        qs = range(len(ids) - 1, len(ids) + len(target) - 1)  # the queries that predict the answer's tokens
        per = torch.zeros(meta["num_layers"], meta["num_heads"])
        for q in qs:
            u, r = divmod(q, n_up)
            for layer in range(meta["num_layers"]):
                per[layer] += tens[f"attn.{u}.{layer}"][0, :, r, ev].sum(-1)
        per /= len(qs)
        total = per if total is None else total + per
    return total / len(exs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", default="ruler_niah_multikey,ruler_vt")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--context-tokens", type=int, default=1024)
    ap.add_argument("--n-up", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("runs/retrieval-heads"))
    a = ap.parse_args()
    model, tok = models.load(a.model, "lm", device="cpu", dtype=torch.float32)
    per_task = {t: head_scores(model, tok, t, a.samples, a.seed, a.context_tokens, a.n_up) for t in a.tasks.split(",")}
    mean = sum(per_task.values()) / len(per_task)
    # the trace numbers managed layers 0..; a policy's view names the model's layer (Gemma's full layers 5, 11, ..)
    managed = [i for i, w in enumerate(adapter_for(model).layer_windows(model)) if w is None]
    order = sorted(((float(mean[l, h]), l, h) for l in range(mean.shape[0]) for h in range(mean.shape[1])), reverse=True)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = [{"layer": managed[l], "head": h, "score": s, **{t: float(v[l, h]) for t, v in per_task.items()}}
            for s, l, h in order]
    (a.out / "heads.json").write_text(json.dumps({"config": {k: str(v) for k, v in vars(a).items()}, "heads": rows},
                                                 indent=1))
    with open(a.out / "heads.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows[:20]:
        print(f"L{r['layer']:2d} h{r['head']}  {r['score']:.3f}  " + "  ".join(f"{t}={r[t]:.3f}" for t in per_task))


if __name__ == "__main__":
    main()
