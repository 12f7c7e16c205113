"""Long-context task generators: format, token length, answerability, determinism, split hygiene."""
import sysconfig
from pathlib import Path

import pytest

from namm.io import read_jsonl, write_jsonl
from namm.tasks.corpus import collect_corpus, train_tokenizer
from namm.tasks.metrics import exact_contains_score
from namm.tasks.zoo import DATASET2METRIC, ZOO_TASKS, format_prompt, training_mixture

TARGET = 1024
LONGBENCH_KEYS = {"context", "input", "answers", "length", "dataset", "language", "all_classes", "_id"}


@pytest.fixture(scope="module")
def corpus():
    stdlib = [("stdlib", Path(sysconfig.get_paths()["stdlib"]))]
    return collect_corpus(max_bytes=600_000, seed=0, heldout_frac=0.3, roots=stdlib)


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer(corpus, vocab_size=512)


@pytest.fixture(scope="module")
def examples(tok, corpus):
    return {name: task.generate(tok, corpus, 4, seed=0, context_tokens=TARGET)
            for name, task in ZOO_TASKS.items()}


def test_registry():
    assert set(ZOO_TASKS) >= {"passage_retrieval", "code_completion", "kv_retrieval", "qa_f1"}
    assert set(DATASET2METRIC.values()) <= {"retrieval", "edit_sim", "exact_contains", "qa_f1"}
    for task in ZOO_TASKS.values():
        assert "{context}" in task.prompt and "{input}" in task.prompt and task.max_new_tokens > 0


@pytest.mark.parametrize("name", sorted(ZOO_TASKS))
def test_examples_format_length_and_answer(name, examples, tok, corpus):
    held = {d.id for d in corpus.heldout}
    for ex in examples[name]:
        assert LONGBENCH_KEYS <= ex.keys() and ex["dataset"] == name and ex["language"] == "en"
        assert ex["all_classes"] is None and ex["answers"] and all(ex["answers"])
        n = len(tok(ex["context"], add_special_tokens=False).input_ids)
        assert n == ex["length"] and abs(n - TARGET) <= 0.1 * TARGET
        assert 0.0 <= ex["needle_fraction"] <= 1.0
        assert set(ex["doc_ids"]) <= held  # evaluation data comes from held-out files only
        ans = ex["answers"][0]
        if name == "kv_retrieval":
            key = ex["input"].split("KEY ")[1].rstrip("?")
            assert f"KEY {key} HAS VALUE {ans}" in ex["context"] and ex["context"].count(key) == 1
        elif name == "passage_retrieval":
            cue = ex["input"].split("\n", 1)[1]
            k = int(ans.split()[1])
            block = ex["context"].split(f"Paragraph {k}:\n", 1)[1].split(f"Paragraph {k + 1}:\n")[0]
            assert cue in block and ex["context"].count(cue) == 1
        elif name == "code_completion":
            assert ex["input"] == "Next line of code:" and "\n" not in ans
        else:
            assert ans in ex["context"]
        prompt = format_prompt(name, ex)
        assert prompt.endswith("\n") and ex["context"] in prompt and ex["input"] in prompt


def test_same_seed_same_examples_other_seed_differs(tok, corpus, examples):
    for name, task in ZOO_TASKS.items():
        assert task.generate(tok, corpus, 4, seed=0, context_tokens=TARGET) == examples[name]
        other = task.generate(tok, corpus, 4, seed=1, context_tokens=TARGET)
        assert [e["_id"] for e in other] != [e["_id"] for e in examples[name]]
        assert len({e["_id"] for e in examples[name]}) == 4


def test_needle_positions_spread(tok, corpus):
    fr = [e["needle_fraction"] for e in ZOO_TASKS["kv_retrieval"].generate(tok, corpus, 8, 0, TARGET)]
    assert min(fr) < 0.25 and max(fr) > 0.75  # stratified over the context


def test_training_mixture_uses_train_docs_only(tok, corpus):
    train = {d.id for d in corpus.train}
    items = list(training_mixture(tok, corpus, 8, seed=0, context_tokens=(512, 1024)))
    assert {it["task"] for it in items} == set(ZOO_TASKS)
    for it in items:
        assert it["doc_ids"] and set(it["doc_ids"]) <= train
        assert it["text"] == it["prompt"] + it["answer"] and it["prompt"].endswith("\n")
    again = list(training_mixture(tok, corpus, 8, seed=0, context_tokens=(512, 1024)))
    assert again == items


def test_jsonl_roundtrip_and_exact_contains(tmp_path, examples):
    path = write_jsonl(tmp_path / "sub" / "kv.jsonl", examples["kv_retrieval"])
    assert read_jsonl(path) == examples["kv_retrieval"]
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temp file
    assert exact_contains_score("The value is 3FA9C0D2.", "3fa9c0d2") == 1.0
    assert exact_contains_score("no idea", "3fa9c0d2") == 0.0
