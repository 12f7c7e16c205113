"""Prefill and decode speed and memory on a real model, every policy beside plain Hugging Face, in one run.

    python bench/bench_real.py                                   # SmolLM2-135M (or its shape, random) at 2k/4k/8k
    python bench/bench_real.py --contexts 2048 --decode 32       # quicker
    python bench/bench_real.py --contexts 2048 --repeats 3       # medians of 3 interleaved rounds (noisy boxes)
    python bench/bench_real.py --report bench/results/2026-12-01-cpu.json   # a results file as markdown
    python bench/bench_real.py --model llama3-8b-shape --device cuda --dtype bfloat16 --contexts 8192 16384 32768

Policies: ``plain`` (HF's own SDPA attention and DynamicCache), ``full`` (the full cache through the
memory attention), ``namm`` (the shipped NAMM, its own cap or threshold; ``--namm FILE`` and ``--namm-n-up N`` for
another NAMM or update period), and at ``--budget`` (default 25% of tokens seen): ``h2o``, ``snapkv``,
``namm25`` (the NAMM capped at ``--budget``). Each (policy, context) runs in its own
process, so peak RSS is that run's alone; prompts are real text (the Python standard library). Prefill
is the prompt's forward pass (chunked per ``n_up`` for policies that evict, updates included); decode is
``--decode`` greedy tokens, one at a time. Ratios are to ``plain`` at the same context, in the same run.
A failed measurement (out of memory, say) is recorded under ``failed`` and the others go on.

Writes ``--out`` (default ``bench/results/<date>-<device>.json``): machine, commit, one row per
``{policy, batch, context, prefill_s, decode_tok_s, peak_rss_gib, kv_gib, cache_fraction}`` and the ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # hidden, intermediate, layers, heads, kv heads, head_dim, positions, vocab
    "smollm2-135m-shape": (576, 1536, 30, 9, 3, 64, 8192, 49152),
    "llama3-8b-shape": (4096, 14336, 32, 32, 8, 128, 32768, 128256),
}
POLICIES = ("plain", "full", "namm", "h2o", "snapkv", "namm25")


def load(spec: str, device: str, dtype):
    """The fetched real model, else its shape with random weights."""
    import torch

    from namm import models
    from namm.models.real import is_fetched

    if spec in models.names("lm") and (not spec.startswith(("smollm2", "gemma3")) or is_fetched(spec)):
        model, _ = models.load(spec, device=device, dtype=dtype)
        return model, spec
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = spec if spec in SHAPES else f"{spec}-shape"
    h, i, n, q, kv, d, pos, vocab = SHAPES[shape]
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=h, intermediate_size=i, num_hidden_layers=n, num_attention_heads=q,
                      num_key_value_heads=kv, head_dim=d, max_position_embeddings=pos, vocab_size=vocab,
                      rope_theta=1e5, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval(), f"{shape} (random weights)"


def prompt_ids(length: int, vocab: int):
    """``[1, length]`` tokens of real text: the stdlib's Python files, byte-level ids folded into the vocab
    (the tokenizer does not matter for speed; the attention patterns of real text do for the policies)."""
    import sysconfig

    import torch

    text = ""
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text += p.read_text(errors="ignore")
        if len(text) > 8 * length:
            break
    return torch.tensor([[3 + b % (vocab - 3) for b in text.encode()[:length]]])


def bench_policy(name: str, a: argparse.Namespace):
    """The memory policy of a bench row (``full``, ``namm``, ``h2o``, ``snapkv``, ``namm25``) from the flags
    ``--n-up``, ``--budget``, ``--namm`` and ``--namm-n-up``."""
    from namm.checkpoint import resolve_policy

    return {"full": lambda: resolve_policy("full", n_up=a.n_up),
            "namm": lambda: resolve_policy(a.namm, n_up=a.namm_n_up),
            "h2o": lambda: resolve_policy("h2o", n_up=a.n_up, budget=a.budget),
            "snapkv": lambda: resolve_policy("snapkv", n_up=a.n_up, budget=a.budget),
            "namm25": lambda: resolve_policy(a.namm, n_up=a.namm_n_up, budget=a.budget)}[name]()


def one(a: argparse.Namespace) -> dict:
    """One (policy, context) measurement in this process."""
    import torch
    from transformers import DynamicCache

    import namm
    from namm.adapters import adapter_for

    dtype = getattr(torch, a.dtype)
    model, name = load(a.model, a.device, dtype)
    ids = prompt_ids(a.context, model.config.vocab_size).to(a.device).repeat(a.batch, 1)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        model(input_ids=ids[:, :64])  # warm-up: threads, allocator, kernels
        policy = None if a.one == "plain" else bench_policy(a.one, a)
        ctx = namm.memory(model, policy) if policy is not None else None
        mem = ctx.__enter__() if ctx is not None else None
        try:
            if mem is None:
                cache_kw = {adapter_for(model).cache_kwarg(model): DynamicCache()}
            else:
                cache_kw = mem.cache_kwargs()
            sync()
            t = time.perf_counter()
            if mem is not None and mem.prefill_chunk:
                mem._prefill(cache_kw, ids, None, ids.shape[1] - 1)
                out = model(input_ids=ids[:, -1:], use_cache=True, logits_to_keep=1, **cache_kw)
            else:
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **cache_kw)
            sync()
            prefill = time.perf_counter() - t
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t = time.perf_counter()
            for _ in range(a.decode):
                out = model(input_ids=nxt, use_cache=True, **cache_kw)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            sync()
            decode = time.perf_counter() - t
            cache = next(iter(cache_kw.values()))
            if mem is None:
                kv = sum(l.keys.numel() * l.keys.element_size() * 2 for l in cache.layers)
                frac = 1.0
            else:
                kv = cache.kv_bytes()
                frac = cache.cache_fraction()
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux: KiB
    if a.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    return {"policy": a.one, "describe": policy.describe() if policy is not None else "plain HF (sdpa, DynamicCache)",
            "model": name, "batch": a.batch, "context": a.context, "prefill_s": round(prefill, 3),
            "decode_tok_s": round(a.batch * a.decode / decode, 2), "peak_gib": round(peak, 3),
            "kv_gib": round(kv / 2**30, 4), "cache_fraction": round(frac, 3)}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def markdown(doc: dict) -> str:
    """The rows of a results JSON as a markdown table (ratios to plain HF at the same context)."""
    lines = [f"{doc['device']}, commit {doc['commit']}, torch {doc['torch']}, {doc['threads']} threads, "
             f"{doc['decode_tokens']} decoded tokens, n_up {doc['n_up']}, budget {doc['budget']}"
             + (f", NAMM {doc['namm']}" if doc.get("namm", "namm") != "namm" else "")
             + (f" at n_up {doc['namm_n_up']}" if doc.get("namm_n_up") else "")
             + (f", median of {doc['repeats']} interleaved rounds" if doc.get("repeats", 1) > 1 else ""), "",
             "| context | policy | prefill s | x plain | decode tok/s | x plain | peak GiB | KV GiB | cache |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        xp, xd = r.get("prefill_x_plain", float("nan")), r.get("decode_x_plain", float("nan"))
        lines.append(f"| {r['context']} | {r['policy']} | {r['prefill_s']:.2f} | {xp:.2f}"
                     f" | {r['decode_tok_s']:.2f} | {xd:.2f} | {r['peak_gib']:.2f}"
                     f" | {r['kv_gib']:.3f} | {r['cache_fraction']:.2f} |")
    lines += [f"| {f['context']} | {f['policy']} | failed: {f['error']} | | | | | | |" for f in doc.get("failed", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="a model name, or smollm2-135m-shape / llama3-8b-shape")
    ap.add_argument("--contexts", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--n-up", type=int, default=128)
    ap.add_argument("--namm", default="namm", help="the NAMM of the namm/namm25 rows: namm (shipped) or a weights file")
    ap.add_argument("--namm-n-up", type=int, default=None, help="the NAMM's update period (default: its own)")
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=1, help="rounds over the policies; the median of each measure")
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", default=None, metavar="JSON", help="print a results file as a markdown table")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    ap.add_argument("--context", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.report:
        print(markdown(json.loads(Path(a.report).read_text())))
        return {}
    if a.one:
        print(json.dumps(one(a)))
        return {}
    rows: list[dict] = []
    failed: list[dict] = []
    for ctx in a.contexts:
        runs: dict[str, list[dict]] = {}
        for rep in range(a.repeats):  # rounds over the policies, so slow phases of a shared box hit all alike
            for pol in a.policies.split(","):
                if pol in {f["policy"] for f in failed if f["context"] == ctx}:
                    continue
                cmd = [sys.executable, __file__, "--one", pol, "--context", str(ctx), "--model", a.model, "--budget",
                       str(a.budget), "--n-up", str(a.n_up), "--namm", a.namm,
                       *(["--namm-n-up", str(a.namm_n_up)] if a.namm_n_up else []), "--decode", str(a.decode),
                       "--batch", str(a.batch), "--device", a.device, "--dtype", a.dtype]
                r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
                if r.returncode:  # recorded, not fatal: one out-of-memory context must not lose the others
                    print(r.stderr[-2000:], file=sys.stderr)
                    err = (r.stderr.strip().splitlines() or ["?"])[-1]
                    failed.append({"policy": pol, "context": ctx, "error": err})
                    continue
                runs.setdefault(pol, []).append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[pol][-1]), flush=True)
        for pol, rs in runs.items():  # the median run of each measure
            row = dict(rs[0])
            for k in ("prefill_s", "decode_tok_s", "peak_gib"):
                row[k] = statistics.median(x[k] for x in rs)
            row["repeats"] = len(rs)
            if len(rs) > 1:
                row["prefill_s_runs"] = [x["prefill_s"] for x in rs]
                row["decode_tok_s_runs"] = [x["decode_tok_s"] for x in rs]
            rows.append(row)
    for r in list(rows):
        base = next((x for x in rows if x["policy"] == "plain" and x["context"] == r["context"]), None)
        if base is None:
            continue
        r["prefill_x_plain"] = round(r["prefill_s"] / base["prefill_s"], 3)
        r["decode_x_plain"] = round(r["decode_tok_s"] / base["decode_tok_s"], 3)
        r["peak_x_plain"] = round(r["peak_gib"] / base["peak_gib"], 3)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    doc = {"device": device_name(a.device), "date": datetime.date.today().isoformat(), "commit": commit,
           "python": platform.python_version(), "torch": __import__("torch").__version__,
           "threads": __import__("torch").get_num_threads(), "decode_tokens": a.decode, "n_up": a.n_up,
           "namm": a.namm, "namm_n_up": a.namm_n_up,
           "budget": a.budget, "repeats": a.repeats, "rows": rows, "failed": failed}
    tag = "gpu" if a.device.startswith("cuda") else "cpu"
    out = Path(a.out or ROOT / "bench" / "results" / f"{doc['date']}-{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\n{doc['device']}, commit {commit}, {rows[0]['model']}")
    print(f"{'context':>7s} {'policy':8s} {'prefill s':>9s} {'x plain':>7s} {'decode t/s':>10s} {'x plain':>7s} "
          f"{'peak GiB':>8s} {'KV GiB':>7s} {'cache':>5s}")
    for r in rows:
        xp, xd = r.get("prefill_x_plain", float("nan")), r.get("decode_x_plain", float("nan"))
        print(f"{r['context']:7d} {r['policy']:8s} {r['prefill_s']:9.2f} {xp:7.2f} "
              f"{r['decode_tok_s']:10.2f} {xd:7.2f} {r['peak_gib']:8.2f} {r['kv_gib']:7.3f} "
              f"{r['cache_fraction']:5.2f}")
    for f in failed:
        print(f"{f['context']:7d} {f['policy']:8s} FAILED: {f['error']}")
    print(f"-> {out}")
    return doc


if __name__ == "__main__":
    main()
