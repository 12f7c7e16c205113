"""Reliability guarantees that cut across modules (the README lists them; other cases live with their
modules: config errors in test_config.py, member faults and signals in test_evolution.py, corrupt
HDF5/JSONL/video files in test_d4rl.py / test_longbench.py / test_video.py, weights in
test_checkpoint_replay.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import namm
from namm.checkpoint import CheckpointError, load_namm, save_namm
from namm.features import SpectralConfig
from namm.policies import H2O, NAMM

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "evolve_tiny.yaml"
ARGS = ["stages.0.generations=5", "evolution.population=4", "run.progress=false", "run.plot=false",
        "evolution.eval_mean_every=0"]


def _evolve(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "namm.cli", "evolve", "--config", str(TINY), "--out", str(out),
                             *extra, *ARGS], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_resume_after_kill_9_continues_the_same_trajectory(tmp_path):
    straight = _evolve(tmp_path / "straight")
    killed = _evolve(tmp_path / "killed")
    log = tmp_path / "killed" / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    assert killed.poll() is None, "the run finished before it could be killed; make it longer"
    killed.send_signal(signal.SIGKILL)  # no handler runs: only atomic checkpoints protect the run
    killed.wait()
    resumed = _evolve(tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    assert straight.wait(timeout=300) == 0, straight.stderr.read().decode()[-2000:]
    a = load_namm(tmp_path / "straight" / "namm.safetensors")
    b = load_namm(tmp_path / "killed" / "namm.safetensors")
    assert torch.equal(a.params, b.params) and torch.equal(a.mean, b.mean)
    lines = (tmp_path / "killed" / "log.jsonl").read_text().splitlines()
    assert [__import__("json").loads(l)["generation"] for l in lines][-1] == 5


def test_namm_for_another_feature_size_is_refused(tmp_path):
    other = NAMM(spectral=SpectralConfig(n_fft=16, hop=8), n_up=64)  # 9 frequencies: 17-dim features
    save_namm(tmp_path / "small.safetensors", other)
    loaded = load_namm(tmp_path / "small.safetensors")  # consistent file: loads with its own settings
    assert loaded.spectral.n_freq == 9 and loaded.net.num_params == other.net.num_params
    with pytest.raises(CheckpointError, match=r"4172.*"):
        load_namm(tmp_path / "small.safetensors", spectral=SpectralConfig())  # forced onto 25 features


def test_prompt_longer_than_the_model_is_refused(tiny_llama):
    limit = tiny_llama.config.max_position_embeddings
    ids = torch.randint(3, 96, (1, limit - 4))
    with namm.memory(tiny_llama, H2O(n_up=32, budget=0.5)) as mem:
        with pytest.raises(ValueError, match=rf"{limit - 4} tokens \+ 8 new tokens exceeds the model's {limit} positions"):
            mem.generate(input_ids=ids, max_new_tokens=8)


def test_same_seed_same_scores(tiny_llama):
    """Same model, policy, prompts and seed -> identical predictions and cache fractions."""
    from namm.drivers.text import generate

    prompts = [[3 + (i * j) % 90 for j in range(120 + 17 * i)] for i in range(3)]
    policy = NAMM(n_up=32, params=0.3 * torch.randn(4172, generator=torch.Generator().manual_seed(0)), mode="ragged")
    runs = [generate(tiny_llama, policy, prompts, 6, pad=0, stops={2}) for _ in range(2)]
    assert runs[0] == runs[1]
    assert all(f < 1 for f in runs[0][1])  # it evicted
