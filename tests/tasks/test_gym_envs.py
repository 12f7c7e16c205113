"""Gymnasium MuJoCo envs for the D4RL tasks and rollout data collection."""

from __future__ import annotations

import numpy as np
import pytest

from namm.tasks.d4rl import load_dataset, split_trajectories, write_dataset
from namm.tasks.gym_envs import EpisodeRecorder, collect_dataset, collect_random_dataset, make_env


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    # MuJoCo appends its compiler warnings to ./MUJOCO_LOG.TXT; keep that out of the repo.
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("name,obs_dim,act_dim", [("hopper", 11, 3), ("HalfCheetah-v5", 17, 6),
                                                  ("walker2d-medium-v2", 17, 6)])
def test_make_env_steps(name, obs_dim, act_dim):
    env = make_env(name, seed=0)
    try:
        assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (act_dim,)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (obs_dim,)
        for _ in range(5):
            obs, r, term, trunc, _ = env.step(env.action_space.sample())
            assert obs.shape == (obs_dim,) and np.isfinite(r)
            if term or trunc:
                obs, _ = env.reset()
    finally:
        env.close()


def test_unknown_env():
    with pytest.raises(ValueError, match=r"unknown environment 'CartPole-v1'.*hopper.*Hopper-v5"):
        make_env("CartPole-v1")


def test_missing_mujoco_message(monkeypatch):
    import gymnasium as gym

    def broken(*a, **k):
        raise gym.error.DependencyNotInstalled("No module named 'mujoco'")

    monkeypatch.setattr(gym, "make", broken)
    with pytest.raises(ImportError, match=r"gymnasium\[mujoco\]"):
        make_env("hopper")


def test_collect_random_roundtrip(tmp_path):
    data = collect_random_dataset("hopper", 50, seed=0)
    assert data["observations"].shape == (50, 11) and data["actions"].shape == (50, 3)
    assert data["terminals"][-1] or data["timeouts"][-1]
    # Within an episode, next_observations[t] is observations[t + 1].
    flags = data["terminals"] | data["timeouts"]
    np.testing.assert_array_equal(data["next_observations"][:-1][~flags[:-1]],
                                  data["observations"][1:][~flags[:-1]])
    ds = load_dataset(write_dataset(tmp_path / "hopper_random.hdf5", data))
    for k, v in data.items():
        np.testing.assert_array_equal(getattr(ds, k), v)
    assert sum(len(t["rewards"]) for t in split_trajectories(ds)) == 50
    # Same seed, same data.
    np.testing.assert_array_equal(collect_random_dataset("hopper", 50, seed=0)["actions"], data["actions"])


def test_collect_dataset_policy_noise_and_reset():
    calls = []

    class Zero:
        def __call__(self, obs):
            return np.zeros(6)

        def reset(self):
            calls.append(1)

    data = collect_dataset("halfcheetah", Zero(), 20, seed=1, noise=5.0, progress=False)
    assert np.abs(data["actions"]).max() <= 1.0 and np.abs(data["actions"]).max() > 0  # noisy, clipped
    assert len(calls) == 1 and data["timeouts"][-1] and not data["terminals"].any()


def test_episode_recorder_gif(tmp_path):
    rec = EpisodeRecorder(fps=10)
    for i in range(4):
        rec.add(np.full((16, 16, 3), i * 60, np.uint8))
    path = rec.save(tmp_path / "ep.gif")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        rec.add(None)
    with pytest.raises(ValueError, match="unsupported"):
        rec.save(tmp_path / "ep.avi")
