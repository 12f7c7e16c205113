"""Batched population evaluation vs member by member: wall time of one generation's evaluation.

    .venv/bin/python bench/bench_population.py                  # small random Llama on CPU
    .venv/bin/python bench/bench_population.py --device cuda --population 32 --samples 8 --layers 8

Sequential: one forward pass per member (its prompts left-padded together, params ``[prompts, P]``).
Batched: all members x prompts in passes of ``--rows`` rows (params ``[rows, P]``, one NAMM per row).
Both must give the same fitness (checked). Prints the ratio and writes JSON (default
runs/bench/population.json). Timings on a shared machine are noisy: the median of ``--repeats`` is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def small_llama(layers: int, hidden: int, heads: int, kv_heads: int, seed: int = 0):
    """A random fp32 Llama with the char tokenizer's vocabulary (96), eager attention."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(
        "llama", vocab_size=96, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.set_attn_implementation("eager")
    return model


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4, help="prompts per member")
    ap.add_argument("--rows", type=int, default=None, help="rows per batched pass (default: all)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--n-up", type=int, default=32)
    ap.add_argument("--pairs", type=int, nargs=2, default=[24, 48], metavar=("MIN", "MAX"),
                    help="key=value pairs per prompt (~8 tokens each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy machine)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "population.json"))
    a = ap.parse_args(argv)

    from namm.evolution import Evolution, load_config
    from namm.models.tiny import CharTokenizer
    from namm.tasks.synthetic import synthetic_examples

    if a.threads:
        torch.set_num_threads(a.threads)
    rows = a.rows or a.population * a.samples
    out_dir = ROOT / "runs" / "bench" / "population-run"
    cfg = load_config(ROOT / "configs" / "evolve_tiny.yaml", [
        f"run.out={out_dir}", f"evolution.population={a.population}", f"data.synthetic_recall.samples={a.samples}",
        f"data.synthetic_recall.examples={max(32, a.samples)}", "data.synthetic_recall.max_prompt_tokens=4096",
        f"namm.n_up={a.n_up}", f"model.device={a.device}", "namm.mode=ragged", "run.progress=false",
    ])
    device = torch.device(a.device)
    model = small_llama(a.layers, a.hidden, a.heads, a.kv_heads).to(device)
    ev = Evolution(cfg, model=model, tokenizer=CharTokenizer(96))  # nothing is written: no run() call
    fit = ev.fitness
    task = fit.tasks["synthetic_recall"]
    task.examples = synthetic_examples(len(task.examples), pairs=tuple(a.pairs))
    batch = ev.batch(0)
    ev.norm = fit.collect_stats(batch, ev.make_policy)
    refs = fit.reference_scores(batch)
    ev.es = ev.new_optimizer()
    params = torch.as_tensor(np.stack(ev.es.ask()), dtype=torch.float32)
    members = list(range(a.population))
    prompt_tokens = [len(task.prompt(i, fit.tok)) for i in batch["synthetic_recall"]]

    def timed(batched: bool, batch_size: int) -> tuple[float, list[float]]:
        ev.cfg.run.batched_population, ev.cfg.run.batch_size = batched, batch_size
        times, scores = [], []
        for _ in range(a.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            res = fit.evaluate(members, params, batch, ev.make_policy)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            scores = [ev.member_fitness(r, refs) for r in res]
        return statistics.median(times), scores

    timed(True, rows)  # warm-up (allocator, kernels)
    seq_s, seq_fit = timed(False, a.samples)
    bat_s, bat_fit = timed(True, rows)
    report = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "model": {"layers": a.layers, "hidden": a.hidden, "heads": a.heads, "kv_heads": a.kv_heads, "vocab": 96},
        "namm": {"scorer": cfg.namm.scorer, "params": ev.num_params, "n_up": a.n_up, "mode": "ragged"},
        "population": a.population, "prompts_per_member": a.samples, "rows_per_batched_pass": rows,
        "prompt_tokens": prompt_tokens, "new_tokens": task.max_new_tokens,
        "repeats": a.repeats, "sequential_s": seq_s, "batched_s": bat_s, "speedup": seq_s / bat_s,
        "same_fitness": seq_fit == bat_fit,
    }
    print(f"{report['device']}: population {a.population} x {a.samples} prompts ({min(prompt_tokens)}-"
          f"{max(prompt_tokens)} tokens), {a.layers}-layer width-{a.hidden} Llama, n_up {a.n_up}")
    print(f"  member by member {seq_s:.3f} s | batched ({rows} rows/pass) {bat_s:.3f} s | "
          f"speedup x{seq_s / bat_s:.2f} | same fitness: {report['same_fitness']}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(f"  -> {a.out}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["same_fitness"] else 1)
