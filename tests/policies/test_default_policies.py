"""Properties every policy in the default list must have, run kvpress-style over DEFAULT_POLICIES."""

import pytest
import torch

import namm
from namm.policies import default_policies
from namm.selection import budget_tokens

N_UP = 32
POLICIES = default_policies(n_up=N_UP, budget=0.4)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.describe())
def test_budget_and_newest_token(tiny_llama, policy):
    ids = torch.randint(3, 96, (1, 230), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), namm.memory(tiny_llama, policy) as mem:
        mem.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=40,
                     min_new_tokens=40, do_sample=False)
    cache = mem.last_cache
    for layer in cache.layers:
        assert layer.history, "updates must run every n_up tokens"
        for h in layer.history:
            k = budget_tokens(policy.budget, h["seen"])
            if k is not None and policy.name != "full":
                assert (h["kept"] <= k[:, None]).all()
        # the newest token is live in every head
        newest = layer.pos.max(-1).values
        assert (newest == layer.seen[:, None] - 1).all()
        assert layer.keys.shape[2] == int(layer.valid.sum(-1).max())  # storage follows the kept tokens
    expected = 1.0 if policy.name == "full" or (policy.name == "namm" and policy.budget is None) else None
    if expected is not None:
        assert cache.cache_fraction() == expected
    else:
        assert cache.cache_fraction() <= 0.45


def test_registry_builds_every_policy():
    for name in namm.POLICIES:
        p = namm.make_policy(name, n_up=64)
        assert p.n_up == 64
    with pytest.raises(ValueError, match="registered"):
        namm.make_policy("nope")


def test_keeps_everything_names_the_policies_that_cannot_drop_a_token(capsys):
    """A budget-ranked baseline without a budget keeps every token: the CLI says so on stderr."""
    from namm.cli.eval import warn_keeps_everything
    from namm.policies import NAMM, PinFirst

    for p in default_policies(n_up=N_UP, budget=None):
        assert p.keeps_everything == (p.name not in ("namm",)), p.describe()
    for p in default_policies(n_up=N_UP, budget=0.4):
        assert p.keeps_everything == (p.name == "full"), p.describe()
    assert PinFirst(inner=namm.make_policy("h2o", n_up=N_UP)).keeps_everything
    assert not PinFirst(inner=namm.make_policy("h2o", n_up=N_UP, budget=0.5)).keeps_everything
    assert not NAMM(n_up=N_UP).keeps_everything  # its threshold decides, with or without a budget
    warn_keeps_everything([namm.make_policy("h2o", n_up=N_UP), namm.make_policy("full", n_up=N_UP),
                           namm.make_policy("tova", n_up=N_UP, budget=0.5)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "h2o has no --budget" in err[0] and "--budget 0.5" in err[0]
