"""``namm demo``: a short generation on a tiny Llama saved to disk and loaded back with
``from_pretrained``, printing how many tokens each layer's cache holds over time per policy."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import memory
from .policies import H2O, NAMM, FullCache, L2Norm, MemoryPolicy


def tiny_llama(path: Path, seed: int = 0):
    """Create (once) and load a 4-layer random Llama with GQA from ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if not (path / "config.json").exists():
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        LlamaForCausalLM(cfg).save_pretrained(path)
    return LlamaForCausalLM.from_pretrained(path).eval()


def run_demo(out: Path = Path("runs/demo"), prompt_len: int = 384, new_tokens: int = 128, n_up: int = 64,
             budget: float = 0.5, seed: int = 0) -> dict:
    model = tiny_llama(out / "tiny-llama", seed)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (1, prompt_len), generator=g)
    from .checkpoint import SHIPPED_NAMM, load_namm

    if SHIPPED_NAMM.exists():  # the weights evolved on the language zoo, used zero-shot here
        namm_policy, note = load_namm(SHIPPED_NAMM, n_up=n_up), "namm = the shipped weights (evolved on the language zoo), zero-shot"
    else:  # zero weights would evict nothing: show a CMA-ES-scale random sample instead
        sample = 0.065 * torch.randn(NAMM().net.num_params, generator=g)
        namm_policy, note = NAMM(n_up=n_up, params=sample, mode="ragged"), "namm = a random CMA-ES-scale sample"
    policies: list[tuple[str, MemoryPolicy]] = [
        ("full", FullCache(n_up=n_up)),
        ("h2o", H2O(n_up=n_up, budget=budget)),
        ("l2", L2Norm(n_up=n_up, budget=budget)),
        ("namm", namm_policy),
    ]
    report = {}
    print(f"tiny Llama from {out / 'tiny-llama'} | prompt {prompt_len} tokens + {new_tokens} generated | "
          f"update every {n_up} tokens | budget {budget} for h2o/l2")
    print(note + "\n")
    for name, policy in policies:
        with memory(model, policy) as mem:
            mem.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False)
        cache = mem.last_cache
        curve = []  # per update: tokens seen, mean live tokens per layer
        for i in range(len(cache.layers[0].history)):
            seen = int(cache.layers[0].history[i]["seen"][0])
            curve.append([seen] + [float(l.history[i]["kept"][0].float().mean()) for l in cache.layers])
        report[name] = {"policy": policy.describe(), "cache_fraction": cache.cache_fraction(), "curve": curve}
        print(f"{name:6s} {policy.describe()}  mean cache fraction {cache.cache_fraction():.3f}")
        print("        seen | " + " ".join(f"L{i:<5d}" for i in range(len(cache.layers))))
        for row in curve:
            print(f"       {row[0]:5d} | " + " ".join(f"{v:<6.0f}" for v in row[1:]))
        print()
    (out / "demo.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'demo.json'}")
    return report
