"""A RULER-style synthetic suite (Hsieh et al. 2024), length-controlled, with haystacks of real held-out
text from the offline corpus (prose and code, never random tokens), in LongBench format.

Tasks (suite ``ruler``), scored by RULER's recall-style string match (the share of the expected strings
found in the answer) unless said otherwise:

* ``ruler_niah_single``: one "special magic number" for a key hidden in the haystack; recall it.
* ``ruler_niah_multikey``: four needles with different keys (three distractors); recall the asked one.
* ``ruler_niah_multivalue``: four numbers for the same key; recall all four.
* ``ruler_niah_multiquery``: four keys asked at once; recall all four numbers.
* ``ruler_vt``: variable tracking, a chain ``VAR A = 12345. VAR B = A. ...`` scattered through the text;
  name every variable that holds the value.
* ``ruler_cwe``: common-words extraction from a numbered word list (10 words 30 times, the rest 3 times).
* ``ruler_fwe``: frequent-words extraction from a Zipf-distributed word sequence; the three most frequent.
* ``ruler_qa``: a held-out Python function among held-out files; what its docstring says it does
  (token F1, as LongBench's QA).

Every task writes its answer after RULER's answer prefix (for an instruct model: in the assistant's
turn of its chat template). Words, keys and values are drawn from the corpus' held-out vocabulary and a
seeded generator; needle depths are stratified over the ``n`` instances.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from typing import Any, Callable

from .base import TextTask
from .corpus import HELDOUT, TRAIN, default_corpus
from .zoo import Pool, filler_chunks, fit_to_tokens, insert_items, prefix_lines, select_docs

__all__ = ["RULER_TASKS", "text_task", "generate"]

_ATTEMPTS = 25
_WORD = re.compile(r"\b[a-z]{4,9}\b")

_NIAH_NEEDLE = "One of the special magic numbers for {key} is: {value}."
_NIAH_Q1 = "What is the special magic number for {key} mentioned in the provided text?"
_NIAH_P1 = "The special magic number for {key} mentioned in the provided text is"
_NIAH_QN = "What are all the special magic numbers for {keys} mentioned in the provided text?"
_NIAH_PN = "The special magic numbers for {keys} mentioned in the provided text are"


def _vocab(pool: Pool) -> list[str]:
    """Lower-case words of the pool's documents (4-9 letters), by frequency: keys and list words."""
    counts: Counter = Counter()
    for d in pool.docs:
        counts.update(_WORD.findall(d.text.lower()))
    return [w for w, c in counts.most_common() if c >= 2]


def _pool(tokenizer, split: str = HELDOUT) -> tuple[Pool, list[str]]:
    pool = Pool(tokenizer, select_docs(default_corpus(), split))
    return pool, _vocab(pool)


def _number(rng: random.Random, used: set) -> str:
    while True:
        v = str(rng.randint(1_000_000, 9_999_999))
        if v not in used:
            used.add(v)
            return v


def _haystack(pool: Pool, rng: random.Random, target: int, needles: list[tuple[float, str]]) -> dict | None:
    """Held-out text of ``target`` tokens with each needle (a sentence) inserted at its fraction; the
    first needle is the evidence (``needle_fraction``)."""
    filler = filler_chunks(pool, rng, int(1.5 * target) + 64)
    items = [(f, "\n" + s.strip() + "\n\n") for f, s in needles]
    cost = sum(pool.ntok(t) for _, t in items)

    def build(budget: int) -> dict:
        lines = prefix_lines(filler, budget - cost)
        text, pos = insert_items(lines, items)
        return {"context": text, "needle": pos[0], "doc_ids": {d for _, _, d in lines}}

    return fit_to_tokens(pool, build, target)


def _niah(kind: str) -> Callable:
    def make(pool: Pool, vocab: list[str], rng: random.Random, target: int, u: float) -> dict | None:
        used: set = set()
        keys = [f"{a}-{b}" for a, b in (rng.sample(vocab[:2000], 2) for _ in range(4))]
        if len(set(keys)) < 4:
            return None
        if kind == "single":
            pairs = [(keys[0], _number(rng, used))]
        elif kind == "multikey":
            pairs = [(k, _number(rng, used)) for k in keys]
        elif kind == "multivalue":
            pairs = [(keys[0], _number(rng, used)) for _ in range(4)]
        else:  # multiquery
            pairs = [(k, _number(rng, used)) for k in keys]
        fracs = [u] + [rng.random() for _ in pairs[1:]]
        got = _haystack(pool, rng, target, [(f, _NIAH_NEEDLE.format(key=k, value=v)) for f, (k, v) in zip(fracs, pairs)])
        if got is None:
            return None
        if kind in ("single", "multikey"):
            key, answers = pairs[0][0], [pairs[0][1]]
            q, prefix = _NIAH_Q1.format(key=key), _NIAH_P1.format(key=key)
        elif kind == "multivalue":
            key, answers = keys[0], [v for _, v in pairs]
            q, prefix = _NIAH_QN.format(keys=key), _NIAH_PN.format(keys=key)
        else:
            asked = ", ".join(k for k, _ in pairs[:-1]) + f" and {pairs[-1][0]}"
            answers = [v for _, v in pairs]
            q, prefix = _NIAH_QN.format(keys=asked), _NIAH_PN.format(keys=asked)
        if any(got["context"].count(a) != 1 for a in answers):
            return None
        return {**got, "input": q, "answers": answers, "answer_prefix": prefix}

    return make


def _vt(pool: Pool, vocab: list[str], rng: random.Random, target: int, u: float) -> dict | None:
    used: set = set()
    names = ["".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5)) for _ in range(5)]
    if len(set(names)) < 5:
        return None
    value = str(rng.randint(10_000, 99_999))
    used.add(value)
    chain = [f"VAR {names[0]} = {value}."] + [f"VAR {b} = {a}." for a, b in zip(names, names[1:])]
    fracs = sorted([u] + [rng.random() for _ in chain[1:]])  # the assignments stay in order
    got = _haystack(pool, rng, target, list(zip(fracs, chain)))
    if got is None or got["context"].count(value) != 1:
        return None
    q = f"Find all variables that are assigned the value {value} in the text above."
    prefix = f"Answer: According to the chain of variable assignments in the text above, {len(names)} variables are " \
             f"assigned the value {value}, they are:"
    return {**got, "input": q, "answers": names, "answer_prefix": prefix}


def _cwe(pool: Pool, vocab: list[str], rng: random.Random, target: int, u: float) -> dict | None:
    """RULER's common-words extraction: 10 words many times each (30 at 4k; scaled down for shorter
    contexts), the others a quarter as often, shuffled and numbered."""
    words = rng.sample(vocab[:3000], 600)
    common, rest = words[:10], words[10:]
    fc = max(4, min(30, target // 130))
    fr = max(1, fc // 4)
    order_seed = rng.getrandbits(32)

    def listing(n_rest: int) -> str:
        seq = common * fc + rest[:n_rest] * fr
        random.Random(order_seed + n_rest).shuffle(seq)
        return " ".join(f"{i + 1}. {w}" for i, w in enumerate(seq))

    def build(budget: int) -> dict | None:
        n_rest = 0
        while n_rest < len(rest) and pool.ntok(listing(n_rest)) < budget:
            n_rest += 5
        if n_rest == 0:
            return None  # the common words alone overflow the budget
        return {"context": listing(n_rest), "needle": 0, "doc_ids": set(), "vocab": 10 + n_rest}

    got = fit_to_tokens(pool, build, target)
    if got is None:
        return None
    q = "What are the 10 most common words in the above list?"
    return {**got, "input": q, "answers": common, "answer_prefix": "Answer: The top 10 words that appear most often "
            "in the list are:", "chance": 10 / got.pop("vocab")}


def _fwe(pool: Pool, vocab: list[str], rng: random.Random, target: int, u: float) -> dict | None:
    """RULER's frequent-words extraction: words drawn with Zipf weights (alpha 2); the three most frequent."""
    words = rng.sample(vocab[:3000], 200)
    weights = [1.0 / (i + 1) ** 2.0 for i in range(len(words))]

    def build(budget: int) -> dict:
        r = random.Random(budget)
        n = max(50, budget // 2)
        seq: list[str] = []
        while True:
            seq = r.choices(words, weights, k=n)
            if pool.ntok(" ".join(seq)) >= budget * 0.95:
                break
            n = int(n * 1.2) + 10
        return {"context": " ".join(seq), "needle": 0, "doc_ids": set(), "seq": seq}

    got = fit_to_tokens(pool, build, target)
    if got is None:
        return None
    top = [w for w, _ in Counter(got.pop("seq")).most_common(3)]
    q = "What are the three most frequently appeared words in the above coded text?"
    return {**got, "input": q, "answers": top, "answer_prefix": "Answer: According to the coded text above, the "
            "three most frequently appeared words are:", "chance": 3 / len(words)}


def _qa(pool: Pool, vocab: list[str], rng: random.Random, target: int, u: float) -> dict | None:
    """A held-out function (with its docstring) among held-out files; answer its docstring's first sentence."""
    from .zoo import ZOO_TASKS

    ex = ZOO_TASKS["qa_f1"].maker(pool, rng, target, u)
    if ex is None:
        return None
    name = re.search(r"`([^`]+)`", ex["input"]).group(1)  # type: ignore[union-attr]
    return {**ex, "input": f"According to the code above, what does the function `{name}` do? Answer with a short "
            "phrase from its docstring.", "answer_prefix": "Answer:"}


RULER_TASKS: dict[str, dict[str, Any]] = {
    "ruler_niah_single": {"maker": _niah("single"), "max_new_tokens": 16, "metric": "string_match", "chance": 0.0},
    "ruler_niah_multikey": {"maker": _niah("multikey"), "max_new_tokens": 16, "metric": "string_match", "chance": 0.0},
    "ruler_niah_multivalue": {"maker": _niah("multivalue"), "max_new_tokens": 48, "metric": "string_match",
                              "chance": 0.0},
    "ruler_niah_multiquery": {"maker": _niah("multiquery"), "max_new_tokens": 48, "metric": "string_match",
                              "chance": 0.0},
    "ruler_vt": {"maker": _vt, "max_new_tokens": 32, "metric": "string_match", "chance": 0.0},
    "ruler_cwe": {"maker": _cwe, "max_new_tokens": 64, "metric": "string_match", "chance": None},
    "ruler_fwe": {"maker": _fwe, "max_new_tokens": 24, "metric": "string_match", "chance": None},
    "ruler_qa": {"maker": _qa, "max_new_tokens": 32, "metric": "qa_f1", "chance": None},
}
_FAMILY = {"ruler_niah_single": "ruler-niah", "ruler_niah_multikey": "ruler-niah", "ruler_niah_multivalue": "ruler-niah",
           "ruler_niah_multiquery": "ruler-niah", "ruler_vt": "ruler-vt", "ruler_cwe": "ruler-aggregation",
           "ruler_fwe": "ruler-aggregation", "ruler_qa": "ruler-qa"}


def generate(task: str, tokenizer: Any, n: int, seed: int, context_tokens: int, split: str = HELDOUT) -> list[dict]:
    """``n`` seeded instances of a RULER task at ``context_tokens`` (sized with ``tokenizer``), haystacks
    from the documents of ``split``."""
    spec = RULER_TASKS[task]
    pool, vocab = _pool(tokenizer, split)
    strata = list(range(n))
    random.Random(f"{task}:{seed}:strata").shuffle(strata)
    out = []
    for i in range(n):
        for attempt in range(_ATTEMPTS):
            rng = random.Random(f"{task}:{seed}:{i}:{attempt}")
            ex = spec["maker"](pool, vocab, rng, context_tokens, (strata[i] + rng.random()) / n)
            if ex is not None:
                break
        else:
            raise RuntimeError(f"{task}: no valid instance after {_ATTEMPTS} attempts at {context_tokens} tokens")
        body = {"context": ex["context"], "input": ex["input"], "answers": ex["answers"]}
        uid = hashlib.sha1(json.dumps([task, body], sort_keys=True).encode()).hexdigest()[:24]
        out.append({**body, "answer_prefix": ex["answer_prefix"], "length": ex["length"], "dataset": task,
                    "language": "en", "all_classes": None, "_id": uid, "needle_fraction": ex["needle_fraction"],
                    "context_tokens": context_tokens, "chance": ex.get("chance")})
    return out


def _chance(task: str) -> Callable[[list[dict]], float] | None:
    if RULER_TASKS[task]["chance"] is not None or task == "ruler_qa":
        return None
    return lambda exs: 100.0 * sum(ex["chance"] for ex in exs) / len(exs)


def text_task(name: str) -> TextTask:
    spec = RULER_TASKS[name]

    def make(tokenizer, n: int, seed: int, context_tokens: int, data_dir: str | None, split: str = HELDOUT) -> list[dict]:
        return generate(name, tokenizer, n, seed, context_tokens, split)

    return TextTask(
        name=name, make_examples=make,
        template="Read the text below and answer the question after it.\n\n{context}\n\nQuestion: {input}",
        answer_prefix="", metric=spec["metric"], max_new_tokens=spec["max_new_tokens"], chat=True,
        all_answers=spec["metric"] == "string_match", chance=spec["chance"], chance_fn=_chance(name),
        provenance=lambda: {"corpus": default_corpus().fingerprint()}, family=_FAMILY[name], splits=(HELDOUT, TRAIN),
        description=(__doc__ or "").split(f"``{name}``", 1)[-1].split("\n*", 1)[0].strip(": \n"))
