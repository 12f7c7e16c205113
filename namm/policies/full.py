"""Full cache: never evicts (the reference every score is divided by)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import MemoryPolicy


@dataclass(frozen=True)
class FullCache(MemoryPolicy):
    """Keeps every token; ``budget`` is ignored."""

    name: ClassVar[str] = "full"
    evicts: ClassVar[bool] = False

    def select(self, view) -> torch.Tensor:
        return torch.ones_like(view.in_view)
