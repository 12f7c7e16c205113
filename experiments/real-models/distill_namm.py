"""Fit a NAMM's MLP scorer to what later queries attend to: a dense, model-free start for evolution.

The attention proxy (``namm.replay.kept_mass``) scores a NAMM by the full cache's attention its evictions
take from the scored queries (a continuation, an answer). Its per-token version is a target any scorer can
be fitted to: for every (trace, update, layer, head), the share of the scored queries' attention each token
in view will receive. A listwise loss (cross-entropy between that share and the softmax of the scores)
fits the NAMM's ``mlp`` scorer (25 features -> 32 ReLU -> 1, ``namm.scorer.MLP``) to rank tokens by it,
from the NAMM's own features only (age embedding + spectrogram EMA), i.e. without seeing the question. The
fitted NAMM keeps its top ``--cap`` per head and is saved with the shipped NAMM's feature settings.

Train traces come from the corpus' train split; every task family not in ``--tasks`` is held out. The
same proxy then scores the fit, the shipped NAMM and the hand-made policies on fresh traces (``--val-seed``)
of the training tasks and of ``--held-out`` tasks, before any real-model check.

    python experiments/real-models/distill_namm.py --samples 16 --out runs/distill-namm
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from namm import models, tasks
from namm.checkpoint import load_namm, save_namm
from namm.evaluation.text import example_trace
from namm.features import age_embedding, normalise
from namm.io import write_csv, write_json, write_text
from namm.policies import NAMM, make_policy
from namm.replay import kept_mass, scored_rows, token_states
from namm.scorer import MLP


def traces_for(model, tok, task_id: str, n: int, seed: int, context_tokens: int, n_up: int) -> list:
    """``[(meta, tensors, score_from)]``: full-cache traces of prompt + gold target (continuation or answer)."""
    task = tasks.make(task_id)
    return [example_trace(model, tok, task, ex, n_up)
            for ex in task.examples(tok, n, seed=seed, context_tokens=context_tokens, split="train")]


def groups(trace, base: NAMM) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per (update, layer) before the last scored block: ``(features [H, T, 25] fp16, share [H, T])``, the
    share of the scored queries' (full-cache) attention each of the ``T`` tokens seen so far will receive."""
    meta, tensors, start = trace
    n_up, length = meta["n_up"], meta["length"]
    first = start // n_up
    st = token_states(base, meta, tensors, names=("ema",))
    out = []
    for l in range(meta["num_layers"]):
        later = torch.zeros(meta["num_heads"], length)  # attention each position gets from the scored rows
        for u in range(first, meta["num_updates"]):
            a = tensors[f"attn.{u}.{l}"][0].float()  # [H, n_up, (u+1) n_up]
            qp = u * n_up + torch.arange(n_up)
            rows = (qp >= start) & (qp < length)
            cols = min(a.shape[-1], length)
            later[:, :cols] += a[:, rows, :cols].sum(1)
        for u in range(first):  # the updates before the first scored query: their evictions cost every row
            ema = st[u, l]["ema"][0]  # [H, T, n_freq]
            t = ema.shape[1]
            age = ((u + 1) * n_up - 1 - torch.arange(t)).clamp_min(0)
            f = torch.cat([age_embedding(age, base.spectral)[None].expand(ema.shape[0], -1, -1),
                           normalise(ema, base.mean, base.var)], -1)
            share = later[:, :t] / later[:, :t].sum(-1, keepdim=True).clamp_min(1e-9)
            out.append((f.half(), share))
    return out


def fit(data: list, hidden: int, steps: int, lr: float, seed: int) -> tuple[torch.nn.Module, list[dict]]:
    """Listwise fit of ``25 -> hidden -> 1`` (ReLU) over ``data`` groups; returns the net and a loss log."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(data[0][0].shape[-1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr)
    log = []
    g = torch.Generator().manual_seed(seed)
    for step in tqdm(range(steps), desc="fit"):
        loss = 0.0
        for i in torch.randint(0, len(data), (16,), generator=g).tolist():
            f, share = data[i]
            s = net(f.float()).squeeze(-1)  # [H, T]
            loss = loss - (share * torch.log_softmax(s, -1)).sum(-1).mean()
        loss = loss / 16
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log.append({"step": step, "loss": loss.item()})
    return net, log


def to_namm(net: torch.nn.Module, base: NAMM, cap: float, data: list) -> NAMM:
    """The fitted net as a ranking NAMM (``mlp`` scorer, top ``cap`` per head), shifted so that every score
    on the training tokens is positive (the threshold never binds; ranking is shift-free)."""
    lo = min(float(net(f.float()).min()) for f, _ in data[:: max(1, len(data) // 200)])
    named = {"w_1": net[0].weight.detach().T.contiguous(), "b_1": net[0].bias.detach(),
             "w_2": net[2].weight.detach().T.contiguous(), "b_2": net[2].bias.detach() + max(0.0, 1.0 - lo) + 9.0}
    scorer = MLP(feature_dim=net[0].in_features, hidden=net[0].out_features)
    return NAMM(params=scorer.flatten(named), mean=base.mean, var=base.var, scorer="mlp",
                hidden=net[0].out_features, n_up=base.n_up, spectral=base.spectral, mode="ragged", budget=cap)


def proxy_rows(policies: dict, traces: dict, n_up: int) -> list[dict]:
    """Kept attention x100 and cache fraction of each policy on each task's traces (NAMMs with the same
    spectral settings share one state pass per trace)."""
    rows = []
    for task_id, trs in traces.items():
        states: dict = {}  # (trace, spectral) -> token_states
        for name, pol in policies.items():
            m, f = [], []
            for i, (meta, tensors, start) in enumerate(trs):
                if isinstance(pol, NAMM):
                    if (i, pol.spectral) not in states:
                        base = NAMM(n_up=n_up, spectral=pol.spectral, mode="ragged")
                        states[i, pol.spectral] = token_states(base, meta, tensors, names=("ema",))
                    r = kept_mass(pol, meta, scored_rows(meta, tensors, start), start, states=states[i, pol.spectral])
                else:
                    r = kept_mass(pol, meta, tensors, start)
                m.append(float(r[0][0]))
                f.append(float(r[1][0]))
            rows.append({"task": task_id, "policy": name, "proxy": 100 * float(np.mean(m)),
                         "cache_fraction": float(np.mean(f)), "n": len(trs)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", default="lm_continuation,ruler_vt,ruler_qa", help="families fitted on")
    ap.add_argument("--held-out", default="ruler_niah_single,ruler_niah_multikey", help="proxy-checked only")
    ap.add_argument("--samples", type=int, default=16, help="train traces per task")
    ap.add_argument("--val-samples", type=int, default=8, help="proxy-check traces per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-seed", type=int, default=1)
    ap.add_argument("--context-tokens", type=int, default=1024)
    ap.add_argument("--base", default="namm/weights/namm.safetensors", help="NAMM whose features are used")
    ap.add_argument("--cap", type=float, default=0.25)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model, tok = models.load(a.model, "lm", device="cpu", dtype=torch.float32)
    ship = load_namm(a.base)
    base = NAMM(n_up=ship.n_up, spectral=ship.spectral, mean=ship.mean, var=ship.var, mode="ragged")
    data = []
    for task_id in a.tasks.split(","):
        for tr in tqdm(traces_for(model, tok, task_id, a.samples, a.seed, a.context_tokens, base.n_up),
                       desc=f"groups {task_id}"):
            data += groups(tr, base)
    net, log = fit(data, a.hidden, a.steps, a.lr, a.seed)
    pol = to_namm(net, base, a.cap, data)
    del data
    path = save_namm(out / "namm-distilled.safetensors", pol,
                     info={"recipe": "mlp scorer fitted listwise to later queries' attention "
                                     "(experiments/real-models/distill_namm.py)", "tasks": a.tasks,
                           "samples": a.samples, "seed": a.seed, "cap": a.cap, "steps": a.steps, "model": a.model})
    val = {t: traces_for(model, tok, t, a.val_samples, a.val_seed, a.context_tokens, base.n_up)
           for t in a.tasks.split(",") + a.held_out.split(",")}
    cmp = {"distilled": pol, "shipped": ship}
    cmp.update({n: make_policy(n, n_up=base.n_up, budget=a.cap) for n in ("h2o", "tova", "streamingllm")})
    rows = proxy_rows(cmp, val, base.n_up)
    write_csv(out / "fit.csv", log, ["step", "loss"])
    write_csv(out / "proxy.csv", rows, list(rows[0]))
    write_json(out / "distill.json", {"args": vars(a), "fit": log, "proxy": rows, "file": str(path),
                                      "minutes": (time.time() - t0) / 60})
    lines = [f"# Distilled NAMM vs the shipped one and hand-made policies on the attention proxy ({a.model}, "
             f"{a.val_samples} train-split traces per task, seed {a.val_seed}, {a.context_tokens} tokens, cap {a.cap})",
             "", "| task | " + " | ".join(cmp) + " |", "|---|" + "---|" * len(cmp)]
    for task_id in val:
        by = {r["policy"]: r for r in rows if r["task"] == task_id}
        held = " (held out)" if task_id in a.held_out.split(",") else ""
        lines.append(f"| {task_id}{held} | " + " | ".join(f"{by[n]['proxy']:.2f} @ {by[n]['cache_fraction']:.2f}"
                                                          for n in cmp) + " |")
    lines += ["", f"{(time.time() - t0) / 60:.1f} min on {a.model}; weights: {path}"]
    write_text(out / "proxy.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
