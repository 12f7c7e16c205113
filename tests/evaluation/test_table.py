"""`namm table`: the NAMM, the full cache and the baselines at the NAMM's measured cache fraction, paired;
and likelihood tasks (lm_continuation) scored through the memory."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from namm.evaluation.table import matched_table
from namm.evaluation.text import score_task, task_examples
from namm.models.tiny import CharTokenizer
from namm.policies import NAMM, FullCache, Recency

pytestmark = pytest.mark.usefixtures("one_thread")


def test_table_runs_baselines_at_the_namms_fraction(tiny_llama, tmp_path):
    tok = CharTokenizer(96)
    namm = NAMM(n_up=32, mode="ragged", params=0.2 * torch.randn(4172, generator=torch.Generator().manual_seed(0)))
    res = matched_table(tiny_llama, tok, ["synthetic_recall"], namm, tmp_path, baselines=("h2o", "tova"), samples=4,
                        seed=3, context_tokens=256, progress=False)
    assert list(res) == ["namm", "full", "h2o", "tova"]
    frac = res["namm"]["tasks"]["synthetic_recall"]["mean_cache_fraction"]
    assert 0 < frac < 1 and res["full"]["mean_cache_fraction"] == 1.0
    for b in ("h2o", "tova"):
        t = res[b]["tasks"]["synthetic_recall"]
        assert t["budget"] == pytest.approx(frac) and abs(t["mean_cache_fraction"] - frac) < 0.1
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert [r["policy"] for r in rows] == ["namm", "full", "h2o", "tova"]
    cmp = list(csv.DictReader((tmp_path / "compare.csv").open()))
    assert {r["other"] for r in cmp} == {"full", "h2o", "tova"} and {r["task"] for r in cmp} == {"synthetic_recall", "mean"}
    md = (tmp_path / "table.md").read_text()
    assert md.startswith("| policy | mean |") and "namm - policy [95%]" in md
    assert (tmp_path / "score_vs_cache.png").stat().st_size > 0
    for name in res:
        assert (tmp_path / name / "predictions.jsonl").is_file()


def test_likelihood_task_scores_the_continuation_through_the_memory():
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from namm.models.zoo import DEFAULT_LM

    tok = AutoTokenizer.from_pretrained(DEFAULT_LM)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)).eval()
    exs = task_examples(tok, "lm_continuation", 2, seed=0, context_tokens=384)
    full = score_task(model, tok, "lm_continuation", exs, FullCache(n_up=64), batch_size=2)
    assert len(full["example_nll"]) == 2 and full["mean_cache_fraction"] == 1.0
    assert full["score"] == pytest.approx(100 * sum(math.exp(-x) for x in full["example_nll"]) / 2, rel=1e-6)
    # the plain model's loss on the same tokens
    with torch.no_grad():
        for ex, nll in zip(exs, full["example_nll"]):
            p = tok(ex["context"])["input_ids"]
            t = tok(ex["answers"][0], add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([p + t])).logits[0, len(p) - 1 : -1].float()
            ref = torch.nn.functional.cross_entropy(logits, torch.tensor(t)).item()
            assert nll == pytest.approx(ref, rel=1e-4)
    small = score_task(model, tok, "lm_continuation", exs, Recency(n_up=64, budget=0.25), batch_size=2)
    assert small["mean_cache_fraction"] < 0.3 and json.dumps(small["example_nll"])


def test_table_shows_nll_and_its_paired_difference_for_likelihood_tasks(tmp_path):
    from namm.evaluation.table import write_table
    from namm.io import write_json, write_jsonl

    for name, nlls, frac in (("namm", [1.2, 1.6], 0.6), ("h2o", [1.0, 1.5], 0.6)):
        recs = [{"task": "lm_continuation", "_id": str(i), "score": math.exp(-x), "nll": x, "cache_fraction": frac,
                 "prediction": "", "answers": [""]} for i, x in enumerate(nlls)]
        write_jsonl(tmp_path / name / "predictions.jsonl", recs)
        nll = sum(nlls) / 2
        write_json(tmp_path / name / "results.json", {
            "policy": name, "mean_score": 100 * sum(r["score"] for r in recs) / 2, "mean_cache_fraction": frac,
            "tasks": {"lm_continuation": {"score": 100 * sum(r["score"] for r in recs) / 2, "nll": nll,
                                          "mean_cache_fraction": frac, "n": 2, "chance": None}}})
    write_table(tmp_path, ["namm", "h2o"], ["lm_continuation"])
    md = (tmp_path / "table.md").read_text().splitlines()
    assert "lm_continuation NLL" in md[0] and "namm - policy NLL [95%]" in md[0]
    h2o = next(line for line in md if line.startswith("| h2o |"))
    assert "| 1.250 | +0.150 [" in h2o  # h2o's NLL, then namm - h2o in nats per token
    assert all(line.count("|") == md[0].count("|") for line in md[1:])
    cmp = next(csv.DictReader((tmp_path / "compare.csv").open()))
    assert float(cmp["nll_diff"]) == pytest.approx(0.15)
