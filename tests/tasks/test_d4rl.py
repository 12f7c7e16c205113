"""D4RL data layer: HDF5 round trip, validation errors, score normalisation, trajectory helpers."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from namm.tasks.d4rl import (
    REF_SCORES,
    DatasetError,
    canonical_env,
    load_dataset,
    normalized_score,
    returns_to_go,
    split_trajectories,
    state_stats,
    write_dataset,
)


def make_data(n: int = 30, obs_dim: int = 11, act_dim: int = 3, ends=(9, 19), timeout_at=(29,)) -> dict:
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n + 1, obs_dim)).astype(np.float32)
    terminals = np.zeros(n, bool)
    terminals[list(ends)] = True
    timeouts = np.zeros(n, bool)
    timeouts[list(timeout_at)] = True
    return {
        "observations": obs[:-1], "next_observations": obs[1:],
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": terminals, "timeouts": timeouts,
        "infos/qpos": rng.standard_normal((n, 6)),
    }


def write_raw(path: Path, data: dict) -> Path:
    """Write without validation, to produce deliberately broken files."""
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            f.create_dataset(k, data=v)
    return path


def test_roundtrip(tmp_path):
    data = make_data()
    path = write_dataset(tmp_path / "sub" / "hopper_test.hdf5", data)
    assert not list(path.parent.glob("*.tmp"))  # the temp file was renamed away
    ds = load_dataset(path)
    assert len(ds) == 30 and ds.obs_dim == 11 and ds.act_dim == 3
    for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
        np.testing.assert_array_equal(getattr(ds, k), data[k])
    assert ds.terminals.dtype == bool and ds.observations.dtype == np.float32
    np.testing.assert_allclose(ds.infos["qpos"], data["infos/qpos"])
    # The dataclass itself writes back unchanged.
    again = load_dataset(write_dataset(tmp_path / "again.hdf5", ds))
    np.testing.assert_array_equal(again.actions, ds.actions)


def test_missing_key_names_file(tmp_path):
    data = make_data()
    del data["timeouts"]
    path = write_raw(tmp_path / "nokey.hdf5", data)
    with pytest.raises(DatasetError, match=r"nokey\.hdf5.*timeouts"):
        load_dataset(path)


def test_length_mismatch_names_file(tmp_path):
    data = make_data()
    data["actions"] = data["actions"][:-1]
    path = write_raw(tmp_path / "short.hdf5", data)
    with pytest.raises(DatasetError, match=r"short\.hdf5.*length mismatch"):
        load_dataset(path)


def test_wrong_dims_and_nan_name_file(tmp_path):
    data = make_data()
    data["observations"] = data["observations"][:, 0]
    with pytest.raises(DatasetError, match=r"dims\.hdf5.*'observations' must be 2-D"):
        load_dataset(write_raw(tmp_path / "dims.hdf5", data))
    data = make_data()
    data["rewards"][3] = np.nan
    with pytest.raises(DatasetError, match=r"nan\.hdf5.*NaN/inf.*step 3"):
        load_dataset(write_raw(tmp_path / "nan.hdf5", data))
    with pytest.raises(DatasetError, match="NaN/inf"):  # writing refuses bad data as well
        write_dataset(tmp_path / "never.hdf5", data)
    assert not (tmp_path / "never.hdf5").exists()


def test_truncated_file_names_file(tmp_path):
    path = write_dataset(tmp_path / "chopped.hdf5", make_data(n=2000))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match=r"chopped\.hdf5.*(corrupt|truncated)"):
        load_dataset(path)


def test_missing_dataset_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    # Not installed here (or not working): the message says where to put the file.
    with pytest.raises(FileNotFoundError, match=r"hopper_medium_replay-v2\.hdf5.*D4RL_DATASET_DIR"):
        load_dataset("hopper-medium-replay-v2")
    with pytest.raises(FileNotFoundError, match="no such"):
        load_dataset(tmp_path / "absent.hdf5")


def test_d4rl_name_found_in_dataset_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    write_dataset(tmp_path / "hopper_medium-v2.hdf5", make_data())
    assert len(load_dataset("hopper-medium-v2")) == 30
    write_dataset(tmp_path / "walker2d_expert-v2.hdf5", make_data())  # hopper-sized data
    with pytest.raises(DatasetError, match=r"walker2d_expert-v2\.hdf5: wrong dims.*\(17, 6\)"):
        load_dataset("walker2d-expert-v2")


@pytest.mark.parametrize("env", sorted(REF_SCORES))
def test_normalized_score_endpoints(env):
    lo, hi = REF_SCORES[env]
    assert normalized_score(env, lo) == pytest.approx(0.0)
    assert normalized_score(env, hi) == pytest.approx(100.0)


def test_env_name_normalisation():
    for name in ("hopper", "Hopper-v5", "hopper-medium-v2", "hopper_medium_replay-v2.hdf5",
                 "mujoco/hopper/expert-v0"):
        assert canonical_env(name) == "hopper"
    assert canonical_env("HalfCheetah-v5") == "halfcheetah"
    assert canonical_env("walker2d-expert-v2") == "walker2d"
    assert normalized_score("Walker2d-v5", 4592.3) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="known: halfcheetah, hopper, walker2d"):
        normalized_score("ant-medium-v2", 1.0)


def test_split_trajectories():
    trajs = split_trajectories(make_data())  # ends at 9 and 19 (terminal) and 29 (timeout)
    assert [len(t["rewards"]) for t in trajs] == [10, 10, 10]
    assert trajs[0]["terminals"][-1] and trajs[2]["timeouts"][-1]
    # Data cut mid-episode keeps the unfinished tail as a last trajectory.
    trajs = split_trajectories(make_data(n=25, ends=(4,), timeout_at=(14,)))
    assert [len(t["rewards"]) for t in trajs] == [5, 10, 10]


def test_state_stats_and_rtg():
    data = make_data()
    data["observations"][:, 0] = 3.0  # a constant dim gets the std floor, not 0
    mean, std = state_stats(data)
    assert mean.shape == std.shape == (11,) and mean.dtype == np.float32
    assert mean[0] == pytest.approx(3.0) and std[0] == pytest.approx(1e-6)
    np.testing.assert_allclose(std[1:], data["observations"][:, 1:].std(0), rtol=1e-5)
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 2.0, 3.0])), [6.0, 5.0, 3.0])
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 2.0, 3.0]), gamma=0.5), [2.75, 3.5, 3.0])
