"""Language evaluation under a memory policy: generate answers for task prompts, score them.

``namm eval`` writes, per policy, ``results.json`` (``policy``, ``tasks: {task: {score,
mean_cache_fraction}}``, ``mean_score``, ``mean_cache_fraction``) and ``results.csv``; with several
policies, one sub-folder each plus ``summary.csv`` and ``score_vs_cache.png``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import memory
from .policies import FullCache, MemoryPolicy

__all__ = ["generate_answers", "score_task", "evaluate", "add_eval_command", "task_metric"]


def task_metric(task: str) -> str:
    """Metric name of a zoo task or a LongBench task."""
    from namm.envs.zoo_tasks import ZOO_TASKS, register_longbench_tasks

    register_longbench_tasks()
    return ZOO_TASKS[task].metric if task in ZOO_TASKS else task


def left_pad(rows, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` ``[B, max len]`` int64 of token ``rows``, padded on the left with ``pad_id``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


@torch.no_grad()
def generate_answers(model, tok, prompts: list[str], policy: MemoryPolicy | None, max_new_tokens: int,
                     batch_size: int = 4, max_prompt_tokens: int | None = None, progress: bool = False
                     ) -> tuple[list[str], list[float]]:
    """Greedy answers and per-prompt cache fractions (left-padded batches, one memory cache each).

    Prompts longer than ``max_prompt_tokens`` (default: the model's positions minus the answer) are
    middle-truncated, as LongBench does.
    """
    from namm.envs.longbench import truncate_middle

    policy = policy or FullCache()
    limit = max_prompt_tokens or (model.config.max_position_embeddings - max_new_tokens)
    ids = [truncate_middle(tok(p)["input_ids"], limit) for p in prompts]
    preds, fracs = [], []
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with memory(model, policy) as mem:
        for i in tqdm(range(0, len(ids), batch_size), disable=not progress, desc=policy.name, leave=False):
            chunk = ids[i : i + batch_size]
            inp, att = left_pad(chunk, pad)
            n = inp.shape[1]
            out = mem.generate(input_ids=inp.to(model.device), attention_mask=att.to(model.device),
                               max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                               eos_token_id=tok.eos_token_id)
            preds += tok.batch_decode(out[:, n:], skip_special_tokens=True)
            fracs += [mem.last_cache.cache_fraction(row=r) for r in range(len(chunk))]
    return preds, fracs


def score_task(model, tok, task: str, examples: list[dict], policy: MemoryPolicy | None, batch_size: int = 4,
               progress: bool = False) -> dict:
    """``{"score": 0..100, "mean_cache_fraction": float, "n": int, "predictions": [...]}``."""
    from namm.envs import metrics
    from namm.envs.zoo_tasks import ZOO_TASKS, format_prompt

    if not examples:
        raise ValueError(f"task {task!r}: no examples to evaluate")
    if task in ZOO_TASKS:
        prompts = [format_prompt(task, ex) for ex in examples]
        max_new = ZOO_TASKS[task].max_new_tokens
    else:
        from namm.envs.longbench import build_prompt, get_task

        spec = get_task(task)
        prompts = [build_prompt(spec, ex) for ex in examples]
        max_new = spec.max_new_tokens
    preds, fracs = generate_answers(model, tok, prompts, policy, max_new, batch_size, progress=progress)
    s = metrics.score(task_metric(task), preds, [ex["answers"] for ex in examples],
                      examples[0].get("all_classes"))
    return {"score": s, "mean_cache_fraction": sum(fracs) / len(fracs), "n": len(examples), "predictions": preds}


def load_model(spec: str, device: str = "cpu"):
    """``zoo`` / a zoo folder name / a local path / an HF id -> ``(model, tokenizer)``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .zoo import ZOO_DIR, load_zoo_lm

    if spec == "zoo":
        spec = "lm"
    if (ZOO_DIR / spec / "config.json").exists():
        model, tok = load_zoo_lm(ZOO_DIR / spec)
    elif Path(spec, "manifest.json").exists():
        model, tok = load_zoo_lm(spec)
    else:
        model = AutoModelForCausalLM.from_pretrained(spec).eval()
        tok = AutoTokenizer.from_pretrained(spec)
    return model.to(device), tok


@functools.lru_cache(maxsize=1)
def _zoo_corpus():
    """The offline corpus the zoo tasks are drawn from (built once per process)."""
    from namm.envs.corpus import collect_corpus

    return collect_corpus(max_bytes=24_000_000)


def zoo_examples(tok, task: str, n: int, seed: int, context_tokens: int, data_dir: str | None = None) -> list[dict]:
    """Held-out examples of a zoo task (generated from the corpus with ``seed``) or LongBench JSONL."""
    from namm.envs.zoo_tasks import ZOO_TASKS

    if task in ZOO_TASKS:
        return ZOO_TASKS[task].generate(tok, _zoo_corpus(), n, seed=seed, context_tokens=context_tokens)
    from namm.envs.longbench import load_task

    return load_task(task, data_dir=data_dir, limit=n)


def evaluate(model, tok, policy: MemoryPolicy, tasks: list[str], samples: int, seed: int, context_tokens: int,
             batch_size: int = 4, examples: dict[str, list[dict]] | None = None, progress: bool = True) -> dict:
    """Score ``policy`` on every task; the schema of ``results.json``."""
    res = {"policy": policy.describe(), "tasks": {}}
    for task in tasks:
        exs = (examples or {}).get(task) or zoo_examples(tok, task, samples, seed, context_tokens)
        r = score_task(model, tok, task, exs, policy, batch_size, progress=progress)
        res["tasks"][task] = {"score": r["score"], "mean_cache_fraction": r["mean_cache_fraction"], "n": r["n"]}
    res["mean_score"] = sum(t["score"] for t in res["tasks"].values()) / len(tasks)
    res["mean_cache_fraction"] = sum(t["mean_cache_fraction"] for t in res["tasks"].values()) / len(tasks)
    return res


def write_results(out: Path, res: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["policy", "task", "score", "mean_cache_fraction", "n"])
        for t, v in res["tasks"].items():
            w.writerow([res["policy"], t, f"{v['score']:.4f}", f"{v['mean_cache_fraction']:.4f}", v["n"]])


def plot_score_vs_cache(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:
        ax.scatter(r["mean_cache_fraction"], r["mean_score"], s=40)
        ax.annotate(r["name"], (r["mean_cache_fraction"], r["mean_score"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("mean cache fraction (kept / seen)")
    ax.set_ylabel("mean score")
    ax.set_xlim(0, 1.05)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_eval(a: argparse.Namespace) -> None:
    from .checkpoint import resolve_policy
    from .selection import parse_budget

    model, tok = load_model(a.model, a.device)
    tasks = a.tasks.split(",") if a.tasks else list(_zoo_task_names())
    names = a.policy.split(",")
    out = Path(a.out)
    examples = {t: zoo_examples(tok, t, a.samples, a.seed, a.context_tokens) for t in tasks}
    rows = []
    for name in names:
        policy = resolve_policy(name, n_up=a.n_up, budget=parse_budget(a.budget) if name != "full" else None)
        res = evaluate(model, tok, policy, tasks, a.samples, a.seed, a.context_tokens, a.batch_size, examples)
        res["seed"], res["samples"], res["model"] = a.seed, a.samples, a.model
        write_results(out if len(names) == 1 else out / Path(name).stem, res)
        rows.append({"name": Path(name).stem, **{k: res[k] for k in ("policy", "mean_score", "mean_cache_fraction")}})
        print(f"{res['policy']:50s} mean score {res['mean_score']:6.2f}  cache {res['mean_cache_fraction']:.3f}  "
              + "  ".join(f"{t}={v['score']:.1f}" for t, v in res["tasks"].items()))
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "policy", "mean_score", "mean_cache_fraction"])
        w.writeheader()
        w.writerows(rows)
    plot_score_vs_cache(rows, out / "score_vs_cache.png")


def _zoo_task_names():
    from namm.envs.zoo_tasks import ZOO_TASKS

    return ZOO_TASKS.keys()


def add_eval_command(sub) -> None:
    p = sub.add_parser("eval", help="score policies on the language zoo (or LongBench) tasks")
    p.add_argument("--model", default="zoo", help="zoo | a zoo folder name | a local path | an HF id")
    p.add_argument("--policy", default="namm", help="policy name(s) or weights file(s), comma-separated")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: the whole zoo suite)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=1000, help="seed of the held-out task instances")
    p.add_argument("--budget", default=None, help="fraction of tokens seen (0.4) or a token count (1024)")
    p.add_argument("--n-up", type=int, default=None, help="memory update period (default: the policy's)")
    p.add_argument("--context-tokens", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_eval)
