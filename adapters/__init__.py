"""Adapters: where attention and the KV cache live in each model family.

Installed as ``namm.adapters`` (not a top-level ``adapters``), so PyPI's AdapterHub package of that
name can never shadow it.
"""

from .base import ADAPTERS, Adapter, adapter_for, register_adapter
from .llama import LLAMA, LlamaFamily

__all__ = ["ADAPTERS", "Adapter", "adapter_for", "register_adapter", "LLAMA", "LlamaFamily"]
