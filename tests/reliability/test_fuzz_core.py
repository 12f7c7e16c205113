"""Property tests over the core, driven through the real attention function without a model:
random shapes, padding, chunkings, n_up, budgets and attention inputs never crash, never evict the
newest token, never exceed the budget and never produce NaN."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from namm.attention import memory_attention
from namm.cache import MemoryCache
from namm.policies import H2O, NAMM, FullCache, L2Norm, Recency, StreamingLLM
from namm.selection import budget_tokens

POLICY_KINDS = ["full", "h2o", "l2", "streamingllm", "recency", "namm-ref", "namm-ragged"]


def _policy(kind, n_up, budget, seed):
    params = 0.5 * torch.randn(4172, generator=torch.Generator().manual_seed(seed))
    return {
        "full": lambda: FullCache(n_up=n_up),
        "h2o": lambda: H2O(n_up=n_up, budget=budget),
        "l2": lambda: L2Norm(n_up=n_up, budget=budget),
        "streamingllm": lambda: StreamingLLM(n_up=n_up, budget=budget),
        "recency": lambda: Recency(n_up=n_up, budget=budget),
        "namm-ref": lambda: NAMM(n_up=n_up, params=params, budget=budget),
        "namm-ragged": lambda: NAMM(n_up=n_up, params=params, mode="ragged", budget=budget),
    }[kind]()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(POLICY_KINDS),
    b=st.integers(1, 3),
    hkv=st.integers(1, 3),
    groups=st.integers(1, 2),
    n_up=st.sampled_from([16, 32, 48]),
    budget=st.one_of(st.none(), st.floats(0.05, 1.0), st.integers(1, 40)),
    chunks=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    pads=st.lists(st.integers(0, 10), min_size=3, max_size=3),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_attention_and_eviction_properties(kind, b, hkv, groups, n_up, budget, chunks, pads, scale, seed):
    g = torch.Generator().manual_seed(seed)
    policy = _policy(kind, n_up, budget, seed)
    cache = MemoryCache(policy, num_layers=1)
    layer = cache.layers[0]
    d = 8
    total = sum(chunks)
    # left padding per row (never the whole prompt)
    pad = [min(p, chunks[0] - 1) for p in pads[:b]]
    mask2d = torch.ones(b, total, dtype=torch.bool)
    for r, p in enumerate(pad):
        mask2d[r, :p] = False
    seen = 0
    for c in chunks:
        k = scale * torch.randn(b, hkv, c, d, generator=g)
        v = torch.randn(b, hkv, c, d, generator=g)
        q = scale * torch.randn(b, hkv * groups, c, d, generator=g)
        keys, values = layer.update(k, v)
        out, _ = memory_attention(None, q, keys, values, mask2d[:, : seen + c])
        seen += c
        assert out.shape == (b, c, hkv * groups, d)
        assert torch.isfinite(out).all()
        for name, t in layer.state.items():
            assert torch.isfinite(t).all(), name
    real = mask2d.sum(-1)
    assert torch.equal(layer.seen, real)
    # newest real token is live in every (row, head); storage follows the kept tokens
    assert (layer.pos.max(-1).values == real[:, None] - 1).all()
    assert layer.keys.shape[2] == int(layer.valid.sum(-1).max())
    # padding is never live, positions are increasing among live slots
    live_pos = layer.pos.masked_fill(~layer.valid, -1)
    assert ((live_pos[..., 1:] > live_pos[..., :-1]) | ~layer.valid[..., 1:]).all()
    for h in layer.history:
        k = budget_tokens(policy.budget, h["seen"])
        if k is not None and kind != "full":
            rows = h["rows"]
            assert (h["kept"][rows] <= torch.maximum(k[rows], torch.ones_like(k[rows]))[:, None]).all()
    fr = cache.cache_fraction()
    assert 0.0 < fr <= 1.0
