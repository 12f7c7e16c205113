"""SnapKV and TOVA: what each keeps, checked on the tiny Llama (budgets and newest tokens are checked for
every default policy in tests/test_policies.py), and the PinFirst wrapper."""

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


def test_pin_first_keeps_the_sinks_and_forwards_the_rest(tiny_llama):
    from namm.policies import H2O, NAMM, PinFirst

    inner = H2O(n_up=32, budget=0.25)
    pinned = run(tiny_llama, PinFirst(inner=inner, sinks=4))
    for layer in pinned.memory_layers:
        live = layer.pos.masked_fill(~layer.valid, -1)
        assert ((live >= 0) & (live < 4)).sum(-1).eq(4).all(), "positions 0-3 stay in every row and head"
    plain = run(tiny_llama, inner)
    assert pinned.cache_fraction() >= plain.cache_fraction()
    w = PinFirst(inner=NAMM(n_up=64), sinks=2)
    assert w.n_up == 64 and w.needs_attention and w.token_state() == NAMM(n_up=64).token_state()
    assert "first 2 positions pinned" in w.describe()
    with pytest.raises(ValueError, match="pass it as inner="):
        PinFirst(inner)  # positionally it would be n_up


def test_keep_whole_keeps_its_heads_and_layers_whole_and_forwards_the_rest(tiny_llama):
    from namm.policies import H2O, KeepWhole

    inner = H2O(n_up=32, budget=0.25)
    plain = run(tiny_llama, inner)
    whole = run(tiny_llama, KeepWhole(inner=inner, heads=((0, 1),), layers=(1,)))
    by_layer = {layer.layer_idx: layer for layer in whole.memory_layers}
    plain_by_layer = {layer.layer_idx: layer for layer in plain.memory_layers}
    seen = int(by_layer[0].seen.max())
    assert (by_layer[0].valid[:, 1].sum(-1) == seen).all(), "layer 0's KV head 1 keeps every token"
    assert (by_layer[1].valid.sum(-1) == seen).all(), "layer 1 keeps every token in every head"
    # layer 0's head 0 reads only embeddings and its own slots, so it keeps exactly what inner keeps alone
    a = by_layer[0].pos.masked_fill(~by_layer[0].valid, -1)[:, 0].sort(-1).values
    b = plain_by_layer[0].pos.masked_fill(~plain_by_layer[0].valid, -1)[:, 0].sort(-1).values
    n = min(a.shape[-1], b.shape[-1])
    assert torch.equal(a[..., -n:], b[..., -n:]) and (a[..., :-n] == -1).all()
    assert plain.cache_fraction() < whole.cache_fraction() < 1.0
    with pytest.raises(ValueError, match="no head 9"):
        run(tiny_llama, KeepWhole(inner=inner, heads=((0, 9),)))


def test_layer_budgets_set_the_inner_budget_per_layer(tiny_llama):
    from namm.policies import H2O, KeepWhole, LayerBudgets, PinFirst

    inner = H2O(n_up=32, budget=0.5)
    cache = run(tiny_llama, LayerBudgets(inner=inner, budgets=((0, 0.125),)))
    plain = run(tiny_llama, inner)
    by_layer = {layer.layer_idx: layer for layer in cache.memory_layers}
    plain_by_layer = {layer.layer_idx: layer for layer in plain.memory_layers}
    # at the last update (seen 224 of 230) layer 0 kept floor(224 / 8) = 28 per head, then 6 newer arrived
    assert (by_layer[0].valid.sum(-1) == 28 + 6).all()
    assert (by_layer[1].valid.sum(-1) == 112 + 6).all(), "a layer not listed keeps inner's own budget"
    assert torch.equal(by_layer[1].valid.sum(-1), plain_by_layer[1].valid.sum(-1))
    assert cache.cache_fraction() < plain.cache_fraction()
    w = KeepWhole(inner=LayerBudgets(inner=inner, budgets=((1, 0.25),)), heads=((0, 0),))
    assert "layer budgets {1: 0.25}" in w.describe() and "whole heads [(0, 0)]" in w.describe()
    assert not LayerBudgets(inner=H2O(n_up=32), budgets=((0, 0.5),)).keeps_everything
    with pytest.raises(ValueError, match="wrap pin_first around it"):
        LayerBudgets(inner=PinFirst(inner=inner), budgets=((0, 0.25),))
    with pytest.raises(ValueError, match="fractional budget"):
        LayerBudgets(inner=inner, budgets=((0, 1.5),))
