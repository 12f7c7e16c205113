"""The adapter contract: where a model family keeps its attention and KV cache.

An adapter is a few facts, not a model wrapper: which text config holds the layer/head counts, which
sub-models run the ``"namm"`` attention function, and under which forward kwarg the cache goes.
Everything else (masks, positions, eviction) is the core's. Add a family with a subclass and
:func:`register_adapter`; see ``namm/adapters/llama.py`` (8 lines of facts) for the pattern.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

from namm.attention import ATTN_NAME, register
from namm.cache import MemoryCache
from namm.policies import MemoryPolicy

__all__ = ["Adapter", "ADAPTERS", "register_adapter", "adapter_for", "Model"]

Model = Any  # a Hugging Face PreTrainedModel (its submodules and config are typed dynamically)


@dataclass(frozen=True)
class Adapter:
    """Base adapter: a decoder-only HF model whose every attention module reads the cache."""

    name: ClassVar[str] = "base"
    model_types: ClassVar[tuple[str, ...]] = ()

    def matches(self, model: Model) -> bool:
        return getattr(model.config, "model_type", None) in self.model_types

    def text_config(self, model: Model):
        return model.config.get_text_config(decoder=True)

    def num_layers(self, model: Model) -> int:
        return int(self.text_config(model).num_hidden_layers)

    def num_kv_heads(self, model: Model) -> int:
        cfg = self.text_config(model)
        return int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)

    def attention_target(self, impl: str):
        """What to pass to ``set_attn_implementation`` (a dict for composite models)."""
        return impl

    def current_attention(self, model: Model):
        return model.config._attn_implementation

    def set_attention(self, model: Model, impl) -> None:
        model.set_attn_implementation(impl)

    def attach(self, model: Model):
        """Switch the model to the ``"namm"`` attention; returns what to restore on :meth:`detach`."""
        register()
        self.check(model)
        prev = self.current_attention(model)
        self.set_attention(model, self.attention_target(ATTN_NAME))
        return prev

    def detach(self, model: Model, prev) -> None:
        self.set_attention(model, prev)

    def layer_windows(self, model: Model) -> list[int | None]:
        """Per layer: the window of a sliding-attention layer, ``None`` for a full-attention one (which the
        policy manages). Read from ``config.layer_types`` (Gemma 2/3, Cohere 2, gpt-oss, Qwen with a window)."""
        cfg = self.text_config(model)
        types = getattr(cfg, "layer_types", None)
        if types is None:
            return [None] * self.num_layers(model)
        window = getattr(cfg, "sliding_window", None)
        if "sliding_attention" not in types:
            return [None] * len(types)
        if window is None:
            raise ValueError(f"{cfg.model_type}: layer_types has sliding layers but the config sets no sliding_window")
        w = int(window)
        return [w if t == "sliding_attention" else None for t in types]

    def managed_layers(self, model: Model) -> list[int]:
        """The model's numbers of the layers the policy manages (its full-attention ones), in order: the
        trace numbers them 0.. in this order; ``namm.policies.KeepWhole`` names them by these."""
        return [i for i, w in enumerate(self.layer_windows(model)) if w is None]

    def check(self, model: Model) -> None:
        """Refuse configurations the core cannot honour, with the reason."""
        cfg = self.text_config(model)
        types = getattr(cfg, "layer_types", None)
        if types is not None:
            other = sorted(set(types) - {"full_attention", "sliding_attention"})
            if other:
                raise ValueError(f"{type(model).__name__} has layers of type {other}; the memory core serves "
                                 "full_attention and sliding_attention layers only")
            if "full_attention" not in types:
                raise ValueError(f"every layer of {type(model).__name__} uses a sliding window: there is no "
                                 "full-attention layer for a memory policy to manage")
            if "sliding_attention" in types and not getattr(cfg, "sliding_window", None):
                raise ValueError(f"{type(model).__name__} has sliding_attention layers but no config.sliding_window")
            return
        if getattr(cfg, "use_sliding_window", True) and getattr(cfg, "sliding_window", None):
            raise ValueError(
                f"{type(model).__name__} uses a sliding attention window ({cfg.sliding_window}) in every layer and "
                "its config has no layer_types; the memory policy would replace the window. Set "
                "config.sliding_window = None to run it under a memory policy."
            )

    def cache_kwarg(self, model: Model) -> str:
        """transformers >= 5.24 calls the cache ``cache``; 5.17 ``past_key_values``."""
        params = inspect.signature(model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def new_cache(self, model: Model, policy: MemoryPolicy) -> MemoryCache:
        return MemoryCache(policy, self.num_layers(model), windows=self.layer_windows(model))


ADAPTERS: list[Adapter] = []


def register_adapter(adapter: Adapter) -> Adapter:
    """Make an adapter instance discoverable by :func:`adapter_for` (newest first)."""
    ADAPTERS.insert(0, adapter)
    return adapter


def adapter_for(model: Model) -> Adapter:
    """The newest registered adapter that matches ``model`` (the built-ins register when
    ``namm.adapters`` is imported, which importing this function implies)."""
    for a in ADAPTERS:
        if a.matches(model):
            return a
    known = sorted({t for a in ADAPTERS for t in a.model_types})
    raise ValueError(
        f"no adapter for model_type={getattr(model.config, 'model_type', None)!r}; known: {known}. "
        "Write one (see namm/adapters/llama.py and the README's \"Extending\") and register it with register_adapter()."
    )
