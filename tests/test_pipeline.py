"""`namm pipeline`: config validation, and one tiny end-to-end run (evolve -> language -> RL -> report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from namm.config import ConfigError
from namm.models.zoo import write_normalization
from namm.pipeline import DEMO_EVOLVE, load_pipeline_config, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_embedded_default_and_shipped_configs_validate():
    cfg = load_pipeline_config()
    assert cfg.evolve.weights == "evolve" and cfg.language.enabled and cfg.rl.enabled
    assert DEMO_EVOLVE["evolution"]["init_from"] == "namm-zoo"  # the demo evolves on the zoo LM
    for f in sorted((ROOT / "configs").glob("pipeline_*.yaml")):
        load_pipeline_config(f)  # paper-scale ones validate offline too: nothing is loaded


@pytest.mark.parametrize("override, match", [
    (["rl.envs=[hopperr]"], "rl.envs"),
    (["baselines=[h2o, full]"], "baselines"),
    (["language.samples=0"], "language.samples"),
    (["evolve.weights=/no/such.safetensors"], "evolve.weights"),
    (["langauge.samples=3"], "did you mean 'language'"),
    (["rl.n_up=50"], "multiple of 3"),
])
def test_bad_configs_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_pipeline_config(None, override)


@pytest.fixture(scope="module")
def tiny_dt(tmp_path_factory):
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    torch.manual_seed(0)
    cfg = DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=32, n_layer=2, n_head=2, max_ep_len=1000)
    d = tmp_path_factory.mktemp("dt")
    DecisionTransformerModel(cfg).eval().save_pretrained(d)
    write_normalization(d, np.zeros(11), np.ones(11), env="hopper", scale=1000.0, target_return=500.0)
    return d


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    from namm.zoo.video import VideoTrainConfig, train_video

    out = tmp_path_factory.mktemp("video")
    return train_video(VideoTrainConfig(out=str(out), steps=1, batch=2, eval_samples=1, threads=1), progress=False)


def test_tiny_pipeline_end_to_end(tmp_path, tiny_dt, tiny_video):
    over = [
        f"out={tmp_path / 'run'}", "progress=false",
        "evolve.overrides=[evolution.population=2, 'stages=[{tasks: [kv_retrieval], generations: 1}]', "
        "data.kv_retrieval.examples=1, data.kv_retrieval.samples=1, data.kv_retrieval.context_tokens=300, "
        "data.kv_retrieval.max_prompt_tokens=400, namm.n_up=64, 'run.plot=true']",
        "language.tasks=[kv_retrieval]", "language.samples=1", "language.context_tokens=300",
        "real.model=zoo", "real.samples=1", "real.context_tokens=256", "baselines=[h2o, l2, streamingllm]",
        "rl.envs=[hopper]", f"rl.models={{hopper-medium: {tiny_dt}}}", "rl.episodes=2", "rl.n_envs=2",
        "rl.max_ep_len=40", f"video.model={tiny_video}", "video.samples=1", "video.batch_size=3",
    ]
    cfg = load_pipeline_config(None, over)
    report = run_pipeline(cfg)
    out = tmp_path / "run"
    doc = json.loads((out / "results.json").read_text())
    assert doc["weights"]["source"] == "evolved" and Path(doc["weights"]["path"]).is_file()
    rows = {(r["modality"], r["task"], r["policy"]): r for r in doc["rows"]}
    lang = {p for (m, _, p) in rows if m == "language"}
    rl = {p for (m, _, p) in rows if m == "rl"}
    assert lang == {"full", "namm", "h2o", "l2", "streamingllm"}
    assert rl == {"full", "window", "namm", "h2o", "l2", "streamingllm"}
    assert {p for (m, _, p) in rows if m == "video"} == {"full", "namm", "h2o", "l2", "streamingllm"}
    assert {p for (m, t, p) in rows if m == "real" and t == "zoo: lm_continuation"} == lang
    assert set(rows[("video", "zoo-video", "namm")]["by_group"]) == {"needle", "count", "order"}
    assert rows[("language", "kv_retrieval", "full")]["mean_cache_fraction"] == 1.0
    # capped baselines run at the NAMM's measured fraction (when the NAMM evicted anything)
    nf = rows[("language", "kv_retrieval", "namm")]["mean_cache_fraction"]
    if nf < 0.999:
        for b in ("h2o", "l2", "streamingllm"):
            assert abs(rows[("language", "kv_retrieval", b)]["mean_cache_fraction"] - nf) < 0.1
    assert not doc["skipped"]
    text = report.read_text()
    assert "| language | kv_retrieval |" in text and "| rl | hopper-medium |" in text
    assert "| video | zoo-video |" in text
    for f in ("config.yaml", "table.csv", "evolve/fitness.png", "language/score_vs_cache.png",
              "language/namm_kept.png", "rl/return_vs_cache.png", "video/namm_frames.png",
              "rl/hopper-medium/namm/results.json",
              "language/namm/predictions.jsonl", "language/h2o/predictions.jsonl"):
        assert (out / f).is_file(), f
    # the resolved config re-runs as a file
    again = load_pipeline_config(out / "config.yaml")
    assert again.to_dict() == yaml.safe_load((out / "config.yaml").read_text())
    # a second run into the same folder: refused without --resume (no data lost); with it the finished
    # evolution is reused as is (no generation runs, same weights) and the later stages run again
    weights = (out / "evolve" / "namm.safetensors").read_bytes()
    only_evolve = over + ["language.enabled=false", "video.enabled=false", "rl.enabled=false", "real.enabled=false"]
    with pytest.raises(ConfigError, match="--resume"):
        run_pipeline(load_pipeline_config(None, only_evolve))
    run_pipeline(load_pipeline_config(None, only_evolve), resume=True)
    assert (out / "evolve" / "namm.safetensors").read_bytes() == weights
    assert len((out / "evolve" / "log.jsonl").read_text().splitlines()) == 1


def test_missing_zoo_dt_says_how_to_build_it(tmp_path, monkeypatch):
    import namm.models.loaders as lo

    monkeypatch.setattr(lo, "zoo_dt_dir", lambda env, level="medium": tmp_path / f"dt-{env}-{level}")
    cfg = load_pipeline_config(None, [f"out={tmp_path / 'x'}", "evolve.weights=shipped", "language.enabled=false",
                                      "video.enabled=false", "real.enabled=false",
                                      "rl.envs=[walker2d]", "progress=false"])
    with pytest.raises(FileNotFoundError, match="namm zoo train-dt"):
        run_pipeline(cfg)
