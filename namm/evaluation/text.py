"""Language evaluation under a memory policy: task examples -> prompts -> the text driver -> scores.

``evaluate`` returns (and ``write_results`` writes), per policy, ``results.json`` (``policy``, ``tasks:
{task: {score, mean_cache_fraction, n, chance[, nll]}}``, ``mean_score``, ``mean_cache_fraction``),
``results.csv`` and ``predictions.jsonl`` (one line per example: task, ``_id``, prediction, answers,
score in 0..1, cache fraction). :func:`compare` pairs two such folders example by example.

Generation tasks are scored by their metric on greedy answers; likelihood tasks (``lm_continuation``) by
``100 exp(-NLL)`` of the target's tokens, teacher-forced through the same memory (the raw NLL is kept).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from namm.adapters import adapter_for
from namm.drivers.text import generate, pad_id, stop_ids, token_logprobs
from namm.drivers.trace import record
from namm.io import write_csv, write_json, write_jsonl
from namm.policies import FullCache, KeepWhole, LayerBudgets, MemoryPolicy
from namm.tasks import TextTask
from namm.tasks import make as make_task
from namm.tasks.longbench import truncate_middle

__all__ = ["task_examples", "prompt_ids", "score_task", "evaluate", "example_records", "write_results",
           "read_predictions", "compare", "check_context", "check_whole_heads",
           "example_trace"]


def _task(task: str | TextTask) -> TextTask:
    return task if isinstance(task, TextTask) else make_task(task, kind="text")


def task_examples(tok, task: str, n: int, seed: int, context_tokens: int, data_dir: str | None = None) -> list[dict]:
    """Held-out examples of a task (generated with ``seed``, or the first ``n`` of its files)."""
    return _task(task).examples(tok, n, seed=seed, context_tokens=context_tokens, data_dir=data_dir)


def check_context(model, context_tokens: int, extra: int = 0) -> None:
    """Refuse a context the model cannot position (keys keep their absolute positions, so eviction never
    extends the window), naming the limit and the fix."""
    limit = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None)
    if limit is not None and context_tokens + extra > limit:
        raise ValueError(f"--context-tokens {context_tokens} (+ {extra} answer tokens) exceeds the model's {limit} "
                         f"positions; use --context-tokens {limit - extra} or less")


def check_whole_heads(model, policy: MemoryPolicy) -> None:
    """Refuse whole heads (``KeepWhole`` anywhere in ``policy``'s wrappers) that are not (managed layer, KV head)s
    of ``model``: a ranking made for another model would otherwise pass silently wherever its indices fit
    (a sliding layer is never managed, so a head listed there would keep nothing)."""
    adapter = adapter_for(model)
    managed = adapter.managed_layers(model)
    n_kv = adapter.num_kv_heads(model)
    p = policy
    while p is not None:
        if isinstance(p, LayerBudgets) and (bad_layers := [l for l, _ in p.budgets if l not in managed]):
            raise ValueError(f"--layer-budgets names layers {bad_layers[:4]} this model does not manage (layers "
                             f"{managed[:6]}{'..' if len(managed) > 6 else ''}): the budgets were made for another model")
        if isinstance(p, KeepWhole):
            bad = [(l, h) for l, h in p.heads if l not in managed or not 0 <= h < n_kv]
            bad += [(l, "*") for l in p.layers if l not in managed]
            if bad:
                raise ValueError(f"whole heads {bad[:4]} are not (layer, KV head)s this model manages (layers "
                                 f"{managed[:6]}{'..' if len(managed) > 6 else ''}, {n_kv} KV heads each): the ranking "
                                 "was made for another model; make one with `namm heads --model NAME --out RUN`")
        p = getattr(p, "inner", None)


def prompt_ids(tok, task: TextTask, example: dict, limit: int) -> list[int]:
    """Token ids of an example's prompt, middle-truncated to ``limit`` (as LongBench does). A chat-wrapped
    prompt already holds its special tokens, so none are added."""
    ids = tok(task.prompt(example, tok), add_special_tokens=not task.chat_wrapped(tok))["input_ids"]
    return list(truncate_middle(ids, limit))


def example_trace(model, tok, task: str | TextTask, example: dict, n_up: int,
                  dtype: torch.dtype = torch.float16) -> tuple[dict, dict, int]:
    """``(meta, tensors, score_from)``: the full-cache attention trace (:func:`namm.drivers.trace.record`) of
    an example's whole prompt then its gold target, and the position of the target's first token (where the
    scored queries start, as ``namm.replay.kept_mass`` takes it)."""
    task = _task(task)
    prompt = prompt_ids(tok, task, example, 10**9)
    target = tok.encode(task.target(example), add_special_tokens=False)
    meta, tensors = record(model, prompt + target, n_up=n_up, dtype=dtype)
    return meta, tensors, len(prompt)


@torch.no_grad()
def score_task(model, tok, task: str | TextTask, examples: list[dict], policy: MemoryPolicy | None,
               batch_size: int = 4, progress: bool = False) -> dict:
    """``{"score": 0..100, "mean_cache_fraction", "n", "chance", "predictions", "example_scores" (0..1),
    "cache_fractions"}`` (+ ``"nll"`` and ``"example_nll"`` for likelihood tasks)."""
    t = _task(task)
    if not examples:
        raise ValueError(f"task {t.name!r}: no examples to evaluate")
    policy = policy or FullCache()
    positions = model.config.get_text_config(decoder=True).max_position_embeddings
    pad = pad_id(tok)
    preds: list[str] = []
    per: list[float] = []
    fracs: list[float] = []
    nll: list[float] = []
    chunks = range(0, len(examples), batch_size)
    for i in tqdm(chunks, disable=not progress, desc=policy.name, leave=False):
        chunk = examples[i : i + batch_size]
        if t.scoring == "likelihood":
            targets = [tok(t.target(ex), add_special_tokens=False)["input_ids"] for ex in chunk]
            prompts = [prompt_ids(tok, t, ex, positions - len(tg)) for ex, tg in zip(chunk, targets)]
            lps, fr = token_logprobs(model, policy, prompts, targets, pad)
            for lp in lps:
                m = float(lp.mean())
                nll.append(-m)
                per.append(t.likelihood_score(m) / 100.0)
                preds.append(f"nll={-m:.4f}")
        else:
            prompts = [prompt_ids(tok, t, ex, positions - t.max_new_tokens) for ex in chunk]
            rows, fr = generate(model, policy, prompts, t.max_new_tokens, pad, stop_ids(model, tok))
            texts = [tok.decode(r, skip_special_tokens=True) for r in rows]
            preds += texts
            per += t.example_scores(texts, chunk)
        fracs += fr
    out = {"score": 100.0 * sum(per) / len(per), "mean_cache_fraction": sum(fracs) / len(fracs), "n": len(examples),
           "chance": t.chance_level(examples), "predictions": preds, "example_scores": per, "cache_fractions": fracs}
    if t.provenance is not None:
        out["provenance"] = t.provenance()
    if nll:
        out.update(nll=sum(nll) / len(nll), example_nll=nll)
    return out


def evaluate(model, tok, policy: MemoryPolicy, tasks: Sequence[str], samples: int, seed: int, context_tokens: int,
             batch_size: int = 4, examples: dict[str, list[dict]] | None = None, progress: bool = True,
             data_dir: str | None = None) -> dict:
    """Score ``policy`` on every task; the schema of ``results.json``, plus ``"predictions"``: one record
    per example (:func:`example_records`), which :func:`write_results` writes to ``predictions.jsonl``."""
    res: dict = {"policy": policy.describe(), "tasks": {}, "predictions": []}
    for task in tasks:
        exs = (examples or {}).get(task) or task_examples(tok, task, samples, seed, context_tokens, data_dir)
        r = score_task(model, tok, task, exs, policy, batch_size, progress=progress)
        res["tasks"][task] = {k: r[k] for k in ("score", "mean_cache_fraction", "n", "chance", "nll", "provenance")
                              if k in r}
        res["predictions"] += example_records(task, exs, r)
    res["mean_score"] = sum(t["score"] for t in res["tasks"].values()) / len(tasks)
    res["mean_cache_fraction"] = sum(t["mean_cache_fraction"] for t in res["tasks"].values()) / len(tasks)
    return res


def example_records(task: str, examples: list[dict], r: dict) -> list[dict]:
    """One record per example of :func:`score_task`'s result ``r``: what paired comparisons need
    (``namm compare``) and what a reader checks by hand (where the evidence sat, what came out)."""
    nll = r.get("example_nll") or [None] * len(examples)
    recs = []
    for i, (ex, pred, sc, fr, nl) in enumerate(zip(examples, r["predictions"], r["example_scores"],
                                                   r["cache_fractions"], nll)):
        rec = {"task": task, "_id": ex.get("_id", str(i)), "needle_fraction": ex.get("needle_fraction"),
               "length": ex.get("length"), "answers": ex["answers"], "prediction": pred, "score": sc,
               "cache_fraction": fr}
        if nl is not None:
            rec["nll"] = nl
            rec["answers"] = [f"<{len(ex['answers'][0])} characters of continuation>"]  # keep the file small
        recs.append(rec)
    return recs


def write_results(out: Path, res: dict) -> None:
    """``results.json`` + ``results.csv`` (+ ``predictions.jsonl`` when ``res`` carries ``"predictions"``)."""
    res = dict(res)
    preds = res.pop("predictions", None)
    if preds is not None:
        write_jsonl(out / "predictions.jsonl", preds)
    write_json(out / "results.json", res)
    rows = [["policy", "task", "score", "mean_cache_fraction", "n"]]
    rows += [[res["policy"], t, f"{v['score']:.4f}", f"{v['mean_cache_fraction']:.4f}", v["n"]]
             for t, v in res["tasks"].items()]
    write_csv(out / "results.csv", rows)


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
    "mean": {a, b, diff, ci}}``; scores in 0..100. Likelihood tasks add ``a_nll, b_nll, nll_diff, nll_ci``
    (nats per token, B - A, on the same resamples).
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
        if all(ra[k].get("nll") is not None and rb[k].get("nll") is not None for k in keys):
            # likelihood tasks: the paired difference in nats per token too (the score is exp(-NLL))
            na = torch.tensor([float(ra[k]["nll"]) for k in keys], dtype=torch.float64)
            nb = torch.tensor([float(rb[k]["nll"]) for k in keys], dtype=torch.float64)
            dn = (nb - na)[idx].mean(1)
            out["tasks"][t].update(a_nll=float(na.mean()), b_nll=float(nb.mean()), nll_diff=float((nb - na).mean()),
                                   nll_ci=[float(dn.quantile(0.025)), float(dn.quantile(0.975))])
    dm = torch.stack(boot).mean(0)  # the mean over tasks is linear: its difference is the mean of theirs
    ts = out["tasks"].values()
    mean_a, mean_b = sum(v["a"] for v in ts) / len(ts), sum(v["b"] for v in ts) / len(ts)
    out["mean"] = {"a": mean_a, "b": mean_b, "diff": mean_b - mean_a,
                   "ci": [float(dm.quantile(0.025)), float(dm.quantile(0.975))]}
    return out


