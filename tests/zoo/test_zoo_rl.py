"""The RL zoo: SAC replay buffers in D4RL layout, the DT trainer, and its checkpoint driving rollouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from namm.evaluation.rl import rollout
from namm.models.zoo import load_dt, read_normalization
from namm.policies import make_policy
from namm.tasks.d4rl import load_dataset, split_trajectories, write_dataset
from namm.tasks.gym_envs import collect_random_dataset
from namm.zoo.dt import DTBatcher, DTTrainConfig, train_dt
from namm.zoo.rl_data import dataset_path, episode_returns, replay_to_d4rl

pytestmark = pytest.mark.usefixtures("one_thread")


def test_replay_buffer_to_d4rl_splits_terminations_from_timeouts(tmp_path):
    sb3 = pytest.importorskip("stable_baselines3")
    import gymnasium as gym

    space_o = gym.spaces.Box(-1, 1, (3,), np.float32)
    space_a = gym.spaces.Box(-1, 1, (2,), np.float32)
    buf = sb3.common.buffers.ReplayBuffer(10, space_o, space_a, device="cpu", handle_timeout_termination=True)
    # episode 1: 3 steps ending in a fall; episode 2: 2 steps cut by the time limit; episode 3: 2 steps, cut
    ends = {2: (True, False), 4: (True, True)}
    for t in range(7):
        done, trunc = ends.get(t, (False, False))
        buf.add(np.full((1, 3), t, np.float32), np.full((1, 3), t + 1, np.float32), np.full((1, 2), 0.1 * t),
                np.array([float(t)]), np.array([done]), [{"TimeLimit.truncated": trunc}])
    d = replay_to_d4rl(buf)
    assert d["observations"].shape == (7, 3) and d["actions"].shape == (7, 2) and d["rewards"].shape == (7,)
    np.testing.assert_array_equal(d["terminals"], [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(d["timeouts"], [0, 0, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(d["next_observations"][:, 0], np.arange(1, 8))
    np.testing.assert_allclose(episode_returns(d), [0 + 1 + 2, 3 + 4, 5 + 6])
    assert len(load_dataset(write_dataset(tmp_path / "hopper-x.hdf5", d))) == 7  # valid D4RL layout


def test_dataset_path_names_levels(tmp_path):
    assert dataset_path(tmp_path, "Hopper-v5", "medium-replay").name == "hopper-medium-replay.hdf5"
    with pytest.raises(ValueError, match="medium, medium-replay"):
        dataset_path(tmp_path, "hopper", "expert-ish")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("rl") / "hopper-random.hdf5"
    write_dataset(path, collect_random_dataset("hopper", 600, seed=0))
    return path


def test_batcher_windows_left_padded_and_normalised(tiny_data):
    data = load_dataset(tiny_data)
    b = DTBatcher(data, context=20, scale=1000.0, max_ep_len=1000, seed=0)
    x = b.sample(32)
    assert x["states"].shape == (32, 20, 11) and x["actions"].shape == (32, 20, 3)
    assert x["returns_to_go"].shape == (32, 20, 1) and x["timesteps"].shape == (32, 20)
    m = x["attention_mask"]
    # left padding: once a row's mask turns on it stays on
    assert bool((m[:, 1:] >= m[:, :-1]).all()) and bool((m.sum(1) >= 1).all())
    assert float(x["states"][m == 0].abs().sum()) == 0.0
    # timesteps increase by one inside the real part of each window
    for row in range(32):
        t = x["timesteps"][row][m[row].bool()]
        assert bool((t[1:] - t[:-1] == 1).all())
    # returns-to-go of a whole episode start at its return / scale
    ep = split_trajectories(data)[0]
    assert np.isclose(b.rtg[0][0], ep["rewards"].sum() / 1000.0, rtol=1e-5)


def test_train_dt_writes_a_checkpoint_rollouts_can_use(tiny_data, tmp_path):
    cfg = DTTrainConfig(dataset=str(tiny_data), out=str(tmp_path / "dt"), steps=30, warmup=5, batch=16,
                        hidden=32, layers=1, heads=2, eval_episodes=1)
    out = train_dt(cfg, progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["env"] == "hopper" and man["parameters"] > 0
    assert len(man["curve"]) >= 1 and np.isfinite(man["curve"][-1]["loss"])
    assert man["eval_window"]["episodes"] == 1
    assert oct((out / "model.safetensors").stat().st_mode & 0o777) == "0o644"
    norm = read_normalization(out)
    assert norm.env == "hopper" and norm.target_return == pytest.approx(man["data"]["return_max"])
    model = load_dt(out)
    r = rollout("hopper", model, make_policy("h2o", n_up=48, budget=0.5), episodes=2, seed=0, max_ep_len=60,
                state_mean=norm.state_mean, state_std=norm.state_std, target_return=norm.target_return,
                progress=False)
    assert r["episodes"] == 2 and 0 < r["mean_cache_fraction"] <= 1


def test_train_dt_is_deterministic(tiny_data, tmp_path):
    kw = dict(dataset=str(tiny_data), steps=5, warmup=2, batch=8, hidden=16, layers=1, heads=1, eval_episodes=0)
    a = train_dt(DTTrainConfig(out=str(tmp_path / "a"), **kw), progress=False)
    b = train_dt(DTTrainConfig(out=str(tmp_path / "b"), **kw), progress=False)
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_rollout_cli_takes_a_zoo_level_name(tiny_data, tmp_path, monkeypatch):
    import namm.models.loaders as lo
    from namm.cli import main

    cfg = DTTrainConfig(dataset=str(tiny_data), out=str(tmp_path / "dt-hopper-medium-replay"), steps=2, warmup=1,
                        batch=4, hidden=16, layers=1, heads=1, eval_episodes=0)
    train_dt(cfg, progress=False)
    monkeypatch.setattr(lo, "zoo_dt_dir", lambda env, level="medium": tmp_path / f"dt-{env}-{level}")
    main(["rollout", "--env", "hopper", "--model", "medium-replay", "--policy", "full", "--episodes", "1",
          "--max-ep-len", "20", "--no-progress", "--out", str(tmp_path / "ro")])
    doc = json.loads((tmp_path / "ro" / "results.json").read_text())
    assert doc["model"] == "dt-hopper-medium-replay" and doc["episodes"] == 1


def test_config_flags_from_dataclass_fields():
    import argparse

    from namm.config import add_flags, from_flags
    from namm.zoo.video import VideoTrainConfig

    p = argparse.ArgumentParser()
    add_flags(p, VideoTrainConfig)
    assert from_flags(VideoTrainConfig, p.parse_args([])).curriculum is True
    cfg = from_flags(VideoTrainConfig, p.parse_args(["--no-curriculum", "--steps", "7", "--lr", "0.01"]))
    assert cfg.curriculum is False and cfg.steps == 7 and cfg.lr == 0.01
    assert cfg.freeze_lm is None  # bool | None: unset means "the recipe decides"
    assert from_flags(VideoTrainConfig, p.parse_args(["--freeze-lm", "--lm", "smollm2-135m"])).freeze_lm is True
    assert from_flags(VideoTrainConfig, p.parse_args(["--no-freeze-lm"])).freeze_lm is False
    q = argparse.ArgumentParser()
    add_flags(q, DTTrainConfig, required=("dataset", "out"))
    with pytest.raises(SystemExit):
        q.parse_args([])  # --dataset and --out are required
