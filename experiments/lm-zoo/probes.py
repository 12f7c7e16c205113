"""Hand-made probe policies the language-zoo experiments share (public API only): a policy wrapped so
that chosen (layer, KV head) pairs or whole layers are never evicted.

    from probes import KeepWhole
    KeepWhole(make_policy("recency", n_up=128, budget=0.33), layers=(3,))
    KeepWhole(load_namm("namm/weights/namm.safetensors"), heads=((3, 1),))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from namm.policies import Wrapped


@dataclass(frozen=True, eq=False)
class KeepWhole(Wrapped):
    """``inner``'s decisions, except that ``heads`` ((layer, kv head) pairs) and ``layers`` keep every token."""

    heads: tuple[tuple[int, int], ...] = ()
    layers: tuple[int, ...] = ()

    name: ClassVar[str] = "keep_whole"

    def select(self, view) -> torch.Tensor:
        if view.layer_idx in self.layers:
            return torch.ones_like(view.in_view)
        keep = self.inner.select(view).clone()
        for layer, head in self.heads:
            if view.layer_idx == layer:
                keep[:, head] = True
        return keep

    def describe(self) -> str:
        return f"{self.inner.describe()} + whole heads {list(self.heads)} layers {list(self.layers)}"
