"""Memory policies behind one contract (:class:`MemoryPolicy`), a registry and the default list.

Every test that checks a policy-wide property runs over :data:`DEFAULT_POLICIES`, kvpress-style.
"""

from __future__ import annotations

from .base import MemoryPolicy
from .full import FullCache
from .h2o import H2O
from .l2 import L2Norm
from .namm import NAMM
from .recency import Recency
from .snapkv import SnapKV
from .streaming import StreamingLLM
from .tova import TOVA
from .wrappers import KeepWhole, LayerBudgets, PinFirst, Wrapped

POLICIES: dict[str, type[MemoryPolicy]] = {
    p.name: p for p in (FullCache, H2O, L2Norm, StreamingLLM, Recency, SnapKV, TOVA, NAMM)
}


def register_policy(cls: type[MemoryPolicy]) -> type[MemoryPolicy]:
    """Class decorator: make a new policy available by its ``name`` (CLI, configs, tests)."""
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str, **kwargs) -> MemoryPolicy:
    """Build a registered policy by name, e.g. ``make_policy("h2o", n_up=64, budget=0.25)``."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; registered: {sorted(POLICIES)} (or pass a weights file)")
    return POLICIES[name](**kwargs)


def default_policies(n_up: int = 512, budget: float | int = 0.5) -> list[MemoryPolicy]:
    """One instance of every policy, with a budget where the policy takes one (NAMM: zero weights
    plus a top-k cap, so the list exercises the NAMM path end to end)."""
    return [
        FullCache(n_up=n_up),
        H2O(n_up=n_up, budget=budget),
        L2Norm(n_up=n_up, budget=budget),
        StreamingLLM(n_up=n_up, budget=budget),
        Recency(n_up=n_up, budget=budget),
        SnapKV(n_up=n_up, budget=budget, window=min(32, n_up)),
        TOVA(n_up=n_up, budget=budget),
        NAMM(n_up=n_up, budget=budget),
        NAMM(n_up=n_up, budget=budget, mode="ragged"),
    ]


DEFAULT_POLICIES = default_policies()

__all__ = [
    "MemoryPolicy", "FullCache", "H2O", "L2Norm", "NAMM", "Recency", "SnapKV", "StreamingLLM", "TOVA",
    "POLICIES", "register_policy", "make_policy", "default_policies", "DEFAULT_POLICIES", "Wrapped", "PinFirst",
    "KeepWhole", "LayerBudgets",
]
