"""Recency: keep the ``budget`` newest tokens (a sliding window)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import MemoryPolicy


@dataclass(frozen=True)
class Recency(MemoryPolicy):
    name: ClassVar[str] = "recency"

    def scores(self, view) -> torch.Tensor:
        return view.pos.float()
