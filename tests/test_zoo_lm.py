"""The zoo LM pipeline end to end at toy scale: train-lm writes a loadable model + manifest, and
`namm eval` scores policies on zoo tasks with the results.json schema."""

import json

import pytest

from namm.cli import main
from namm.zoo import LMTrainConfig, load_zoo_lm, train_lm


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "lm"
    cfg = LMTrainConfig(out=str(out), corpus_mb=2, vocab=512, hidden=32, layers=2, heads=2, kv_heads=1,
                        intermediate=64, max_positions=2048, stages=[(256, 2, 2), (512, 1, 1)], warmup=1,
                        eval_examples=1, eval_context=512)
    return train_lm(cfg)


def test_train_lm_writes_model_tokenizer_and_manifest(zoo_dir):
    man = json.loads((zoo_dir / "manifest.json").read_text())
    assert man["tokens_seen"] == 256 * 2 * 2 + 512
    assert [c["step"] for c in man["curve"]][-1] == 3
    assert set(man["full_cache_scores"]["scores"]) == {"kv_retrieval", "passage_retrieval", "code_completion", "qa_f1"}
    model, tok = load_zoo_lm(zoo_dir)
    assert model.config.num_hidden_layers == 2 and len(tok) == model.config.vocab_size


def test_eval_cli_writes_results_for_each_policy(zoo_dir, tmp_path):
    out = tmp_path / "ev"
    args = ["eval", "--model", str(zoo_dir), "--policy", "full,h2o,recency", "--tasks", "kv_retrieval",
            "--samples", "2", "--context-tokens", "512", "--budget", "0.5", "--n-up", "64", "--out", str(out)]
    assert main(args) == 0
    for name in ("full", "h2o", "recency"):
        res = json.loads((out / name / "results.json").read_text())
        assert set(res) >= {"policy", "tasks", "mean_score", "mean_cache_fraction"}
        t = res["tasks"]["kv_retrieval"]
        assert 0 <= t["score"] <= 100 and 0 < t["mean_cache_fraction"] <= 1
        if name == "full":
            assert t["mean_cache_fraction"] == 1.0
        else:
            assert t["mean_cache_fraction"] <= 0.55
    assert (out / "summary.csv").exists() and (out / "score_vs_cache.png").exists()
