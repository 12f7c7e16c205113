"""Decision Transformer rollouts on Gymnasium MuJoCo under a memory policy, scored as D4RL normalised returns.

Episodes run in waves of ``n_envs`` env instances stepping in lockstep (one batch row each, one
:class:`~namm.adapters.decision_transformer.DTStepper` cache row each); rows finish independently and
are then fed as padding until the wave ends.

State normalisation lives beside the DT checkpoint in ``normalization.json`` (written by whoever trains
the DT, e.g. with :func:`write_normalization`)::

    {
      "format": "namm-testbed/dt-normalization", "version": 1,
      "state_mean": [obs_dim floats], "state_std": [obs_dim floats],   # required: the dataset's stats
      "env": "hopper", "dataset": "hopper-medium-v2",                   # optional: provenance
      "scale": 1000.0, "target_return": 3600.0                          # optional: rollout defaults
    }

Without it the states are fed unnormalised (mean 0, std 1) with a warning.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from namm.adapters.decision_transformer import DT_DEFAULTS, TARGET_RETURNS, DTStepper
from namm.checkpoint import atomic_write
from namm.envs.d4rl import canonical_env, normalized_score
from namm.envs.gym_envs import EpisodeRecorder, make_env
from namm.policies import MemoryPolicy

__all__ = ["NORMALIZATION_FILE", "RESULT_KEYS", "DTNormalization", "write_normalization", "read_normalization",
           "load_normalization", "load_dt", "zoo_dt_dir", "rollout", "write_results", "add_rollout_command"]

NORMALIZATION_FILE = "normalization.json"
NORM_FORMAT = "namm-testbed/dt-normalization"
NORM_VERSION = 1
RESULT_KEYS = ("env", "policy", "normalized_return_mean", "normalized_return_std", "mean_cache_fraction", "episodes")


# ---- checkpoint side: normalisation + model ----------------------------------------------------------
@dataclass(frozen=True)
class DTNormalization:
    """``state_mean`` / ``state_std`` ``[obs_dim]`` float32, plus optional rollout defaults."""

    state_mean: np.ndarray
    state_std: np.ndarray
    scale: float | None = None
    target_return: float | None = None
    env: str | None = None
    dataset: str | None = None


def write_normalization(model_dir: str | Path, state_mean, state_std, *, env: str | None = None,
                        dataset: str | None = None, scale: float | None = None,
                        target_return: float | None = None) -> Path:
    """Write ``normalization.json`` next to a DT checkpoint (atomic)."""
    mean = np.asarray(state_mean, dtype=np.float64).reshape(-1)
    std = np.asarray(state_std, dtype=np.float64).reshape(-1)
    if mean.shape != std.shape:
        raise ValueError(f"state_mean {mean.shape} and state_std {std.shape} differ in size")
    doc: dict[str, Any] = {"format": NORM_FORMAT, "version": NORM_VERSION,
                           "state_mean": mean.tolist(), "state_std": std.tolist()}
    for k, v in (("env", env), ("dataset", dataset), ("scale", scale), ("target_return", target_return)):
        if v is not None:
            doc[k] = v
    text = json.dumps(doc, indent=1)
    return atomic_write(Path(model_dir) / NORMALIZATION_FILE, lambda tmp: Path(tmp).write_text(text))


def read_normalization(path: str | Path) -> DTNormalization:
    """Parse a ``normalization.json`` (file or the folder holding it); raises ValueError naming the file."""
    path = Path(path)
    path = path / NORMALIZATION_FILE if path.is_dir() else path
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable normalisation file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != NORM_FORMAT:
        raise ValueError(f"{path}: not a DT normalisation file (format must be {NORM_FORMAT!r})")
    if int(doc.get("version", -1)) > NORM_VERSION:
        raise ValueError(f"{path}: version {doc['version']} is newer than this code ({NORM_VERSION})")
    try:
        mean = np.asarray(doc["state_mean"], dtype=np.float32).reshape(-1)
        std = np.asarray(doc["state_std"], dtype=np.float32).reshape(-1)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: needs numeric lists state_mean and state_std ({e})") from None
    if mean.shape != std.shape or not np.isfinite(mean).all() or not (std > 0).all():
        raise ValueError(f"{path}: state_mean/state_std must be finite, of equal length, std > 0")
    num = {k: None if doc.get(k) is None else float(doc[k]) for k in ("scale", "target_return")}
    txt = {k: None if doc.get(k) is None else str(doc[k]) for k in ("env", "dataset")}
    return DTNormalization(mean, std, **num, **txt)


def load_normalization(model_id_or_path: str | Path) -> DTNormalization | None:
    """The ``normalization.json`` of a local DT folder or a (cached/downloadable) HF repo; ``None`` if
    there is none (the caller warns and falls back to zeros/ones)."""
    p = Path(model_id_or_path)
    if p.is_dir():
        return read_normalization(p) if (p / NORMALIZATION_FILE).is_file() else None
    try:  # an HF id: use the file if the repo ships one (offline: only if already cached)
        from huggingface_hub import hf_hub_download

        return read_normalization(hf_hub_download(str(model_id_or_path), NORMALIZATION_FILE))
    except Exception:  # noqa: BLE001 - absent file, offline, unknown repo: all mean "none"
        return None


def load_dt(model_id_or_path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``DecisionTransformerModel.from_pretrained`` (local folder or HF id), fp32, eval mode."""
    from transformers import DecisionTransformerModel

    p = Path(model_id_or_path)
    if not p.exists() and (str(model_id_or_path).startswith((".", "/", "~")) or str(model_id_or_path).count("/") > 1):
        raise FileNotFoundError(f"{model_id_or_path}: no such DT checkpoint folder")
    try:
        model = DecisionTransformerModel.from_pretrained(str(model_id_or_path), dtype=torch.float32)
    except OSError as e:
        raise FileNotFoundError(f"{model_id_or_path}: cannot load a DecisionTransformerModel ({e})") from None
    return model.to(device).eval()


def zoo_dt_dir(env: str, quality: str = "medium") -> Path:
    """Where a shipped zoo DT lives: ``namm/weights/zoo/dt-{env}-{quality}/``."""
    import namm.weights

    return Path(namm.weights.__file__).parent / "zoo" / f"dt-{canonical_env(env)}-{quality}"


# ---- rollouts -------------------------------------------------------------------------------------
def _policy_label(policy: MemoryPolicy | str, context: int) -> str:
    return f"window(K={context})" if isinstance(policy, str) else policy.describe()


def rollout(
    env_name: str,
    model: torch.nn.Module,
    policy: MemoryPolicy | str,
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
    context: int = DT_DEFAULTS.context_steps,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` episodes of a DT on ``env_name`` under ``policy`` (a memory policy or ``"window"``).

    Episode ``i`` is reset with seed ``seed + i``. ``target_return`` is unscaled (default: the env's
    :data:`TARGET_RETURNS`). With ``video_path`` (.gif / .mp4), episode 0 is rendered and saved.
    ``env_kwargs`` go to ``gymnasium.make`` (e.g. ``terminate_when_unhealthy=False``).
    Returns a dict with the :data:`RESULT_KEYS` (``episodes`` = count) plus per-episode lists
    ``returns``, ``normalized_returns``, ``lengths``, ``cache_fractions``, ``seeds`` and timing.
    """
    from tqdm.auto import tqdm

    key = canonical_env(env_name)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    target_return = TARGET_RETURNS[key] if target_return is None else float(target_return)
    n_envs = max(1, min(int(n_envs), episodes))
    model = model.to(device).eval()
    label = _policy_label(policy, context)
    cols: dict[str, list] = {k: [] for k in ("seeds", "returns", "normalized_returns", "lengths", "cache_fractions")}
    recorder = EpisodeRecorder() if video_path else None
    render_kw = dict(render_mode="rgb_array", width=240, height=240)
    stepper = DTStepper(model, policy, state_mean, state_std, scale, target_return, device, context=context)
    envs: list = []
    try:
        for i in range(n_envs):
            kw = {**(env_kwargs or {}), **(render_kw if recorder is not None and i == 0 else {})}
            envs.append(make_env(env_name, **kw))
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
                    cols["normalized_returns"].append(normalized_score(key, ret[j]))
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
        "n_up": None if isinstance(policy, str) else policy.n_up,
        "budget": None if isinstance(policy, str) else policy.budget,
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
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["episode", "seed", "return", "normalized_return", "length", "cache_fraction"])
    for i, row in enumerate(zip(*(result.get(k, []) for k in
                                  ("seeds", "returns", "normalized_returns", "lengths", "cache_fractions")))):
        w.writerow([i, *row])
    csv_text = buf.getvalue()
    atomic_write(out / "episodes.csv", lambda tmp: Path(tmp).write_text(csv_text))
    text = json.dumps(result, indent=1, default=str)
    return atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(text))


# ---- command line ---------------------------------------------------------------------------------
def _resolve_policy(spec: str, n_up: int, budget: float | int | None, mode: str | None = None) -> MemoryPolicy | str:
    """``window``, a registered policy name, or a NAMM weights file (``.safetensors``; ``.pt`` = reference).

    Without a budget, the capped baselines (h2o, l2, streaming, recency, ...) get ``DT_DEFAULTS.budget``;
    ``full``, ``namm`` (the shipped weights) and weights files run uncapped (the NAMM threshold decides).
    """
    from namm.checkpoint import resolve_policy
    from namm.policies import POLICIES

    if spec == "window":
        if budget is not None:
            raise ValueError("--budget does not apply to --policy window (its memory is the last K steps)")
        return "window"
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


def cmd_rollout(a: argparse.Namespace) -> None:
    from namm.selection import parse_budget

    key = canonical_env(a.env)
    model_ref = a.model
    if model_ref is not None and not Path(model_ref).exists():  # a zoo name: "medium-replay", "dt-hopper-medium"
        name = model_ref.removeprefix("dt-").removeprefix(f"{key}-")
        if (zoo_dt_dir(key, name) / "config.json").is_file():
            model_ref = str(zoo_dt_dir(key, name))
    if model_ref is None:
        zoo = zoo_dt_dir(key)
        if not (zoo / "config.json").is_file():
            raise FileNotFoundError(
                f"no --model given and the zoo DT for {key} is not built yet (expected {zoo}/). Pass --model "
                f"with a local DT folder or an HF id such as edbeeching/decision-transformer-gym-{key}-medium")
        model_ref = str(zoo)
    policy = _resolve_policy(a.policy, a.n_up, parse_budget(a.budget), a.mode)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_dt(model_ref, device)
    norm = load_normalization(model_ref)
    if norm is None:
        warnings.warn(f"{model_ref}: no {NORMALIZATION_FILE}; states are fed unnormalised (mean 0, std 1), "
                      "which is wrong for a DT trained on normalised D4RL states", stacklevel=1)
    mean, std = (norm.state_mean, norm.state_std) if norm else (None, None)
    target = a.target_return if a.target_return is not None else (norm.target_return if norm else None)
    scale = (norm.scale if norm else None) or DT_DEFAULTS.scale
    result = rollout(key, model, policy, episodes=a.episodes, seed=a.seed, target_return=target, scale=scale,
                     state_mean=mean, state_std=std, max_ep_len=a.max_ep_len, n_envs=a.n_envs, device=device,
                     progress=not a.no_progress, video_path=a.video)
    result["model"] = str(model_ref)
    path = write_results(a.out, result)
    print(f"{key} {result['policy']}: normalised return {result['normalized_return_mean']:.1f} "
          f"± {result['normalized_return_std']:.1f} over {a.episodes} episodes, mean cache fraction "
          f"{result['mean_cache_fraction']:.3f} -> {path}")


def add_rollout_command(subparsers) -> argparse.ArgumentParser:
    """Add ``namm rollout`` to an ``argparse`` subparsers object (dispatch: ``args.fn(args)``)."""
    p = subparsers.add_parser("rollout", help="Decision Transformer episodes on Gymnasium MuJoCo under a memory "
                              "policy, scored as D4RL normalised returns")
    p.add_argument("--env", required=True, help="hopper, halfcheetah or walker2d")
    p.add_argument("--model", default=None, help="zoo level (medium, medium-replay), DT folder or HF id (default: "
                   "the zoo DT namm/weights/zoo/dt-{env}-medium/); state stats come from its normalization.json")
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
    p.set_defaults(fn=cmd_rollout)
    return p
