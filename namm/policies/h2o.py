"""H2O: heavy hitters (most accumulated attention) plus a window of recent tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..selection import budget_tokens
from .base import MemoryPolicy, recency_rank, row_sum


@dataclass(frozen=True)
class H2O(MemoryPolicy):
    """Of the budget, ``recent_ratio`` goes to the newest tokens and the rest to heavy hitters
    (the reference: 10% heavy + 10% recent, i.e. half and half)."""

    recent_ratio: float = 0.5

    name: ClassVar[str] = "h2o"
    needs_attention: ClassVar[bool] = True

    def token_state(self) -> dict[str, tuple[int, ...]]:
        return {"acc": ()}

    def observe(self, state, attn, qpos) -> None:
        state["acc"] += row_sum(attn, (qpos >= 0).to(attn.dtype))

    def scores(self, view) -> torch.Tensor:
        s = view.state["acc"].clone()
        k = budget_tokens(self.budget, view.seen)
        if k is not None:
            recent = recency_rank(view.in_view) < (k.float() * self.recent_ratio).floor().long()[:, None, None]
            s = s.masked_fill(recent, float("inf"))
        return s
