"""Gemma-family decoders (Gemma, Gemma 2, Gemma 3 text): hybrid models whose ``config.layer_types`` mix
sliding-window and full-attention layers. The base adapter's facts cover them: the policy manages the
full-attention layers, the sliding ones keep exactly their window (``Adapter.layer_windows``); Gemma 2's
logit soft-capping reaches the attention function as ``softcap``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Adapter, register_adapter


@dataclass(frozen=True)
class GemmaFamily(Adapter):
    name: ClassVar[str] = "gemma"
    model_types: ClassVar[tuple[str, ...]] = ("gemma", "gemma2", "gemma3_text")


GEMMA = register_adapter(GemmaFamily())
