"""Speed and memory of generation under each policy, side by side in one run.

    python bench/bench_memory.py                      # CPU: a scaled-down Llama-3 shape
    python bench/bench_memory.py --device cuda --dtype bfloat16 --shape llama3-8b --contexts 8192 16384 32768

For every context length: prefill + ``--decode`` greedy tokens under full cache, NAMM, H2O and L2 at the
same budget; reports prefill and decode tokens/s, peak KV-cache bytes (padded storage), peak device
memory (CUDA), and the share of wall time spent inside the memory policy (attention-row observation,
scoring/selection and compaction). Ratios are against the full cache measured in the same run.
Writes ``--out`` JSON. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import namm
from namm.policies import H2O, NAMM, FullCache, L2Norm

SHAPES = {
    # hidden, intermediate, layers, heads, kv heads (Llama-3-8B keeps 32 heads / 8 KV heads, head_dim 128)
    "llama3-8b": (4096, 14336, 32, 32, 8),
    "cpu-small": (512, 1024, 4, 8, 2),
}


class PolicyTimer:
    """Accumulates wall time spent in the memory policy's hooks (wraps the layer methods)."""

    def __init__(self, sync) -> None:
        self.seconds = 0.0
        self.sync = sync

    def wrap(self, cache) -> None:
        for layer in cache.layers:
            for name in ("evict", "compact"):
                setattr(layer, name, self._timed(getattr(layer, name)))
        pol = cache.policy
        if pol.needs_attention:
            # observe is a policy method: time it through an instance-level wrapper on the layers' policy
            orig = type(pol).observe
            timer = self

            def observe(state, attn, qpos, _orig=orig):
                t = time.perf_counter()
                _orig(pol, state, attn, qpos)
                timer.sync()
                timer.seconds += time.perf_counter() - t

            object.__setattr__(pol, "observe", observe)

    def _timed(self, fn):
        def run(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            self.sync()
            self.seconds += time.perf_counter() - t
            return out

        return run


def bench_one(model, policy, ids, decode: int, sync) -> dict:
    timer = PolicyTimer(sync)
    with torch.no_grad(), namm.memory(model, policy) as mem:
        kw = mem.cache_kwargs()
        cache = mem.last_cache
        timer.wrap(cache)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, **kw)
        sync()
        t1 = time.perf_counter()
        nxt = out.logits[:, -1:].argmax(-1)
        peak_kv = cache.kv_bytes()
        for _ in range(decode):
            out = model(input_ids=nxt, use_cache=True, **kw)
            nxt = out.logits[:, -1:].argmax(-1)
            peak_kv = max(peak_kv, cache.kv_bytes())
        sync()
        t2 = time.perf_counter()
    b, n = ids.shape
    return {
        "policy": policy.describe(),
        "prefill_tok_s": b * n / (t1 - t0),
        "decode_tok_s": b * decode / (t2 - t1),
        "ms_per_step": 1000 * (t2 - t1) / decode,
        "peak_kv_bytes": peak_kv,
        "peak_device_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "policy_time_share": timer.seconds / (t2 - t0),
        "cache_fraction": cache.cache_fraction(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="cpu-small")
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--n-up", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default="runs/bench_memory.json")
    a = ap.parse_args()

    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    hidden, inter, layers, heads, kv = SHAPES[a.shape]
    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=max(a.contexts) + a.decode)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dev, getattr(torch, a.dtype)).eval()
    # a random NAMM at the same cadence, capped at the same budget as the baselines
    namm_params = 0.065 * torch.randn(NAMM().net.num_params, generator=torch.Generator().manual_seed(0))
    policies = [FullCache(n_up=a.n_up), NAMM(n_up=a.n_up, params=namm_params, mode="ragged", budget=a.budget),
                H2O(n_up=a.n_up, budget=a.budget), L2Norm(n_up=a.n_up, budget=a.budget)]
    results = []
    for n in a.contexts:
        ids = torch.randint(0, cfg.vocab_size, (a.batch, n), device=dev)
        rows = [bench_one(model, p, ids, a.decode, sync) for p in policies]
        full = rows[0]
        print(f"\n{a.shape} | batch {a.batch} x {n} tokens + {a.decode} decode | {a.device} {a.dtype}")
        print(f"{'policy':44s} {'prefill t/s':>11s} {'decode t/s':>10s} {'x full':>7s} {'KV MiB':>8s} {'x full':>7s} "
              f"{'policy %':>8s} {'cache':>6s}")
        for r in rows:
            r["context"] = n
            print(f"{r['policy']:44s} {r['prefill_tok_s']:11.1f} {r['decode_tok_s']:10.2f} "
                  f"{r['decode_tok_s'] / full['decode_tok_s']:7.2f} {r['peak_kv_bytes'] / 2**20:8.1f} "
                  f"{r['peak_kv_bytes'] / full['peak_kv_bytes']:7.2f} {100 * r['policy_time_share']:8.1f} "
                  f"{r['cache_fraction']:6.3f}")
        results += rows
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(a), "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                               "results": results}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
