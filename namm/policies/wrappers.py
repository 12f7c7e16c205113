"""Policy wrappers, Gymnasium-style: one concern each, everything else forwarded to the wrapped policy.

    PinFirst(inner=load_namm(path), sinks=4)      # any policy, but the first 4 positions are never evicted

:class:`Wrapped` forwards the whole contract (state, observation, scores, selection) to ``inner``; a
wrapper overrides only what it changes (usually :meth:`select`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import MemoryPolicy

__all__ = ["Wrapped", "PinFirst"]


@dataclass(frozen=True, eq=False)
class Wrapped(MemoryPolicy):
    """``inner`` unchanged (its ``n_up`` is the wrapper's); subclasses change one decision."""

    inner: MemoryPolicy = None  # type: ignore[assignment]  # required; a default only for field order

    name: ClassVar[str] = "wrapped"

    def __post_init__(self) -> None:
        if not isinstance(self.inner, MemoryPolicy):
            raise ValueError(f"{type(self).__name__} wraps a policy: pass it as inner=..., got inner={self.inner!r}")
        object.__setattr__(self, "n_up", self.inner.n_up)
        super().__post_init__()

    @property
    def needs_attention(self) -> bool:  # type: ignore[override]
        return self.inner.needs_attention

    @property
    def evicts(self) -> bool:  # type: ignore[override]
        return self.inner.evicts

    def token_state(self):
        return self.inner.token_state()

    def rows_needed(self, qpos: torch.Tensor) -> torch.Tensor | None:
        return self.inner.rows_needed(qpos)

    def observe(self, state, attn, qpos) -> None:
        self.inner.observe(state, attn, qpos)

    def scores(self, view) -> torch.Tensor:
        return self.inner.scores(view)

    def select(self, view) -> torch.Tensor:
        return self.inner.select(view)

    @property
    def keeps_everything(self) -> bool:
        return self.inner.keeps_everything

    def describe(self) -> str:
        return self.inner.describe()


@dataclass(frozen=True, eq=False)
class PinFirst(Wrapped):
    """``inner``'s decisions, but the first ``sinks`` positions (the attention sinks of pretrained LMs)
    stay in every layer and head."""

    sinks: int = 4

    name: ClassVar[str] = "pin_first"

    def select(self, view) -> torch.Tensor:
        return self.inner.select(view) | (view.in_view & (view.pos < self.sinks))

    def describe(self) -> str:
        return f"{self.inner.describe()} + first {self.sinks} positions pinned"
