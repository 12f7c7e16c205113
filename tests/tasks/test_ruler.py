"""The RULER-style suite and lm_continuation: seeded, length-controlled instances from held-out text,
answerable from the context, prompts with RULER's answer prefix (in the assistant's turn with a chat
template), recall-style scores and chance levels."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from namm import tasks
from namm.models.zoo import DEFAULT_LM

CTX = 512


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(DEFAULT_LM)


@pytest.mark.parametrize("name", tasks.expand("ruler"))
def test_instances_are_seeded_sized_and_answerable(tok, name):
    t = tasks.make(name)
    exs = t.examples(tok, 3, seed=7, context_tokens=CTX)
    assert exs == t.examples(tok, 3, seed=7, context_tokens=CTX)  # deterministic
    assert [e["_id"] for e in exs] != [e["_id"] for e in t.examples(tok, 3, seed=8, context_tokens=CTX)]
    for e in exs:
        assert abs(e["length"] - CTX) <= 0.1 * CTX
        assert e["answers"] and e["answer_prefix"]
        if t.metric == "string_match" and name not in ("ruler_cwe", "ruler_fwe"):
            assert all(a in e["context"] for a in e["answers"]), "the evidence sits in the context"
        prompt = t.prompt(e)
        assert prompt.endswith(e["answer_prefix"]) and e["input"] in prompt
    chance = t.chance_level(exs)
    assert chance is None or 0 <= chance < 50
    # the gold answers score 100, nothing scores 0 (recall over the expected strings)
    assert t.score([" ".join(e["answers"]) for e in exs], exs) == pytest.approx(100.0)
    assert t.score(["no idea"] * len(exs), exs) < 20


def test_partial_recall_and_the_suite():
    t = tasks.make("ruler_niah_multivalue")
    ex = {"answers": ["1111111", "2222222", "3333333", "4444444"], "context": "", "input": ""}
    assert t.example_scores(["the numbers are 1111111 and 3333333"], [ex]) == [0.5]
    assert tasks.expand("ruler,lm_continuation")[-1] == "lm_continuation" and len(tasks.expand("ruler")) == 8


def test_chat_template_prompt_puts_the_prefix_in_the_assistant_turn(tok):
    class ChatTok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
            return f"<user>{messages[0]['content']}</user><assistant>"

    t = tasks.make("ruler_niah_single")
    ex = t.examples(tok, 1, seed=0, context_tokens=CTX)[0]
    p = t.prompt(ex, ChatTok())
    assert p.startswith("<user>Read the text below") and p.endswith("</user><assistant>" + ex["answer_prefix"])


def test_lm_continuation_windows(tok):
    t = tasks.make("lm_continuation")
    assert t.scoring == "likelihood"
    exs = t.examples(tok, 4, seed=0, context_tokens=CTX)
    assert len({e["_id"] for e in exs}) == 4
    for e in exs:
        target = tok(t.target(e), add_special_tokens=False)["input_ids"]
        assert 200 <= len(target) <= 300 and e["context"].endswith("\n")
        assert len(tok(e["context"], add_special_tokens=False)["input_ids"]) <= CTX
    assert t.likelihood_score(0.0) == 100.0 and 0 < t.likelihood_score(-1.5) < 23
    assert t.chance_level(exs) == pytest.approx(100.0 / len(tok))  # a uniform guess over the vocabulary
    with pytest.raises(ValueError, match="shorter --context-tokens"):
        t.examples(tok, 1, seed=0, context_tokens=10**7)


def test_unknown_task_names_the_closest():
    with pytest.raises(tasks.UnknownTaskError, match="did you mean 'ruler_niah_single'"):
        tasks.expand("ruler_niah_singel")


def test_train_split_draws_other_files_and_is_refused_where_absent(tok):
    from namm.evolution.config import ConfigError, load_config

    t = tasks.make("lm_continuation")
    held = {e["doc_id"] for e in t.examples(tok, 6, seed=0, context_tokens=256)}
    train = {e["doc_id"] for e in t.examples(tok, 6, seed=0, context_tokens=256, split="train")}
    assert held and train and not held & train
    needle = tasks.make("ruler_niah_single").examples(tok, 2, seed=0, context_tokens=256, split="train")
    assert len(needle) == 2
    with pytest.raises(ValueError, match="cannot draw from the 'train' split"):
        tasks.make("synthetic_recall").examples(tok, 2, split="train")
    with pytest.raises(ConfigError, match="data.synthetic_recall.split"):
        load_config("configs/evolve_tiny.yaml", ["data.synthetic_recall.split=train"])
