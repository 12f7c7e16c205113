"""``namm eval`` (policies on language tasks) and ``namm compare`` (two runs, example by example)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_eval(a: argparse.Namespace) -> None:
    import torch

    from namm import models, tasks
    from namm.evaluation.text import check_context, check_whole_heads, evaluate, task_examples, write_results
    from namm.io import write_csv
    from namm.plots import score_vs_cache
    from namm.selection import parse_budget

    names = tasks.expand(a.tasks or "zoo")  # unknown ids are refused before any model loads
    policies = [with_whole_heads(a, n, n_up=a.n_up, budget=parse_budget(a.budget) if n != "full" else None)
                for n in a.policy.split(",")]
    warn_keeps_everything(policies)
    model, tok = models.load(a.model, "lm", device=a.device, dtype=getattr(torch, a.dtype))
    check_context(model, a.context_tokens, max(tasks.make(t).max_new_tokens for t in names))
    for p in policies:
        check_whole_heads(model, p)
    out = Path(a.out)
    examples = {t: task_examples(tok, t, a.samples, a.seed, a.context_tokens, a.data_dir) for t in names}
    rows = []
    labels = [Path(n).stem for n in a.policy.split(",")]
    for label, policy in zip(labels, policies):
        res = evaluate(model, tok, policy, names, a.samples, a.seed, a.context_tokens, a.batch_size, examples)
        res.update(seed=a.seed, samples=a.samples, model=a.model, context_tokens=a.context_tokens)
        write_results(out if len(policies) == 1 else out / label, res)
        rows.append({"name": label, **{k: res[k] for k in ("policy", "mean_score", "mean_cache_fraction")}})
        print(f"{res['policy']:50s} mean score {res['mean_score']:6.2f}  cache {res['mean_cache_fraction']:.3f}  "
              + "  ".join(f"{t}={v['score']:.1f}" for t, v in res["tasks"].items()))
    write_csv(out / "summary.csv", rows, ["name", "policy", "mean_score", "mean_cache_fraction"])
    score_vs_cache(rows, out / "score_vs_cache.png")


def with_whole_heads(a: argparse.Namespace, spec: str, **overrides):
    """The policy ``spec`` names; an evicting one with ``--layer-budgets`` gets its budget per layer (layers at 1
    keep every token) and with ``--whole-heads F`` keeps the best ``F`` of the model's retrieval heads
    (``--heads``, default the ``--model``'s shipped ranking) whole."""
    from dataclasses import replace

    from namm.checkpoint import keep_heads_whole, resolve_policy
    from namm.policies import KeepWhole, LayerBudgets
    from namm.selection import parse_layer_budgets

    if a.heads and not a.whole_heads:
        raise ValueError(f"--heads {a.heads} names which heads to keep whole, but no --whole-heads F says how many; "
                         "add --whole-heads 0.3 (the best 30%)")
    budgets = parse_layer_budgets(a.layer_budgets) if a.layer_budgets else {}
    policy = resolve_policy(spec, **overrides)
    if not policy.evicts:
        return policy
    whole_layers = tuple(l for l, b in budgets.items() if b == 1.0)
    if len(whole_layers) < len(budgets):
        policy = LayerBudgets(inner=policy, budgets=tuple((l, b) for l, b in budgets.items() if b != 1.0))
    if a.whole_heads:
        return replace(keep_heads_whole(policy, a.heads or a.model, a.whole_heads), layers=whole_layers)
    return KeepWhole(inner=policy, layers=whole_layers) if whole_layers else policy


def add_whole_heads(p) -> None:
    p.add_argument("--whole-heads", type=float, default=None, metavar="F",
                   help="keep every token in the best F (0-1] of the model's retrieval heads (DuoAttention-style)")
    p.add_argument("--heads", default=None, help="retrieval-head ranking: a heads.json (default: the --model's shipped one)")
    p.add_argument("--layer-budgets", default=None, metavar="SPEC",
                   help="the evicting policy's budget per layer, e.g. '0=1 1-11=0.25 12-29=0.125' (1: the layer "
                        "keeps every token; layers not named keep --budget)")


def warn_keeps_everything(policies) -> None:
    """One stderr line per evicting policy that, as given (no ``--budget``), keeps every token."""
    for p in policies:
        if p.evicts and p.keeps_everything:
            print(f"namm: {p.name} has no --budget, so it keeps every token (cache 1.0); give --budget 0.5 "
                  "(a fraction of the tokens seen) or 1024 (a token count)", file=sys.stderr)


def run_table(a: argparse.Namespace) -> None:
    import torch

    from namm import models, tasks
    from namm.checkpoint import resolve_policy
    from namm.evaluation.table import matched_table
    from namm.evaluation.text import check_context, check_whole_heads
    from namm.selection import parse_budget

    names = tasks.expand(a.tasks)
    namm = with_whole_heads(a, a.namm, n_up=a.n_up, budget=parse_budget(a.budget))
    baselines = [b for b in a.baselines.split(",") if b]
    for b in baselines:
        resolve_policy(b, n_up=namm.n_up, budget=0.5)  # unknown names are refused before the model loads
    model, tok = models.load(a.model, "lm", device=a.device, dtype=getattr(torch, a.dtype))
    check_context(model, a.context_tokens, max(tasks.make(t).max_new_tokens for t in names))
    check_whole_heads(model, namm)
    matched_table(model, tok, names, namm, Path(a.out), baselines=baselines, samples=a.samples, seed=a.seed,
                  context_tokens=a.context_tokens, batch_size=a.batch_size, match=a.match, data_dir=a.data_dir,
                  info={"model": a.model, "namm": a.namm, "budget": a.budget, "whole_heads": a.whole_heads,
                        "heads": a.heads, "layer_budgets": a.layer_budgets})
    print((Path(a.out) / "table.md").read_text())


def run_compare(a: argparse.Namespace) -> None:
    from namm.evaluation.text import compare
    from namm.io import write_json

    res = compare(a.a, a.b, n_boot=a.n_boot, seed=a.seed)
    print(f"A = {a.a}\nB = {a.b}\n{'task':20s} {'n':>4s} {'A':>7s} {'B':>7s} {'B-A':>7s}  95% CI            "
          "B>A  B<A  cache A/B")
    for t, v in res["tasks"].items():
        print(f"{t:20s} {v['n']:4d} {v['a']:7.2f} {v['b']:7.2f} {v['diff']:+7.2f}  [{v['ci'][0]:+6.2f}, {v['ci'][1]:+6.2f}]"
              f"  {v['wins']:3d}  {v['losses']:3d}  {v['a_cache']:.3f}/{v['b_cache']:.3f}")
        if "nll_diff" in v:
            print(f"{'  NLL (nats/token)':20s} {'':4s} {v['a_nll']:7.3f} {v['b_nll']:7.3f} {v['nll_diff']:+7.3f}  "
                  f"[{v['nll_ci'][0]:+6.3f}, {v['nll_ci'][1]:+6.3f}]")
    m = res["mean"]
    print(f"{'mean over tasks':20s} {'':4s} {m['a']:7.2f} {m['b']:7.2f} {m['diff']:+7.2f}  "
          f"[{m['ci'][0]:+6.2f}, {m['ci'][1]:+6.2f}]")
    if a.out:
        write_json(Path(a.out), res)


def add(sub) -> None:
    p = sub.add_parser("eval", help="score policies on language tasks (zoo, RULER, LongBench, lm_continuation)")
    p.add_argument("--model", default="zoo", help="a model name (namm models list), a local folder or a hub id")
    p.add_argument("--policy", default="namm", help="policy name(s) or weights file(s), comma-separated")
    p.add_argument("--tasks", default=None, help="comma-separated task ids or suites (default: zoo)")
    p.add_argument("--samples", type=int, default=8, help="instances per task (file tasks: the first N)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the held-out task instances")
    p.add_argument("--budget", default=None, help="fraction of tokens seen (0.4) or a token count (1024)")
    p.add_argument("--n-up", type=int, default=None, help="memory update period (default: the policy's)")
    p.add_argument("--context-tokens", type=int, default=2048)
    p.add_argument("--data-dir", default=None, help="LongBench JSONL folder (default: $LONGBENCH_DIR)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    add_whole_heads(p)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=run_eval)

    p = sub.add_parser("table", help="the transfer table: a NAMM, the full cache and every baseline at the NAMM's "
                       "measured cache fraction, paired intervals")
    p.add_argument("--model", default="zoo", help="a model name (namm models list), a local folder or a hub id")
    p.add_argument("--namm", default="namm", help="NAMM weights (default: the shipped ones)")
    p.add_argument("--baselines", default="h2o,l2,streamingllm,snapkv,tova", help="comma-separated policy names")
    p.add_argument("--tasks", default="zoo", help="comma-separated task ids or suites")
    p.add_argument("--samples", type=int, default=64, help="instances per task")
    p.add_argument("--seed", type=int, default=1000, help="seed of the held-out task instances")
    p.add_argument("--context-tokens", type=int, default=2048)
    p.add_argument("--budget", default=None,
                   help="the NAMM's budget (default: its weights' own); with --whole-heads, that of the other heads")
    p.add_argument("--match", choices=["task", "mean"], default="task",
                   help="baseline budget: the NAMM's fraction on each task, or its mean over tasks")
    p.add_argument("--n-up", type=int, default=None, help="memory update period (default: the NAMM's)")
    p.add_argument("--data-dir", default=None, help="LongBench JSONL folder (default: $LONGBENCH_DIR)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    add_whole_heads(p)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=run_table)

    p = sub.add_parser("compare", help="pair two `namm eval` policy folders example by example (B - A, bootstrap CI)")
    p.add_argument("a", help="policy folder A (with predictions.jsonl), e.g. runs/table/a/full")
    p.add_argument("b", help="policy folder B, scored on the same examples")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", default=None, help="also write the comparison as JSON here")
    p.set_defaults(fn=run_compare)
