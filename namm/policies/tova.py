"""TOVA: keep the tokens the newest query attends to most, averaged over the layer's heads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import MemoryPolicy


@dataclass(frozen=True)
class TOVA(MemoryPolicy):
    """Token Omission Via Attention: at each update the score of a token is the attention the query at the
    boundary gives it, averaged over the layer's (KV) heads, so every head keeps the same tokens (their
    slots stay aligned). The reference drops one token per generated token; here the budget is enforced
    every ``n_up`` tokens, as for every policy."""

    name: ClassVar[str] = "tova"
    needs_attention: ClassVar[bool] = True

    def token_state(self) -> dict[str, tuple[int, ...]]:
        return {"last": ()}

    def rows_needed(self, qpos: torch.Tensor) -> torch.Tensor:
        return (qpos >= 0) & ((qpos + 1) % self.n_up == 0)  # the queries at update boundaries

    def observe(self, state, attn, qpos) -> None:
        # pieces end at update boundaries, so the last needed query of a piece is the boundary one
        real = (qpos[:, -1] >= 0)[:, None, None]  # [B, 1, 1]
        state["last"] = torch.where(real, attn[:, :, -1], state["last"])

    def scores(self, view) -> torch.Tensor:
        s = view.state["last"].masked_fill(~view.in_view, 0.0)
        return s.mean(dim=1, keepdim=True).expand_as(s)  # [B, H, N]: the heads' mean, one ranking per layer
