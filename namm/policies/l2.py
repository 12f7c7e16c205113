"""L2 / KNorm: keep the keys with the LOWEST L2 norm (they tend to draw the most attention)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import MemoryPolicy


@dataclass(frozen=True)
class L2Norm(MemoryPolicy):
    """``skip_layers``: the first layers keep everything (the reference skips layers 0-1; 0 here so
    that the budget holds on every layer, as for the other baselines)."""

    skip_layers: int = 0

    name: ClassVar[str] = "l2"

    def select(self, view) -> torch.Tensor:
        if view.layer_idx < self.skip_layers:
            return torch.ones_like(view.in_view)
        return super().select(view)

    def scores(self, view) -> torch.Tensor:
        return -view.keys.float().norm(dim=-1)
