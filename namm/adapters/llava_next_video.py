"""LLaVA-NeXT-Video (HF ``LlavaNextVideoForConditionalGeneration``): a Llama-family language model fed
with CLIP frame tokens.

Only the language model runs the ``"namm"`` attention; the CLIP vision tower keeps its own (the memory
function without a memory cache is causal, which would be wrong for a ViT). Everything else (cache,
masks, eviction) is the Llama family's. Where the frame tokens sit in the prompt, the video/text
statistics and the frames x updates heat-map are :mod:`namm.drivers.video`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Model, register_adapter
from .llama import LlamaFamily

__all__ = ["LlavaNextVideoAdapter", "LLAVA_NEXT_VIDEO", "tokens_per_frame"]


@dataclass(frozen=True)
class LlavaNextVideoAdapter(LlamaFamily):
    """The Llama-family facts for the language model, with the attention switched per sub-model."""

    name: ClassVar[str] = "llava_next_video"
    model_types: ClassVar[tuple[str, ...]] = ("llava_next_video",)

    def attention_target(self, impl):
        # sub-configs left out of the dict keep their implementation: the vision tower is untouched
        return {"text_config": impl}

    def current_attention(self, model: Model) -> dict[str, str]:
        cfg = model.config
        return {"text_config": cfg.text_config._attn_implementation,
                "vision_config": cfg.vision_config._attn_implementation}

    def check(self, model: Model) -> None:
        lm_type = getattr(self.text_config(model), "model_type", None)
        if lm_type not in LlamaFamily.model_types:
            raise ValueError(
                f"{type(model).__name__} has a {lm_type!r} language model; the LLaVA-NeXT-Video adapter reuses "
                f"the Llama-family adapter and supports {sorted(LlamaFamily.model_types)}"
            )
        super().check(model)


LLAVA_NEXT_VIDEO = register_adapter(LlavaNextVideoAdapter())


def tokens_per_frame(config) -> int:
    """Language-model tokens per frame: CLIP patches (CLS dropped) pooled by ``spatial_pool_stride``
    (336 px / 14 px patches = 24x24 = 576 -> 12x12 = 144 for the 7B model)."""
    v = config.vision_config
    side = int(v.image_size) // int(v.patch_size) // int(config.spatial_pool_stride)
    return side * side
