"""The zoo LM pipeline end to end at toy scale: train-lm writes a loadable model + manifest, and
`namm eval` scores policies on zoo tasks with the results.json schema."""

import json

import pytest
import torch

from namm.cli import main
from namm.models.zoo import DEFAULT_LM, load_zoo_lm
from namm.zoo.lm import LMTrainConfig, train_lm


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
    from safetensors import safe_open

    with safe_open(str(zoo_dir / "model.safetensors"), framework="pt") as f:  # the tied head is stored once
        assert "lm_head.weight" not in f.keys() and f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert oct((zoo_dir / "model.safetensors").stat().st_mode & 0o777) == "0o644"  # shipped: world-readable


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
    recs = [json.loads(line) for line in (out / "h2o" / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and {r["task"] for r in recs} == {"kv_retrieval"}
    res = json.loads((out / "h2o" / "results.json").read_text())
    assert "predictions" not in res  # per-example lines live in predictions.jsonl only
    assert sum(r["score"] for r in recs) / 2 * 100 == pytest.approx(res["tasks"]["kv_retrieval"]["score"])
    assert sum(r["cache_fraction"] for r in recs) / 2 == pytest.approx(res["tasks"]["kv_retrieval"]["mean_cache_fraction"])

    # the same examples pair up: full against itself differs by exactly zero
    assert main(["compare", str(out / "full"), str(out / "full"), "--n-boot", "50", "--out", str(tmp_path / "c.json")]) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["mean"]["diff"] == 0 and c["mean"]["ci"] == [0, 0] and c["tasks"]["kv_retrieval"]["n"] == 2


def _write_preds(folder, scores, task="t", cache=0.5):
    folder.mkdir(parents=True)
    lines = [json.dumps({"task": task, "_id": str(i), "score": s, "cache_fraction": cache, "prediction": "",
                         "answers": ["x"]}) for i, s in enumerate(scores)]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_compare_pairs_examples_and_brackets_the_difference(tmp_path):
    from namm.evaluation.text import compare

    _write_preds(tmp_path / "a", [0, 0, 1, 1, 0, 1, 0, 1], cache=1.0)
    _write_preds(tmp_path / "b", [1, 0, 1, 1, 1, 1, 0, 1])
    c = compare(tmp_path / "a", tmp_path / "b", n_boot=2000)
    t = c["tasks"]["t"]
    assert (t["a"], t["b"], t["diff"], t["wins"], t["losses"]) == (50.0, 75.0, 25.0, 2, 0)
    assert t["ci"][0] >= 0 and t["ci"][0] < 25 < t["ci"][1] <= 100  # B never loses an example: no resample favours A
    assert (t["a_cache"], t["b_cache"]) == (1.0, 0.5)
    assert c["mean"]["diff"] == 25.0


def test_compare_refuses_unpaired_runs_and_names_the_fix(tmp_path, capsys):
    _write_preds(tmp_path / "a", [1, 0])
    _write_preds(tmp_path / "b", [1, 0, 1])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "different examples" in err and "--seed" in err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "nope")]) == 2
    assert "predictions.jsonl" in capsys.readouterr().err
    dup = tmp_path / "a" / "predictions.jsonl"
    dup.write_text(dup.read_text() + dup.read_text().splitlines()[0] + "\n")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a")]) == 2
    assert "appears twice" in capsys.readouterr().err


def test_training_rows_mask_exactly_the_answer(tmp_path):
    """A task row is prompt + answer + eos, then plain text; the mask covers answer + eos only."""
    from transformers import AutoTokenizer

    from namm.tasks.corpus import collect_corpus
    from namm.zoo.lm import _Rows

    tok = AutoTokenizer.from_pretrained(DEFAULT_LM)
    corpus = collect_corpus(max_bytes=1_000_000)
    names = ["kv_retrieval", "qa_f1"]
    rows = iter(_Rows(LMTrainConfig(task_fraction=1.0), 0, 512, tok, corpus.train, names))
    seen = set()
    for _ in range(4):
        ids, ans, task = next(rows)
        assert ids.shape == ans.shape == (512,)
        assert task in (0, 1)
        seen.add(names[task])
        masked = ids[ans].tolist()
        assert masked[-1] == tok.eos_token_id and ans.nonzero().flatten().diff().eq(1).all()
        prompt = tok.decode(ids[: int(ans.nonzero()[0])])
        assert prompt.rstrip().endswith("Answer:")
    assert seen == set(names)  # round-robin over the mixture


def test_train_lm_from_saved_corpus_with_workers_and_time_budget(tmp_path):
    """The GPU recipe's knobs on CPU: a saved corpus, 2 example-building workers, a wall-clock budget."""
    corpus_dir = tmp_path / "corpus"
    assert main(["zoo", "corpus", "--out", str(corpus_dir), "--corpus-mb", "1"]) == 0
    out = tmp_path / "lm"
    cfg = LMTrainConfig(out=str(out), corpus=str(corpus_dir), vocab=512, hidden=32, layers=2, heads=2, kv_heads=1,
                        intermediate=64, max_positions=1024, stages=[(512, 2, 3), (512, 2, 1)], warmup=1,
                        workers=2, max_minutes=0.1, eval_examples=0, tasks="kv_retrieval")
    train_lm(cfg)
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["corpus"] == str(corpus_dir) and man["device"] == "cpu"
    assert man["data"]["files"] == len(json.loads((corpus_dir / "manifest.json").read_text()) and
                                       (corpus_dir / "documents.jsonl").read_text().splitlines())
    steps = man["curve"][-1]["step"] if man["curve"] else 0
    assert man["tokens_seen"] == steps * 2 * 512
    for entry in man["curve"]:
        assert set(entry["answer_loss_by_task"]) <= {"kv_retrieval"}
    model, tok = load_zoo_lm(out)
    assert model.config.hidden_size == 32


def test_train_lm_bad_corpus_or_device_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="namm zoo corpus --out"):
        train_lm(LMTrainConfig(out=str(tmp_path / "lm"), corpus=str(tmp_path / "missing")))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use --device cpu"):
            train_lm(LMTrainConfig(out=str(tmp_path / "lm"), device="cuda"))
