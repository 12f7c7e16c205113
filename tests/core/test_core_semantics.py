"""Semantics of the memory core inside a real HF model: full cache = plain HF, evictions = explicit
per-head masks, batches with left padding = each sequence alone."""

import pytest
import torch
from transformers import AttentionInterface

import namm
from namm.policies import H2O, NAMM, FullCache, L2Norm, Recency, StreamingLLM
from namm.scorer import BAM

from ..conftest import make_tiny_llama

N_UP = 32


def _greedy(model, ids, n, **kw):
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                          min_new_tokens=n, do_sample=False, **kw)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_full_cache_equals_plain_hf(family):
    model = make_tiny_llama(family)
    ids = torch.randint(3, 96, (1, 150), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_logits = model(ids).logits
        ref_gen = _greedy(model, ids, 64)
        with namm.memory(model, FullCache(n_up=N_UP)) as mem:
            logits = mem.forward(input_ids=ids).logits
            gen = mem.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=64,
                               min_new_tokens=64, do_sample=False)
    assert (logits - ref_logits).abs().max() <= 1e-5
    assert torch.equal(gen, ref_gen)
    assert model.config._attn_implementation == "eager"  # restored after the block


@pytest.mark.parametrize("pol", [
    H2O(n_up=N_UP, budget=0.4),
    NAMM(n_up=N_UP, params=0.3 * torch.randn(4172, generator=torch.Generator().manual_seed(3)), mode="ragged"),
], ids=["h2o", "namm"])  # token by token, the NAMM's spectrogram takes its one-query path
def test_chunking_does_not_change_results(tiny_llama, pol):
    """One-shot prefill, odd-sized chunks and token-by-token feeding give the same logits."""
    model = tiny_llama
    ids = torch.randint(3, 96, (1, 140), generator=torch.Generator().manual_seed(2))
    outs = []
    with torch.no_grad(), namm.memory(model, pol) as mem:
        for chunk in (140, 45, 1):
            kw = mem.cache_kwargs()
            logits = [model(input_ids=ids[:, i : i + chunk], use_cache=True, **kw).logits for i in range(0, 140, chunk)]
            outs.append(torch.cat(logits, dim=1))
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    assert (outs[0] - outs[2]).abs().max() < 1e-5


def test_namm_state_is_the_same_token_by_token(tiny_llama):
    """The NAMM's spectrogram (tail, open block, EMA) and the kept slots after 140 tokens, fed at once and one
    by one (its one-query decode path): equal, not only the logits they lead to."""
    dc = torch.zeros(25)
    dc[8] = 1.0  # a threshold on the attention a token got: here the heads of a layer keep different counts
    pol = NAMM(n_up=N_UP, params=BAM().linear(dc, -0.2), mode="ragged")
    ids = torch.randint(3, 96, (1, 140), generator=torch.Generator().manual_seed(2))
    caches = []
    with torch.no_grad(), namm.memory(tiny_llama, pol) as mem:
        for chunk in (140, 1):
            kw = mem.cache_kwargs()
            for i in range(0, 140, chunk):
                tiny_llama(input_ids=ids[:, i : i + chunk], use_cache=True, **kw)
            caches.append(mem.last_cache)
    ragged = False
    for a, b in zip(*(c.memory_layers for c in caches)):
        assert 0 < int(a.valid.sum()) < 140 * a.pos.shape[1]
        counts = a.valid.sum(-1)
        ragged |= bool((counts != counts.max()).any())
        for h in range(a.pos.shape[1]):  # slot layouts may differ (compaction timing): compare live tokens
            la, lb = a.valid[0, h], b.valid[0, h]
            assert torch.equal(a.pos[0, h][la], b.pos[0, h][lb])
            for name in ("tail", "block", "ema"):
                assert torch.allclose(a.state[name][0, h][la], b.state[name][0, h][lb], atol=1e-6), name
    assert ragged  # heads kept different counts somewhere: gaps in the slot layout were exercised


class _MaskedReference:
    """Plain attention over the whole sequence with a given per-layer, per-KV-head key mask."""

    def __init__(self, masks):
        self.masks = masks  # layer -> [B, Hkv, T, T] bool

    def __call__(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        m = self.masks[module.layer_idx]
        g = query.shape[1] // key.shape[1]
        k = key.repeat_interleave(g, 1)
        v = value.repeat_interleave(g, 1)
        logits = (query @ k.transpose(-1, -2)) * scaling
        logits = logits.masked_fill(~m.repeat_interleave(g, 1), float("-inf"))
        out = torch.softmax(logits.float(), -1).to(v.dtype) @ v
        return out.transpose(1, 2).contiguous(), None


@pytest.mark.parametrize("policy", [
    H2O(n_up=N_UP, budget=0.4),
    L2Norm(n_up=N_UP, budget=20),
    NAMM(n_up=N_UP, params=0.3 * torch.randn(4172, generator=torch.Generator().manual_seed(3)), mode="ragged"),
    NAMM(n_up=N_UP, params=0.3 * torch.randn(4172, generator=torch.Generator().manual_seed(4))),
], ids=["h2o", "l2", "namm-ragged", "namm-reference"])
def test_evictions_equal_explicit_per_head_masks(tiny_llama, policy):
    model = tiny_llama
    T = 200
    ids = torch.randint(3, 96, (1, T), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), namm.memory(model, policy) as mem:
        kw = mem.cache_kwargs()
        cache = mem.last_cache
        # record, per layer and update, the (head, position) pairs the policy dropped
        events = {i: [] for i in range(len(cache.layers))}

        def record(layer, view):
            gone = (view.in_view & ~layer.valid).nonzero()  # [k, 3] = (row, head, slot)
            events[layer.layer_idx].append((int(view.newest_pos[0]), layer.pos[gone.unbind(1)].clone(), gone[:, 1]))

        cache.add_listener(record)
        logits = model(input_ids=ids, use_cache=True, **kw).logits
    n_evicted = sum(len(p) for ev in events.values() for _, p, _ in ev)
    assert n_evicted > 0, "the policy must evict something for this test to mean anything"
    hkv = model.config.num_key_value_heads
    masks = {}
    for l, ev in events.items():
        m = torch.ones(T, T, dtype=torch.bool).tril()[None, None].repeat(1, hkv, 1, 1)
        for t, positions, heads in ev:
            for p, h in zip(positions.tolist(), heads.tolist()):
                m[0, h, t + 1 :, p] = False  # hidden from every query after the update at position t
        masks[l] = m
    AttentionInterface.register("masked_reference", _MaskedReference(masks))
    model.set_attn_implementation("masked_reference")
    try:
        with torch.no_grad():
            ref = model(input_ids=ids, use_cache=False).logits
    finally:
        model.set_attn_implementation("eager")
    assert (logits - ref).abs().max() < 1e-4


@pytest.mark.parametrize("policy", [
    FullCache(n_up=N_UP), H2O(n_up=N_UP, budget=0.5), StreamingLLM(n_up=N_UP, budget=24), Recency(n_up=N_UP, budget=0.5),
    NAMM(n_up=N_UP, params=0.3 * torch.randn(4172, generator=torch.Generator().manual_seed(6)), mode="ragged"),
    NAMM(n_up=N_UP, params=0.3 * torch.randn(4172, generator=torch.Generator().manual_seed(6))),
], ids=lambda p: p.describe())
def test_left_padded_batch_equals_each_alone(tiny_llama, policy):
    model = tiny_llama
    g = torch.Generator().manual_seed(7)
    a = torch.randint(3, 96, (1, 110), generator=g)
    b = torch.randint(3, 96, (1, 77), generator=g)  # boundaries fall at different steps
    batch = torch.zeros(2, 110, dtype=torch.long)
    mask = torch.zeros(2, 110, dtype=torch.long)
    batch[0], mask[0] = a[0], 1
    batch[1, 33:], mask[1, 33:] = b[0], 1
    kw = dict(max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=0)
    with torch.no_grad(), namm.memory(model, policy) as mem:
        both = mem.generate(input_ids=batch, attention_mask=mask, **kw)
        fr_both = mem.last_cache.cache_fraction()
        alone_a = mem.generate(input_ids=a, attention_mask=torch.ones_like(a), **kw)
        alone_b = mem.generate(input_ids=b, attention_mask=torch.ones_like(b), **kw)
    assert torch.equal(both[0, 110:], alone_a[0, 110:])
    assert torch.equal(both[1, 110:], alone_b[0, 77:])
    assert 0 < fr_both <= 1
