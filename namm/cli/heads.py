"""``namm heads``: rank a model's (layer, KV head)s by the evidence attention of retrieval answers, or
(``--by loss``) by the attention a policy's evictions take from them (the calibration ``namm eval|table
--whole-heads F --heads RUN/heads.json`` reads)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TASKS = {"evidence": "ruler_niah_multikey,ruler_vt", "loss": "lm_continuation,ruler_niah_multikey,ruler_vt"}


def run_heads(a: argparse.Namespace) -> None:
    import torch

    from namm import models, tasks
    from namm.checkpoint import resolve_policy
    from namm.evaluation.heads import rank_heads
    from namm.evaluation.text import check_context
    from namm.io import write_csv, write_json
    from namm.plots import save_heatmap

    names = tasks.expand(a.tasks or DEFAULT_TASKS[a.by])  # unknown ids are refused before the model loads
    policy = resolve_policy(a.policy, n_up=a.n_up) if a.by == "loss" else None
    if policy is not None and not policy.evicts:
        raise ValueError(f"--by loss ranks heads by what a policy's evictions cost; {a.policy} evicts nothing: "
                         "pass --policy namm (or another evicting policy)")
    model, tok = models.load(a.model, "lm", device=a.device, dtype=torch.float32)
    check_context(model, a.context_tokens, 256)
    n_up = policy.n_up if policy else (a.n_up or 128)
    rows = rank_heads(model, tok, names, a.samples, a.seed, a.context_tokens, n_up, policy=policy)
    out = Path(a.out)
    config = {k: str(v) for k, v in vars(a).items() if k in ("model", "samples", "seed", "context_tokens", "by", "out")}
    config["tasks"] = ",".join(names)
    config["n_up"] = str(n_up)
    if policy is not None:
        config["policy"] = policy.describe()
    write_json(out / "heads.json", {"config": config, "heads": rows})
    write_csv(out / "heads.csv", rows, list(rows[0]))
    layers = sorted({r["layer"] for r in rows})
    grid = [[0.0] * (1 + max(r["head"] for r in rows)) for _ in layers]
    for r in rows:
        grid[layers.index(r["layer"])][r["head"]] = r["score"]
    what, label = (("attention its evictions take", "scored queries' attention on evicted tokens") if policy else
                   ("evidence attention", "answer queries' attention on the evidence"))
    save_heatmap(grid, out / "heads.png", f"{a.model}: {what} per head (rows: layers {layers[0]}..{layers[-1]})",
                 "KV head", "managed layer (row)", label)
    for r in rows[:10]:
        print(f"L{r['layer']:2d} h{r['head']}  {r['score']:.3f}  " + "  ".join(f"{t}={r[t]:.3f}" for t in names))
    print(f"-> {out / 'heads.json'} (namm eval|table --whole-heads F --heads {out / 'heads.json'})")


def add(sub) -> None:
    p = sub.add_parser("heads", help="rank a model's heads to keep whole (for --whole-heads): full cache, train-split tasks")
    p.add_argument("--model", default="smollm2-135m", help="a model name (namm models list), a local folder or a hub id")
    p.add_argument("--by", choices=sorted(DEFAULT_TASKS), default="evidence",
                   help="evidence: the attention retrieval answers put on their evidence; loss: the attention "
                        "--policy's evictions take from the scored queries")
    p.add_argument("--policy", default="namm", help="with --by loss: the policy inside the whole heads (its budget, n_up)")
    p.add_argument("--tasks", default=None,
                   help="families to calibrate on (train split; keep your held-out family out); default "
                        + "; ".join(f"{k}: {v}" for k, v in DEFAULT_TASKS.items()))
    p.add_argument("--samples", type=int, default=16, help="instances per task")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--context-tokens", type=int, default=1024)
    p.add_argument("--n-up", type=int, default=None,
                   help="trace block size (evidence: does not change the scores, default 128; loss: the policy's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=run_heads)
