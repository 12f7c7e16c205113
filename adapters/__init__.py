"""Adapters: where attention and the KV cache live in each model family.

Installed as ``namm.adapters`` (not a top-level ``adapters``), so PyPI's AdapterHub package of that
name can never shadow it.
"""

from .base import ADAPTERS, Adapter, adapter_for, register_adapter
from .llama import LLAMA, LlamaFamily
from .decision_transformer import DECISION_TRANSFORMER, DecisionTransformerAdapter, DTStepper
from .llava_next_video import LLAVA_NEXT_VIDEO, LlavaNextVideoAdapter

__all__ = [
    "ADAPTERS", "Adapter", "adapter_for", "register_adapter", "LLAMA", "LlamaFamily",
    "DECISION_TRANSFORMER", "DecisionTransformerAdapter", "DTStepper", "LLAVA_NEXT_VIDEO", "LlavaNextVideoAdapter",
]
