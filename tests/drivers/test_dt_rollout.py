"""Decision Transformer under a memory policy: stepper == full forward, rollouts, results, CLI (CPU)."""

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from namm.adapters import adapter_for
from namm.adapters.decision_transformer import DecisionTransformerAdapter
from namm.cli import rollout as rollout_cli
from namm.drivers.dt import DT_DEFAULTS, DTStepper, Window
from namm.evaluation.rl import RESULT_KEYS, rollout, write_results
from namm.models.zoo import load_dt, load_normalization, read_normalization, write_normalization
from namm.policies import H2O, NAMM, FullCache

STATE_DIM, ACT_DIM = 11, 3
NO_FALL = {"terminate_when_unhealthy": False}  # a random DT falls within ~20 steps; keep episodes long


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dt_dir(tmp_path_factory):
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    torch.manual_seed(0)
    cfg = DecisionTransformerConfig(state_dim=STATE_DIM, act_dim=ACT_DIM, hidden_size=32, n_layer=2, n_head=1,
                                    max_ep_len=1000, bos_token_id=None, eos_token_id=None)
    d = tmp_path_factory.mktemp("dt")
    DecisionTransformerModel(cfg).eval().save_pretrained(d)
    rng = np.random.default_rng(0)
    write_normalization(d, rng.normal(0, 0.1, STATE_DIM), rng.uniform(0.5, 1.5, STATE_DIM), env="hopper",
                        dataset="random-init", scale=1000.0, target_return=3600.0)
    return d


@pytest.fixture(scope="module")
def dt(dt_dir):
    return load_dt(dt_dir)


@pytest.fixture(scope="module")
def norm(dt_dir):
    return read_normalization(dt_dir)


def trajectory(b: int, t: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, STATE_DIM, generator=g), torch.randn(b, t, ACT_DIM, generator=g).tanh(),
            torch.rand(b, t, generator=g) * 3.0)


def run_stepper(stepper: DTStepper, states, actions, rewards, alive=None) -> torch.Tensor:
    """Teacher-forced stepping; returns the predictions ``[B, T, act_dim]``."""
    b, t, _ = states.shape
    stepper.reset(b)
    preds = []
    for i in range(t):
        preds.append(stepper.act(states[:, i], None if alive is None else alive[:, i]))
        stepper.record(actions[:, i], rewards[:, i])
    return torch.stack(preds, 1)


def full_forward(model, norm, states, actions, rewards, target=3600.0, scale=1000.0, t0=0) -> torch.Tensor:
    """HF forward over a whole trajectory, inputs prepared as in the HF rollout example."""
    b, t, _ = states.shape
    rtg = target / scale - torch.cat([torch.zeros(b, 1), rewards.cumsum(1)[:, :-1]], 1) / scale
    s = (states - torch.as_tensor(norm.state_mean)) / torch.as_tensor(norm.state_std)
    with torch.no_grad():
        return model(states=s[:, t0:], actions=actions[:, t0:], returns_to_go=rtg[:, t0:, None],
                     timesteps=torch.arange(t0, t)[None].expand(b, -1),
                     attention_mask=torch.ones(b, t - t0, dtype=torch.long)).action_preds


def test_load_dt_and_normalization(dt_dir, dt, norm, tmp_path):
    from transformers import DecisionTransformerModel

    assert isinstance(dt, DecisionTransformerModel) and not dt.training
    assert (dt.config.state_dim, dt.config.act_dim) == (STATE_DIM, ACT_DIM)
    assert norm.state_mean.shape == (STATE_DIM,) and norm.target_return == 3600.0 and norm.env == "hopper"
    assert load_normalization(dt_dir).state_std.tolist() == norm.state_std.tolist()
    assert load_normalization(tmp_path) is None  # a folder without the file
    (tmp_path / "normalization.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a DT normalisation file"):
        read_normalization(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_dt(tmp_path / "missing")


def test_adapter_facts_and_attention_restored(dt):
    a = adapter_for(dt)
    assert isinstance(a, DecisionTransformerAdapter)
    assert a.num_layers(dt) == 2 and a.num_kv_heads(dt) == 1 and a.cache_kwarg(dt) == "cache"
    before = dt.config._attn_implementation
    with DTStepper(dt, FullCache(n_up=48)):
        assert dt.config._attn_implementation == "namm"
    assert dt.config._attn_implementation == before
    assert DT_DEFAULTS.n_up == 48 and DT_DEFAULTS.n_up % 3 == 0 and DT_DEFAULTS.n_up % 16 == 0


def test_stepper_full_cache_equals_full_forward(dt, norm):
    states, actions, rewards = trajectory(3, 40)  # 120 tokens: crosses two n_up=48 boundaries
    with DTStepper(dt, FullCache(n_up=48), norm.state_mean, norm.state_std, 1000.0, 3600.0) as st:
        preds = run_stepper(st, states, actions, rewards)
        assert st.cache.layers[0].seen.tolist() == [3 * 40 - 1] * 3  # a_39 is still pending
        assert (st.cache_fractions() == 1.0).all()
    ref = full_forward(dt, norm, states, actions, rewards)
    assert (preds - ref).abs().max() <= 1e-5


def test_window_mode_equals_hf_example(dt, norm):
    states, actions, rewards = trajectory(2, 30, seed=1)
    st = DTStepper(dt, Window(), norm.state_mean, norm.state_std, 1000.0, 3600.0)
    preds = run_stepper(st, states, actions, rewards)
    K = DT_DEFAULTS.context_steps
    assert (preds[:, :K] - full_forward(dt, norm, states, actions, rewards)[:, :K]).abs().max() <= 1e-5
    last = full_forward(dt, norm, states, actions, rewards, t0=30 - K)[:, -1]  # the last K steps only
    assert (preds[:, -1] - last).abs().max() <= 1e-5
    expected = np.mean([min(K, t + 1) / (t + 1) for t in range(30)])
    assert np.allclose(st.cache_fractions(), expected)


def test_finished_rows_do_not_disturb_others(dt, norm):
    """A row that ends early is fed as padding: the other row's predictions and cache are unchanged."""
    states, actions, rewards = trajectory(2, 40, seed=2)
    alive = torch.ones(2, 40, dtype=torch.bool)
    alive[1, 7:] = False
    pol = H2O(n_up=48, budget=0.5)
    with DTStepper(dt, pol, norm.state_mean, norm.state_std, 1000.0, 3600.0) as st:
        both = run_stepper(st, states, actions, rewards, alive)
        seen = st.cache.layers[0].seen.tolist()
        frac = st.cache_fractions()
        solo = run_stepper(st, states[:1], actions[:1], rewards[:1])
        solo_frac = st.cache_fractions()
    assert (both[0] - solo[0]).abs().max() <= 1e-5
    assert seen == [3 * 40 - 1, 3 * 7]
    assert frac[0] == pytest.approx(solo_frac[0]) and frac[1] == 1.0  # row 1 never reached an update


@pytest.mark.parametrize("name", ["full", "window", "h2o", "namm"])
def test_rollout_policies(dt, norm, name):
    g = torch.Generator().manual_seed(0)
    policy = {
        "full": FullCache(n_up=48),
        "window": Window(),
        "h2o": H2O(n_up=48, budget=0.5),
        "namm": NAMM(n_up=48, mode="ragged", params=0.1 * torch.randn(4172, generator=g)),
    }[name]
    r = rollout("hopper", dt, policy, episodes=3, seed=0, n_envs=2, max_ep_len=200, progress=False,
                state_mean=norm.state_mean, state_std=norm.state_std, env_kwargs=NO_FALL)
    assert set(RESULT_KEYS) <= set(r) and r["episodes"] == 3 and r["env"] == "hopper"
    assert r["lengths"] == [200, 200, 200] and r["env_steps"] == 600
    assert np.isfinite(r["returns"]).all() and np.isfinite(r["normalized_return_mean"])
    fr = np.asarray(r["cache_fractions"])
    assert ((fr > 0) & (fr <= 1.0)).all()
    if name == "full":
        assert (fr == 1.0).all()
    elif name == "h2o":
        assert (fr <= 0.5 + 1e-6).all()  # floor(0.5 * seen) tokens at each update
    elif name == "namm":
        assert fr.mean() < 1.0  # random weights do evict
    print(f"{r['policy']}: {r['steps_per_s']:.0f} env steps/s")


def test_rollout_finished_episodes_and_video(dt, norm, tmp_path):
    """Episodes that fall end on their own; a gif of episode 0 is written (if MuJoCo can render here)."""
    video = tmp_path / "ep0.gif"
    try:
        r = rollout("hopper", dt, H2O(n_up=48, budget=0.5), episodes=2, seed=3, n_envs=2, max_ep_len=60,
                    progress=False, video_path=video)
    except Exception as e:  # noqa: BLE001 - no OpenGL backend on this machine
        if "render" in str(e).lower() or "gl" in str(e).lower():
            pytest.skip(f"MuJoCo cannot render here: {e}")
        raise
    assert all(1 <= n <= 60 for n in r["lengths"])
    assert video.is_file() and video.stat().st_size > 0


def test_write_results(tmp_path):
    r = {"env": "hopper", "policy": "x", "normalized_return_mean": 1.0, "normalized_return_std": 0.0,
         "mean_cache_fraction": 0.5, "episodes": 2, "seeds": [0, 1], "returns": [1.0, 2.0],
         "normalized_returns": [0.6, 0.7], "lengths": [10, 12], "cache_fractions": [0.5, 0.5]}
    path = write_results(tmp_path / "out", r)
    assert json.loads(path.read_text())["episodes"] == 2
    rows = list(csv.DictReader((tmp_path / "out" / "episodes.csv").open()))
    assert [int(x["length"]) for x in rows] == [10, 12]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError, match="lacks"):
        write_results(tmp_path / "bad", {"env": "hopper"})


def cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="namm")
    rollout_cli.add(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    args.fn(args)


def test_cli_writes_results(dt_dir, tmp_path, capsys):
    out = tmp_path / "run"
    cli(["rollout", "--env", "hopper", "--model", str(dt_dir), "--policy", "h2o", "--budget", "0.5",
         "--episodes", "2", "--seed", "1", "--max-ep-len", "40", "--device", "cpu", "--no-progress", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    assert set(RESULT_KEYS) <= set(res) and res["episodes"] == 2 and res["n_up"] == DT_DEFAULTS.n_up
    assert res["budget"] == 0.5 and res["mean_cache_fraction"] <= 0.5 + 1e-6
    assert len(list(csv.DictReader((out / "episodes.csv").open()))) == 2
    assert "normalised return" in capsys.readouterr().out


def test_cli_errors(dt_dir, tmp_path):
    from namm.models.zoo import zoo_dt_dir

    if not (zoo_dt_dir("hopper") / "config.json").is_file():
        with pytest.raises(FileNotFoundError, match="namm zoo train-dt"):
            cli(["rollout", "--env", "hopper", "--policy", "full", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown rl task 'hopperx'.*did you mean 'hopper'"):  # not silently hopper
        cli(["rollout", "--env", "hopperx", "--model", str(dt_dir), "--policy", "full", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="window"):
        cli(["rollout", "--env", "hopper", "--model", str(dt_dir), "--policy", "window", "--budget", "0.5",
             "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown policy"):
        cli(["rollout", "--env", "hopper", "--model", str(dt_dir), "--policy", "nope", "--out", str(tmp_path)])


def test_cli_namm_weights_file(dt_dir, tmp_path):
    """A weights file evolved with n_up=512 runs at the RL n_up (override), in the requested mode."""
    from namm.checkpoint import save_namm

    w = tmp_path / "namm.safetensors"
    save_namm(w, NAMM(n_up=512, params=0.1 * torch.randn(4172, generator=torch.Generator().manual_seed(0))))
    out = tmp_path / "run"
    cli(["rollout", "--env", "hopper", "--model", str(dt_dir), "--policy", str(w), "--mode", "ragged",
         "--episodes", "1", "--max-ep-len", "40", "--device", "cpu", "--no-progress", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    assert res["n_up"] == DT_DEFAULTS.n_up and "mode=ragged" in res["policy"]
    with pytest.raises(ValueError, match="NAMM policies only"):
        cli(["rollout", "--env", "hopper", "--model", str(dt_dir), "--policy", "h2o", "--mode", "ragged",
             "--out", str(out)])
