"""`namm evolve` end to end on the tiny random Llama: batched == member by member, 2 ranks == 1 rank,
resume (after a stop or a signal) == uninterrupted, broken members get the worst fitness."""

import argparse
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from namm.checkpoint import load_namm
from namm.cli import evolve as evolve_cli
from namm.evolution import WORST_FITNESS, Dist, Evolution, evolve, load_state, task_fitness
from namm.evolution.config import ModelConfig, load_config
from namm.evolution.language import LanguageFitness, load_model
from namm.models import ModelUnavailable
from namm.models.tiny import CharTokenizer, tiny_random_llama
from namm.tasks.synthetic import synthetic_examples

from ..conftest import make_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "evolve_tiny.yaml"
# 3 generations, population 8, 4 prompts of ~100-200 tokens, n_up 32, 4 new tokens; a narrow BAM
# (hidden 4: 588 parameters) keeps the CMA-ES state small, the full-size one is checked separately.
BASE = ["namm.hidden=4", "evolution.population=8", "stages.0.generations=3", "run.progress=false", "run.plot=false"]


def cfg_for(out, *extra):
    return load_config(TINY, [*BASE, f"run.out={out}", *extra])


def fitness_curve(history):
    return [r["fitness"] for r in history]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return make_tiny_llama()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, model):
    """The reference runs every test compares against: batched (with plot) and member by member."""
    root = tmp_path_factory.mktemp("evolve")
    batched = evolve(cfg_for(root / "batched", "run.batched_population=true", "run.plot=true"), model=model)
    sequential = evolve(cfg_for(root / "sequential", "run.batched_population=false", "run.batch_size=4"), model=model)
    return {"root": root, "batched": batched, "sequential": sequential}


# --------------------------------------------------------------------------- pieces

def test_fitness_ratio_and_zero_reference():
    assert task_fitness(30.0, 60.0) == 0.5
    assert task_fitness(0.0, 0.0) == 1.0  # full cache scores 0: matching it is still 1
    assert task_fitness(25.0, 0.0) == 1.25  # ... and every point above it counts
    assert task_fitness(5.0, 1e-9) == pytest.approx(1.05)  # a reference below min_reference counts as zero


def test_synthetic_task_and_tokenizer():
    ex = synthetic_examples(16, seed=3)
    assert ex == synthetic_examples(16, seed=3)  # deterministic
    tok = CharTokenizer(96)
    lengths = [len(tok.encode(f"{e['context']}\n{e['input']}=")) for e in ex]
    assert 90 <= min(lengths) and max(lengths) <= 210
    for e in ex:
        assert f"{e['input']}={e['answers'][0]}" in e["context"]
    assert tok.decode(tok.encode("ab=1234;")) == "ab=1234;"
    assert all(c in tok.chars for c in tok.decode(list(range(96))))  # any id decodes into the alphabet


def test_rank_shares_cover_the_population_once():
    for world in (1, 2, 3, 8):
        shares = [list(Dist(rank=r, world=world).share(10)) for r in range(world)]
        assert sum(shares, []) == list(range(10)) and max(map(len, shares)) - min(map(len, shares)) <= 1


def test_tiny_random_is_the_conftest_model(model):
    a, b = tiny_random_llama(0).state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hf_loading_path_with_rope_override(tmp_path):
    make_tiny_llama().save_pretrained(tmp_path / "m")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(ROOT / "namm" / "weights" / "zoo" / "lm").save_pretrained(tmp_path / "m")
    theta = 500000 * 7 ** (128 / 126)
    m, _ = load_model(ModelConfig(name=str(tmp_path / "m"), rope_theta=theta, max_position_embeddings=32768),
                      torch.device("cpu"))
    assert m.config.rope_parameters["rope_theta"] == pytest.approx(theta)
    assert m.config.max_position_embeddings == 32768
    head_dim = m.config.hidden_size // m.config.num_attention_heads
    inv_freq = m.model.rotary_emb.inv_freq
    assert inv_freq[1].item() == pytest.approx(theta ** (-2 / head_dim), rel=1e-5)  # the weights use it
    with pytest.raises(ModelUnavailable, match="offline"):  # offline: the real path, a clear error
        load_model(ModelConfig(name="meta-llama/Meta-Llama-3-8B"), torch.device("cpu"))


def test_zero_namm_scores_exactly_like_the_full_cache(tmp_path, model):
    """The all-zero NAMM (CMA-ES mean0) evicts nothing: fitness 1 on every prompt (full-size BAM)."""
    ev = Evolution(load_config(TINY, [f"run.out={tmp_path}", "data.synthetic_recall.samples=8"]), model=model)
    assert ev.num_params == 4172
    batch = ev.batch(0)
    ev.norm = ev.fitness.collect_stats(batch, ev.make_policy)
    refs = ev.fitness.reference_scores(batch)
    (res,) = ev.fitness.evaluate([0], torch.zeros(1, ev.num_params), batch, ev.make_policy)
    assert res["scores"] == refs and ev.member_fitness(res, refs) == 1.0


def test_keep_bias0_starts_from_a_namm_that_keeps_everything(tmp_path, model):
    """evolution.keep_bias0: the first mean is mean0 but for the score bias, and that NAMM keeps every
    token (its scores are all +keep_bias0); without it the last parameter is mean0 like the rest."""
    ev = Evolution(cfg_for(tmp_path, "evolution.mean0=0.01", "evolution.keep_bias0=0.5"), model=model)
    mean = ev.initial_mean()
    assert mean[-1] == 0.5 and (mean[:-1] == 0.01).all()
    assert (Evolution(cfg_for(tmp_path, "evolution.mean0=0.01"), model=model).initial_mean() == 0.01).all()
    ev = Evolution(cfg_for(tmp_path, "evolution.keep_bias0=0.5"), model=model)
    batch = ev.batch(0)
    ev.norm = ev.fitness.collect_stats(batch, ev.make_policy)
    (res,) = ev.fitness.evaluate([0], torch.as_tensor(ev.initial_mean()[None], dtype=torch.float32), batch,
                                 ev.make_policy)
    assert res["cache_fraction"] == 1.0


def test_likelihood_fitness_is_the_answers_teacher_forced_probability(tmp_path, model):
    """evolution.fitness=likelihood: each prompt's prediction is 100 x the geometric-mean probability of
    its gold answer (+ eos), equal to a plain forward pass for the full cache and the zero NAMM, lower
    for a NAMM that evicts almost everything; a short run works end to end."""
    cfg = cfg_for(tmp_path / "a", "evolution.fitness=likelihood")
    ev = Evolution(cfg, model=model)
    batch = ev.batch(0)
    fit = ev.fitness
    ev.norm = fit.collect_stats(batch, ev.make_policy)
    task, idx = next(iter(batch.items()))
    t = fit.tasks[task]
    full = fit._predict_rows([(None, task, i) for i in idx], ev.make_policy)
    want = []
    with torch.no_grad():
        for i in idx:
            p, a = t.prompt(i, fit.tok), t.answer(i, fit.tok)
            logp = model(torch.tensor([p + a])).logits[0, len(p) - 1 : -1].float().log_softmax(-1)
            want.append(100 * torch.exp(logp.gather(-1, torch.tensor(a)[:, None]).mean()).item())
    assert [f for _, f in full] == [1.0] * len(idx)
    np.testing.assert_allclose([x for x, _ in full], want, rtol=1e-4)
    zero = fit._predict_rows([(torch.zeros(ev.num_params), task, i) for i in idx], ev.make_policy)
    np.testing.assert_allclose([x for x, _ in zero], want, rtol=1e-4)
    drop = torch.zeros(ev.num_params)
    drop[-1] = -1.0  # every score negative: only the newest token stays
    low = fit._predict_rows([(drop, task, i) for i in idx], ev.make_policy)
    assert np.mean([x for x, _ in low]) < np.mean(want) and max(f for _, f in low) < 0.5
    refs = fit.reference_scores(batch)
    assert refs[task] == pytest.approx(np.mean(want), rel=1e-4)
    hist = evolve(cfg_for(tmp_path / "b", "evolution.fitness=likelihood", "stages.0.generations=2"), model=model).history
    assert len(hist) == 2 and all(0.0 < r["fitness_mean"] for r in hist)
    with pytest.raises(Exception, match="fitness"):
        cfg_for(tmp_path / "c", "evolution.fitness=perplexity")


# --------------------------------------------------------------------------- whole runs

def test_batched_population_equals_member_by_member(runs):
    b, s = runs["batched"], runs["sequential"]
    assert b.generation == s.generation == 3
    assert fitness_curve(b.history) == fitness_curve(s.history)
    assert [r["mean_fitness"] for r in b.history] == [r["mean_fitness"] for r in s.history]
    assert np.array_equal(b.mean, s.mean)
    spread = {f for r in b.history for f in r["fitness"]}
    assert len(spread) > 1, "members must differ for this comparison to mean anything"


def test_run_folder(runs, model):
    out = runs["root"] / "batched"
    for name in ("config.yaml", "log.jsonl", "log.csv", "fitness.png", "namm.safetensors", "state.pkl"):
        assert (out / name).is_file(), name
    assert load_config(out / "config.yaml") == cfg_for(out, "run.batched_population=true", "run.plot=true")
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in rows] == [1, 2, 3]
    assert all(r["mean_fitness"] is not None and r["sigma"] > 0 and len(r["fitness"]) == 8 for r in rows)
    header = (out / "log.csv").read_text().splitlines()[0]
    assert header.startswith("generation,stage,fitness_mean,fitness_std,fitness_max,mean_fitness,cache_fraction_mean,sigma")
    state = load_state(out)
    policy = load_namm(out / "namm.safetensors")  # the deployed NAMM = the CMA-ES mean + frozen stats
    assert torch.equal(policy.params, torch.as_tensor(state["es"].mean, dtype=torch.float32))
    assert torch.equal(policy.mean, state["norm"][0]) and torch.equal(policy.var, state["norm"][1])
    assert policy.n_up == 32 and policy.mode == "ragged" and state["pending"] is None


def test_two_ranks_equal_one_rank(runs):
    root = runs["root"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "evolution" / "dist_evolve.py"), str(TINY)]
    for name, extra in [("dist_batched", ["run.batched_population=true"]),
                        ("dist_sequential", ["run.batched_population=false", "run.batch_size=4"])]:
        cmd += ["RUN", *BASE, f"run.out={root / name}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = runs["batched"]
    for name in ("dist_batched", "dist_sequential"):
        state = load_state(root / name)
        assert fitness_curve(state["history"]) == fitness_curve(one.history), name
        assert np.array_equal(state["es"].mean, one.mean), name


def test_resume_continues_the_same_trajectory(runs, tmp_path, model):
    """6 generations in one go == 3 generations, stop, resume to 6 (the optimiser state is pickled)."""
    straight = evolve(cfg_for(tmp_path / "straight", "run.batched_population=true", "stages.0.generations=6"),
                      model=model)
    part = tmp_path / "part"
    shutil.copytree(runs["root"] / "batched", part)  # the 3-generation run
    resumed = evolve(cfg_for(part, "run.batched_population=true", "stages.0.generations=6"), model=model, resume=True)
    assert resumed.generation == straight.generation == 6
    assert np.array_equal(resumed.mean, straight.mean)
    assert fitness_curve(resumed.history) == fitness_curve(straight.history)
    with pytest.raises(ValueError, match="already holds a run; pass --resume|--resume"):  # never overwrite a run by accident
        Evolution(cfg_for(part, "run.batched_population=true"), model=model)
    with pytest.raises(ValueError, match="evolution.sigma0"):  # a changed trajectory is not a resume
        Evolution(cfg_for(part, "run.batched_population=true", "evolution.sigma0=0.1"), model=model, resume=True)
    # a run saved before a config key existed resumes: the key's default reproduces the old behaviour
    state = load_state(part)
    for key in ("fitness", "keep_bias0"):
        del state["config"]["evolution"][key]
    (part / "state.pkl").write_bytes(pickle.dumps(state))
    Evolution(cfg_for(part, "run.batched_population=true"), model=model, resume=True)
    with pytest.raises(ValueError, match="evolution.fitness"):
        Evolution(cfg_for(part, "run.batched_population=true", "evolution.fitness=likelihood"), model=model, resume=True)


def test_signal_writes_a_checkpoint_and_resume_matches(runs, tmp_path, model, monkeypatch):
    """SIGINT while members are evaluated: the asked population is saved as pending; resume re-evaluates it."""
    orig = LanguageFitness.evaluate
    calls = []

    def interrupting(self, members, params, batch, make_policy):
        calls.append(len(members))
        if len(members) > 1 and calls.count(len(members)) == 2:  # the second generation's population
            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, members, params, batch, make_policy)

    cfg = cfg_for(tmp_path / "run", "run.batched_population=true")
    monkeypatch.setattr(LanguageFitness, "evaluate", interrupting)
    stopped = evolve(cfg, model=model)
    monkeypatch.setattr(LanguageFitness, "evaluate", orig)
    assert stopped.interrupted == signal.SIGINT and stopped.generation == 1
    assert load_state(tmp_path / "run")["pending"] is not None
    resumed = evolve(cfg, model=model, resume=True)
    assert resumed.interrupted is None and resumed.generation == 3
    assert fitness_curve(resumed.history) == fitness_curve(runs["batched"].history)
    assert np.array_equal(resumed.mean, runs["batched"].mean)


def test_broken_members_get_the_worst_fitness(runs, tmp_path, model, monkeypatch):
    """Member 3: NaN parameters; 5: its forward pass raises; 6: its score is NaN. The others are unaffected."""
    orig_eval, orig_predict, orig_score = LanguageFitness.evaluate, LanguageFitness._predict_rows, LanguageFitness._score

    def poisoned(self, members, params, batch, make_policy):
        if len(members) > 1:  # the population (the CMA-ES mean is evaluated alone)
            params = params.clone()
            params[3] = float("nan")
            params[5, 0], params[6, 0] = 12345.0, 777.0
        return orig_eval(self, members, params, batch, make_policy)

    def predict(self, rows, make_policy):
        firsts = {float(p[0]) for p, _, _ in rows if p is not None}
        if 12345.0 in firsts:
            raise RuntimeError("simulated CUDA error")
        out = orig_predict(self, rows, make_policy)
        return [("NaN!", f) if p is not None and float(p[0]) == 777.0 else (o, f) for (p, _, _), (o, f) in zip(rows, out)]

    def score(self, task, idx, preds):
        return float("nan") if "NaN!" in preds else orig_score(self, task, idx, preds)

    monkeypatch.setattr(LanguageFitness, "evaluate", poisoned)
    monkeypatch.setattr(LanguageFitness, "_predict_rows", predict)
    monkeypatch.setattr(LanguageFitness, "_score", score)
    res = evolve(cfg_for(tmp_path / "run", "run.batched_population=true", "stages.0.generations=2"), model=model)
    assert res.generation == 2 and np.isfinite(res.mean).all()
    first, clean = res.history[0], runs["batched"].history[0]
    assert first["n_failed"] == 3
    assert [f["member"] for f in first["failures"]] == [3, 5, 6]
    errors = " | ".join(f["error"] for f in first["failures"])
    assert "non-finite parameters" in errors and "simulated CUDA error" in errors and "non-finite fitness" in errors
    for m in range(8):
        expected = WORST_FITNESS if m in (3, 5, 6) else clean["fitness"][m]
        assert first["fitness"][m] == expected, m


def test_cli_runs_the_tiny_config(tmp_path):
    """``namm evolve --config ... --out ... key=value``: the real tiny-random model path, full-size BAM."""
    ap = argparse.ArgumentParser()
    evolve_cli.add(ap.add_subparsers(dest="command"))
    a = ap.parse_args(["evolve", "--config", str(TINY), "--out", str(tmp_path / "cli"), "stages.0.generations=1",
                       "evolution.population=4", "run.progress=false", "evolution.eval_mean_every=0"])
    a.fn(a)
    policy = load_namm(tmp_path / "cli" / "namm.safetensors")
    assert policy.params.shape == (4172,) and torch.isfinite(policy.params).all()
    assert load_state(tmp_path / "cli")["history"][0]["mean_fitness"] is None


def test_stages_continue_one_optimizer_and_resume_across_a_boundary(tmp_path, model):
    stages = "stages=[{tasks: [synthetic_recall], generations: 2}, {tasks: [synthetic_recall], generations: 2}]"
    straight = evolve(cfg_for(tmp_path / "a", stages, "run.batched_population=true", "run.plot=true"), model=model)
    assert [(r["stage"], r["stage_generation"]) for r in straight.history] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert (tmp_path / "a" / "fitness.png").stat().st_size > 0
    cfg = cfg_for(tmp_path / "b", stages, "run.batched_population=true")
    assert evolve(cfg, model=model, stop_after=2).generation == 2  # stops right at the stage boundary
    resumed = evolve(cfg, model=model, resume=True)
    assert fitness_curve(resumed.history) == fitness_curve(straight.history)
    assert np.array_equal(resumed.mean, straight.mean)


def test_warm_start_from_a_weights_file(runs, tmp_path, model):
    """evolution.init_from: the first CMA-ES mean and the frozen statistics are the file's."""
    src = runs["root"] / "batched" / "namm.safetensors"
    ev = Evolution(cfg_for(tmp_path / "warm", f"evolution.init_from={src}", "stages.0.generations=1"), model=model)
    start = load_namm(src)
    assert np.allclose(ev.new_optimizer().mean, start.params.double().numpy())
    evolve(cfg_for(tmp_path / "warm2", f"evolution.init_from={src}", "stages.0.generations=1"), model=model)
    done = load_namm(tmp_path / "warm2" / "namm.safetensors")
    assert torch.equal(done.mean, start.mean) and torch.equal(done.var, start.var)
    from safetensors import safe_open

    with safe_open(tmp_path / "warm2" / "namm.safetensors", "pt") as f:  # a warm start names where it began
        assert json.loads(f.metadata()["info"])["init_from"] == str(src)
    with pytest.raises(Exception, match="init_from"):
        cfg_for(tmp_path / "x", f"evolution.init_from={tmp_path / 'missing.safetensors'}")
    with pytest.raises(ValueError, match="namm.n_fft / hop / ema"):  # features other than the file's
        Evolution(cfg_for(tmp_path / "z", f"evolution.init_from={src}", "namm.ema=0.999"), model=model).new_optimizer()
    with pytest.raises(ValueError, match="588|4172"):  # hidden 4 here vs the full-size shipped BAM
        Evolution(cfg_for(tmp_path / "y", "evolution.init_from=shipped"), model=model).new_optimizer()


def test_budget_caps_every_member_and_is_saved(tmp_path, model):
    """namm.budget: every member keeps at most that share of the tokens; the saved NAMM carries it."""
    cfg = cfg_for(tmp_path / "capped", "namm.budget=0.25", "stages.0.generations=1", "evolution.eval_mean_every=0")
    ev = Evolution(cfg, model=model)
    assert ev.make_policy(torch.zeros(ev.num_params)).budget == 0.25
    evolve(cfg, model=model)
    assert load_namm(tmp_path / "capped" / "namm.safetensors").budget == 0.25
    from namm.evolution.config import ConfigError

    for bad in ("1.5", "0", "'half'"):
        with pytest.raises(ConfigError, match="namm.budget"):
            cfg_for(tmp_path / "x", f"namm.budget={bad}")


def test_cache_target_penalises_members_that_keep_more(runs, tmp_path, model):
    """evolution.cache_target: each member's mean cache fraction is logged, and fitness loses
    cache_penalty per unit above the target (the same run without a target is the reference)."""
    clean = runs["batched"].history[0]
    assert len(clean["cache_fraction"]) == 8 and all(0 < f <= 1 for f in clean["cache_fraction"])
    res = evolve(cfg_for(tmp_path / "t", "run.batched_population=true", "stages.0.generations=1",
                         "evolution.cache_target=0.3", "evolution.cache_penalty=2.0"), model=model)
    row = res.history[0]
    assert row["cache_fraction"] == clean["cache_fraction"]  # same members, same prompts
    for f0, f, cf in zip(clean["fitness"], row["fitness"], row["cache_fraction"]):
        assert f == pytest.approx(f0 - 2.0 * max(0.0, cf - 0.3))
    from namm.evolution.config import ConfigError

    with pytest.raises(ConfigError, match="cache_target"):
        cfg_for(tmp_path / "x", "evolution.cache_target=1.5")
