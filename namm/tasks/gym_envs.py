"""Gymnasium MuJoCo environments for the D4RL tasks, rollout-based data collection and episode videos.

D4RL's own environments need MuJoCo 2.1 + mujoco-py; Gymnasium's v5 environments run on the maintained
`mujoco` bindings and have the same observation/action sizes (hopper 11/3, halfcheetah 17/6,
walker2d 17/6), so Decision Transformers trained on D4RL data can be evaluated on them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from namm.tasks.d4rl import canonical_env

__all__ = ["GYM_IDS", "make_env", "EpisodeRecorder", "record_episode", "collect_dataset",
           "collect_random_dataset"]

GYM_IDS: dict[str, str] = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}

Policy = Callable[[np.ndarray], np.ndarray]


def _gym_id(name: str) -> str:
    """Resolve "hopper" / "Hopper-v5" / "hopper-medium-v2" to a Gymnasium id; an explicitly versioned
    Gymnasium id of a known env (e.g. "Hopper-v4") is kept as given."""
    import gymnasium as gym

    known = ", ".join(f"{k} ({v})" for k, v in GYM_IDS.items())
    try:
        key = canonical_env(name)
    except ValueError:
        raise ValueError(f"unknown environment {name!r}; known: {known}") from None
    if key not in GYM_IDS:
        raise ValueError(f"unknown environment {name!r}; known: {known}")
    return name if name in gym.registry and name.lower().startswith(key) else GYM_IDS[key]


def make_env(name: str, seed: int | None = None, render_mode: str | None = None, **kwargs: Any):
    """Create the Gymnasium MuJoCo env for a D4RL task name (time limit 1000 steps, as in D4RL).

    With `seed`, the env is reset once with it and its action space is seeded, so a following
    `reset()` / `action_space.sample()` stream is reproducible. `kwargs` go to `gymnasium.make`
    (e.g. width/height for rgb_array rendering). Returns a `gymnasium.Env`.
    """
    import gymnasium as gym

    gym_id = _gym_id(name)
    if render_mode == "rgb_array" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # Headless: MuJoCo's default GLFW context needs a display; EGL renders offscreen.
        os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        env = gym.make(gym_id, render_mode=render_mode, **kwargs)
    except (ImportError, gym.error.DependencyNotInstalled) as e:
        raise ImportError(f"{gym_id} needs MuJoCo: pip install 'gymnasium[mujoco]' ({e})") from e
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


class EpisodeRecorder:
    """Collect rgb_array frames ([H, W, 3] uint8) and save them as .gif (Pillow) or .mp4 (imageio).

    Usage: `rec.add(env.render())` after each step, then `rec.save("ep.gif")`.
    """

    def __init__(self, fps: int = 30) -> None:
        self.fps = fps
        self.frames: list[np.ndarray] = []

    def add(self, frame: np.ndarray | None) -> None:
        if frame is None:
            raise ValueError("env.render() returned None: create the env with render_mode='rgb_array'")
        self.frames.append(np.asarray(frame, dtype=np.uint8))

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the frames; the format follows the suffix (.gif or .mp4). Returns the path."""
        path = Path(path)
        if not self.frames:
            raise ValueError(f"{path}: no frames recorded")
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".gif":
            from PIL import Image  # Pillow ships with matplotlib

            imgs = [Image.fromarray(f) for f in self.frames]
            imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=round(1000 / self.fps), loop=0)
        elif suffix == ".mp4":
            try:
                import imageio.v2 as imageio

                imageio.mimsave(path, self.frames, fps=self.fps)
            except (ImportError, ValueError, RuntimeError) as e:
                raise ImportError(f"{path}: mp4 needs `pip install imageio imageio-ffmpeg` ({e}); "
                                  "or save a .gif") from e
        else:
            raise ValueError(f"{path}: unsupported video format {suffix!r}; use .gif or .mp4")
        return path


def record_episode(env_name: str, policy_fn: Policy, path: str | os.PathLike[str], seed: int | None = 0,
                   max_steps: int = 1000, fps: int = 30, width: int = 240, height: int = 240) -> float:
    """Roll out one episode of `policy_fn` (obs [obs_dim] -> action [act_dim]), save it as a video and
    return the episode's total reward."""
    env = make_env(env_name, render_mode="rgb_array", width=width, height=height)
    rec = EpisodeRecorder(fps)
    try:
        obs, _ = env.reset(seed=seed)
        rec.add(env.render())
        total = 0.0
        for _ in range(max_steps):
            obs, r, term, trunc, _ = env.step(np.asarray(policy_fn(obs), dtype=np.float32))
            total += float(r)
            rec.add(env.render())
            if term or trunc:
                break
    finally:
        env.close()
    rec.save(path)
    return total


def collect_dataset(env_name: str | Any, policy_fn: Policy, n_steps: int, seed: int | None = 0,
                    noise: float = 0.0, progress: bool = True) -> dict[str, np.ndarray]:
    """Roll out `policy_fn` (obs [obs_dim] -> action [act_dim]) for `n_steps` env steps in D4RL layout.

    `env_name` is a task name or an already built env. Gaussian noise with std `noise` is added to each
    action before clipping to the action bounds (the stored action is the one executed). A policy with a
    `reset()` method (e.g. one that keeps a context window) has it called at every episode start.
    terminals = the env terminated (fell), timeouts = truncated by the time limit; the last, cut-off
    episode is marked as a timeout so every episode ends with a flag.
    Returns a dict: observations / next_observations [N, obs_dim] float32, actions [N, act_dim] float32,
    rewards [N] float32, terminals / timeouts [N] bool.
    """
    from tqdm.auto import tqdm

    if n_steps <= 0:
        raise ValueError(f"n_steps must be positive, got {n_steps}")
    own_env = isinstance(env_name, str)
    env = make_env(env_name) if own_env else env_name
    low, high = env.action_space.low, env.action_space.high
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    rng = np.random.default_rng(seed)
    obs_buf = np.empty((n_steps, obs_dim), np.float32)
    next_buf = np.empty((n_steps, obs_dim), np.float32)
    act_buf = np.empty((n_steps, act_dim), np.float32)
    rew_buf = np.empty(n_steps, np.float32)
    term_buf = np.zeros(n_steps, bool)
    trunc_buf = np.zeros(n_steps, bool)
    policy_reset = getattr(policy_fn, "reset", None)

    try:
        obs, _ = env.reset(seed=seed)
        if callable(policy_reset):
            policy_reset()
        ep_return, n_episodes = 0.0, 0
        with tqdm(total=n_steps, desc=f"collect {env.spec.id if env.spec else env_name}",
                  disable=not progress) as bar:
            for t in range(n_steps):
                act = np.asarray(policy_fn(obs), dtype=np.float64).reshape(act_dim)
                if noise > 0:
                    act = act + noise * rng.standard_normal(act_dim)
                act = np.clip(act, low, high)
                next_obs, r, term, trunc, _ = env.step(act)
                obs_buf[t], next_buf[t], act_buf[t] = obs, next_obs, act
                rew_buf[t], term_buf[t], trunc_buf[t] = r, term, trunc
                ep_return += float(r)
                if term or trunc:
                    n_episodes += 1
                    bar.set_postfix(episodes=n_episodes, last_return=f"{ep_return:.1f}")
                    ep_return = 0.0
                    obs, _ = env.reset()
                    if callable(policy_reset):
                        policy_reset()
                else:
                    obs = next_obs
                bar.update(1)
    finally:
        if own_env:
            env.close()
    trunc_buf[-1] |= not term_buf[-1]
    return {"observations": obs_buf, "actions": act_buf, "rewards": rew_buf, "terminals": term_buf,
            "timeouts": trunc_buf, "next_observations": next_buf}


def collect_random_dataset(env_name: str, n_steps: int, seed: int | None = 0,
                           progress: bool = False) -> dict[str, np.ndarray]:
    """D4RL-layout data from uniformly random actions (the "random" quality level); see
    `collect_dataset` for the keys and shapes."""
    env = make_env(env_name, seed=seed)
    try:
        return collect_dataset(env, lambda _obs: env.action_space.sample(), n_steps, seed=seed,
                               progress=progress)
    finally:
        env.close()


def rl_task(name: str):
    """The registry's view of a D4RL locomotion task on its Gymnasium v5 environment."""
    from .base import RLTask
    from .d4rl import normalized_score

    return RLTask(name=name, gym_id=GYM_IDS[name], make_env_fn=make_env, normalize_fn=normalized_score,
                  description=f"{GYM_IDS[name]}, D4RL-normalised return")
