"""What the NAMM's evictions cost a continuation, layer span by layer span, with the retrieval heads whole,
and the per-layer budgets that cost least at a given cache fraction.

With the best third of SmolLM2's heads whole and the NAMM at a quarter elsewhere (cache 0.5), the continuation
costs +0.008 nats per token against the full cache. ``measure`` asks where that cost sits: for each span of
layers and budget of ``--plan``, only that span's non-whole heads are compressed (every other layer whole) and
the teacher-forced NLL of train-split continuations is compared, instance by instance, with the full cache's
(``--all``: every layer compressed at once too, to check that span costs add up). ``allocate`` then picks, for
a partition of the layers, one measured budget per part (or whole) with the least summed cost whose cache
fraction stays within ``--target``; a part's cost at a budget is its own measurement, or the sum over measured
spans that tile it. The result is what ``namm eval|table --layer-budgets`` takes.

    python experiments/real-models/layer_costs.py measure --plan "0-2=0.25,0.125 3-5=0.25,0.125" --out runs/lc1
    python experiments/real-models/layer_costs.py allocate --costs runs/lc1/costs.json runs/lc2/costs.json \\
        --parts "0-0 1-2 3-5 6-11 12-29" --target 0.5 --out runs/lc-allocation
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from namm import models, tasks
from namm.adapters import adapter_for
from namm.checkpoint import keep_heads_whole, resolve_policy
from namm.evaluation.stats import paired_interval
from namm.evaluation.text import score_task
from namm.io import write_csv, write_json
from namm.policies import KeepWhole


def span(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)


def non_whole_heads(first: int, last: int, layers: list[int], n_kv: int, whole) -> int:
    """How many (layer, KV head)s of layers ``first..last`` are not in ``whole`` (the ones a budget compresses)."""
    return sum(1 for l in layers if first <= l <= last for h in range(n_kv) if (l, h) not in whole)


def span_policy(whole: KeepWhole, budget: float, first: int, last: int, layers: list[int]) -> KeepWhole:
    """``whole``'s heads whole, its inner NAMM at ``budget`` in layers ``first..last``, every other layer whole."""
    inner = dataclasses.replace(whole.inner, budget=budget)
    return KeepWhole(inner=inner, heads=whole.heads, layers=tuple(l for l in layers if not first <= l <= last))


def measure(a: argparse.Namespace) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = models.load(a.model, "lm", device="cpu", dtype=torch.float32)
    layers = list(adapter_for(model).managed_layers(model))
    n_kv = adapter_for(model).num_kv_heads(model)
    whole = keep_heads_whole(resolve_policy(a.namm), a.model, a.whole_heads)
    plan = [(span(s), float(b)) for item in a.plan.split() for s, bs in [item.split("=")] for b in bs.split(",")]
    if a.all:
        plan += [((layers[0], layers[-1]), b) for b in sorted({b for _, b in plan})]
    task = tasks.make("lm_continuation")
    exs = task.examples(tok, a.samples, seed=a.seed, context_tokens=a.context_tokens, split=a.split)

    def nll(policy) -> np.ndarray:
        return np.array(score_task(model, tok, task, exs, policy, batch_size=1)["example_nll"])

    full = nll(resolve_policy("full"))
    rows = []
    for (first, last), b in tqdm(plan, desc="spans x budgets"):
        mean, lo, hi = paired_interval(nll(span_policy(whole, b, first, last, layers)) - full)
        n_free = non_whole_heads(first, last, layers, n_kv, whole.heads)
        rows.append({"span": f"{first}-{last}", "budget": b, "non_whole_heads": n_free, "nll_cost": mean,
                     "lo": lo, "hi": hi})
        print(f"layers {first}-{last} at {b}: {n_free} heads, {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] nats", flush=True)
    write_csv(out / "costs.csv", rows, list(rows[0]))
    write_json(out / "costs.json", {"args": vars(a), "whole_heads": list(whole.heads), "layers": layers,
                                    "num_kv_heads": n_kv, "rows": rows})


def part_cost(part: tuple[int, int], b: float, measured: dict[tuple[int, int, float], float]) -> float | None:
    """The part's cost at budget ``b``: measured directly, or summed over measured spans tiling it (shortest
    first from its first layer), or ``None`` when nothing measured tiles it."""
    first, last = part
    if (first, last, b) in measured:
        return measured[(first, last, b)]
    total, at = 0.0, first
    while at <= last:
        ends = sorted(e for s, e, bb in measured if s == at and bb == b and e <= last)
        if not ends:
            return None
        total += measured[(at, ends[0], b)]
        at = ends[0] + 1
    return total


def allocate(a: argparse.Namespace) -> None:
    runs = [json.loads(Path(p).read_text()) for p in a.costs]
    whole = [tuple(h) for h in runs[0]["whole_heads"]]
    layers, n_kv = runs[0]["layers"], runs[0]["num_kv_heads"]
    if any([tuple(h) for h in r["whole_heads"]] != whole for r in runs):
        raise ValueError("the cost files were measured with different whole heads; allocate from one setting")
    measured = {(*span(r["span"]), r["budget"]): r["nll_cost"] for run in runs for r in run["rows"]}
    parts = [span(p) for p in a.parts.split()]
    free = {p: non_whole_heads(*p, layers, n_kv, whole) for p in parts}
    options = {p: [(b, c) for b in sorted({b for *_, b in measured}) if (c := part_cost(p, b, measured)) is not None]
               + [(1.0, 0.0)] for p in parts}
    n_heads = len(layers) * n_kv
    best = None
    for choice in itertools.product(*(options[p] for p in parts)):
        frac = (len(whole) + sum(free[p] * b for p, (b, _) in zip(parts, choice))) / n_heads
        cost = sum(c for _, c in choice)
        if frac <= a.target + 1e-9 and (best is None or cost < best[0]):
            best = (cost, frac, choice)
    if best is None:
        raise ValueError(f"no choice of the measured budgets keeps the cache within {a.target}")
    cost, frac, choice = best
    uniform = part_cost((layers[0], layers[-1]), a.uniform, measured)
    spec = " ".join(f"{p[0]}-{p[1]}={b:g}" for p, (b, _) in zip(parts, choice))
    print(f"--layer-budgets \"{spec}\": summed cost {cost:+.4f} nats at cache {frac:.3f} "
          f"(uniform {a.uniform}: {uniform if uniform is None else f'{uniform:+.4f}'})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"part": f"{p[0]}-{p[1]}", "non_whole_heads": free[p], "budget": b, "nll_cost": c,
             "options": {str(bb): cc for bb, cc in options[p]}} for p, (b, c) in zip(parts, choice)]
    write_json(out / "allocation.json", {"args": vars(a), "layer_budgets": spec, "summed_cost": cost, "cache": frac,
                                         "uniform_cost": uniform, "parts": rows})
    write_csv(out / "measured.csv", [{"span": f"{s}-{e}", "budget": b, "nll_cost": c}
                                     for (s, e, b), c in sorted(measured.items())], ["span", "budget", "nll_cost"])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p, (b, c) in zip(parts, choice):
        pts = [(bb, cc) for bb, cc in options[p] if bb < 1.0]
        line, = ax.plot(*zip(*pts), marker="o", label=f"layers {p[0]}-{p[1]} ({free[p]} heads)")
        ax.scatter([b], [c], s=160, facecolors="none", edgecolors=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("budget of the non-whole heads (fraction of tokens seen)")
    ax.set_ylabel("continuation NLL - full (nats/token)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_title(f"cost per layer span (circled: chosen; whole = 0); cache {frac:.3f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "costs.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--model", default="smollm2-135m")
    m.add_argument("--namm", default="namm")
    m.add_argument("--whole-heads", type=float, default=0.333)
    m.add_argument("--plan", required=True, help="space-separated FIRST-LAST=B1,B2 items: layers FIRST..LAST "
                   "compressed together at each budget, every other layer whole")
    m.add_argument("--all", action="store_true", help="also every layer compressed at once, at each budget")
    m.add_argument("--samples", type=int, default=24)
    m.add_argument("--seed", type=int, default=11)
    m.add_argument("--split", default="train")
    m.add_argument("--context-tokens", type=int, default=1024)
    m.add_argument("--out", required=True)
    al = sub.add_parser("allocate")
    al.add_argument("--costs", nargs="+", required=True, help="costs.json files of `measure` (same whole heads)")
    al.add_argument("--parts", required=True, help="a partition of the layers: space-separated FIRST-LAST spans")
    al.add_argument("--target", type=float, default=0.5, help="cache fraction the allocation must stay within")
    al.add_argument("--uniform", type=float, default=0.25, help="the uniform budget to compare with")
    al.add_argument("--out", required=True)
    a = ap.parse_args()
    measure(a) if a.cmd == "measure" else allocate(a)


if __name__ == "__main__":
    main()
