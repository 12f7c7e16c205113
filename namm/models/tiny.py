"""Tiny random models, built on the fly: tests, smoke runs and the shapes of real models without weights.

* :func:`tiny_random_llama`: a 2-layer GQA Llama (vocab 96, width 64) with :class:`CharTokenizer`;
* :func:`random_like`: a model of a real architecture's config with random weights (benchmarks use it
  when the real weights are not fetched).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["CharTokenizer", "tiny_random_llama", "random_like", "apply_rope_override"]

# the alphabet of namm.tasks.synthetic (kept here as a literal: models sit beside tasks, not above them)
_CHARS = "0123456789abcdefghij=;\n "


class CharTokenizer:
    """Character tokenizer for the tiny random model. Ids 0/1/2 are pad/bos/eos; every other id decodes
    to ``chars[(id - 3) % len(chars)]``, so any output of a random model lies in the task's alphabet
    and earns partial credit (a random model otherwise scores exactly 0 and the fitness is flat)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    chat_template = None

    def __init__(self, vocab_size: int = 96, chars: str = _CHARS) -> None:
        if vocab_size < 3 + len(chars):
            raise ValueError(f"vocab_size {vocab_size} too small for {len(chars)} characters + 3 specials")
        self.chars = chars
        self.ids = {c: 3 + i for i, c in enumerate(chars)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self.bos_token_id] * add_special_tokens + [self.ids[c] for c in text if c in self.ids]

    def __call__(self, text: str, add_special_tokens: bool = True, **_) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.chars[(i - 3) % len(self.chars)] for i in ids if i >= 3)


def apply_rope_override(hf_config, rope_theta: float | None, max_positions: int | None) -> None:
    """Set a fixed RoPE base (plain rope, no scaling) and the position limit on a loaded HF config.

    transformers 5 keeps the base in ``config.rope_parameters``; a ``rope_theta=`` kwarg to
    ``AutoConfig.from_pretrained`` is silently ignored when the file already has rope parameters,
    so the loaded config is edited instead.
    """
    if rope_theta is not None:
        if isinstance(getattr(hf_config, "rope_parameters", None), dict):
            hf_config.rope_parameters = {"rope_type": "default", "rope_theta": float(rope_theta)}
        else:
            hf_config.rope_theta = float(rope_theta)
            if getattr(hf_config, "rope_scaling", None) is not None:
                hf_config.rope_scaling = None
    if max_positions is not None:
        hf_config.max_position_embeddings = int(max_positions)


def tiny_random_llama(seed: int = 0, rope_theta: float | None = None, max_position_embeddings: int | None = None,
                      layers: int = 2, heads: int = 4, kv_heads: int = 2, family: str = "llama"):
    """A random fp32 decoder (GQA when ``kv_heads < heads``; vocab 96, width 64), eager attention."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(
        family, vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    if family != "llama" and hasattr(cfg, "sliding_window"):
        cfg.sliding_window = None
    apply_rope_override(cfg, rope_theta, max_position_embeddings)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.set_attn_implementation("eager")
    return model


def random_like(config, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A causal LM with ``config`` (an HF config object) and random weights, eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
