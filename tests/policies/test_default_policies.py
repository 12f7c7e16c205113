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
