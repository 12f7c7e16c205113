"""Language evaluation under a memory policy: generate answers for task prompts, score them.

``namm eval`` writes, per policy, ``results.json`` (``policy``, ``tasks: {task: {score,
mean_cache_fraction}}``, ``mean_score``, ``mean_cache_fraction``), ``results.csv`` and
``predictions.jsonl`` (one line per example: task, ``_id``, prediction, answers, score in 0..1, cache
fraction); with several policies, one sub-folder each plus ``summary.csv`` and ``score_vs_cache.png``.
``namm compare A B`` pairs two such folders example by example.
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

__all__ = ["generate_answers", "score_task", "evaluate", "compare", "add_eval_command", "task_metric"]


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
    """``{"score": 0..100, "mean_cache_fraction": float, "n": int, "predictions": [...],
    "example_scores": [0..1 per example], "cache_fractions": [per example]}``."""
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
    per = metrics.example_scores(task_metric(task), preds, [ex["answers"] for ex in examples],
                                 examples[0].get("all_classes"))
    return {"score": 100.0 * sum(per) / len(per), "mean_cache_fraction": sum(fracs) / len(fracs),
            "n": len(examples), "predictions": preds, "example_scores": per, "cache_fractions": fracs}


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
    """Score ``policy`` on every task; the schema of ``results.json``, plus ``"predictions"``: one record
    per example (:func:`example_records`), which :func:`write_results` writes to ``predictions.jsonl``."""
    res = {"policy": policy.describe(), "tasks": {}, "predictions": []}
    for task in tasks:
        exs = (examples or {}).get(task) or zoo_examples(tok, task, samples, seed, context_tokens)
        r = score_task(model, tok, task, exs, policy, batch_size, progress=progress)
        res["tasks"][task] = {"score": r["score"], "mean_cache_fraction": r["mean_cache_fraction"], "n": r["n"]}
        res["predictions"] += example_records(task, exs, r)
    res["mean_score"] = sum(t["score"] for t in res["tasks"].values()) / len(tasks)
    res["mean_cache_fraction"] = sum(t["mean_cache_fraction"] for t in res["tasks"].values()) / len(tasks)
    return res


def example_records(task: str, examples: list[dict], r: dict) -> list[dict]:
    """One record per example of :func:`score_task`'s result ``r``: what paired comparisons need
    (``namm compare``) and what a reader checks by hand (where the evidence sat, what came out)."""
    return [{"task": task, "_id": ex.get("_id", str(i)), "needle_fraction": ex.get("needle_fraction"),
             "length": ex.get("length"), "answers": ex["answers"], "prediction": pred, "score": sc,
             "cache_fraction": fr}
            for i, (ex, pred, sc, fr) in enumerate(zip(examples, r["predictions"], r["example_scores"],
                                                       r["cache_fractions"]))]


def write_results(out: Path, res: dict) -> None:
    """``results.json`` + ``results.csv`` (+ ``predictions.jsonl`` when ``res`` carries ``"predictions"``)."""
    out.mkdir(parents=True, exist_ok=True)
    res = dict(res)
    preds = res.pop("predictions", None)
    if preds is not None:
        from namm.envs.zoo_tasks import write_jsonl

        write_jsonl(out / "predictions.jsonl", preds)
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


def read_predictions(folder: str | Path) -> dict[tuple[str, str], dict]:
    """``{(task, _id): record}`` from a ``namm eval`` policy folder's ``predictions.jsonl``."""
    path = Path(folder) / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-example predictions; give a policy folder written by `namm eval` "
                                "(with several policies, each sits in its own sub-folder)")
    recs = {}
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                r = json.loads(line)
                key = (r["task"], str(r["_id"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{i + 1}: not a prediction record ({e})") from None
            if key in recs:  # pairing by id would silently drop one of them
                raise ValueError(f"{path}:{i + 1}: example {key} appears twice; give each example its own _id")
            recs[key] = r
    return recs


def compare(a: str | Path, b: str | Path, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Pair two ``namm eval`` runs on the same examples: ``B - A`` per task and for the mean over tasks
    (equal task weights, as ``mean_score``), with 95% bootstrap intervals that resample the examples
    of each task (stratified), so both policies are always judged on the same draw.

    Returns ``{"a", "b", "n_boot", "tasks": {task: {n, a, b, diff, ci, wins, losses, a_cache, b_cache}},
    "mean": {a, b, diff, ci}}``; scores in 0..100.
    """
    ra, rb = read_predictions(a), read_predictions(b)
    if set(ra) != set(rb):
        only_a, only_b = sorted(set(ra) - set(rb)), sorted(set(rb) - set(ra))
        raise ValueError(f"{a} and {b} scored different examples ({len(only_a)} only in A, e.g. {only_a[:2]}; "
                         f"{len(only_b)} only in B, e.g. {only_b[:2]}): run both with the same --tasks, --samples, "
                         "--seed and --context-tokens")
    gen = torch.Generator().manual_seed(seed)
    tasks = list(dict.fromkeys(t for t, _ in ra))  # in the order they were run
    out: dict = {"a": str(a), "b": str(b), "n_boot": n_boot, "tasks": {}}
    boot = []  # per task: the mean paired difference of each resample
    for t in tasks:
        keys = [k for k in ra if k[0] == t]
        sa = torch.tensor([float(ra[k]["score"]) for k in keys], dtype=torch.float64) * 100
        sb = torch.tensor([float(rb[k]["score"]) for k in keys], dtype=torch.float64) * 100
        idx = torch.randint(len(keys), (n_boot, len(keys)), generator=gen)
        d = (sb - sa)[idx].mean(1)
        boot.append(d)
        out["tasks"][t] = {
            "n": len(keys), "a": float(sa.mean()), "b": float(sb.mean()), "diff": float((sb - sa).mean()),
            "ci": [float(d.quantile(0.025)), float(d.quantile(0.975))],
            "wins": int((sb > sa).sum()), "losses": int((sb < sa).sum()),
            "a_cache": sum(ra[k]["cache_fraction"] for k in keys) / len(keys),
            "b_cache": sum(rb[k]["cache_fraction"] for k in keys) / len(keys),
        }
    dm = torch.stack(boot).mean(0)  # the mean over tasks is linear: its difference is the mean of theirs
    ts = out["tasks"].values()
    mean_a, mean_b = sum(v["a"] for v in ts) / len(ts), sum(v["b"] for v in ts) / len(ts)
    out["mean"] = {"a": mean_a, "b": mean_b, "diff": mean_b - mean_a,
                   "ci": [float(dm.quantile(0.025)), float(dm.quantile(0.975))]}
    return out


def cmd_compare(a: argparse.Namespace) -> None:
    res = compare(a.a, a.b, n_boot=a.n_boot, seed=a.seed)
    print(f"A = {a.a}\nB = {a.b}\n{'task':20s} {'n':>4s} {'A':>7s} {'B':>7s} {'B-A':>7s}  95% CI            "
          "B>A  B<A  cache A/B")
    for t, v in res["tasks"].items():
        print(f"{t:20s} {v['n']:4d} {v['a']:7.2f} {v['b']:7.2f} {v['diff']:+7.2f}  [{v['ci'][0]:+6.2f}, {v['ci'][1]:+6.2f}]"
              f"  {v['wins']:3d}  {v['losses']:3d}  {v['a_cache']:.3f}/{v['b_cache']:.3f}")
    m = res["mean"]
    print(f"{'mean over tasks':20s} {'':4s} {m['a']:7.2f} {m['b']:7.2f} {m['diff']:+7.2f}  [{m['ci'][0]:+6.2f}, {m['ci'][1]:+6.2f}]")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))


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

    p = sub.add_parser("compare", help="pair two `namm eval` policy folders example by example (B - A, bootstrap CI)")
    p.add_argument("a", help="policy folder A (with predictions.jsonl), e.g. runs/table/a/full")
    p.add_argument("b", help="policy folder B, scored on the same examples")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", default=None, help="also write the comparison as JSON here")
    p.set_defaults(fn=cmd_compare)
