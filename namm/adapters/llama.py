"""Llama-family decoder LMs (Llama 2/3, Mistral, Qwen2/3, ...): every attention module calls
``cache.update`` then the attention interface, so the base adapter's facts are all that is needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Adapter, register_adapter


@dataclass(frozen=True)
class LlamaFamily(Adapter):
    name: ClassVar[str] = "llama"
    model_types: ClassVar[tuple[str, ...]] = ("llama", "mistral", "qwen2", "qwen3", "phi3", "granite")


LLAMA = register_adapter(LlamaFamily())
