"""Decision Transformer rollouts on Gymnasium MuJoCo under a memory policy, scored as D4RL normalised returns.

Episodes run in waves of ``n_envs`` env instances stepping in lockstep (one batch row each, one
:class:`~namm.drivers.dt.DTStepper` cache row each); rows finish independently and are then fed as
padding until the wave ends. State normalisation comes with the DT (``namm.models``: ``normalization.json``
beside the checkpoint).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from namm.checkpoint import resolve_policy
from namm.drivers.dt import DT_DEFAULTS, TARGET_RETURNS, DTStepper, Window
from namm.io import write_csv, write_json
from namm.policies import POLICIES, MemoryPolicy
from namm.tasks import make as make_task
from namm.tasks.gym_envs import EpisodeRecorder

__all__ = ["RESULT_KEYS", "rollout", "write_results", "resolve_rl_policy"]

RESULT_KEYS = ("env", "policy", "normalized_return_mean", "normalized_return_std", "mean_cache_fraction", "episodes")


def rollout(
    env_name: str,
    model: torch.nn.Module,
    policy: MemoryPolicy | Window,
    episodes: int = 10,
    seed: int = 0,
    target_return: float | None = None,
    scale: float = DT_DEFAULTS.scale,
    state_mean: np.ndarray | None = None,
    state_std: np.ndarray | None = None,
    max_ep_len: int = DT_DEFAULTS.max_ep_len,
    n_envs: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
    video_path: str | Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` episodes of a DT on ``env_name`` (an RL task id or a D4RL name such as
    ``hopper-medium-v2``) under ``policy`` (a memory policy or a :class:`~namm.drivers.dt.Window`).

    Episode ``i`` is reset with seed ``seed + i``. ``target_return`` is unscaled (default: the env's
    :data:`TARGET_RETURNS`). With ``video_path`` (.gif / .mp4), episode 0 is rendered and saved.
    ``env_kwargs`` go to ``gymnasium.make`` (e.g. ``terminate_when_unhealthy=False``).
    Returns a dict with the :data:`RESULT_KEYS` (``episodes`` = count) plus per-episode lists
    ``returns``, ``normalized_returns``, ``lengths``, ``cache_fractions``, ``seeds`` and timing.
    """
    from tqdm.auto import tqdm

    from namm.tasks.d4rl import canonical_env

    task = make_task(canonical_env(env_name), kind="rl")
    key = task.name
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    target_return = TARGET_RETURNS[key] if target_return is None else float(target_return)
    n_envs = max(1, min(int(n_envs), episodes))
    model = model.to(device).eval()
    label = policy.describe()
    cols: dict[str, list] = {k: [] for k in ("seeds", "returns", "normalized_returns", "lengths", "cache_fractions")}
    recorder = EpisodeRecorder() if video_path else None
    render_kw = dict(render_mode="rgb_array", width=240, height=240)
    stepper = DTStepper(model, policy, state_mean, state_std, scale, target_return, device)
    envs: list = []
    try:
        for i in range(n_envs):
            kw = {**(env_kwargs or {}), **(render_kw if recorder is not None and i == 0 else {})}
            envs.append(task.make_env(**kw))
        obs_dim, act_dim = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
        if (obs_dim, act_dim) != (model.config.state_dim, model.config.act_dim):
            raise ValueError(f"{env_name}: (obs_dim, act_dim) = {(obs_dim, act_dim)} but the DT expects "
                             f"{(model.config.state_dim, model.config.act_dim)}")
        low, high = envs[0].action_space.low, envs[0].action_space.high
        steps, t0 = 0, time.perf_counter()
        with tqdm(total=episodes, desc=f"rollout {key} {label}", unit="ep", disable=not progress) as bar:
            for start in range(0, episodes, n_envs):
                ids = list(range(start, min(start + n_envs, episodes)))
                b = len(ids)
                obs = np.stack([envs[j].reset(seed=seed + i)[0] for j, i in enumerate(ids)]).astype(np.float32)
                if recorder is not None and start == 0:
                    recorder.add(envs[0].render())
                stepper.reset(b)
                alive = np.ones(b, bool)
                ret, length = np.zeros(b), np.zeros(b, np.int64)
                for _ in range(max_ep_len):
                    if not alive.any():
                        break
                    act = np.clip(stepper.act(obs, alive).cpu().numpy().astype(np.float64), low, high)
                    rew = np.zeros(b)
                    now = alive.copy()
                    for j in np.flatnonzero(alive):
                        o, r, term, trunc, _ = envs[j].step(act[j])
                        obs[j], rew[j] = o, r
                        if term or trunc:
                            now[j] = False
                        if recorder is not None and start == 0 and j == 0:
                            recorder.add(envs[0].render())
                    ret += rew
                    length += alive
                    steps += int(alive.sum())
                    stepper.record(act, rew)
                    alive = now
                    bar.set_postfix(steps=steps, sps=f"{steps / (time.perf_counter() - t0):.0f}", refresh=False)
                fr = stepper.cache_fractions()
                for j, i in enumerate(ids):
                    cols["seeds"].append(seed + i)
                    cols["returns"].append(float(ret[j]))
                    cols["normalized_returns"].append(task.normalized_score(ret[j]))
                    cols["lengths"].append(int(length[j]))
                    cols["cache_fractions"].append(float(fr[j]))
                bar.update(b)
    finally:
        stepper.close()
        for e in envs:
            e.close()
    if recorder is not None:
        recorder.save(video_path)
    wall = time.perf_counter() - t0
    norm = np.asarray(cols["normalized_returns"])
    return {
        "env": key,
        "policy": label,
        "normalized_return_mean": float(norm.mean()),
        "normalized_return_std": float(norm.std()),
        "mean_cache_fraction": float(np.mean(cols["cache_fractions"])),
        "episodes": episodes,
        "return_mean": float(np.mean(cols["returns"])),
        "target_return": target_return,
        "scale": scale,
        "n_up": getattr(policy, "n_up", None),
        "budget": getattr(policy, "budget", None),
        "seed": seed,
        "max_ep_len": max_ep_len,
        "env_steps": steps,
        "wall_s": wall,
        "steps_per_s": steps / max(wall, 1e-9),
        "video": str(video_path) if video_path else None,
        **cols,
    }


def write_results(out_dir: str | Path, result: dict[str, Any]) -> Path:
    """Write ``results.json`` (summary + everything else in ``result``) and ``episodes.csv`` (one row per
    episode), each atomically. Returns the path of ``results.json``."""
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        raise ValueError(f"result lacks {missing}")
    out = Path(out_dir)
    cols = ("seeds", "returns", "normalized_returns", "lengths", "cache_fractions")
    rows = [["episode", "seed", "return", "normalized_return", "length", "cache_fraction"]]
    rows += [[i, *row] for i, row in enumerate(zip(*(result.get(k, []) for k in cols)))]
    write_csv(out / "episodes.csv", rows)
    return write_json(out / "results.json", result)


def resolve_rl_policy(spec: str, n_up: int = DT_DEFAULTS.n_up, budget: float | int | None = None,
                      mode: str | None = None) -> MemoryPolicy | Window:
    """``window`` (the HF example's 20-step re-encoding), a registered policy name, or NAMM weights.

    Without a budget, the capped baselines (h2o, l2, streaming, recency, ...) get ``DT_DEFAULTS.budget``;
    ``full``, ``namm`` (the shipped weights) and weights files run uncapped (the NAMM threshold decides).
    """
    if spec == "window":
        if budget is not None:
            raise ValueError("--budget does not apply to --policy window (its memory is the last K steps)")
        return Window()
    over: dict[str, Any] = {"n_up": n_up, **({"budget": budget} if budget is not None else {})}
    p = Path(spec)
    is_file = spec not in POLICIES and (p.suffix in (".safetensors", ".pt", ".pth") or p.exists())
    if mode is not None:
        if not (is_file or spec == "namm"):
            raise ValueError("--mode applies to NAMM policies only")
        over["mode"] = mode
    if budget is None and not is_file and spec not in ("full", "namm"):
        over["budget"] = DT_DEFAULTS.budget
    return resolve_policy(spec, **over)
