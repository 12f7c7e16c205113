"""D4RL offline-RL data: score normalisation, HDF5 reading/writing, trajectory helpers.

The D4RL HDF5 layout is one flat file of per-step arrays (N = total steps over all episodes):

    observations       [N, obs_dim] float32
    actions            [N, act_dim] float32
    rewards            [N]          float32
    terminals          [N]          bool   (the MDP ended: the agent fell)
    timeouts           [N]          bool   (the episode was cut off by the time limit)
    next_observations  [N, obs_dim] float32
    infos/*            [N, ...]     optional extras (qpos, qvel, ...)

The `d4rl` package itself needs MuJoCo 2.1 + mujoco-py, which rarely imports on modern systems, so the
HDF5 files are read directly with h5py; `d4rl` and `minari` are only tried when importable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from namm.io import atomic_write

__all__ = [
    "REF_SCORES", "ENV_DIMS", "REQUIRED_KEYS", "D4RLDataset", "DatasetError", "canonical_env",
    "normalized_score", "load_dataset", "write_dataset", "validate_dataset", "split_trajectories",
    "state_stats", "returns_to_go", "dataset_search_dirs",
]

# D4RL reference returns (random policy, expert policy) used for the 0..100 normalised score.
REF_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}
# (obs_dim, act_dim), identical for D4RL's v2 datasets and Gymnasium's v5 environments.
ENV_DIMS: dict[str, tuple[int, int]] = {"hopper": (11, 3), "halfcheetah": (17, 6), "walker2d": (17, 6)}

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
_FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")
# e.g. hopper-medium-v2, walker2d-medium-replay-v2, halfcheetah-expert-v0
_D4RL_NAME_RE = re.compile(
    r"^(hopper|halfcheetah|walker2d|ant)-(random|medium|expert|medium-replay|medium-expert|full-replay)-v\d+$"
)


class DatasetError(ValueError):
    """A dataset is missing, malformed or corrupt; the message names the file and the problem."""


def canonical_env(name: str) -> str:
    """Map "hopper", "Hopper-v5", "hopper-medium-v2", "hopper_medium-v2.hdf5", "mujoco/hopper/expert-v0",
    "half_cheetah" to the canonical key ("hopper", "halfcheetah"); raises ValueError listing the known
    environments otherwise (also for near misses such as "hopperx": a typo is not silently another env)."""
    parts = [p for p in re.split(r"[/\\]", name.strip().lower()) if p and p != "mujoco"]
    words = re.split(r"[-_.\s]+", parts[0]) if parts else []
    for n in range(1, len(words) + 1):
        if (key := "".join(words[:n])) in REF_SCORES:
            return key
    raise ValueError(f"unknown environment {name!r}; known: {', '.join(sorted(REF_SCORES))}")


def normalized_score(env_name: str, total_return: float) -> float:
    """D4RL normalised score 100 * (R - R_random) / (R_expert - R_random) for an episode's return R."""
    lo, hi = REF_SCORES[canonical_env(env_name)]
    return 100.0 * (float(total_return) - lo) / (hi - lo)


@dataclass
class D4RLDataset:
    """Flat per-step arrays in D4RL layout (see the module docstring for shapes); `source` names the
    file or dataset id the data came from, for error messages."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    next_observations: np.ndarray
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "<memory>"

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def as_dict(self) -> dict[str, np.ndarray]:
        """Flat dict as D4RL returns it: the required keys plus "infos/<name>" entries."""
        out = {k: getattr(self, k) for k in REQUIRED_KEYS}
        out.update({f"infos/{k}": v for k, v in self.infos.items()})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<memory>") -> D4RLDataset:
        """Validate and convert a D4RL-style mapping (flat "infos/x" keys or a nested "infos" dict)."""
        return validate_dataset(data, source)


def _as_dataset(data: D4RLDataset | Mapping[str, Any]) -> D4RLDataset:
    return data if isinstance(data, D4RLDataset) else validate_dataset(data)


def validate_dataset(data: D4RLDataset | Mapping[str, Any], source: str = "<memory>") -> D4RLDataset:
    """Check keys, dims, lengths and finiteness; return a `D4RLDataset` with canonical dtypes.

    Raises `DatasetError` whose message starts with `source` (the file or dataset id)."""
    if isinstance(data, D4RLDataset):
        source = data.source if source == "<memory>" else source
        data = data.as_dict()

    def fail(msg: str) -> DatasetError:
        return DatasetError(f"{source}: {msg}")

    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise fail(f"missing required key(s) {missing}; a D4RL file needs {list(REQUIRED_KEYS)}")
    arrs = {k: np.asarray(data[k]) for k in REQUIRED_KEYS}
    infos: dict[str, np.ndarray] = {}
    nested = data.get("infos")
    if isinstance(nested, Mapping):
        infos.update({str(k): np.asarray(v) for k, v in nested.items()})
    infos.update({k[len("infos/"):]: np.asarray(v) for k, v in data.items() if k.startswith("infos/")})

    # Rewards/flags are [N]; tolerate a trailing singleton axis ([N, 1]) that some writers produce.
    for k in ("rewards", "terminals", "timeouts"):
        if arrs[k].ndim == 2 and arrs[k].shape[1] == 1:
            arrs[k] = arrs[k][:, 0]
        if arrs[k].ndim != 1:
            raise fail(f"{k!r} must be 1-D [N], got shape {arrs[k].shape}")
    for k in ("observations", "actions", "next_observations"):
        if arrs[k].ndim != 2:
            raise fail(f"{k!r} must be 2-D [N, dim], got shape {arrs[k].shape}")
    if arrs["next_observations"].shape[1] != arrs["observations"].shape[1]:
        raise fail(f"'next_observations' has dim {arrs['next_observations'].shape[1]} but "
                   f"'observations' has dim {arrs['observations'].shape[1]}")

    lengths = {k: int(a.shape[0]) for k, a in arrs.items()}
    lengths.update({f"infos/{k}": int(a.shape[0]) for k, a in infos.items() if a.ndim >= 1})
    if len(set(lengths.values())) > 1:
        raise fail(f"length mismatch between keys: {lengths}")
    if lengths["rewards"] == 0:
        raise fail("the dataset is empty (0 steps)")

    for k in _FLOAT_KEYS:
        if not np.issubdtype(arrs[k].dtype, np.number):
            raise fail(f"{k!r} must be numeric, got dtype {arrs[k].dtype}")
        arrs[k] = arrs[k].astype(np.float32, copy=False)
        bad = ~np.isfinite(arrs[k])
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            raise fail(f"{k!r} has {int(bad.sum())} NaN/inf value(s) (first at step {first})")
    for k in ("terminals", "timeouts"):
        arrs[k] = arrs[k].astype(bool, copy=False)
    return D4RLDataset(**arrs, infos=infos, source=source)


def _read_hdf5(path: Path) -> D4RLDataset:
    """Read every dataset in the file into memory; wrap h5py's OSError as a corrupt-file error."""
    import h5py

    data: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            def visit(name: str, obj: Any) -> None:
                # Skip scalars and D4RL's "metadata/*" group: they are not per-step arrays.
                if isinstance(obj, h5py.Dataset) and obj.ndim >= 1 and not name.startswith("metadata/"):
                    data[name] = obj[()]
            f.visititems(visit)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read HDF5 file, it is corrupt or truncated ({e}); "
                           "delete it and download or regenerate it") from e
    return validate_dataset(data, str(path))


def dataset_search_dirs() -> list[Path]:
    """Folders searched for a D4RL dataset given by name: $D4RL_DATASET_DIR (D4RL's own cache,
    default ~/.d4rl/datasets), then ./data/d4rl."""
    d4rl_dir = os.environ.get("D4RL_DATASET_DIR", os.path.expanduser("~/.d4rl/datasets"))
    return [Path(d4rl_dir), Path("data") / "d4rl"]


def _local_candidates(name: str) -> list[Path]:
    # D4RL's download names the file after its URL: hopper-medium-replay-v2 -> hopper_medium_replay-v2.hdf5
    stem, version = name.rsplit("-v", 1)
    files = [f"{stem.replace('-', '_')}-v{version}.hdf5", f"{name}.hdf5"]
    return [d / f for d in dataset_search_dirs() for f in files]


def _load_with_d4rl(name: str) -> D4RLDataset:
    """Load through the `d4rl` package (needs gym + mujoco-py); any failure is re-raised as ImportError."""
    try:
        import d4rl  # noqa: F401  (registers the envs and exposes get_dataset)

        if hasattr(d4rl, "get_dataset"):
            raw = d4rl.get_dataset(name)
        else:  # older releases: only through the gym env
            import gym

            raw = gym.make(name).get_dataset()
    except Exception as e:  # noqa: BLE001 - d4rl fails in many ways (mujoco-py builds, downloads)
        raise ImportError(f"{type(e).__name__}: {e}") from e
    return validate_dataset(raw, f"d4rl:{name}")


def _load_minari(dataset_id: str) -> D4RLDataset:
    """Flatten a Minari dataset (episodes of T steps with T+1 observations) into D4RL layout."""
    import minari

    ds = minari.load_dataset(dataset_id)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in REQUIRED_KEYS}
    for ep in ds.iterate_episodes():
        obs = np.asarray(ep.observations)
        cols["observations"].append(obs[:-1])
        cols["next_observations"].append(obs[1:])
        cols["actions"].append(np.asarray(ep.actions))
        cols["rewards"].append(np.asarray(ep.rewards))
        cols["terminals"].append(np.asarray(ep.terminations))
        cols["timeouts"].append(np.asarray(ep.truncations))
    if not cols["rewards"]:
        raise DatasetError(f"minari:{dataset_id}: the dataset has no episodes")
    return validate_dataset({k: np.concatenate(v) for k, v in cols.items()}, f"minari:{dataset_id}")


def _check_env_dims(ds: D4RLDataset, name: str) -> D4RLDataset:
    """A file found by D4RL name must have that task's (obs_dim, act_dim)."""
    key = name.split("-")[0]
    if key in ENV_DIMS and (ds.obs_dim, ds.act_dim) != ENV_DIMS[key]:
        raise DatasetError(f"{ds.source}: wrong dims for {name!r}: (obs_dim, act_dim) = "
                           f"{(ds.obs_dim, ds.act_dim)}, expected {ENV_DIMS[key]}")
    return ds


def load_dataset(path_or_name: str | os.PathLike[str]) -> D4RLDataset:
    """Load D4RL-layout data from an HDF5 path, a D4RL name ("hopper-medium-v2") or a Minari id.

    Order: an existing file path is read with h5py. A D4RL name is loaded through the `d4rl` package when
    it imports, else from `<dir>/hopper_medium-v2.hdf5` (or `<dir>/hopper-medium-v2.hdf5`) for `dir` in
    `dataset_search_dirs()`. Other ids go to Minari when `minari` is installed.
    Returns a validated `D4RLDataset`; raises `DatasetError` / `FileNotFoundError` with the reason.
    """
    path = Path(path_or_name)
    if path.is_file():
        return _read_hdf5(path)
    name = str(path_or_name)
    if _D4RL_NAME_RE.match(name):
        try:
            return _check_env_dims(_load_with_d4rl(name), name)
        except ImportError as e:
            d4rl_error = str(e)
        for cand in _local_candidates(name):
            if cand.is_file():
                return _check_env_dims(_read_hdf5(cand), name)
        dirs = ", ".join(str(d) for d in dataset_search_dirs())
        fname = _local_candidates(name)[0].name
        raise FileNotFoundError(
            f"D4RL dataset {name!r} not found. The d4rl package could not load it ({d4rl_error}). "
            f"Download {fname} from D4RL and put it in one of: {dirs} "
            f"(set D4RL_DATASET_DIR to use another folder), or pass the file path directly.")
    if "/" in name and path.suffix not in (".hdf5", ".h5") and not name.startswith(("/", ".", "~")):
        try:  # looks like a Minari id ("mujoco/hopper/medium-v0")
            import minari  # noqa: F401
        except ImportError:
            raise FileNotFoundError(
                f"{name!r}: no such file (if it is a Minari dataset id, `pip install minari`)") from None
        return _load_minari(name)
    raise FileNotFoundError(f"{name!r}: no such dataset file, and not a D4RL dataset name like 'hopper-medium-v2'")


def write_dataset(path: str | os.PathLike[str], data: D4RLDataset | Mapping[str, Any]) -> Path:
    """Validate and write `data` as a D4RL HDF5 file (gzip-compressed); atomic via temp file + rename,
    so a crash never leaves a half-written file under `path`. Returns the path."""
    import h5py

    path = Path(path)
    ds = validate_dataset(data.as_dict() if isinstance(data, D4RLDataset) else data, str(path))

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            for k, v in ds.as_dict().items():
                f.create_dataset(k, data=v, compression="gzip" if v.size > 1024 else None)

    atomic_write(path, write)
    return path


def split_trajectories(data: D4RLDataset | Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
    """Split flat data into episodes, each ending at a step where terminals | timeouts is set.

    Returns a list of dicts with the required keys, arrays of length T_i; a trailing episode with no
    end flag (data cut mid-episode) is kept as the last item."""
    ds = _as_dataset(data)
    ends = np.flatnonzero(ds.terminals | ds.timeouts) + 1
    bounds = np.unique(np.concatenate([[0], ends, [len(ds)]]))  # sorted, without a duplicate end
    return [{k: getattr(ds, k)[a:b] for k in REQUIRED_KEYS}
            for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def state_stats(data: D4RLDataset | Mapping[str, Any] | np.ndarray,
                eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (mean, std) of the observations, each [obs_dim] float32; std floored at `eps` so
    constant dimensions do not divide by zero when states are normalised (s - mean) / std."""
    obs = data if isinstance(data, np.ndarray) else _as_dataset(data).observations
    obs = np.asarray(obs, dtype=np.float64).reshape(-1, obs.shape[-1])
    return obs.mean(0).astype(np.float32), np.maximum(obs.std(0), eps).astype(np.float32)


def returns_to_go(rewards: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """rtg[t] = sum_{k >= t} gamma^(k - t) * r[k] for one episode's rewards [T]; returns [T] float32
    (accumulated in float64: undiscounted sums over 1000 steps lose precision in float32)."""
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if gamma == 1.0:
        return np.cumsum(r[::-1])[::-1].astype(np.float32)
    out = np.empty_like(r)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + gamma * acc
        out[t] = acc
    return out.astype(np.float32)
