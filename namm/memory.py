"""The one-liner users write: ``with memory(model, policy) as mem: mem.generate(**inputs)``.

HF ``generate`` creates its own cache unless it is handed one, so :class:`Memory` hands it a fresh
:class:`~namm.cache.MemoryCache` per call; the model itself is only switched to the ``"namm"``
attention function for the duration of the ``with`` block (restored afterwards).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Iterator

import torch

from .adapters import Adapter, adapter_for
from .cache import MemoryCache
from .policies import MemoryPolicy

__all__ = ["Memory", "memory", "generate"]


class Memory:
    """A model under a memory policy. ``last_cache`` keeps the cache of the latest call (statistics).

    ``prefill_chunk``: prompts are fed this many tokens at a time (``"auto"``: 512 or ``n_up`` if larger, for
    a policy that evicts; one pass for the full cache), so the cache never holds more than its kept tokens
    plus one chunk and each chunk attends over what was kept. Any chunking gives the same result. (Chunks
    of 128 tokens cost plain Hugging Face prefill 31% on the 2-core box, chunks of 512 1.5%.)
    """

    def __init__(self, model: torch.nn.Module, policy: MemoryPolicy, adapter: Adapter | None = None,
                 prefill_chunk: int | str | None = "auto") -> None:
        self.model = model
        self.policy = policy
        self.adapter = adapter or adapter_for(model)
        self.last_cache: MemoryCache | None = None
        if prefill_chunk == "auto":
            prefill_chunk = max(512, policy.n_up) if policy.evicts else None
        if prefill_chunk is not None and (not isinstance(prefill_chunk, int) or prefill_chunk < 1):
            raise ValueError(f"prefill_chunk must be a positive int, 'auto' or None, got {prefill_chunk!r}")
        self.prefill_chunk = prefill_chunk
        # prefill chunks' logits are thrown away: asking for one row skips the LM head over the chunk
        # (SmolLM2 at 4k: 3.4 s of a NAMM's 38 s prefill, and a [chunk, vocab] fp32 buffer per chunk)
        self._head_kw = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}

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

    def _chunked(self, kwargs: dict, length: int) -> bool:
        """Prefill in chunks only for text inputs: extra tensors (a video's pixels, embeddings) belong to
        the whole prompt."""
        extra = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor) and k not in ("input_ids", "attention_mask")]
        return bool(self.prefill_chunk) and not extra and length > self.prefill_chunk  # type: ignore[operator]

    def _prefill(self, cache_kw: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, upto: int) -> None:
        """Feed ``input_ids[:, :upto]`` in chunks of ``prefill_chunk`` (positions from the padding mask, as
        ``generate`` computes them)."""
        pos = None
        if attention_mask is not None:
            pos = attention_mask.long().cumsum(-1) - 1
            pos = pos.masked_fill(attention_mask == 0, 1)
        for s in range(0, upto, self.prefill_chunk):  # type: ignore[arg-type]
            e = min(s + self.prefill_chunk, upto)  # type: ignore[operator]
            self.model(input_ids=input_ids[:, s:e], use_cache=True,
                       attention_mask=None if attention_mask is None else attention_mask[:, :e],
                       position_ids=None if pos is None else pos[:, s:e], **self._head_kw, **cache_kw)

    @torch.no_grad()
    def generate(self, **kwargs):
        """``model.generate`` with a fresh memory cache (greedy/sampling; no beam search); the prompt but its
        last token is prefilled in chunks first."""
        ids = kwargs.get("input_ids")
        self.check_length(ids, kwargs.get("max_new_tokens") or 0)
        cache_kw = self.cache_kwargs()
        if ids is not None and self._chunked(kwargs, ids.shape[1]):
            self._prefill(cache_kw, ids, kwargs.get("attention_mask"), ids.shape[1] - 1)
        return self.model.generate(**kwargs, **cache_kw)

    @torch.no_grad()
    def forward(self, **kwargs):
        """A forward pass with a fresh memory cache (e.g. to score a prompt); with ``logits_to_keep=k`` the
        prompt but its last ``k`` tokens is prefilled in chunks first (the output covers the rest)."""
        ids = kwargs.get("input_ids")
        self.check_length(ids)
        cache_kw = self.cache_kwargs()
        keep = kwargs.get("logits_to_keep")
        if ids is not None and isinstance(keep, int) and 0 < keep < ids.shape[1] and self._chunked(kwargs, ids.shape[1]):
            mask = kwargs.get("attention_mask")
            upto = ids.shape[1] - keep
            self._prefill(cache_kw, ids, mask, upto)
            rest = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
            pos = None
            if mask is not None:
                pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, upto:]
            return self.model(input_ids=ids[:, upto:], attention_mask=mask, position_ids=pos, use_cache=True,
                              **rest, **cache_kw)
        return self.model(**kwargs, **cache_kw, use_cache=True)


@contextmanager
def memory(model: torch.nn.Module, policy: MemoryPolicy, adapter=None,
           prefill_chunk: int | str | None = "auto") -> Iterator[Memory]:
    """Run ``model`` under ``policy`` inside the block; the attention implementation is restored after."""
    mem = Memory(model, policy, adapter, prefill_chunk)
    prev = mem.adapter.attach(model)
    try:
        yield mem
    finally:
        mem.adapter.detach(model, prev)


def generate(model: torch.nn.Module, policy: MemoryPolicy, **kwargs):
    """One-liner: ``namm.generate(model, policy, input_ids=..., max_new_tokens=...)``."""
    with memory(model, policy) as mem:
        return mem.generate(**kwargs)
