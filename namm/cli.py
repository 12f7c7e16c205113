"""The ``namm`` command line. ``namm <command> --help`` explains each command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_replay(a: argparse.Namespace) -> None:
    from .replay import read_trace, replay_file

    meta, _ = read_trace(a.trace)
    from .checkpoint import resolve_policy

    policy = resolve_policy(a.policy, n_up=meta["n_up"], mode=a.mode)
    path = replay_file(policy, a.trace, a.out)
    print(f"replayed {policy.describe()} over {meta['num_updates']} updates x {meta['num_layers']} layers -> {path}")


def cmd_import_reference(a: argparse.Namespace) -> None:
    from .checkpoint import import_reference, save_namm

    policy = import_reference(a.checkpoint)
    save_namm(a.out, policy, info={"imported_from": str(a.checkpoint)})
    print(f"{a.checkpoint} -> {a.out} ({policy.net.num_params} parameters, CMA-ES mean + frozen normalisation)")


def cmd_shift_bias(a: argparse.Namespace) -> None:
    from .checkpoint import namm_from, read_namm, save_namm

    tensors, cfg, info = read_namm(a.weights)
    policy = namm_from(tensors, cfg, a.weights).shifted(a.delta)
    shifts = info.get("bias_shifts", []) + [{"from": str(a.weights), "delta": a.delta}]
    save_namm(a.out, policy, info={**info, "bias_shifts": shifts})
    print(f"{a.weights} -> {a.out} (every score {a.delta:+g}: keeps {'more' if a.delta > 0 else 'fewer'} tokens)")


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(out=Path(a.out))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="namm",
        description="Neural Attention Memory Models: evolved KV-cache eviction, evaluated across language, "
        "video and reinforcement learning.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="short generation on a tiny Llama: cache size per layer over time per policy")
    p.add_argument("--out", default="runs/demo", help="folder for the tiny model and demo.json")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("replay", help="run a policy over recorded attention (no model) and save its decisions")
    p.add_argument("--policy", required=True, help="weights (.safetensors, or a reference .pt) or a policy name")
    p.add_argument("--trace", required=True, help="trace .safetensors (attn.{u}.{l} [B,H,n_up,(u+1)n_up] + metadata)")
    p.add_argument("--out", required=True, help="output .safetensors: scores/positions/keep.{u}.{l}")
    p.add_argument("--mode", choices=["reference", "ragged"], default=None,
                   help="eviction mode for NAMM weights (default: the reference's)")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("import-reference", help="convert a reference-implementation .pt checkpoint to safetensors")
    p.add_argument("checkpoint", help="the reference .pt (read with torch.load(weights_only=True))")
    p.add_argument("out", help="output .safetensors")
    p.set_defaults(fn=cmd_import_reference)

    p = sub.add_parser("shift-bias", help="move a NAMM's operating point: add DELTA to every score (more memory if > 0)")
    p.add_argument("weights", help="NAMM weights (.safetensors)")
    p.add_argument("out", help="output .safetensors (the shift is recorded in its info)")
    p.add_argument("--delta", type=float, required=True, help="added to the scorer's output bias")
    p.set_defaults(fn=cmd_shift_bias)

    from namm.envs.rollout import add_rollout_command

    from .evaluate import add_eval_command
    from .evaluate_video import add_eval_video_command
    from .evolution import add_evolve_command
    from .pipeline import add_pipeline_command
    from .zoo import add_zoo_command

    add_evolve_command(sub)
    add_eval_command(sub)
    add_eval_video_command(sub)
    add_rollout_command(sub)
    add_zoo_command(sub)
    add_pipeline_command(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"namm {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
