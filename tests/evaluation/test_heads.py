"""``namm heads``: the retrieval-head calibration as a harness step, on the zoo LM (its fast tokenizer gives
the offsets the evidence positions need)."""

from __future__ import annotations

import json

from namm.checkpoint import keep_heads_whole, read_heads
from namm.cli import main
from namm.evaluation.heads import evidence_spans
from namm.policies import H2O


def test_evidence_spans_take_each_values_first_occurrence():
    text = "x=17; y=x; ... what is y? 17"
    assert evidence_spans(text, ["17", "x"]) == [(2, 4), (0, 1)]
    assert evidence_spans(text, ["99"]) == []


def test_heads_ranks_every_managed_head_and_feeds_whole_heads(tmp_path, capsys):
    out = tmp_path / "heads"
    assert main(["heads", "--model", "zoo", "--tasks", "ruler_niah_multikey,ruler_vt", "--samples", "1",
                 "--context-tokens", "256", "--n-up", "64", "--out", str(out)]) == 0
    doc = json.loads((out / "heads.json").read_text())
    rows = doc["heads"]
    assert doc["config"]["model"] == "zoo" and doc["config"]["tasks"] == "ruler_niah_multikey,ruler_vt"
    assert len({(r["layer"], r["head"]) for r in rows}) == len(rows) == 4 * 2  # the zoo LM: 4 layers x 2 KV heads
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores) and scores[0] > 0
    for r in rows:  # the mean over the families
        assert abs(r["score"] - (r["ruler_niah_multikey"] + r["ruler_vt"]) / 2) < 1e-6
    assert (out / "heads.csv").read_text().splitlines()[0].startswith("layer,head,score")
    assert (out / "heads.png").stat().st_size > 0
    w = keep_heads_whole(H2O(n_up=64, budget=0.25), out / "heads.json", 0.25)
    assert w.heads == tuple(read_heads(out / "heads.json")[:2])


def test_heads_by_loss_ranks_what_a_policys_evictions_take(tmp_path):
    out = tmp_path / "loss"
    assert main(["heads", "--model", "zoo", "--by", "loss", "--policy", "namm",
                 "--tasks", "lm_continuation,ruler_vt", "--samples", "1", "--context-tokens", "256",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "heads.json").read_text())
    rows = doc["heads"]
    assert doc["config"]["by"] == "loss" and doc["config"]["policy"].startswith("namm")
    assert len(rows) == 4 * 2
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores) and scores[0] > 0
    for r in rows:
        assert abs(r["score"] - (r["lm_continuation"] + r["ruler_vt"]) / 2) < 1e-6


def test_heads_by_loss_refuses_a_policy_that_evicts_nothing(tmp_path, capsys):
    assert main(["heads", "--model", "zoo", "--by", "loss", "--policy", "full", "--out", str(tmp_path)]) != 0
    assert "evicts nothing" in capsys.readouterr().err


def test_example_trace_is_the_prompt_then_its_gold_target():
    from namm import models, tasks
    from namm.evaluation.text import example_trace, prompt_ids

    model, tok = models.load("zoo", "lm")
    task = tasks.make("kv_retrieval")
    ex = task.examples(tok, 1, seed=0, context_tokens=128)[0]
    meta, tensors, start = example_trace(model, tok, task, ex, n_up=32)
    target = tok.encode(task.target(ex), add_special_tokens=False)
    assert start == len(prompt_ids(tok, task, ex, 10**9)) and meta["length"] == start + len(target) > start
    attn = [k for k in tensors if k.startswith("attn.")]
    assert meta["num_updates"] == -(-meta["length"] // 32) and len(attn) == meta["num_updates"] * meta["num_layers"]
    assert tensors["layers"].tolist() == list(range(meta["num_layers"]))
