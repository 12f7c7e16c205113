"""Adapters: where attention and the KV cache live in each model family (facts, not wrappers).

The built-in families register on import, newest first; :func:`adapter_for` finds the one for a model.
"""

from .base import ADAPTERS, Adapter, adapter_for, register_adapter
from .decision_transformer import DECISION_TRANSFORMER, DecisionTransformerAdapter
from .gemma import GEMMA, GemmaFamily
from .llama import LLAMA, LlamaFamily
from .llava_next_video import LLAVA_NEXT_VIDEO, LlavaNextVideoAdapter

__all__ = [
    "ADAPTERS", "Adapter", "adapter_for", "register_adapter", "LLAMA", "LlamaFamily", "GEMMA", "GemmaFamily",
    "DECISION_TRANSFORMER", "DecisionTransformerAdapter", "LLAVA_NEXT_VIDEO", "LlavaNextVideoAdapter",
]
