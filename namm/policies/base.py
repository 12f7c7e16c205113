"""The policy contract every memory policy implements (kvpress-style: one dataclass per file).

A policy is a small frozen config. It owns no tensors: per-token state lives in the cache beside each
token (declared by :meth:`MemoryPolicy.token_state`) and is gathered with the same indices as K/V.

Hooks, called by the attention function for each layer:

1. ``observe(state, attn, qpos)`` after every attention call, only if ``needs_attention``: ``attn``
   ``[B, H, q, N]`` fp32 post-softmax rows averaged over each KV head's query heads; the policy folds
   them into its per-token ``state`` tensors (in place or by reassigning entries). ``rows_needed(qpos)``
   may limit them to the queries it reads (the others arrive with position -1, or not at all).
2. ``scores(view)`` ``-> [B, H, N]`` at each update (every ``n_up`` tokens a row has seen): higher
   means keep. A :class:`~namm.view.View` holds exactly what a policy may read (positions, keys, state).
3. ``select(view)`` ``-> keep [B, H, N]``; the default keeps the ``budget`` best-scored tokens
   (all of them without a budget), the newest token always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..selection import budget_tokens, top_k
from ..view import View

__all__ = ["MemoryPolicy", "recency_rank", "age_rank", "row_sum"]


@dataclass(frozen=True)
class MemoryPolicy:
    """Base policy: keeps everything (the full cache).

    Attributes:
        n_up: update period in tokens seen (absolute count per row), prefill and generation alike.
        budget: ``None`` (no cap), a fraction of tokens seen (float in (0, 1]) or a token count (int).
    """

    n_up: int = 512
    budget: float | int | None = None

    name: ClassVar[str] = "base"
    needs_attention: ClassVar[bool] = False
    evicts: ClassVar[bool] = True  # False: updates never drop a token (the attention need not split at them)
    budget_ranked: ClassVar[bool] = True  # select keeps the budget's best-scored tokens (all without a budget)

    def __post_init__(self) -> None:
        if not isinstance(self.n_up, int) or self.n_up < 1:
            raise ValueError(f"n_up must be a positive int, got {self.n_up!r}")
        budget_tokens(self.budget, torch.ones(1, dtype=torch.long))  # validates the budget's form

    def token_state(self) -> dict[str, tuple[int, ...]]:
        """Per-token state: name -> trailing shape (zeros when a token arrives)."""
        return {}

    def rows_needed(self, qpos: torch.Tensor) -> torch.Tensor | None:
        """``[B, q]`` bool: the queries (at positions ``qpos``) whose attention rows :meth:`observe` reads,
        or ``None`` for all of them. Rows cost an unfused attention; the output never needs them."""
        return None

    def observe(self, state: dict[str, torch.Tensor], attn: torch.Tensor, qpos: torch.Tensor) -> None:
        """See the attention rows ``[B, H, q, N]`` of queries at positions ``qpos`` ``[B, q]`` (-1 = padding)."""

    def scores(self, view: View) -> torch.Tensor:
        """``[B, H, N]`` keep-scores (higher = keep). The base keeps the newest."""
        return view.pos.float()

    def select(self, view: View) -> torch.Tensor:
        k = budget_tokens(self.budget, view.seen)
        if k is None:
            return torch.ones_like(view.in_view)
        return top_k(self.scores(view), view.in_view, view.newest, k)

    @property
    def keeps_everything(self) -> bool:
        """True when this policy, as configured, can never drop a token: it never evicts, or it ranks
        tokens against a budget and was given none."""
        return not self.evicts or (self.budget_ranked and self.budget is None)

    def describe(self) -> str:
        return f"{self.name}(n_up={self.n_up}, budget={self.budget})"


def recency_rank(in_view: torch.Tensor) -> torch.Tensor:
    """``[B, H, N]`` number of in-view tokens newer than each slot (0 = newest). Slots are in position order."""
    v = in_view.long()
    return v.flip(-1).cumsum(-1).flip(-1) - v


def age_rank(in_view: torch.Tensor) -> torch.Tensor:
    """``[B, H, N]`` number of in-view tokens older than each slot (0 = oldest)."""
    v = in_view.long()
    return v.cumsum(-1) - v


def row_sum(attn: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``[B, H, N]``: the rows ``attn`` ``[B, H, q, N]`` summed with per-query weights ``weight`` ``[B, q]``
    (e.g. 0 for padding). One row, a decode step, is a product: the einsum costs ~7 ops per layer and step."""
    if attn.shape[2] == 1:
        return attn[:, :, 0] * weight[:, :, None]
    return torch.einsum("bhqn,bq->bhn", attn, weight)
