"""How many tensor ops one decode step dispatches, plain Hugging Face beside each memory policy, and which
lines of ``namm/`` dispatch them. A count, not a time: the same on a quiet box and a noisy one.

    python bench/decode_ops.py --policies plain,full,h2o,snapkv,namm25 --context 600

Why: on a small model's CPU decode the step time is the weights' bytes plus a few microseconds per dispatched
op, and a policy's per-layer Python work (cache update, masks, rows, observe) adds ops in every layer of
every step. Timed ratios on the 2-core box swing by +-15% between rounds; this count does not.
"""

from __future__ import annotations

import argparse
import collections
import traceback

from bench_real import bench_policy, load, prompt_ids


def count_step(model, kw, nxt):
    """``(total, per line)`` dispatched ops of one decode step; lines outside ``namm/`` count as "model"."""
    import os

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import namm
    pkg = os.path.dirname(namm.__file__) + os.sep  # the package's own files, wherever the checkout lives

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.lines: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ours = [f for f in traceback.extract_stack() if f.filename.startswith(pkg)]
            self.lines[f"{ours[-1].filename[len(pkg):]}:{ours[-1].lineno} {ours[-1].name}" if ours else "model"] += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count() as c:
        model(input_ids=nxt, use_cache=True, **kw)
    return sum(c.lines.values()), c.lines


def main() -> None:
    import torch
    from transformers import DynamicCache

    import namm
    from namm.adapters import adapter_for

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--policies", default="plain,full,h2o,snapkv,namm25")
    ap.add_argument("--context", type=int, default=600)
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--n-up", type=int, default=128)
    ap.add_argument("--namm", default="namm", help="the NAMM of the namm rows: namm (shipped) or a weights file")
    ap.add_argument("--namm-n-up", type=int, default=None, help="its update period (default: the file's)")
    ap.add_argument("--top", type=int, default=8, help="lines of namm/ to list per policy")
    a = ap.parse_args()
    model, name = load(a.model, "cpu", torch.float32)
    layers = model.config.num_hidden_layers
    ids = prompt_ids(a.context, model.config.vocab_size)
    print(f"{name}, {layers} layers, a decode step after {a.context} tokens")
    for spec in a.policies.split(","):
        with torch.no_grad():
            if spec == "plain":
                kw = {adapter_for(model).cache_kwarg(model): DynamicCache()}
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **kw)
                total, lines = count_step(model, kw, out.logits[:, -1:].argmax(-1))
            else:
                with namm.memory(model, bench_policy(spec, a)) as mem:
                    kw = mem.cache_kwargs()
                    if mem.prefill_chunk:
                        mem._prefill(kw, ids, None, ids.shape[1] - 1)
                    else:
                        model(input_ids=ids[:, :-1], use_cache=True, logits_to_keep=1, **kw)
                    out = model(input_ids=ids[:, -1:], use_cache=True, **kw)
                    total, lines = count_step(model, kw, out.logits[:, -1:].argmax(-1))
        ours = total - lines["model"]
        print(f"{spec:8s} {total:6d} ops per step: model {lines['model'] / layers:5.1f} per layer, namm/ "
              f"{ours / layers:5.1f} per layer")
        for k, v in [kv for kv in lines.most_common() if kv[0] != "model"][: a.top]:
            print(f"    {v / layers:5.1f}  {k}")


if __name__ == "__main__":
    main()
