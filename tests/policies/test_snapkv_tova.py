"""SnapKV and TOVA: what each keeps, checked on the tiny Llama (budgets and newest tokens are checked for
every default policy in tests/test_policies.py)."""

from __future__ import annotations

import pytest
import torch

import namm
from namm.policies import TOVA, SnapKV


def run(model, policy, n: int = 230):
    ids = torch.randint(3, 96, (2, n), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), namm.memory(model, policy) as mem:
        mem.forward(input_ids=ids, attention_mask=torch.ones_like(ids))
    return mem.last_cache


def test_tova_keeps_the_same_tokens_in_every_head(tiny_llama):
    cache = run(tiny_llama, TOVA(n_up=32, budget=0.4))
    for layer in cache.memory_layers:
        pos = layer.pos.masked_fill(~layer.valid, -1)
        assert (pos == pos[:, :1]).all(), "one ranking per layer: heads keep identical positions"
    assert cache.cache_fraction() <= 0.41


def test_snapkv_keeps_its_observation_window_and_resets_it(tiny_llama):
    window = 8
    cache = run(tiny_llama, SnapKV(n_up=32, budget=0.3, window=window))
    for layer in cache.memory_layers:
        newest = layer.seen[:, None, None] - 1
        recent = (layer.pos > newest - window) & (layer.pos >= 0)
        assert (recent.sum(-1) == window).all(), "the window's queries' own tokens are kept"
        assert (layer.state["obs"][layer.valid] >= 0).all()
    with pytest.raises(ValueError, match="window"):
        SnapKV(n_up=16, window=32)
