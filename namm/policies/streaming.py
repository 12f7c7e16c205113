"""StreamingLLM: the first ``n_sink`` tokens (attention sinks) plus the newest ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import MemoryPolicy, age_rank


@dataclass(frozen=True)
class StreamingLLM(MemoryPolicy):
    n_sink: int = 4

    name: ClassVar[str] = "streamingllm"

    def scores(self, view) -> torch.Tensor:
        sink = age_rank(view.in_view) < self.n_sink
        return view.pos.float().masked_fill(sink, float("inf"))
