"""``namm heads``: rank a model's (layer, KV head)s by the evidence attention of retrieval answers (the
calibration ``namm eval|table --whole-heads F --heads RUN/heads.json`` reads)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_heads(a: argparse.Namespace) -> None:
    import torch

    from namm import models, tasks
    from namm.evaluation.heads import rank_heads
    from namm.evaluation.text import check_context
    from namm.io import write_csv, write_json
    from namm.plots import save_heatmap

    names = tasks.expand(a.tasks)  # unknown ids are refused before the model loads
    model, tok = models.load(a.model, "lm", device=a.device, dtype=torch.float32)
    check_context(model, a.context_tokens, 256)
    rows = rank_heads(model, tok, names, a.samples, a.seed, a.context_tokens, a.n_up)
    out = Path(a.out)
    config = {k: str(v) for k, v in vars(a).items() if k in ("model", "tasks", "samples", "seed", "context_tokens",
                                                              "n_up", "out")}
    write_json(out / "heads.json", {"config": config, "heads": rows})
    write_csv(out / "heads.csv", rows, list(rows[0]))
    layers = sorted({r["layer"] for r in rows})
    grid = [[0.0] * (1 + max(r["head"] for r in rows)) for _ in layers]
    for r in rows:
        grid[layers.index(r["layer"])][r["head"]] = r["score"]
    save_heatmap(grid, out / "heads.png", f"{a.model}: evidence attention per head (rows: layers {layers[0]}..{layers[-1]})",
                 "KV head", "managed layer (row)", "answer queries' attention on the evidence")
    for r in rows[:10]:
        print(f"L{r['layer']:2d} h{r['head']}  {r['score']:.3f}  " + "  ".join(f"{t}={r[t]:.3f}" for t in names))
    print(f"-> {out / 'heads.json'} (namm eval|table --whole-heads F --heads {out / 'heads.json'})")


def add(sub) -> None:
    p = sub.add_parser("heads", help="rank a model's retrieval heads (for --whole-heads): full cache, train-split tasks")
    p.add_argument("--model", default="smollm2-135m", help="a model name (namm models list), a local folder or a hub id")
    p.add_argument("--tasks", default="ruler_niah_multikey,ruler_vt",
                   help="retrieval families to calibrate on (train split; keep your held-out family out)")
    p.add_argument("--samples", type=int, default=16, help="instances per task")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--context-tokens", type=int, default=1024)
    p.add_argument("--n-up", type=int, default=128, help="trace block size (does not change the scores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=run_heads)
