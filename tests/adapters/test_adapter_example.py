"""The README's worked example: adding a model family (OLMo-2) is a registered dataclass, and the first
check to run on a new family is that the full cache reproduces the plain model exactly."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import namm
from namm.adapters import ADAPTERS, Adapter, adapter_for, register_adapter
from namm.policies import H2O, FullCache


@dataclass(frozen=True)
class Olmo2(Adapter):
    name: ClassVar[str] = "olmo2"
    model_types: ClassVar[tuple[str, ...]] = ("olmo2",)


@pytest.fixture
def olmo2():
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model("olmo2", vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.set_attn_implementation("eager")
    with pytest.raises(ValueError, match="no adapter for model_type='olmo2'"):
        adapter_for(model)
    adapter = register_adapter(Olmo2())
    yield model
    ADAPTERS.remove(adapter)


@torch.no_grad()
def test_new_family_full_cache_equals_plain_model(olmo2):
    ids = torch.randint(3, 96, (2, 70))
    ref = olmo2(input_ids=ids).logits
    with namm.memory(olmo2, FullCache(n_up=16)) as mem:
        out = mem.forward(input_ids=ids).logits
    assert torch.allclose(out, ref, atol=1e-5)
    with namm.memory(olmo2, H2O(n_up=16, budget=0.5)) as mem:
        mem.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False)
    assert 0.4 < mem.last_cache.cache_fraction() < 0.8
