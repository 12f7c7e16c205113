"""``namm.memory``: prompts prefilled in chunks (the default for policies that evict) give exactly what one
pass gives, for generation and for teacher-forced scoring, with left padding; the cache holds only the kept
tokens plus one chunk."""

from __future__ import annotations

import pytest
import torch

import namm
from namm.policies import H2O, NAMM, SnapKV


def batch(n: int = 200):
    ids = torch.randint(3, 96, (2, n), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, :37] = 0
    return ids, mask


POLICIES = [H2O(n_up=32, budget=0.4), SnapKV(n_up=32, budget=0.4, window=8),
            NAMM(n_up=32, mode="ragged", params=0.3 * torch.randn(4172, generator=torch.Generator().manual_seed(1)))]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_chunked_prefill_equals_one_pass(tiny_llama, policy):
    ids, mask = batch()
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=0)
    with torch.no_grad(), namm.memory(tiny_llama, policy, prefill_chunk=None) as one:
        ref = one.generate(**kw)
        ref_logits = one.forward(input_ids=ids, attention_mask=mask, logits_to_keep=9).logits
    for chunk in ("auto", 17):
        with torch.no_grad(), namm.memory(tiny_llama, policy, prefill_chunk=chunk) as mem:
            assert torch.equal(mem.generate(**kw), ref)
            peak = max(l._buf["keys"].shape[2] for l in mem.last_cache.memory_layers)
            logits = mem.forward(input_ids=ids, attention_mask=mask, logits_to_keep=9).logits
        assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert peak < ids.shape[1]  # storage followed the kept tokens, not the prompt


def test_bad_prefill_chunk():
    with pytest.raises(ValueError, match="prefill_chunk"):
        namm.Memory(torch.nn.Linear(1, 1), H2O(), adapter=object(), prefill_chunk=0)  # type: ignore[arg-type]


def test_prefill_chunks_skip_the_lm_head(tiny_llama):
    """The chunks before the prompt's last token compute one logit row, not ``[chunk, vocab]``: their logits
    are thrown away (the LM head over a 512-token chunk is 9% of a NAMM's 4k prefill on SmolLM2)."""
    ids, mask = batch()
    rows: list[int] = []
    hook = tiny_llama.register_forward_hook(lambda m, a, kw, out: rows.append(out.logits.shape[1]), with_kwargs=True)
    try:
        with torch.no_grad(), namm.memory(tiny_llama, POLICIES[0], prefill_chunk=64) as mem:
            mem.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=False, pad_token_id=0)
    finally:
        hook.remove()
    assert rows[:3] == [1, 1, 1]  # the three prefill chunks of the first 199 tokens
