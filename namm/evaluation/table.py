"""The transfer table: a NAMM, the full cache, and every hand-made policy at the NAMM's MEASURED cache
fraction, on the same instances, with paired intervals (``namm table``).

One folder per policy (``namm eval`` layout: ``results.json``, ``predictions.jsonl``), then ``table.csv``
(one row per policy: mean score, cache fraction, per-task scores), ``table.md`` (the same, with chance
levels and the NAMM's paired difference), ``compare.csv`` (NAMM - policy per task and overall, 95%
stratified bootstrap interval, wins/losses) and ``score_vs_cache.png``.

Budgets: ``match="task"`` gives each baseline, on each task, the NAMM's mean cache fraction on that task
(the pipeline's rule); ``match="mean"`` gives one budget for all tasks, the NAMM's mean over tasks rounded
to 3 decimals (the language zoo's published tables).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from namm.checkpoint import resolve_policy
from namm.io import write_csv, write_json, write_text
from namm.plots import score_vs_cache
from namm.policies import FullCache, MemoryPolicy

from .text import compare, evaluate, task_examples, write_results

__all__ = ["matched_budget", "matched_table", "write_table"]


def matched_budget(frac: float) -> float | None:
    """A baseline's budget at a measured cache fraction (``None`` = uncapped when nothing was evicted)."""
    return None if frac >= 0.999 else max(frac, 1e-3)


def _merge(parts: list[dict]) -> dict:
    """One results dict from per-task runs of the same policy."""
    res: dict[str, Any] = {"policy": parts[0]["policy"], "tasks": {}, "predictions": []}
    for r in parts:  # each task keeps the policy it ran with (its own budget)
        res["tasks"].update({t: {**v, "describe": r["policy"], "budget": r.get("budget")} for t, v in r["tasks"].items()})
        res["predictions"] += r["predictions"]
    ts = list(res["tasks"].values())
    res["mean_score"] = sum(t["score"] for t in ts) / len(ts)
    res["mean_cache_fraction"] = sum(t["mean_cache_fraction"] for t in ts) / len(ts)
    return res


def matched_table(model, tok, tasks: Sequence[str], namm: MemoryPolicy, out: Path, *,
                  baselines: Sequence[str] = ("h2o", "l2", "streamingllm", "snapkv", "tova"), samples: int = 64,
                  seed: int = 1000, context_tokens: int = 2048, batch_size: int = 4, match: str = "task",
                  data_dir: str | None = None, progress: bool = True, info: dict | None = None,
                  examples: dict[str, list[dict]] | None = None) -> dict[str, dict]:
    """Run the table (see the module doc); returns ``{policy label: results}``; writes ``out``."""
    if match not in ("task", "mean"):
        raise ValueError(f"match must be 'task' or 'mean', got {match!r}")
    out = Path(out)
    examples = examples or {t: task_examples(tok, t, samples, seed, context_tokens, data_dir) for t in tasks}
    meta = {"seed": seed, "samples": samples, "context_tokens": context_tokens, **(info or {})}

    def run(policy: MemoryPolicy, names: Sequence[str]) -> dict:
        r = evaluate(model, tok, policy, list(names), samples, seed, context_tokens, batch_size, examples, progress)
        return {**r, **meta}

    results: dict[str, dict] = {"namm": run(namm, tasks)}
    results["full"] = run(FullCache(n_up=namm.n_up), tasks)
    fr = {t: v["mean_cache_fraction"] for t, v in results["namm"]["tasks"].items()}
    for b in baselines:
        if match == "mean":
            budget = matched_budget(round(results["namm"]["mean_cache_fraction"], 3))
            results[b] = {**run(resolve_policy(b, n_up=namm.n_up, budget=budget), tasks), "budget": budget}
        else:
            parts = []
            for t in tasks:
                budget = matched_budget(fr[t])
                parts.append({**run(resolve_policy(b, n_up=namm.n_up, budget=budget), [t]), "budget": budget})
            results[b] = {**_merge(parts), **meta}
    for name, res in results.items():
        write_results(out / name, res)
    write_table(out, list(results), list(tasks))
    return results


def write_table(out: Path, names: Sequence[str], tasks: Sequence[str], reference: str = "namm") -> None:
    """``table.csv``, ``table.md``, ``compare.csv`` and ``score_vs_cache.png`` from the policy folders of ``out``."""
    import json

    out = Path(out)
    res = {n: json.loads((out / n / "results.json").read_text()) for n in names}
    rows = [{"policy": n, "describe": r["policy"], "mean_score": round(r["mean_score"], 2),
             "mean_cache_fraction": round(r["mean_cache_fraction"], 3),
             **{t: round(r["tasks"][t]["score"], 2) for t in tasks}} for n, r in res.items()]
    write_csv(out / "table.csv", rows, ["policy", "describe", "mean_score", "mean_cache_fraction", *tasks])
    nll_tasks = [t for t in tasks if all(r["tasks"][t].get("nll") is not None for r in res.values())]
    cmp_rows, diffs, nll_diffs = [], {}, {}
    for n in names:
        if n == reference:
            continue
        c = compare(out / n, out / reference)
        diffs[n] = c["mean"]
        nll_diffs[n] = {t: c["tasks"][t] for t in nll_tasks}
        write_json(out / "compare" / f"{reference}_vs_{n}.json", c)
        for t, v in [*c["tasks"].items(), ("mean", {**c["mean"], "n": "", "wins": "", "losses": ""})]:
            nll = [f"{v['nll_diff']:+.4f}", f"{v['nll_ci'][0]:+.4f}", f"{v['nll_ci'][1]:+.4f}"] if "nll_diff" in v \
                else ["", "", ""]
            cmp_rows.append([n, t, v["n"], f"{v['a']:.2f}", f"{v['b']:.2f}", f"{v['diff']:+.2f}", f"{v['ci'][0]:+.2f}",
                             f"{v['ci'][1]:+.2f}", v["wins"], v["losses"], *nll])
    write_csv(out / "compare.csv", [["other", "task", "n", "other_score", f"{reference}_score",
                                     f"{reference}_minus_other", "ci_low", "ci_high", f"{reference}_better",
                                     f"{reference}_worse", "nll_diff", "nll_ci_low", "nll_ci_high"], *cmp_rows])
    chance = {t: next(iter(res.values()))["tasks"][t].get("chance") for t in tasks}
    # likelihood tasks also show the raw NLL (nats per token) and its paired difference
    nll_head = "".join(f" {t} NLL | {reference} - policy NLL [95%] |" for t in nll_tasks)
    head = "| policy | mean | " + " | ".join(tasks) + f" | cache | {reference} - policy [95%] |" + nll_head
    lines = [head, "|" + "---|" * (len(tasks) + 4 + 2 * len(nll_tasks))]
    for r in rows:
        d = diffs.get(r["policy"])
        cell = f"{d['diff']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" if d else ""
        extra = ""
        for t in nll_tasks:
            v = nll_diffs.get(r["policy"], {}).get(t)
            extra += f" {res[r['policy']]['tasks'][t]['nll']:.3f} | " + (
                f"{v['nll_diff']:+.3f} [{v['nll_ci'][0]:+.3f}, {v['nll_ci'][1]:+.3f}] |" if v else " |")
        lines.append(f"| {r['policy']} | {r['mean_score']:.2f} | " + " | ".join(f"{r[t]:.1f}" for t in tasks)
                     + f" | {r['mean_cache_fraction']:.3f} | {cell} |" + extra)
    lines.append("| chance | | " + " | ".join("" if chance[t] is None else f"{chance[t]:.1f}" for t in tasks) + " | | |"
                 + " | |" * len(nll_tasks))
    write_text(out / "table.md", "\n".join(lines) + "\n")
    score_vs_cache([{"name": r["policy"], "mean_score": r["mean_score"], "mean_cache_fraction": r["mean_cache_fraction"]}
                    for r in rows], out / "score_vs_cache.png")
