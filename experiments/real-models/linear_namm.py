"""Hand-set NAMMs on a real model: a threshold on the attention a token receives, as a starting point.

The NAMM's features hold, per token, the EMA of its attention spectrogram; the spectrogram's first bin is
the (Hann-windowed) attention the token got from recent queries. With BAM's attention path at zero the
score is linear in the features (``Scorer.linear``), so ``score = z_DC + r * recency(age) + c`` is a NAMM:
with the EMA's decay near 1 the DC bin is H2O's accumulated attention, nearer 0.99 it is the last ~100
queries' (SnapKV's window). This grid scores such NAMMs on the attention proxy (no model per member:
namm.replay.kept_mass over recorded train-split traces) beside H2O, TOVA, SnapKV and StreamingLLM at a
range of budgets, and saves, per EMA decay, the best one under ``--target`` of the cache, to be checked
on held-out files with the real model (proxy_check.py) and to start evolution from (evolution.init_from).

    python experiments/real-models/linear_namm.py --model smollm2-135m --samples 16 --out runs/linear-namm
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from namm import models, tasks
from namm.checkpoint import load_namm, save_namm
from namm.evaluation.text import example_trace
from namm.features import RunningStats, SpectralConfig
from namm.io import write_csv, write_json, write_text
from namm.policies import NAMM, make_policy
from namm.replay import kept_mass, scored_rows, token_states

DC = 8  # feature index of the spectrogram's first bin (after the 8 age-embedding features)
RECENCY = {"cos2": (6, 1.0), "sin3": (3, -1.0)}  # cos(age w_2): 1 -> 0 over ~350 tokens; -sin(age w_3): linear


def linear_states(traces, n_up: int, spectral: SpectralConfig, with_stats: bool = True):
    """Per trace the NAMM's spectrogram states (nothing evicted), and (``with_stats``) the normalisation
    ``(mean, var)`` they give (else ``None``)."""
    base = NAMM(n_up=n_up, spectral=spectral, mode="ragged")
    states, stats = [], RunningStats(spectral.n_freq)
    for meta, tensors, start in traces:
        st = token_states(base, meta, tensors, names=("ema",))
        if with_stats:
            kept_mass(NAMM(n_up=n_up, spectral=spectral, stats=stats), meta, tensors, start, rows=1, states=st)
        states.append(st)
    return states, stats.result() if with_stats else None


def proxy(params: torch.Tensor, traces, states, n_up: int, spectral, norm,
          cap: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mass [M], cache_fraction [M])`` of the NAMMs ``params [M, P]`` averaged over ``traces``; with ``cap``
    each NAMM also keeps at most that fraction of the tokens seen per head (top-k of its scores)."""
    pol = NAMM(params=params, mean=norm[0], var=norm[1], n_up=n_up, spectral=spectral, mode="ragged", budget=cap)
    masses, fracs = [], []
    for (meta, tensors, start), st in zip(traces, states):
        m, f = kept_mass(pol, meta, scored_rows(meta, tensors, start), start, rows=params.shape[0], states=st)
        masses.append(m)
        fracs.append(f)
    return torch.stack(masses).mean(0), torch.stack(fracs).mean(0)


def evolve_linear(a, traces, start: dict, out: Path) -> list[dict]:
    """CMA-ES over ``[w (25), bias]`` of a linear NAMM (fitness: proxy x100 minus ``penalty`` per unit of cache
    above ``target``), from ``start``'s weights; saves the best mean as ``namm-linear-cma.safetensors``."""
    import cma

    pol0 = load_namm(start["file"])
    spectral, net, cap = pol0.spectral, pol0.net, pol0.budget  # a ranked start stays ranked under its cap
    named = net.unflatten(pol0.params)
    if pol0.scorer != "bam" or not torch.equal(net.linear(named["w_s"].reshape(-1), float(named["b_s"])), pol0.params):
        raise SystemExit(f"--start {start['file']}: not a linear BAM NAMM (as this script writes); start from one")
    sub = traces[: a.cma_traces]
    norm = (pol0.mean, pol0.var)  # the start's normalisation stays frozen
    states, _ = linear_states(sub, a.n_up, spectral, with_stats=False)
    x0 = torch.cat([named["w_s"].reshape(-1), named["b_s"]]).double().numpy()
    es = cma.CMAEvolutionStrategy(x0, 0.1, {"popsize": a.popsize, "seed": 1, "verbose": -9})

    def full(x) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        return net.linear(x[:-1], float(x[-1]))

    log = []
    for g in tqdm(range(a.cma), desc="cma"):
        xs = es.ask()
        mass, frac = proxy(torch.stack([full(x) for x in xs]), sub, states, a.n_up, spectral, norm, cap)
        fit = 100 * mass - a.penalty * (frac - a.target).clamp_min(0)
        es.tell(xs, (-fit).tolist())
        j = int(fit.argmax())
        log.append({"generation": g, "best": float(fit[j]), "best_proxy": 100 * float(mass[j]),
                    "best_cache": float(frac[j]), "mean_fitness": float(fit.mean())})
    write_csv(out / "cma.csv", log, list(log[0]))
    best = full(es.mean)
    path = save_namm(out / "namm-linear-cma.safetensors",
                     NAMM(params=best, mean=norm[0], var=norm[1], n_up=a.n_up, spectral=spectral, mode="ragged",
                          budget=cap),
                     info={"recipe": "linear NAMM, CMA-ES on the attention proxy (linear_namm.py --cma)",
                           "generations": a.cma, "traces": a.cma_traces, "target": a.target, "penalty": a.penalty})
    # the evolved mean on every trace (the held-back ones included), beside the grid's rows
    states, _ = linear_states(traces, a.n_up, spectral, with_stats=False)
    mass, frac = proxy(best[None], traces, states, a.n_up, spectral, norm, cap)
    print(f"cma mean: proxy {100 * float(mass[0]):.2f} at {float(frac[0]):.3f} -> {path}")
    return [{"policy": "linear-namm cma", "ema": spectral.ema, "proxy": 100 * float(mass[0]),
             "cache_fraction": float(frac[0])}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train", help="corpus split of the prompts (train: never evaluated)")
    ap.add_argument("--context-tokens", type=int, default=512)
    ap.add_argument("--n-up", type=int, default=128)
    ap.add_argument("--emas", default="0.99,0.999")
    ap.add_argument("--recency", default="cos2,sin3")
    ap.add_argument("--r", default="0,0.5,1,2,4")
    ap.add_argument("--c", default="-0.2,-0.1,0,0.1,0.2,0.3,0.4,0.6")
    ap.add_argument("--budgets", default="0.3,0.35,0.4,0.45,0.5,0.6")
    ap.add_argument("--target", type=float, default=0.45)
    ap.add_argument("--cap", type=float, default=None, help="rank instead of threshold: every NAMM keeps at most "
                    "this fraction of the tokens seen per head, its top scores (set --c high so the threshold "
                    "never binds, e.g. --c 10)")
    ap.add_argument("--cma", type=int, default=0, help="then this many CMA-ES generations over the linear weights "
                    "(25 + bias), from --start or the grid's saved NAMM of the largest EMA, on the first "
                    "--cma-traces traces")
    ap.add_argument("--cma-traces", type=int, default=8)
    ap.add_argument("--start", help="a linear NAMM file to start --cma from (skips the grid and the baselines)")
    ap.add_argument("--popsize", type=int, default=12)
    ap.add_argument("--penalty", type=float, default=50.0, help="proxy points lost per unit of cache above --target")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = models.load(a.model, "lm", device="cpu", dtype=torch.float32)
    task = tasks.make("lm_continuation")
    exs = task.examples(tok, a.samples, seed=a.seed, context_tokens=a.context_tokens, split=a.split)
    traces = [example_trace(model, tok, task, ex, a.n_up) for ex in tqdm(exs, desc="traces")]

    rows: list[dict] = []
    todo = [] if a.start else list(itertools.product(["h2o", "tova", "snapkv", "streamingllm"],
                                                    [float(x) for x in a.budgets.split(",")]))
    for name, b in tqdm(todo, desc="baselines"):
        kw = {"window": min(32, a.n_up)} if name == "snapkv" else {}
        pol = make_policy(name, n_up=a.n_up, budget=b, **kw)
        res = [kept_mass(pol, m, t, s) for m, t, s in traces]
        rows.append({"policy": name, "budget": b, "proxy": 100 * float(np.mean([float(x[0][0]) for x in res])),
                     "cache_fraction": float(np.mean([float(x[1][0]) for x in res]))})

    grid = [(kind, float(r), float(c)) for kind in a.recency.split(",") for r in a.r.split(",")
            for c in a.c.split(",")]
    saved = {0.0: {"file": a.start}} if a.start else {}
    for ema in [] if a.start else [float(e) for e in a.emas.split(",")]:
        spectral = SpectralConfig(ema=ema)
        states, (mean, var) = linear_states(traces, a.n_up, spectral)
        net = NAMM(n_up=a.n_up, spectral=spectral).net
        params = []
        for kind, r, c in grid:
            w = torch.zeros(spectral.feature_dim)
            w[DC] = 1.0
            i, sign = RECENCY[kind]
            w[i] = sign * r
            params.append(net.linear(w, c))
        mass, frac = proxy(torch.stack(params), traces, states, a.n_up, spectral, (mean, var), a.cap)
        best = None
        for j, (kind, r, c) in enumerate(grid):
            row = {"policy": f"linear-namm ema {ema}", "ema": ema, "recency": kind, "r": r, "c": c,
                   "proxy": 100 * float(mass[j]), "cache_fraction": float(frac[j])}
            rows.append(row)
            if row["cache_fraction"] <= a.target and (best is None or row["proxy"] > best[1]["proxy"]):
                best = (j, row)
        if best is not None:
            j, row = best
            path = save_namm(out / f"namm-ema{ema:g}.safetensors",
                             NAMM(params=params[j], mean=mean, var=var, n_up=a.n_up, spectral=spectral, mode="ragged",
                                  budget=a.cap),
                             info={"recipe": f"linear {'ranking under a cap' if a.cap else 'threshold'} "
                                             "(experiments/real-models/linear_namm.py)", **row, "cap": a.cap,
                                   "model": a.model, "samples": a.samples, "split": a.split})
            saved[ema] = {"file": str(path), **row}

    if a.cma and saved:
        rows += evolve_linear(a, traces, saved[max(saved)], out)
    keys = ["policy", "budget", "ema", "recency", "r", "c", "proxy", "cache_fraction"]
    write_csv(out / "grid.csv", [{k: r.get(k, "") for k in keys} for r in rows], keys)
    write_json(out / "grid.json", {"args": vars(a), "rows": rows, "saved": saved})
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    for name in ["h2o", "tova", "snapkv", "streamingllm"]:
        pts = sorted((r["cache_fraction"], r["proxy"]) for r in rows if r["policy"] == name)
        ax.plot(*zip(*pts), marker="o", label=name)
    for ema in sorted({r["ema"] for r in rows if "ema" in r}):
        pts = [(r["cache_fraction"], r["proxy"]) for r in rows if r.get("ema") == ema]
        ax.scatter(*zip(*pts), s=10, alpha=0.6, label=f"linear NAMM, ema {ema}")
    ax.set_xlabel("cache fraction")
    ax.set_ylabel("proxy: kept attention x100")
    ax.set_xlim(0.2, 0.8)
    ax.legend()
    ax.set_title(f"{a.model}: {a.samples} {a.split} traces, {a.context_tokens} tokens, n_up {a.n_up}")
    fig.savefig(out / "grid.png", dpi=120, bbox_inches="tight")
    lines = [f"# Linear NAMMs vs hand-made policies on the attention proxy ({a.model}, {a.samples} {a.split} "
             f"traces, {a.context_tokens} tokens, n_up {a.n_up})", "", "| policy | budget | proxy | cache |",
             "|---|---|---|---|"]
    lines += [f"| {r['policy']} | {r['budget']} | {r['proxy']:.2f} | {r['cache_fraction']:.3f} |"
              for r in rows if "budget" in r]
    lines += ["", "Best linear NAMM under the target per EMA:", ""]
    lines += [f"- ema {e}: {s['recency']} r={s['r']} c={s['c']}: proxy {s['proxy']:.2f} at {s['cache_fraction']:.3f}"
              f" -> {s['file']}" for e, s in saved.items() if "recency" in s]  # (not a --start file)
    lines += [f"- {r['policy']}: proxy {r['proxy']:.2f} at {r['cache_fraction']:.3f}" for r in rows
              if r["policy"] == "linear-namm cma"]
    write_text(out / "grid.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
