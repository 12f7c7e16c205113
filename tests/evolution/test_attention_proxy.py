"""Recorded attention and the attention proxy: a model's trace replays like the file format says, the kept
mass is exactly the attention the evictions leave (hand-built traces), members batched as rows (and sharing
precomputed spectrogram states) equal one by one, and the proxy fitness evolves and resumes on the same
trajectory."""

from __future__ import annotations

import pytest
import torch

from namm import models
from namm.drivers.trace import record
from namm.evolution import evolve
from namm.evolution.config import load_config
from namm.policies import H2O, NAMM, FullCache, Recency, StreamingLLM
from namm.replay import kept_mass, read_trace, replay, save_trace, scored_rows, token_states

N_UP = 16


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny-random", "lm")


@pytest.fixture(scope="module")
def trace(tiny):
    model, _ = tiny
    ids = [3 + (7 * i) % 40 for i in range(70)]  # 70 tokens: 4 full blocks and a padded fifth
    return record(model, ids, n_up=N_UP)


def test_record_shapes_rows_and_file_round_trip(tiny, trace, tmp_path):
    model, _ = tiny
    meta, tensors = trace
    assert meta == {"n_up": N_UP, "num_updates": 5, "num_layers": model.config.num_hidden_layers,
                    "num_heads": model.config.num_key_value_heads, "batch": 1, "length": 70}
    for u in range(5):
        a = tensors[f"attn.{u}.0"].float()
        assert a.shape == (1, meta["num_heads"], N_UP, (u + 1) * N_UP)
        q = u * N_UP + torch.arange(N_UP)
        real = q < 70
        torch.testing.assert_close(a.sum(-1)[0, :, real], torch.ones(meta["num_heads"], int(real.sum())), atol=2e-3, rtol=0)
        assert (a[0, :, ~real] == 0).all()  # the padded queries of the last block
        causal = torch.arange((u + 1) * N_UP)[None, :] > q[:, None]
        assert (a[0][:, causal] == 0).all()  # no query sees the future
    save_trace(tmp_path / "t.safetensors", meta, tensors)
    meta2, tensors2 = read_trace(tmp_path / "t.safetensors")
    assert meta2 == meta and torch.equal(tensors2["attn.4.1"], tensors["attn.4.1"])
    out = replay(FullCache(n_up=N_UP), meta2, tensors2)
    assert out["keep.3.0"].all()


def _sink_trace(n_up=8, updates=4, heads=1):
    """Every query gives 0.6 of its attention to position 0 and spreads the rest over the others it sees."""
    tensors = {}
    for u in range(updates):
        n = (u + 1) * n_up
        q = u * n_up + torch.arange(n_up)
        a = (torch.arange(n)[None, :] <= q[:, None]).float()
        a[:, 0] = 0
        a = 0.4 * a / a.sum(-1, keepdim=True).clamp_min(1)
        a[:, 0] += 0.6
        a[0, 0] = 1.0 if u == 0 else a[0, 0]
        tensors[f"attn.{u}.0"] = a.expand(1, heads, n_up, n).clone()
    meta = {"n_up": n_up, "num_updates": updates, "num_layers": 1, "num_heads": heads, "batch": 1}
    return meta, tensors


def test_kept_mass_is_the_attention_the_evictions_leave():
    meta, tensors = _sink_trace()
    full, f_full = kept_mass(FullCache(n_up=8), meta, tensors, score_from=24)
    assert float(full) == pytest.approx(1.0) and float(f_full) == 1.0
    # keeping the sink keeps 0.6 of every later query's attention at least
    sink, _ = kept_mass(StreamingLLM(n_up=8, budget=8, n_sink=1), meta, tensors, score_from=24)
    late, _ = kept_mass(Recency(n_up=8, budget=8), meta, tensors, score_from=24)
    assert float(late) < 0.4 < 0.6 < float(sink) < 1.0
    # by hand: the queries 24..31 see positions 0..q; recency kept 16..23 at the last update (and 24.. are new)
    q = torch.arange(24, 32).float()
    want = (0.4 * ((q - 24 + 1) + 8) / q).mean()  # [16, q] of the q non-sink positions
    assert float(late) == pytest.approx(float(want), abs=1e-5)
    with pytest.raises(ValueError, match="outside"):
        kept_mass(FullCache(n_up=8), meta, tensors, score_from=32)


def test_members_as_rows_equal_one_by_one(trace):
    meta, tensors = trace
    g = torch.Generator().manual_seed(0)
    params = 0.3 * torch.randn(3, NAMM(n_up=N_UP).net.num_params, generator=g)
    params[:, -1] += torch.tensor([0.5, 0.0, -0.2])
    batched, frac = kept_mass(NAMM(n_up=N_UP, params=params, mode="ragged"), meta, tensors, score_from=40, rows=3)
    for i in range(3):
        one, f1 = kept_mass(NAMM(n_up=N_UP, params=params[i], mode="ragged"), meta, tensors, score_from=40, rows=1)
        torch.testing.assert_close(batched[i], one[0])
        torch.testing.assert_close(frac[i], f1[0])
    # the spectrogram states shared by every member give the same numbers as each member observing the trace
    states = token_states(NAMM(n_up=N_UP), meta, tensors, names=("ema",))
    shared, sfrac = kept_mass(NAMM(n_up=N_UP, params=params, mode="ragged"), meta, tensors, score_from=40, rows=3,
                              states=states)
    assert torch.equal(shared, batched) and torch.equal(sfrac, frac)
    h2o, hf = kept_mass(H2O(n_up=N_UP, budget=0.5), meta, tensors, score_from=40)
    assert 0 < float(h2o) < 1 and float(hf) == pytest.approx(0.5, abs=0.05)


def test_per_head_mass_averages_to_the_mean_and_marks_the_evicting_heads(trace):
    meta, tensors = trace
    policy = H2O(n_up=N_UP, budget=0.5)
    mean, frac = kept_mass(policy, meta, tensors, score_from=40)
    heads, hfrac = kept_mass(policy, meta, tensors, score_from=40, per_head=True)
    assert heads.shape == (meta["batch"], meta["num_layers"], meta["num_heads"])
    torch.testing.assert_close(heads.mean((1, 2)), mean)  # every layer scores the same queries
    assert torch.equal(hfrac, frac)
    assert bool((heads <= 1 + 1e-6).all()) and float(heads.min()) < 1  # some head lost attention to evictions
    full, _ = kept_mass(FullCache(n_up=N_UP), meta, tensors, score_from=40, per_head=True)
    torch.testing.assert_close(full, torch.ones_like(full))


@pytest.mark.parametrize("score_from", [32, 40, 66])  # at a block boundary, inside a block, inside the padded last
def test_a_trace_cut_to_its_scored_rows_gives_the_same_masses(trace, score_from):
    meta, tensors = trace
    params = 0.3 * torch.randn(3, NAMM(n_up=N_UP).net.num_params, generator=torch.Generator().manual_seed(2))
    policy = NAMM(n_up=N_UP, params=params, mode="ragged")
    states = token_states(NAMM(n_up=N_UP), meta, tensors, names=("ema",))
    cut = scored_rows(meta, tensors, score_from)
    rows = sum(v.shape[2] for k, v in cut.items() if k.endswith(".0"))
    assert rows == 70 - score_from  # only the scored queries' rows are kept (the padding after 70 too)
    want = kept_mass(policy, meta, tensors, score_from, rows=3, states=states)
    got = kept_mass(policy, meta, cut, score_from, rows=3, states=states)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_proxy_evolution_runs_and_resumes_on_the_same_trajectory(tmp_path, tiny):
    model, tok = tiny
    over = ["modality=attention_proxy", "stages=[{tasks: [synthetic_recall], generations: 2}]", "run.plot=false",
            "run.progress=false", "evolution.population=4"]
    cfg = load_config("configs/evolve_tiny.yaml", over + [f"run.out={tmp_path / 'a'}"])
    whole = evolve(cfg, model=model, tokenizer=tok)
    assert whole.generation == 2 and all(0 < r["fitness_max"] <= 1.0 for r in whole.history)
    cfg_b = load_config("configs/evolve_tiny.yaml", over + [f"run.out={tmp_path / 'b'}"])
    evolve(cfg_b, model=model, tokenizer=tok, stop_after=1)
    resumed = evolve(cfg_b, model=model, tokenizer=tok, resume=True)
    assert [r["fitness"] for r in resumed.history] == [r["fitness"] for r in whole.history]


def test_proxy_broken_member_fails_alone(tmp_path, tiny, monkeypatch):
    from namm.evolution.loop import Evolution
    from namm.evolution.proxy import AttentionProxyFitness

    model, tok = tiny
    cfg = load_config("configs/evolve_tiny.yaml", ["modality=attention_proxy", f"run.out={tmp_path / 'r'}"])
    ev = Evolution(cfg, model=model, tokenizer=tok)
    fit = ev.fitness
    assert isinstance(fit, AttentionProxyFitness)
    ev.norm = fit.collect_stats(ev.batch(0), ev.make_policy)
    batch = ev.batch(0)
    fit.reference_scores(batch)
    params = torch.zeros(4, ev.num_params)
    params[:, -1] = 0.5
    params[1, -1] = 7.0  # the member whose replay "breaks"
    params[2, 0] = float("nan")
    real = fit._scores

    def flaky(p, b, mp):
        if bool((p[:, -1] == 7.0).any()):
            raise RuntimeError("simulated replay error")
        return real(p, b, mp)

    monkeypatch.setattr(fit, "_scores", flaky)
    out = fit.evaluate([0, 1, 2, 3], params, batch, ev.make_policy)
    assert "simulated replay error" in out[1]["error"] and out[2]["error"] == "non-finite parameters"
    assert "scores" in out[0] and "scores" in out[3] and out[0] == out[3]
