"""Policy wrappers, Gymnasium-style: one concern each, everything else forwarded to the wrapped policy.

    PinFirst(inner=load_namm(path), sinks=4)      # any policy, but the first 4 positions are never evicted
    KeepWhole(inner=load_namm(path), heads=((18, 2), (17, 1)))  # those (layer, KV head)s keep every token
    LayerBudgets(inner=load_namm(path), budgets=((0, 0.5), (1, 0.125)))  # inner's budget set per layer

:class:`Wrapped` forwards the whole contract (state, observation, scores, selection) to ``inner``; a
wrapper overrides only what it changes (usually :meth:`select`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from .base import MemoryPolicy

__all__ = ["Wrapped", "PinFirst", "KeepWhole", "LayerBudgets"]


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


@dataclass(frozen=True, eq=False)
class KeepWhole(Wrapped):
    """``inner``'s decisions, except that ``heads`` ((layer, KV head) pairs, the model's layer numbers) and
    whole ``layers`` keep every token: the retrieval heads of DuoAttention / RazorAttention, whose readers
    need tokens no query-agnostic score can tell apart early (a needle before its question)."""

    heads: tuple[tuple[int, int], ...] = ()
    layers: tuple[int, ...] = ()

    name: ClassVar[str] = "keep_whole"

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple((int(l), int(h)) for l, h in self.heads))
        object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        super().__post_init__()

    def select(self, view) -> torch.Tensor:
        """``[B, H, N]`` keep mask, True throughout the listed heads and layers (out of view is kept anyway)."""
        if view.layer_idx in self.layers:
            return torch.ones_like(view.in_view)
        keep = self.inner.select(view)
        heads = [h for layer, h in self.heads if layer == view.layer_idx]
        if heads:
            if max(heads) >= keep.shape[1]:
                raise ValueError(f"keep_whole: layer {view.layer_idx} has {keep.shape[1]} KV heads, "
                                 f"no head {max(heads)}; list heads as (layer, kv_head) of this model")
            keep = keep.clone()
            keep[:, heads] = True
        return keep

    def describe(self) -> str:
        return f"{self.inner.describe()} + whole heads {list(self.heads)} layers {list(self.layers)}"


@dataclass(frozen=True, eq=False)
class LayerBudgets(Wrapped):
    """``inner``'s scores and selection with its budget set per layer: ``budgets`` are ``(layer, budget)``
    pairs (the model's layer numbers; a fraction of the tokens seen or a token count, as ``budget``), every
    other layer keeps ``inner``'s own. Depth-wise allocations (PyramidKV's, or one calibrated on what each
    layer's evictions cost, ``experiments/real-models/layer_costs.py``); wrap it in ``KeepWhole`` for whole heads.
    ``inner`` must be the policy that ranks (not another wrapper, whose inner would keep its own budget)."""

    budgets: tuple[tuple[int, float | int], ...] = ()
    _by_layer: dict[int, MemoryPolicy] = field(default_factory=dict, init=False, repr=False)

    name: ClassVar[str] = "layer_budgets"

    def __post_init__(self) -> None:
        if isinstance(self.inner, Wrapped):
            raise ValueError(f"layer_budgets sets the budget of the policy that ranks; wrap {self.inner.name} "
                             f"around it instead: {self.inner.name}(inner=LayerBudgets(inner=..., budgets=...))")
        object.__setattr__(self, "budgets", tuple((int(l), b) for l, b in self.budgets))
        super().__post_init__()
        # one copy of inner per distinct budget, made once: select runs at every update of every layer; each copy's
        # own __post_init__ refuses a bad budget here, not mid-pass
        copies = {b: replace(self.inner, budget=b) for b in {b for _, b in self.budgets}}
        object.__setattr__(self, "_by_layer", {l: copies[b] for l, b in self.budgets})

    def select(self, view) -> torch.Tensor:
        return self._by_layer.get(view.layer_idx, self.inner).select(view)

    @property
    def keeps_everything(self) -> bool:
        return self.inner.keeps_everything and all(b is None for _, b in self.budgets)

    def describe(self) -> str:
        return f"{self.inner.describe()} + layer budgets {dict(self.budgets)}"
