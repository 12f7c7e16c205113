"""Working with NAMM weights and traces: ``namm replay``, ``namm import-reference``, ``namm shift-bias``."""

from __future__ import annotations

import argparse


def _replay(a: argparse.Namespace) -> None:
    from namm.checkpoint import resolve_policy
    from namm.replay import read_trace, replay_file

    meta, _ = read_trace(a.trace)
    policy = resolve_policy(a.policy, n_up=meta["n_up"], mode=a.mode)
    path = replay_file(policy, a.trace, a.out)
    print(f"replayed {policy.describe()} over {meta['num_updates']} updates x {meta['num_layers']} layers -> {path}")


def _import_reference(a: argparse.Namespace) -> None:
    from namm.checkpoint import import_reference, save_namm

    policy = import_reference(a.checkpoint)
    save_namm(a.out, policy, info={"imported_from": str(a.checkpoint)})
    print(f"{a.checkpoint} -> {a.out} ({policy.net.num_params} parameters, CMA-ES mean + frozen normalisation)")


def _shift_bias(a: argparse.Namespace) -> None:
    from namm.checkpoint import namm_from, read_namm, save_namm

    tensors, cfg, info = read_namm(a.weights)
    policy = namm_from(tensors, cfg, a.weights).shifted(a.delta)
    shifts = info.get("bias_shifts", []) + [{"from": str(a.weights), "delta": a.delta}]
    save_namm(a.out, policy, info={**info, "bias_shifts": shifts})
    print(f"{a.weights} -> {a.out} (every score {a.delta:+g}: keeps {'more' if a.delta > 0 else 'fewer'} tokens)")


def add(sub) -> None:
    p = sub.add_parser("replay", help="run a policy over recorded attention (no model) and save its decisions")
    p.add_argument("--policy", required=True, help="weights (.safetensors, or a reference .pt) or a policy name")
    p.add_argument("--trace", required=True, help="trace .safetensors (attn.{u}.{l} [B,H,n_up,(u+1)n_up] + metadata)")
    p.add_argument("--out", required=True, help="output .safetensors: scores/positions/keep.{u}.{l}")
    p.add_argument("--mode", choices=["reference", "ragged"], default=None,
                   help="eviction mode for NAMM weights (default: the reference's)")
    p.set_defaults(fn=_replay)

    p = sub.add_parser("import-reference", help="convert a reference-implementation .pt checkpoint to safetensors")
    p.add_argument("checkpoint", help="the reference .pt (read with torch.load(weights_only=True))")
    p.add_argument("out", help="output .safetensors")
    p.set_defaults(fn=_import_reference)

    p = sub.add_parser("shift-bias", help="move a NAMM's operating point: add DELTA to every score (more memory if > 0)")
    p.add_argument("weights", help="NAMM weights (.safetensors)")
    p.add_argument("out", help="output .safetensors (the shift is recorded in its info)")
    p.add_argument("--delta", type=float, required=True, help="added to the scorer's output bias")
    p.set_defaults(fn=_shift_bias)
