"""SnapKV: keep what the last ``window`` queries before each update attended to, pooled over neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..selection import neighbour_max
from .base import MemoryPolicy, recency_rank, row_sum


@dataclass(frozen=True)
class SnapKV(MemoryPolicy):
    """Each token's score is the attention it received from the ``window`` queries that end an update period
    (summed; GQA-averaged per KV head), max-pooled over its ``kernel // 2`` cached neighbours on each side
    (SnapKV's pooling keeps the runs around a hit), and the ``window`` newest tokens are kept. The budget is
    per head (top-k), as in the paper; without one nothing is evicted.

    The reference compresses once, after the prompt; here, as for every policy, it runs at every update
    (every ``n_up`` tokens a row has seen, prompt and generation alike).
    """

    window: int = 32
    kernel: int = 5

    name: ClassVar[str] = "snapkv"
    needs_attention: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.window <= self.n_up:
            raise ValueError(f"snapkv window must lie in [1, n_up={self.n_up}], got {self.window}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"snapkv kernel must be an odd width >= 1, got {self.kernel}")

    def token_state(self) -> dict[str, tuple[int, ...]]:
        return {"obs": ()}

    def rows_needed(self, qpos: torch.Tensor) -> torch.Tensor:
        # only the queries of the observation window: the last `window` positions before each boundary
        return (qpos >= 0) & (qpos % self.n_up >= self.n_up - self.window)  # [B, q]

    def observe(self, state, attn, qpos) -> None:
        state["obs"] += row_sum(attn, self.rows_needed(qpos).to(attn.dtype))

    def scores(self, view) -> torch.Tensor:
        s = neighbour_max(view.state["obs"], view.pos, view.in_view, self.kernel)
        return s.masked_fill(recency_rank(view.in_view) < self.window, float("inf"))

    def select(self, view) -> torch.Tensor:
        keep = super().select(view)
        view.state["obs"][view.rows] = 0.0  # the next update looks at its own window only
        return keep
