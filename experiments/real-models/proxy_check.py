"""Does the attention proxy rank policies as the real model does? On the same held-out continuation
instances, every policy gets its proxy score (the attention mass its evictions leave to the target's
queries, replayed on the full cache's recorded attention: namm.replay.kept_mass) and its real score (the
target's NLL through the memory). Reports per policy both, and the rank agreement over policies (Spearman)
and over (policy, instance) pairs: the proxy fitness (namm/evolution/proxy.py) is trusted only as far as
these agree.

    python experiments/real-models/proxy_check.py --model smollm2-135m --samples 32 --out runs/proxy-check \
        [--namm runs/evolve-smollm2/namm.safetensors ...] [--no-shipped] [--baselines h2o,tova]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from namm import models, tasks
from namm.checkpoint import SHIPPED_NAMMS, load_namm
from namm.drivers.text import pad_id, token_logprobs
from namm.drivers.trace import record
from namm.evaluation.stats import paired_interval
from namm.evaluation.text import prompt_ids
from namm.io import write_csv, write_json, write_text
from namm.policies import FullCache, make_policy
from namm.replay import kept_mass

BASELINES = ("h2o", "l2", "streamingllm", "recency", "snapkv", "tova")


def paired(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b and its 95% bootstrap interval (instances resampled)."""
    return paired_interval(np.asarray(a) - np.asarray(b), seed=seed)


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seed", type=int, default=5000)
    ap.add_argument("--context-tokens", type=int, default=512)
    ap.add_argument("--n-up", type=int, default=64)
    ap.add_argument("--budgets", default="match",
                    help="budgets of the hand-made policies, comma-separated, or 'match': the real cache fraction "
                         "of the last --namm (of the zoo-evolved NAMM without one) on these instances")
    ap.add_argument("--namm", nargs="*", default=[], help="NAMM weights to check beside the zoo-evolved one")
    ap.add_argument("--no-shipped", action="store_true", help="leave the zoo-evolved NAMM (namm-zoo) out")
    ap.add_argument("--baselines", default=",".join(BASELINES), help="hand-made policies, comma-separated")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    model, tok = models.load(a.model, "lm", device="cpu", dtype=torch.float32)
    task = tasks.make("lm_continuation")
    exs = task.examples(tok, a.samples, seed=a.seed, context_tokens=a.context_tokens)
    pad = pad_id(tok)

    pols: dict[str, object] = {"full": FullCache(n_up=a.n_up)}
    zoo_namm = str(SHIPPED_NAMMS["namm-zoo"])
    for path in ([] if a.no_shipped else [zoo_namm]) + a.namm:
        pol = load_namm(path)
        label = "namm-zoo" if path == zoo_namm else f"namm:{Path(path).parent.name}"
        pols[label] = dataclasses.replace(pol, n_up=a.n_up)

    rows: list[dict] = []
    inputs = []
    for ex in tqdm(exs, desc="traces"):
        prompt = prompt_ids(tok, task, ex, 10**9)
        target = tok.encode(task.target(ex), add_special_tokens=False)
        inputs.append((ex["_id"], prompt, target, *record(model, prompt + target, n_up=a.n_up)))

    def run(names: list[str]) -> None:
        for name in names:
            pol = pols[name]
            for uid, prompt, target, meta, tensors in tqdm(inputs, desc=name):
                mass, pfrac = kept_mass(pol, meta, tensors, score_from=len(prompt))
                lps, fr = token_logprobs(model, pol, [prompt], [target], pad)
                rows.append({"_id": uid, "policy": name, "proxy": 100 * float(mass[0]), "proxy_cache": float(pfrac[0]),
                             "nll": -float(lps[0].mean()), "cache_fraction": fr[0]})

    run(list(pols))  # the full cache and the NAMMs first: their cache fraction sets the baselines' budget
    last = list(pols)[-1]
    budgets = [round(float(np.mean([r["cache_fraction"] for r in rows if r["policy"] == last])), 3)] \
        if a.budgets == "match" else [float(b) for b in a.budgets.split(",")]
    names = []
    for b in budgets:
        for name in a.baselines.split(","):
            kw = {"window": min(32, a.n_up)} if name == "snapkv" else {}
            pols[f"{name}@{b:g}"] = make_policy(name, n_up=a.n_up, budget=b, **kw)
            names.append(f"{name}@{b:g}")
    run(names)
    full = {r["_id"]: r["nll"] for r in rows if r["policy"] == "full"}
    for r in rows:
        r["nll_cost"] = r["nll"] - full[r["_id"]]
    summary = []
    for name in pols:
        mine = [r for r in rows if r["policy"] == name]
        summary.append({"policy": name, "proxy": float(np.mean([r["proxy"] for r in mine])),
                        "nll": float(np.mean([r["nll"] for r in mine])),
                        "nll_cost": float(np.mean([r["nll_cost"] for r in mine])),
                        "cache_fraction": float(np.mean([r["cache_fraction"] for r in mine])),
                        "proxy_cache": float(np.mean([r["proxy_cache"] for r in mine]))})
    evicting = [r for r in rows if r["policy"] != "full"]
    agree = {"spearman_policies": spearman([s["proxy"] for s in summary], [-s["nll"] for s in summary]),
             "spearman_pairs": spearman([r["proxy"] for r in evicting], [-r["nll_cost"] for r in evicting]),
             "n_policies": len(summary), "n_instances": len(exs)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    nll = {name: [r["nll"] for r in rows if r["policy"] == name] for name in pols}  # same instance order
    pairs = [{"a": x, "b": y, **dict(zip(("mean", "lo", "hi"), paired(nll[x], nll[y])))}
             for x in pols if x.startswith("namm") for y in pols if y != x]
    write_json(out / "proxy_check.json", {"args": vars(a), "agreement": agree, "policies": summary, "paired_nll": pairs})
    write_csv(out / "instances.csv", rows, list(rows[0]))
    write_csv(out / "proxy_check.csv", summary, list(summary[0]))
    lines = [f"# Proxy vs real on {a.model}: lm_continuation, {len(exs)} held-out instances (seed {a.seed}), "
             f"{a.context_tokens} tokens, n_up {a.n_up}", "",
             f"Spearman over policies (proxy vs -NLL): {agree['spearman_policies']:.3f}; over (policy, instance) "
             f"pairs (proxy vs -NLL cost): {agree['spearman_pairs']:.3f}", "",
             "| policy | proxy (kept attention x100) | NLL | NLL - full | cache (real) | cache (proxy) |",
             "|---|---|---|---|---|---|"]
    for s in sorted(summary, key=lambda s: -s["proxy"]):
        lines.append(f"| {s['policy']} | {s['proxy']:.1f} | {s['nll']:.3f} | {s['nll_cost']:+.3f} | "
                     f"{s['cache_fraction']:.3f} | {s['proxy_cache']:.3f} |")
    lines += ["", "Paired NLL differences (a - b, 95% bootstrap over instances; negative = a is better):", "",
              "| a | b | a - b NLL [95%] |", "|---|---|---|"]
    lines += [f"| {p['a']} | {p['b']} | {p['mean']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}] |" for p in pairs]
    write_text(out / "proxy_check.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    assert all(math.isfinite(s["nll"]) for s in summary)


if __name__ == "__main__":
    main()
