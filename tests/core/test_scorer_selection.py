import pytest
import torch

from namm.scorer import BAM, MLP, make_scorer
from namm.selection import (
    budget_tokens,
    neighbour_max,
    parse_budget,
    parse_layer_budgets,
    threshold_ragged,
    threshold_reference,
    top_k,
)


def test_bam_has_reference_parameter_count_and_order():
    bam = BAM()
    assert bam.num_params == 4172
    assert [n for n, _ in bam.shapes] == ["w_qkv", "b_qkv", "w_o", "b_o", "w_s", "b_s"]
    p = torch.arange(4172.0)
    parts = bam.unflatten(p)
    assert parts["w_qkv"].shape == (25, 96) and parts["w_qkv"][0, 1] == 1.0  # [in, out], row-major
    assert parts["b_s"].item() == 4171.0
    with pytest.raises(ValueError, match="4172"):
        bam.unflatten(torch.zeros(4000))


def _inputs(n=12, b=2, h=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, n, 25, generator=g)
    mask = torch.ones(b, h, n, dtype=torch.bool)
    pos = torch.arange(n).expand(b, h, n)
    return x, mask, pos, g


@pytest.mark.parametrize("scorer", [BAM(), MLP()], ids=["bam", "mlp"])
def test_linear_params_make_the_scorer_linear(scorer):
    """``Scorer.linear(w, b)``: the score is ``x @ w + b`` for every token (a hand-made start for evolution),
    and ``flatten`` inverts ``unflatten``."""
    x, mask, pos, g = _inputs()
    mask[0, 1, -3:] = False
    w = torch.randn(25, generator=g)
    params = scorer.linear(w, 0.7)
    assert params.shape == (scorer.num_params,)
    assert torch.equal(scorer.flatten(scorer.unflatten(params)), params)
    s = scorer(x, mask, pos, params)
    assert torch.allclose(s[mask], (x @ w + 0.7)[mask], atol=1e-5)
    assert torch.isinf(s[~mask]).all()


def test_bam_with_a_zero_output_projection_skips_its_attention_exactly():
    """A zero ``w_o``/``b_o`` makes BAM's attention path vanish whatever ``w_qkv`` holds; the shortcut that
    then skips the attention gives the same scores, bit for bit, as running it; per-row params take the
    shortcut only when every row's projection is zero."""
    x, mask, pos, g = _inputs()
    mask[1, 2, -4:] = False
    bam = BAM()
    params = 0.2 * torch.randn(4172, generator=g)
    named = bam.unflatten(params.clone())
    named["w_o"].zero_()
    named["b_o"].zero_()
    flat = bam.flatten(named)
    s = bam(x, mask, pos, flat)
    ref = ((x @ named["w_s"]).squeeze(-1) + named["b_s"]).masked_fill(~mask, float("-inf"))
    assert torch.equal(s, ref)
    rows = torch.stack([flat, params])  # one row linear, one not: both still right
    both = bam(x, mask, pos, rows)
    assert torch.allclose(both[0], s[0], atol=1e-6)
    assert torch.allclose(both[1], bam(x, mask, pos, params)[1], atol=1e-6)


def test_bam_is_backward_only():
    """A token's score depends on itself and newer tokens only."""
    x, mask, pos, g = _inputs()
    params = 0.2 * torch.randn(4172, generator=g)
    s = BAM()(x, mask, pos, params)
    x2 = x.clone()
    x2[..., 3, :] += 1.0  # perturb token 3
    s2 = BAM()(x2, mask, pos, params)
    assert torch.allclose(s[..., 4:], s2[..., 4:])  # newer tokens unaffected
    assert not torch.allclose(s[..., :4], s2[..., :4])  # older ones see it


@pytest.mark.parametrize("scorer", [BAM(), MLP()])
def test_per_row_params_equal_separate_calls(scorer):
    x, mask, pos, g = _inputs()
    params = 0.2 * torch.randn(2, scorer.num_params, generator=g)
    both = scorer(x, mask, pos, params)
    for r in range(2):
        one = scorer(x[r : r + 1], mask[r : r + 1], pos[r : r + 1], params[r])
        assert torch.allclose(both[r : r + 1], one, atol=1e-6)


@pytest.mark.parametrize("scorer", ["bam", "mlp"])
def test_shifted_namm_moves_every_score_by_delta(scorer):
    """`NAMM.shifted` (and `namm shift-bias`) moves the keep threshold and nothing else."""
    from namm.policies import NAMM

    x, mask, pos, g = _inputs()
    policy = NAMM(params=0.2 * torch.randn(make_scorer(scorer).num_params, generator=g), scorer=scorer, n_up=32,
                  budget=0.5)
    up = policy.shifted(0.75)
    s, s2 = policy.net(x, mask, pos, policy.params), up.net(x, mask, pos, up.params)
    assert torch.allclose(s2[mask], s[mask] + 0.75, atol=1e-5)
    assert (up.scorer, up.n_up, up.budget) == (scorer, 32, 0.5)
    assert torch.equal(policy.params, policy.shifted(0.0).params) and not torch.equal(policy.params, up.params)


def test_zero_params_keep_everything():
    x, mask, pos, _ = _inputs()
    s = BAM()(x, mask, pos, torch.zeros(4172))
    assert (s == 0).all()
    newest = pos == pos.max()
    assert threshold_ragged(s, mask, newest).all()


def test_reference_mode_equal_counts_per_head():
    s = torch.tensor([[[-1.0, -2.0, 1.0, 1.0], [-1.0, 2.0, 3.0, 1.0]]])  # heads with 2 and 1 negatives
    in_view = torch.ones_like(s, dtype=torch.bool)
    newest = torch.zeros_like(in_view)
    newest[..., -1] = True
    keep = threshold_reference(s, in_view, newest)
    assert keep.sum(-1).tolist() == [[3, 3]]  # min(2, 1) = 1 eviction in every head
    assert keep[0, 0].tolist() == [True, False, True, True]  # head 0 drops its lowest
    ragged = threshold_ragged(s, in_view, newest)
    assert ragged.sum(-1).tolist() == [[2, 3]]


def test_neighbour_max_keeps_runs_in_position_order():
    """Neighbours are the nearest tokens in view by POSITION (slots are not in position order after
    evictions), and a token out of view neither gains nor lends a score."""
    pos = torch.tensor([[[5, 1, 3, 2, 9, 4, 7]]])
    in_view = torch.tensor([[[True, True, True, True, False, True, True]]])
    s = torch.tensor([[[-1.0, -1.0, 2.0, -3.0, 8.0, -1.0, -1.0]]])  # position 3 scores 2, position 9 is out of view
    p3 = neighbour_max(s, pos, in_view, 3)
    by_pos = {int(q): float(v) for q, v in zip(pos[0, 0], p3[0, 0])}
    assert by_pos == {1: -1.0, 2: 2.0, 3: 2.0, 4: 2.0, 5: -1.0, 7: -1.0, 9: float("-inf")}
    p5 = neighbour_max(s, pos, in_view, 5)
    want = {1: 2.0, 2: 2.0, 3: 2.0, 4: 2.0, 5: 2.0, 7: -1.0}
    assert {int(q): float(v) for q, v in zip(pos[0, 0], p5[0, 0]) if q != 9} == want
    assert neighbour_max(s, pos, in_view, 1) is s
    with pytest.raises(ValueError, match="odd"):
        neighbour_max(s, pos, in_view, 4)


def test_namm_pool_is_validated_and_described():
    from namm.policies import NAMM

    with pytest.raises(ValueError, match="odd window"):
        NAMM(pool=2)
    assert "pool=5" in NAMM(pool=5).describe() and "pool" not in NAMM().describe()


def test_top_k_and_budget_forms():
    s = torch.tensor([[[5.0, 1.0, 3.0, -9.0]]])
    in_view = torch.ones_like(s, dtype=torch.bool)
    newest = torch.tensor([[[False, False, False, True]]])
    keep = top_k(s, in_view, newest, torch.tensor([2]))
    assert keep.tolist() == [[[True, False, False, True]]]  # newest always, then the best
    sinks = torch.tensor([[[float("inf")] * 4 + [0.0] * 4]])  # a policy's own +inf (sinks) fills the budget
    newest = torch.zeros_like(sinks, dtype=torch.bool)
    newest[..., -1] = True
    keep = top_k(sinks, torch.ones_like(newest), newest, torch.tensor([4]))
    assert keep.tolist() == [[[True, True, True, False, False, False, False, True]]]  # still the newest
    seen = torch.tensor([100, 7])
    assert budget_tokens(0.25, seen).tolist() == [25, 1]
    assert budget_tokens(40, seen).tolist() == [40, 40]
    assert budget_tokens(None, seen) is None
    assert parse_budget("0.4") == 0.4 and parse_budget("1024") == 1024 and parse_budget("none") is None
    with pytest.raises(ValueError, match="fraction"):
        budget_tokens(1.5, seen)
    with pytest.raises(ValueError):
        parse_budget("lots")
    assert parse_layer_budgets("0=1 1-2=0.5 3=64") == {0: 1.0, 1: 0.5, 2: 0.5, 3: 64}
    for bad, match in [("0-=1", "write FIRST-LAST=B"), ("2-1=0.5", "write FIRST-LAST=B"), ("0=none", "write"),
                       ("0=1 0-3=0.5", "layer 0 twice")]:
        with pytest.raises(ValueError, match=match):
            parse_layer_budgets(bad)


def test_backward_attention_ragged_heads_in_one_call_equal_the_explicit_mask():
    from namm.scorer import _backward_attention

    g = torch.Generator().manual_seed(5)
    b, h, n = 2, 3, 40
    q, k, v = (torch.randn(b, h, n, 8, generator=g) for _ in range(3))
    count = torch.tensor([[40, 25, 0], [1, 39, 17]])
    mask = torch.arange(n)[None, None, :] < count[..., None]  # existing tokens: a prefix of each head
    pos = torch.arange(n).expand(b, h, n) * 3 + 7  # position order, gaps allowed
    fast = _backward_attention(q, k, v, mask, pos)
    allowed = ((pos[..., None, :] >= pos[..., :, None]) & mask[..., None, :]) | torch.eye(n, dtype=torch.bool)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(fast[mask], ref[mask], rtol=1e-5, atol=1e-6)
    assert bool(torch.isfinite(fast).all())


def test_backward_attention_newest_first_is_plain_causal_and_equals_the_explicit_mask():
    """NAMM packs the tokens in view newest first, so BAM runs the fused causal kernel with no permutation."""
    from namm.scorer import _backward_attention

    g = torch.Generator().manual_seed(6)
    b, h, n = 2, 3, 40
    q, k, v = (torch.randn(b, h, n, 8, generator=g) for _ in range(3))
    count = torch.tensor([[40, 25, 0], [1, 39, 17]])
    mask = torch.arange(n)[None, None, :] < count[..., None]
    pos = (n - torch.arange(n)).expand(b, h, n) * 3 + 7  # newest first
    fast = _backward_attention(q, k, v, mask, pos)
    allowed = ((pos[..., None, :] >= pos[..., :, None]) & mask[..., None, :]) | torch.eye(n, dtype=torch.bool)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(fast[mask], ref[mask], rtol=1e-5, atol=1e-6)
    assert bool(torch.isfinite(fast).all())
