"""Text through a memory policy: greedy generation and teacher-forced token log-probabilities, on batches of
token-id prompts (left padded, one fresh memory cache per batch).

Step in the data flow: above the memory core (``namm.memory``); below tasks and evaluation, which turn
examples into token ids and outputs into scores.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from namm.memory import memory
from namm.policies import MemoryPolicy

__all__ = ["left_pad", "stop_ids", "pad_id", "generate", "token_logprobs"]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` ``[B, max len]`` int64 of token ``rows``, padded on the left with ``pad_id``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def stop_ids(model, tokenizer) -> set[int]:
    """Every id that ends an answer: the tokenizer's eos and the model's generation-config eos (an instruct
    model's end-of-turn token is often only the latter)."""
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids: Iterable = [tokenizer.eos_token_id] + (gen if isinstance(gen, list) else [gen])
    return {int(i) for i in ids if i is not None}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@torch.no_grad()
def generate(model, policy: MemoryPolicy, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad: int,
             stops: set[int]) -> tuple[list[list[int]], list[float]]:
    """Greedy continuations of ``prompts`` (one batch) under ``policy``.

    Returns the new token ids of each row, cut before its first id in ``stops``, and each row's mean
    cache fraction (kept / seen over layers, heads and updates; 1.0 when nothing was evicted).
    """
    ids, mask = left_pad(prompts, pad)
    width = ids.shape[1]
    with memory(model, policy) as mem:
        out = mem.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                           max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                           eos_token_id=sorted(stops) or None)
    rows = []
    for row in out[:, width:].tolist():
        cut = next((j for j, t in enumerate(row) if t in stops), len(row))
        rows.append(row[:cut])
    return rows, [mem.last_cache.cache_fraction(row=r) for r in range(len(prompts))]


@torch.no_grad()
def token_logprobs(model, policy: MemoryPolicy, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                   pad: int) -> tuple[list[torch.Tensor], list[float]]:
    """Teacher-forced log-probabilities of ``targets`` after ``prompts`` (one batch, one forward pass).

    The memory runs exactly as in generation: it updates every ``n_up`` tokens, inside the target too, so
    a target token is predicted from what the policy kept by then. Returns per row the ``[len(target)]``
    float32 log-probabilities and the row's mean cache fraction.
    """
    ids, mask = left_pad([list(p) + list(t) for p, t in zip(prompts, targets)], pad)
    width, k = ids.shape[1], max(map(len, targets))
    with memory(model, policy) as mem:
        # rows end together, so every target token lies in the last k columns; logits at t predict t + 1
        out = mem.forward(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), logits_to_keep=k + 1)
    logp = out.logits[:, :-1].float().log_softmax(-1)  # [B, k, V]
    tok_lp = logp.gather(-1, ids[:, width - k:, None].to(logp.device)).squeeze(-1).cpu()  # [B, k]
    lps = [tok_lp[r, k - len(t):] for r, t in enumerate(targets)]
    return lps, [mem.last_cache.cache_fraction(row=r) for r in range(len(prompts))]
