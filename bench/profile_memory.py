"""Where the memory path spends its time: prefill + decode of one policy on a real model under cProfile,
the time inside each step of the core (update, masks, attention, observe, scoring, selection, compaction)
and the model's own layers.

    python bench/profile_memory.py --policy namm --context 2048 --decode 32
    python bench/profile_memory.py --policy plain --context 2048          # HF's own path, for comparison

Prints the core's functions by total time (own + callees) and the share of the run's wall time. cProfile
adds overhead per Python call, so read shares, not absolute times (the ratios are in bench_real.py).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from bench_real import load, prompt_ids

STEPS = {  # the core's steps, by function (file suffix, function name)
    "cache.update (append K/V/state)": ("namm/cache.py", "update"),
    "cache.mark_padding": ("namm/cache.py", "mark_padding"),
    "cache.compact (gather live slots)": ("namm/cache.py", "compact"),
    "cache.evict (policy.select + bookkeeping)": ("namm/cache.py", "evict"),
    "attention: masks": ("namm/attention.py", "_piece_mask"),
    "attention: kernels (sdpa / rows)": ("namm/attention.py", "_attend"),
    "attention: whole function": ("namm/attention.py", "memory_attention"),
    "policy.observe (features)": ("policies", "observe"),
    "policy.scores (BAM / baselines)": ("policies", "scores"),
    "model forward (all)": ("module.py", "_call_impl"),
}


def main() -> None:
    import torch
    from transformers import DynamicCache

    import namm
    from namm.adapters import adapter_for
    from namm.checkpoint import resolve_policy

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--policy", default="namm", help="plain, full, namm, h2o, snapkv, tova, ...")
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--n-up", type=int, default=128)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--decode", type=int, default=32)
    a = ap.parse_args()
    model, name = load(a.model, "cpu", torch.float32)
    ids = prompt_ids(a.context, model.config.vocab_size)
    policy = None
    if a.policy != "plain":
        over = {} if a.policy in ("full", "namm") else {"budget": a.budget}
        policy = resolve_policy(a.policy, **({"n_up": a.n_up} if a.policy != "namm" else {}), **over)
    prof = cProfile.Profile()
    with torch.no_grad():
        model(input_ids=ids[:, :64])
        t0 = time.perf_counter()
        prof.enable()
        if policy is None:
            kw = {adapter_for(model).cache_kwarg(model): DynamicCache()}
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **kw)
        else:
            mem_ctx = namm.memory(model, policy)
            mem = mem_ctx.__enter__()
            kw = mem.cache_kwargs()
            if mem.prefill_chunk:
                mem._prefill(kw, ids, None, ids.shape[1] - 1)
                out = model(input_ids=ids[:, -1:], use_cache=True, logits_to_keep=1, **kw)
            else:
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **kw)
        t1 = time.perf_counter()
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(a.decode):
            nxt = model(input_ids=nxt, use_cache=True, **kw).logits[:, -1].argmax(-1, keepdim=True)
        prof.disable()
        t2 = time.perf_counter()
        if policy is not None:
            mem_ctx.__exit__(None, None, None)
    stats = pstats.Stats(prof)
    total = t2 - t0
    print(f"{name}, {a.policy}, {a.context} tokens + {a.decode} decoded: prefill {t1 - t0:.2f} s, "
          f"decode {(t2 - t1) / max(a.decode, 1) * 1000:.0f} ms/token (under cProfile)")
    for label, (suffix, fn) in STEPS.items():
        cum = sum(v[3] for (f, _, n), v in stats.stats.items() if f.endswith(suffix) or suffix in f if n == fn)
        if fn == "_call_impl":
            cum = max((v[3] for (f, _, n), v in stats.stats.items() if n == fn), default=0.0)
        print(f"  {label:44s} {cum:7.2f} s  {100 * cum / total:5.1f}%")


if __name__ == "__main__":
    main()
