"""The one-liner users write: ``with memory(model, policy) as mem: mem.generate(**inputs)``.

HF ``generate`` creates its own cache unless it is handed one, so :class:`Memory` hands it a fresh
:class:`~namm.cache.MemoryCache` per call; the model itself is only switched to the ``"namm"``
attention function for the duration of the ``with`` block (restored afterwards).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from .adapters import Adapter, adapter_for
from .cache import MemoryCache
from .policies import MemoryPolicy

__all__ = ["Memory", "memory", "generate"]


class Memory:
    """A model under a memory policy. ``last_cache`` keeps the cache of the latest call (statistics)."""

    def __init__(self, model: torch.nn.Module, policy: MemoryPolicy, adapter: Adapter | None = None) -> None:
        self.model = model
        self.policy = policy
        self.adapter = adapter or adapter_for(model)
        self.last_cache: MemoryCache | None = None

    def new_cache(self) -> MemoryCache:
        self.last_cache = self.adapter.new_cache(self.model, self.policy)
        return self.last_cache

    def check_length(self, input_ids: torch.Tensor | None, max_new_tokens: int = 0) -> None:
        """Refuse a prompt the model cannot position: keys keep their absolute positions, so eviction
        does not extend the context window."""
        if input_ids is None:
            return
        limit = getattr(self.adapter.text_config(self.model), "max_position_embeddings", None)
        need = input_ids.shape[-1] + max_new_tokens
        if limit is not None and need > limit:
            raise ValueError(
                f"prompt of {input_ids.shape[-1]} tokens + {max_new_tokens} new tokens exceeds the model's "
                f"{limit} positions; truncate the prompt (namm.tasks.longbench.truncate_middle) or extend "
                "the context (e.g. a larger RoPE base and max_position_embeddings in the config)"
            )

    def cache_kwargs(self) -> dict:
        """``{"cache" or "past_key_values": a new cache}`` for ``model(...)`` / ``model.generate(...)``."""
        return {self.adapter.cache_kwarg(self.model): self.new_cache()}

    @torch.no_grad()
    def generate(self, **kwargs):
        """``model.generate`` with a fresh memory cache (greedy/sampling; no beam search)."""
        self.check_length(kwargs.get("input_ids"), kwargs.get("max_new_tokens") or 0)
        return self.model.generate(**kwargs, **self.cache_kwargs())

    @torch.no_grad()
    def forward(self, **kwargs):
        """One forward pass with a fresh memory cache (e.g. to score a prompt)."""
        self.check_length(kwargs.get("input_ids"))
        return self.model(**kwargs, **self.cache_kwargs(), use_cache=True)


@contextmanager
def memory(model: torch.nn.Module, policy: MemoryPolicy, adapter=None) -> Iterator[Memory]:
    """Run ``model`` under ``policy`` inside the block; the attention implementation is restored after."""
    mem = Memory(model, policy, adapter)
    prev = mem.adapter.attach(model)
    try:
        yield mem
    finally:
        mem.adapter.detach(model, prev)


def generate(model: torch.nn.Module, policy: MemoryPolicy, **kwargs):
    """One-liner: ``namm.generate(model, policy, input_ids=..., max_new_tokens=...)``."""
    with memory(model, policy) as mem:
        return mem.generate(**kwargs)
