"""Hybrid sliding/full models (config.layer_types): the policy manages the full-attention layers, the
sliding ones keep exactly their window; the full cache equals the plain model (tiny random Gemma 2 / 3)."""

from __future__ import annotations

import pytest
import torch

import namm
from namm.adapters import GemmaFamily, adapter_for
from namm.policies import H2O, FullCache

TYPES = ["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"] * 2 + ["full_attention"]
WINDOW, N_UP = 24, 16


def tiny(family: str = "gemma3_text", **extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(family, vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                               num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                               sliding_window=WINDOW, layer_types=TYPES, pad_token_id=0, bos_token_id=1,
                               eos_token_id=2, **extra)
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.fixture(scope="module")
def gemma3():
    return tiny()


def batch():
    ids = torch.randint(3, 96, (2, 100), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :13] = 0  # left padding
    return ids, mask


@pytest.mark.parametrize("family, extra", [("gemma3_text", {}), ("gemma2", {"attn_logit_softcapping": 5.0,
                                                                            "final_logit_softcapping": None})])
def test_full_cache_equals_the_plain_model(family, extra):
    model = tiny(family, **extra)
    assert isinstance(adapter_for(model), GemmaFamily)
    ids, mask = batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        with namm.memory(model, FullCache(n_up=N_UP)) as mem:
            out = mem.forward(input_ids=ids, attention_mask=mask).logits
        assert (out - ref)[mask.bool()].abs().max() <= 1e-5
        g_ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, do_sample=False)
        with namm.memory(model, FullCache(n_up=N_UP)) as mem:
            g = mem.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, do_sample=False)
        assert torch.equal(g, g_ref)


def test_policy_manages_full_layers_and_sliding_ones_keep_their_window(gemma3):
    ids, mask = batch()
    with torch.no_grad(), namm.memory(gemma3, H2O(n_up=N_UP, budget=0.5)) as mem:
        mem.generate(input_ids=ids, attention_mask=mask, max_new_tokens=30, do_sample=False)
    cache = mem.last_cache
    full = [l for l in cache.memory_layers if l.managed]
    sliding = [l for l in cache.memory_layers if not l.managed]
    assert [l.layer_idx for l in full] == [2, 5] and all(l.window == WINDOW for l in sliding)
    for l in sliding:  # between updates a sliding layer holds its window plus at most one update period
        assert l.keys.shape[2] <= WINDOW + N_UP and l.is_sliding
        assert (l.pos.max(-1).values - l.pos.masked_fill(~l.valid, 10**9).min(-1).values < WINDOW + N_UP).all()
    assert cache.cache_fraction() == pytest.approx(0.5, abs=0.02)  # managed layers: the budget
    assert cache.cache_fraction(scope="all") < cache.cache_fraction()  # the windows keep less of a long prompt
    assert cache.kv_bytes(scope="managed") < cache.kv_bytes()


def test_unsupported_layer_types_are_refused(gemma3):
    a = adapter_for(gemma3)
    cfg = gemma3.config
    old = list(cfg.layer_types)
    try:
        cfg.layer_types = ["sliding_attention"] * 6
        with pytest.raises(ValueError, match="no full-attention layer"):
            a.check(gemma3)
        cfg.layer_types = ["linear_attention"] + old[1:]
        with pytest.raises(ValueError, match=r"\['linear_attention'\]"):
            a.check(gemma3)
        cfg.layer_types, window = old, cfg.sliding_window
        cfg.sliding_window = None
        with pytest.raises(ValueError, match="no sliding_window"):
            a.layer_windows(gemma3)
        cfg.sliding_window = window
    finally:
        cfg.layer_types = old


def test_a_trace_names_the_model_layers_so_per_layer_policies_replay_as_they_ran(gemma3, tmp_path):
    from namm.drivers.trace import record
    from namm.policies import KeepWhole
    from namm.replay import kept_mass, read_trace, save_trace

    ids = torch.randint(3, 96, (80,), generator=torch.Generator().manual_seed(2)).tolist()
    meta, tensors = record(gemma3, ids, n_up=N_UP)
    assert meta["num_layers"] == 2 and tensors["layers"].tolist() == [2, 5]
    meta, tensors = read_trace(save_trace(tmp_path / "t.safetensors", meta, tensors))
    inner = H2O(n_up=N_UP, budget=0.25)
    _, frac = kept_mass(inner, meta, tensors, score_from=64, per_head=True)
    kept, frac5 = kept_mass(KeepWhole(inner=inner, layers=(5,)), meta, tensors, score_from=64, per_head=True)
    assert kept[0, 1].min() == pytest.approx(1.0, abs=1e-4) and kept[0, 0].max() < 0.99  # model layer 5 is trace layer 1
    assert frac5[0] > frac[0]
    tensors["layers"] = torch.tensor([2])
    with pytest.raises(ValueError, match="layers has shape"):
        read_trace(save_trace(tmp_path / "bad.safetensors", meta, tensors))
