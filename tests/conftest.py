import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch


def make_tiny_llama(family: str = "llama", layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0):
    """A random fp32 decoder of the given family (GQA when kv_heads < heads), eager attention."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(
        family, vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    if hasattr(cfg, "sliding_window"):
        cfg.sliding_window = None
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.set_attn_implementation("eager")
    return model


@pytest.fixture(scope="module")
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one intra-op thread is as fast, and much steadier when other jobs share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
