"""``namm rollout``: Decision Transformer episodes on Gymnasium MuJoCo under a memory policy."""

from __future__ import annotations

import argparse

from namm.drivers.dt import DT_DEFAULTS


def _dt_model(env: str, spec: str | None) -> str:
    """A model spec for ``env``: the zoo DT of a level (``medium``, ``medium-replay``, ``dt-hopper-medium``),
    else ``spec`` itself (a DT folder or hub id)."""
    from namm import models

    if spec is None:
        return f"dt-{env}-medium"
    name = spec.removeprefix("dt-").removeprefix(f"{env}-")
    return f"dt-{env}-{name}" if models.entry(f"dt-{env}-{name}", "dt") else spec


def run(a: argparse.Namespace) -> None:
    import torch

    from namm import models, tasks
    from namm.evaluation.rl import resolve_rl_policy, rollout, write_results
    from namm.selection import parse_budget

    env = tasks.spec(a.env, "rl").id  # refused up front: 'hopperx' is not hopper
    policy = resolve_rl_policy(a.policy, a.n_up, parse_budget(a.budget), a.mode)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    spec = _dt_model(env, a.model)
    model, norm = models.load(spec, "dt", device=device)
    mean, std = (norm.state_mean, norm.state_std) if norm else (None, None)
    target = a.target_return if a.target_return is not None else (norm.target_return if norm else None)
    scale = (norm.scale if norm else None) or DT_DEFAULTS.scale
    result = rollout(env, model, policy, episodes=a.episodes, seed=a.seed, target_return=target, scale=scale,
                     state_mean=mean, state_std=std, max_ep_len=a.max_ep_len, n_envs=a.n_envs, device=device,
                     progress=not a.no_progress, video_path=a.video)
    result["model"] = spec
    path = write_results(a.out, result)
    print(f"{env} {result['policy']}: normalised return {result['normalized_return_mean']:.1f} "
          f"± {result['normalized_return_std']:.1f} over {a.episodes} episodes, mean cache fraction "
          f"{result['mean_cache_fraction']:.3f} -> {path}")


def add(sub) -> None:
    p = sub.add_parser("rollout", help="Decision Transformer episodes on Gymnasium MuJoCo under a memory "
                       "policy, scored as D4RL normalised returns")
    p.add_argument("--env", required=True, help="hopper, halfcheetah or walker2d")
    p.add_argument("--model", default=None, help="zoo level (medium, medium-replay), DT folder or HF id (default: "
                   "the zoo DT dt-{env}-medium); state stats come from its normalization.json")
    p.add_argument("--policy", required=True, help="a policy name (full, h2o, l2, namm, ...), NAMM weights "
                   "(.safetensors or a reference .pt), or 'window' (the last 20 steps, no cache)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    p.add_argument("--budget", default=None, help="fraction of tokens seen (0.5) or a token count (60); "
                   f"default: {DT_DEFAULTS.budget} for capped baselines, none for full/namm/weights files")
    p.add_argument("--n-up", type=int, default=DT_DEFAULTS.n_up,
                   help=f"update period in tokens, weights files included (default {DT_DEFAULTS.n_up} = "
                   f"{DT_DEFAULTS.update_steps} steps x 3 tokens)")
    p.add_argument("--mode", choices=["reference", "ragged"], default=None,
                   help="NAMM eviction mode (default: the file's). 'reference' takes one eviction count per layer "
                   "over all rows updating together, so episodes of one wave (--n-envs) interact; use "
                   "--n-envs 1 for the reference's batch-1 behaviour, or 'ragged'")
    p.add_argument("--target-return", type=float, default=None,
                   help="unscaled return to condition on (default: normalization.json, else the DT paper's)")
    p.add_argument("--max-ep-len", type=int, default=DT_DEFAULTS.max_ep_len)
    p.add_argument("--n-envs", type=int, default=8, help="episodes stepped in lockstep (batch rows)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--video", default=None, help="save episode 0 as .gif or .mp4")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="folder for results.json and episodes.csv")
    p.set_defaults(fn=run)
