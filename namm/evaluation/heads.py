"""Which (layer, KV head)s of a model read the evidence when it answers a retrieval question, full cache.

The calibration behind ``namm eval|table --whole-heads F`` (``namm heads``): for each instance of the given
train-split families (never a held-out one), the prompt and its gold answer run teacher-forced through one
full-cache pass (:func:`namm.drivers.trace.record`); a head's score is the attention the answer's queries put on
the evidence's tokens (the needle's value, the chain's values), averaged over its query heads, the answer's
tokens and the instances that have evidence. The shipped ``namm/weights/heads-*.json`` are this function's
output for smollm2-135m and gemma3-270m.

    rows = rank_heads(model, tok, ["ruler_niah_multikey", "ruler_vt"], samples=16, seed=11)
    rows[0]  # {"layer": 18, "head": 2, "score": 0.35, "ruler_niah_multikey": 0.45, "ruler_vt": 0.25}

With ``policy`` (``rank_heads(..., policy=resolve_policy("namm"))``) a head's score is instead what that
policy's evictions cost it (:func:`eviction_loss`): the share of its scored queries' full-cache attention that
falls on tokens the policy evicted, replayed on the same traces (``namm.replay.kept_mass``). The evidence score
only sees retrieval; this one also ranks the heads a continuation needs (SmolLM2's layer 0 loses half its
attention to the shipped NAMM at 0.25), so one ranking can serve every calibration family.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from namm.adapters import adapter_for
from namm.drivers.trace import record
from namm.policies import MemoryPolicy
from namm.replay import kept_mass
from namm.tasks import make as make_task

from .text import example_trace

__all__ = ["evidence_spans", "evidence_tokens", "head_scores", "eviction_loss", "rank_heads"]


def evidence_spans(prompt: str, values: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of each value's first occurrence in the prompt (the question may repeat a value, as
    ruler_vt's does; the first occurrence is the evidence in the context)."""
    spans = []
    for v in values:
        i = prompt.find(v)
        if i >= 0:
            spans.append((i, i + len(v)))
    return spans


def evidence_tokens(tok, text: str, spans: Sequence[tuple[int, int]],
                    add_special_tokens: bool) -> tuple[list[int], list[int]]:
    """``(ids, positions)``: the prompt's token ids and the positions of the tokens that overlap a span (a fast
    tokenizer's offsets, which the tasks' haystacks need anyway)."""
    enc = tok(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    pos = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if any(a < e and b > s for s, e in spans)]
    return list(enc["input_ids"]), pos


def head_scores(model, tok, task_id: str, n: int, seed: int, context_tokens: int, n_up: int = 128,
                progress: bool = True) -> torch.Tensor:
    """``[L_managed, H_kv]`` mean attention of the answer's queries on the evidence tokens, over the ``n``
    train-split instances of ``task_id`` that have evidence (one full-cache pass each)."""
    task = make_task(task_id, kind="text")
    exs = task.examples(tok, n, seed=seed, context_tokens=context_tokens, split="train")
    total, counted = None, 0
    for ex in tqdm(exs, desc=task_id, leave=False, disable=not progress):
        text = task.prompt(ex, tok)
        ids, ev = evidence_tokens(tok, text, evidence_spans(text, ex["answers"]), not task.chat_wrapped(tok))
        if len(ids) > context_tokens + 256:  # evaluation would middle-truncate it (prompt_ids): positions would shift
            raise ValueError(f"{task_id}: the prompt has {len(ids)} tokens, more than --context-tokens "
                             f"{context_tokens} + 256; raise --context-tokens")
        if not ev:
            continue
        target = tok(" " + task.target(ex), add_special_tokens=False)["input_ids"]
        meta, tens = record(model, ids + list(target), n_up=n_up, dtype=torch.float32)
        qs = range(len(ids) - 1, len(ids) + len(target) - 1)  # the queries that predict the answer's tokens
        per = torch.zeros(meta["num_layers"], meta["num_heads"])
        for q in qs:
            u, r = divmod(q, n_up)
            for layer in range(meta["num_layers"]):
                per[layer] += tens[f"attn.{u}.{layer}"][0, :, r, ev].sum(-1)
        per /= len(qs)
        total = per if total is None else total + per
        counted += 1
    if not counted:
        raise ValueError(f"{task_id}: no instance's answer appears in its prompt, so no head can be scored")
    return total / counted


def eviction_loss(model, tok, policy: MemoryPolicy, task_id: str, n: int, seed: int, context_tokens: int,
                  progress: bool = True) -> torch.Tensor:
    """``[L_managed, H_kv]`` share of the scored queries' full-cache attention (a continuation's target, an
    answer) that lands on tokens ``policy`` evicted, mean over ``n`` train-split instances of ``task_id``
    (one full-cache trace each at the policy's ``n_up``, then a replay of the policy on it)."""
    task = make_task(task_id, kind="text")
    exs = task.examples(tok, n, seed=seed, context_tokens=context_tokens, split="train")
    total = torch.zeros(())
    for ex in tqdm(exs, desc=f"{task_id} loss", leave=False, disable=not progress):
        meta, tens, score_from = example_trace(model, tok, task, ex, n_up=policy.n_up, dtype=torch.float32)
        kept, _ = kept_mass(policy, meta, tens, score_from, per_head=True)  # [1, L, H]
        total = total + (1 - kept[0])
    return total / len(exs)


def rank_heads(model, tok, task_ids: Sequence[str], samples: int = 16, seed: int = 11, context_tokens: int = 1024,
               n_up: int = 128, progress: bool = True, policy: MemoryPolicy | None = None) -> list[dict]:
    """Every (model layer, KV head), best first: ``{"layer", "head", "score", <task>: score, ...}``; ``score``
    is the mean over ``task_ids`` of the evidence attention (:func:`head_scores`), or with ``policy`` of the
    attention its evictions take (:func:`eviction_loss`, at the policy's own ``n_up``). Layers are the model's
    own numbers (Gemma's full layers 5, 11, 17), which ``namm.policies.KeepWhole`` takes."""
    if policy is None:
        per_task = {t: head_scores(model, tok, t, samples, seed, context_tokens, n_up, progress) for t in task_ids}
    else:
        per_task = {t: eviction_loss(model, tok, policy, t, samples, seed, context_tokens, progress)
                    for t in task_ids}
    mean = sum(per_task.values()) / len(per_task)
    # the trace numbers managed layers 0..; the policy's view names the model's layer
    managed = adapter_for(model).managed_layers(model)
    order = sorted(((float(mean[l, h]), l, h) for l in range(mean.shape[0]) for h in range(mean.shape[1])),
                   reverse=True)
    return [{"layer": managed[l], "head": h, "score": s, **{t: float(v[l, h]) for t, v in per_task.items()}}
            for s, l, h in order]
