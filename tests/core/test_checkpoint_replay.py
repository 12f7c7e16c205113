import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from namm.checkpoint import CheckpointError, import_reference, load_namm, save_namm
from namm.cli import main
from namm.policies import NAMM


def _reference_ckpt(path, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {
        "mean": torch.randn(4172, generator=g),
        "best_member": torch.randn(4172, generator=g),  # must NOT be used
        "sigma": torch.tensor(0.065),
        "C": torch.eye(8),  # the real one is 4172 x 4172 (~70 MB); irrelevant here
        "stored_buffers_to_save.token_embedding_0_output_mean": torch.rand(1, 1, 1, 17, generator=g),
        "stored_buffers_to_save.token_embedding_0_output_var": torch.rand(1, 1, 1, 17, generator=g) + 0.5,
        "stored_buffers_to_save.token_embedding_0_online_new_output_mean": torch.zeros(1, 1, 1, 17),
    }
    torch.save({"evolution_state": state, "iter_num": 3, "best_val_loss": 0.1}, path)
    return state


def test_reference_import_roundtrip(tmp_path):
    state = _reference_ckpt(tmp_path / "ref.pt")
    policy = import_reference(tmp_path / "ref.pt")
    assert torch.equal(policy.params, state["mean"])
    assert torch.equal(policy.mean, state["stored_buffers_to_save.token_embedding_0_output_mean"].reshape(-1))
    assert torch.equal(policy.var, state["stored_buffers_to_save.token_embedding_0_output_var"].reshape(-1))
    assert policy.n_up == 512 and policy.mode == "reference"
    save_namm(tmp_path / "w.safetensors", policy)
    back = load_namm(tmp_path / "w.safetensors")
    assert torch.equal(back.params, policy.params) and torch.equal(back.mean, policy.mean)
    assert torch.equal(back.var, policy.var) and back.n_up == 512 and back.scorer == "bam"
    assert load_namm(tmp_path / "w.safetensors", n_up=64, mode="ragged").n_up == 64
    # the CLI does the same conversion
    assert main(["import-reference", str(tmp_path / "ref.pt"), str(tmp_path / "cli.safetensors")]) == 0
    assert torch.equal(load_namm(tmp_path / "cli.safetensors").params, state["mean"])


class _Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_code_running_pickle_is_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"evolution_state": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        import_reference(tmp_path / "evil.pt")


def test_wrong_sizes_are_refused_naming_both_sides(tmp_path):
    policy = NAMM(params=torch.randn(4172))
    save_namm(tmp_path / "w.safetensors", policy)
    t = load_file(tmp_path / "w.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        meta = f.metadata()
    t["params"] = torch.randn(4000)
    save_file(t, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="4172.*4000"):
        load_namm(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="not a NAMM weights file"):
        save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
        load_namm(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="import-reference"):
        torch.save({}, tmp_path / "x.pt")
        load_namm(tmp_path / "x.pt")


def make_trace(path, n_up=32, updates=3, layers=2, heads=2, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for u in range(updates):
        n = (u + 1) * n_up
        causal = torch.arange(n)[None, :] <= (u * n_up + torch.arange(n_up))[:, None]
        for l in range(layers):
            logits = 3 * torch.randn(batch, heads, n_up, n, generator=g)
            tensors[f"attn.{u}.{l}"] = torch.softmax(logits.masked_fill(~causal, float("-inf")), -1)
    meta = {"n_up": str(n_up), "num_updates": str(updates), "num_layers": str(layers),
            "num_heads": str(heads), "batch": str(batch)}
    save_file(tensors, path, metadata=meta)
    return tensors


@pytest.mark.parametrize("mode", ["reference", "ragged"])
def test_replay_cli(tmp_path, mode):
    make_trace(tmp_path / "trace.safetensors")
    save_namm(tmp_path / "w.safetensors", NAMM(params=0.5 * torch.randn(4172, generator=torch.Generator().manual_seed(1))))
    args = ["replay", "--policy", str(tmp_path / "w.safetensors"), "--trace", str(tmp_path / "trace.safetensors"),
            "--out", str(tmp_path / "out.safetensors"), "--mode", mode]
    assert main(args) == 0
    out = load_file(tmp_path / "out.safetensors")
    evicted = 0
    for u in range(3):
        for l in range(2):
            pos, keep, s = out[f"positions.{u}.{l}"], out[f"keep.{u}.{l}"], out[f"scores.{u}.{l}"]
            assert pos.dtype == torch.int64 and keep.dtype == torch.bool and s.dtype == torch.float32
            assert pos.shape == keep.shape == s.shape and pos.shape[:2] == (2, 2)
            live = pos >= 0
            assert (pos.diff(dim=-1)[live[..., 1:]] > 0).all()  # increasing per head
            newest = pos == (u + 1) * 32 - 1
            assert keep[newest].all() and newest.sum() == 4  # newest kept in every (row, head)
            assert (keep[live] == ((s[live] >= 0) | newest[live]))[...].all() or mode == "reference"
            if mode == "reference":
                counts = keep.sum(-1)
                assert (counts == counts.flatten()[0]).all()  # equal counts over heads (and rows)
            evicted += int((live & ~keep).sum())
    assert evicted > 0


def test_replay_errors_are_clear(tmp_path):
    save_file({"attn.0.0": torch.zeros(1)}, tmp_path / "t.safetensors", metadata={"n_up": "32"})
    out = str(tmp_path / "o")
    assert main(["replay", "--policy", "full", "--trace", str(tmp_path / "t.safetensors"), "--out", out]) == 2


def test_cli_help_explains_itself():
    r = subprocess.run([sys.executable, "-m", "namm.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "replay" in r.stdout and "import-reference" in r.stdout


def test_replay_of_a_model_trace_reproduces_the_models_decisions(tiny_llama, tmp_path):
    """Record the attention a NAMM saw inside the model as a trace; replay must make the same choices."""
    import namm

    n_up, updates = 32, 4
    params = 0.4 * torch.randn(4172, generator=torch.Generator().manual_seed(2))
    seen_rows, kept = {}, {}

    from namm.cache import active_layer

    class Recorder(NAMM):
        def observe(self, state, attn, qpos):
            layer = active_layer()
            seen_rows.setdefault(layer.layer_idx, []).append((attn.clone(), layer.pos.clone(), qpos.clone()))
            super().observe(state, attn, qpos)

        def select(self, view):
            keep = super().select(view)
            kept.setdefault(view.layer_idx, []).append(sorted(view.pos[0, 0][(keep & view.in_view)[0, 0]].tolist()))
            return keep

    policy = Recorder(n_up=n_up, params=params)
    ids = torch.randint(3, 96, (1, n_up * updates), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), namm.memory(tiny_llama, policy) as mem:
        mem.forward(input_ids=ids)
    heads = tiny_llama.config.num_key_value_heads
    trace = {}
    for l, chunks in seen_rows.items():
        for attn, pos, qpos in chunks:
            for i in range(attn.shape[2]):
                p = int(qpos[0, i])
                u = p // n_up
                t = trace.setdefault(f"attn.{u}.{l}", torch.zeros(1, heads, n_up, (u + 1) * n_up))
                live = (pos[0] >= 0) & (pos[0] <= p)  # [H, N]; later tokens of the chunk are not in view yet
                for h in range(heads):
                    t[0, h, p % n_up, pos[0, h][live[h]]] = attn[0, h, i][live[h]]
    meta = {"n_up": str(n_up), "num_updates": str(updates), "num_layers": str(len(seen_rows)),
            "num_heads": str(heads), "batch": "1"}
    save_file(trace, tmp_path / "trace.safetensors", metadata=meta)
    save_namm(tmp_path / "w.safetensors", NAMM(n_up=n_up, params=params))
    assert main(["replay", "--policy", str(tmp_path / "w.safetensors"), "--trace", str(tmp_path / "trace.safetensors"),
                 "--out", str(tmp_path / "out.safetensors")]) == 0
    out = load_file(tmp_path / "out.safetensors")
    n_evicted = 0
    for l in range(len(seen_rows)):
        for u in range(updates):
            pos, keep = out[f"positions.{u}.{l}"][0, 0], out[f"keep.{u}.{l}"][0, 0]
            assert sorted(pos[keep].tolist()) == kept[l][u]
            n_evicted += int((~keep & (pos >= 0)).sum())
    assert n_evicted > 0


def test_resolve_policy_names_files_and_shipped_weights(tmp_path, monkeypatch):
    import namm.checkpoint as ck

    assert ck.resolve_policy("h2o", n_up=64, budget=0.3, mode=None).budget == 0.3
    save_namm(tmp_path / "w.safetensors", NAMM(params=torch.ones(4172)))
    assert torch.equal(ck.resolve_policy(str(tmp_path / "w.safetensors"), n_up=48).params, torch.ones(4172))
    for name, path in ck.SHIPPED_NAMMS.items():  # every shipped name resolves to weights that load
        assert path.is_file() and ck.resolve_policy(name).net.num_params == 4172, name
    monkeypatch.setitem(ck.SHIPPED_NAMMS, "namm", tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="no evolved NAMM weights are shipped as 'namm'"):
        ck.resolve_policy("namm")
    monkeypatch.setitem(ck.SHIPPED_NAMMS, "namm", tmp_path / "w.safetensors")
    assert ck.resolve_policy("namm", n_up=256).n_up == 256
    assert ck.shipped_namm("shipped") == ck.SHIPPED_NAMM and ck.shipped_namm("runs/x.safetensors") is None
    with pytest.raises(ValueError, match="unknown policy"):
        ck.resolve_policy("nope")


def test_the_default_namm_is_the_linear_ranked_one():
    """The default keeps its top quarter per head and has a zero BAM output projection, so its scorer is linear
    and skips BAM's attention (what makes its prefill cost ~1.1x plain HF, bench/RESULTS.md 2026-12-03)."""
    import namm.checkpoint as ck

    pol = ck.resolve_policy("namm")
    p = pol.net.unflatten(pol.params)
    assert pol.budget == 0.25 and pol.spectral.ema == 0.9999
    assert not p["w_o"].any() and not p["b_o"].any()
    assert ck.SHIPPED_NAMMS["namm-linear"] == ck.SHIPPED_NAMM  # the name it first shipped under
    assert not torch.equal(ck.resolve_policy("namm-threshold").params, pol.params)


def test_budget_is_saved_with_the_weights_and_can_be_overridden(tmp_path):
    """A NAMM evolved under a memory cap keeps it: `--policy namm` applies it, --budget overrides it."""
    params = torch.randn(4172, generator=torch.Generator().manual_seed(3))
    save_namm(tmp_path / "capped.safetensors", NAMM(params=params, budget=0.5))
    save_namm(tmp_path / "count.safetensors", NAMM(params=params, budget=512))
    save_namm(tmp_path / "free.safetensors", NAMM(params=params))
    assert load_namm(tmp_path / "capped.safetensors").budget == 0.5
    assert load_namm(tmp_path / "count.safetensors").budget == 512
    assert load_namm(tmp_path / "free.safetensors").budget is None
    assert load_namm(tmp_path / "capped.safetensors", budget=0.25).budget == 0.25
    save_namm(tmp_path / "pooled.safetensors", NAMM(params=params, pool=5))
    assert load_namm(tmp_path / "pooled.safetensors").pool == 5 and load_namm(tmp_path / "free.safetensors").pool == 1
    # a file written before budgets were saved has none in its config
    import json as _json

    from safetensors import safe_open

    with safe_open(str(tmp_path / "free.safetensors"), framework="pt") as f:
        meta = dict(f.metadata())
    cfg = _json.loads(meta["config"])
    del cfg["budget"], cfg["pool"]
    meta["config"] = _json.dumps(cfg)
    save_file(load_file(str(tmp_path / "free.safetensors")), str(tmp_path / "old.safetensors"), metadata=meta)
    assert load_namm(tmp_path / "old.safetensors").budget is None and load_namm(tmp_path / "old.safetensors").pool == 1


def test_shift_bias_cli_records_each_shift(tmp_path):
    params = torch.randn(4172, generator=torch.Generator().manual_seed(5))
    save_namm(tmp_path / "w.safetensors", NAMM(params=params, mode="ragged"), info={"evolution": {"seed": 1}})
    assert main(["shift-bias", str(tmp_path / "w.safetensors"), str(tmp_path / "up.safetensors"), "--delta", "0.25"]) == 0
    assert main(["shift-bias", str(tmp_path / "up.safetensors"), str(tmp_path / "up2.safetensors"), "--delta", "-0.05"]) == 0
    from namm.checkpoint import read_namm

    tensors, cfg, info = read_namm(tmp_path / "up2.safetensors")
    assert torch.allclose(tensors["params"][-1], params[-1] + 0.2) and torch.equal(tensors["params"][:-1], params[:-1])
    assert cfg["mode"] == "ragged" and info["evolution"] == {"seed": 1}
    assert [d["delta"] for d in info["bias_shifts"]] == [0.25, -0.05]
    assert main(["shift-bias", str(tmp_path / "missing.safetensors"), str(tmp_path / "x.safetensors"), "--delta", "1"]) == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_shipped_head_rankings_wrap_a_policy_with_its_best_heads_whole(tmp_path):
    from namm.checkpoint import SHIPPED_HEADS, keep_heads_whole, read_heads
    from namm.policies import H2O, KeepWhole, LayerBudgets

    smol = read_heads("smollm2-135m")
    assert len(smol) == len(set(smol)) == 30 * 3 and all(0 <= l < 30 and 0 <= h < 3 for l, h in smol)
    assert {l for l, _ in read_heads("gemma3-270m")} == {5, 11, 17}, "Gemma 3's full layers: the managed ones"
    w = keep_heads_whole(H2O(n_up=32, budget=0.25), "smollm2-135m", 0.3)
    assert isinstance(w, KeepWhole) and w.heads == tuple(smol[:27]) and w.n_up == 32
    assert len(keep_heads_whole(H2O(n_up=32, budget=0.25), SHIPPED_HEADS["gemma3-270m"], 0.3).heads) == 1
    # `namm eval|table --whole-heads F --budget B`: B is the budget of the heads that are not whole
    from argparse import Namespace

    from namm.cli.eval import with_whole_heads
    from namm.selection import parse_budget

    a = Namespace(whole_heads=0.4, heads=None, layer_budgets=None, model="smollm2-135m")
    w = with_whole_heads(a, "namm", n_up=64, budget=parse_budget("0.1667"))
    assert len(w.heads) == 36 and w.inner.budget == pytest.approx(0.1667) and w.n_up == 64
    assert with_whole_heads(a, "namm", budget=None).inner.budget == 0.25, "no --budget: the weights' own"
    # `--layer-budgets`: layers at 1 join the whole heads' KeepWhole, the rest set the NAMM's budget per layer
    a = Namespace(whole_heads=0.333, heads=None, layer_budgets="0=1 1-2=0.5 3-29=0.125", model="smollm2-135m")
    w = with_whole_heads(a, "namm", n_up=128)
    assert isinstance(w, KeepWhole) and w.layers == (0,) and len(w.heads) == 30
    assert isinstance(w.inner, LayerBudgets)
    assert dict(w.inner.budgets) == {1: 0.5, 2: 0.5, **dict.fromkeys(range(3, 30), 0.125)}
    a = Namespace(whole_heads=None, heads=None, layer_budgets="0-1=1", model="smollm2-135m")
    assert with_whole_heads(a, "h2o", budget=0.25).layers == (0, 1)
    assert with_whole_heads(a, "full").name == "full", "a policy that never evicts is left as it is"
    bad = tmp_path / "heads.json"
    bad.write_text('{"heads": [{"layer": 1}]}')
    with pytest.raises(ValueError, match="not a head ranking"):
        read_heads(bad)
