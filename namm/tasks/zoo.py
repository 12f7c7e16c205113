"""Seeded long-context tasks in LongBench format, built from the offline corpus.

Every example is a LongBench-style dict (``context``, ``input``, ``answers``, ``length``,
``dataset``, ``language``, ``all_classes``, ``_id``) plus analysis fields: ``needle_fraction``
(where the evidence sits, as a fraction of the context's tokens), ``context_tokens`` (the target)
and ``doc_ids`` (the corpus documents used). ``length`` is the context length in TOKENS of the
given tokenizer (LongBench counts words); it is always within 10% of ``context_tokens``.

Tasks are sized for a ~10-40M parameter LM that has seen these formats in training (see
:func:`training_mixture`, built from TRAIN documents only). Each is solvable by copying with
full attention, and each needs the evidence to survive KV-cache eviction:

* ``kv_retrieval``: "KEY <hex> HAS VALUE <hex>" records scattered through held-out text; answer
  the value of one key (exact copy). Needle = the queried record.
* ``passage_retrieval``: numbered chunks of held-out documents; the cue is one distinctive line
  quoted VERBATIM from one chunk (it stays in the chunk: matching a paraphrase is beyond a small
  LM, but finding a copied line and then recalling the label above it is not trivial either,
  since the label can be hundreds of tokens before the line). Answer "Paragraph k".
* ``code_completion``: held-out Python files, cut before a target line that uses an identifier
  last seen far back in the context (best effort: the candidate whose distance fits the drawn
  needle fraction best). Answer = that line, stripped; scored by edit similarity.
* ``qa_f1``: one held-out function (with its docstring) inserted among held-out Python files;
  the question names the function, the answer is the first sentence of its docstring, which
  appears verbatim in the context. Scored by token F1.

Needle fractions are stratified: with ``n`` examples, example i draws its fraction from its own
1/n-wide stratum (seeded permutation), so the evidence covers the context uniformly.
"""
from __future__ import annotations

import ast
import bisect
import builtins
import dataclasses
import hashlib
import itertools
import json
import keyword
import os
import random
import re
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from namm.io import write_jsonl

from .base import TextTask
from .corpus import HELDOUT, TRAIN, Corpus, Document, default_corpus

__all__ = [
    "ZooTask", "ZOO_TASKS", "DATASET2PROMPT", "DATASET2MAXLEN", "DATASET2METRIC",
    "kv_retrieval", "passage_retrieval", "code_completion", "qa_f1", "generate_examples",
    "training_mixture", "format_prompt", "build_zoo", "text_task", "register_zoo_task",
    # building blocks for task variants (experiments): a token-counting pool, length fitting, passages
    "Pool", "select_docs", "fit_to_tokens", "filler_chunks", "prefix_lines", "insert_items", "cue_lines",
    "passage_candidates", "passage_order",
]

_MAX_ATTEMPTS = 25
Line = tuple[str, int, str]  # (text ending in "\n", token count, doc id)


# ----------------------------------------------------------------------------- documents
def select_docs(docs: Corpus | Iterable[Document | dict], split: str | None) -> list[Document]:
    """Documents of one split, sorted by id (so the caller's ordering never matters)."""
    if isinstance(docs, Corpus):
        docs = docs.docs
    out = []
    for d in docs:
        if isinstance(d, dict):
            d = Document(d["id"], d["text"], d.get("split", ""))
        if split is None or d.split == split:
            out.append(d)
    if not out:
        raise ValueError(f"no documents in split {split!r}")
    return sorted(out, key=lambda d: d.id)


def _path(doc_id: str) -> str:
    return doc_id.split(":", 1)[-1]


class Pool:
    """Documents of one split with lazily cached per-line token counts and per-task analyses."""

    def __init__(self, tokenizer: Any, docs: list[Document]):
        self.tok = tokenizer
        self.docs = docs
        self.py = [d for d in docs if d.id.endswith(".py")]
        self._lines: dict[str, list[tuple[str, int]]] = {}
        self._memo: dict[tuple[str, str], Any] = {}
        self.used: set[Any] = set()  # needles already used: no repeats in one call

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and char offsets, no special tokens (the Rust backend directly: fast)."""
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is not None:
            enc = backend.encode(text, add_special_tokens=False)
            return enc.ids, enc.offsets
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"]

    def ntok(self, text: str) -> int:
        return len(self.encode(text)[0])

    def lines(self, doc: Document) -> list[tuple[str, int]]:
        """The document's lines (each ending in "\n") with the tokens that start in each.

        One encode per document; per-line counts sum exactly to the document's token count.
        """
        got = self._lines.get(doc.id)
        if got is None:
            parts = [line + "\n" for line in doc.text.rstrip("\n").split("\n")]
            _, offsets = self.encode("".join(parts))
            ends = np.cumsum([len(p) for p in parts])
            starts = np.fromiter((s for s, _ in offsets), dtype=np.int64, count=len(offsets))
            counts = np.bincount(np.searchsorted(ends, starts, side="right"), minlength=len(parts))
            got = self._lines[doc.id] = [(p, int(k)) for p, k in zip(parts, counts)]
        return got

    def memo(self, kind: str, doc: Document, fn: Callable[[], Any]) -> Any:
        key = (kind, doc.id)
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]


# ----------------------------------------------------------------------------- haystack helpers
def filler_chunks(pool: Pool, rng: random.Random, n_tokens: int, span: tuple[int, int] = (16, 64)
            ) -> list[Line]:
    """Filler: random runs of consecutive lines from random documents, blank line between runs."""
    out: list[Line] = []
    total = 0
    while total < n_tokens:
        doc = rng.choice(pool.docs)
        lines = pool.lines(doc)
        start = rng.randrange(max(1, len(lines) - span[0]))
        for text, k in lines[start: start + rng.randint(*span)] + [("\n", 1)]:
            out.append((text, k, doc.id))
            total += k
    return out


def _files(pool: Pool, rng: random.Random, n_tokens: int,
           keep: Callable[[Document], bool] = lambda d: True) -> list[Line]:
    """Filler: whole Python files in a seeded order, each under a ``# file: path`` header."""
    order = rng.sample(pool.py, len(pool.py))
    out: list[Line] = []
    total = 0
    for doc in itertools.chain.from_iterable(itertools.repeat(order, 4)):  # small pools repeat
        if total >= n_tokens:
            break
        if not keep(doc):
            continue
        header = f"# file: {_path(doc.id)}\n"
        for text, k in [(header, pool.ntok(header))] + pool.lines(doc) + [("\n", 1)]:
            out.append((text, k, doc.id))
            total += k
    return out


def prefix_lines(lines: list[Line], budget: int) -> list[Line]:
    """The shortest prefix of ``lines`` holding at least ``budget`` tokens."""
    total = 0
    for i, (_, k, _) in enumerate(lines):
        if total >= budget:
            return lines[:i]
        total += k
    return lines


def insert_items(lines: list[Line], items: list[tuple[float, str]],
            snap: Callable[[list[Line], int], int] | None = None) -> tuple[str, list[int]]:
    """Join ``lines`` with each item inserted at its token fraction; returns (text, char offsets)."""
    cum = list(itertools.accumulate(k for _, k, _ in lines))
    total = cum[-1] if cum else 0
    at: dict[int, list[int]] = {}
    for j, (frac, _) in enumerate(items):
        idx = bisect.bisect_left(cum, frac * total) + (frac > 0)
        idx = min(idx, len(lines))
        at.setdefault(snap(lines, idx) if snap else idx, []).append(j)
    parts, pos, n = [], [0] * len(items), 0
    for i in range(len(lines) + 1):
        for j in at.get(i, ()):
            pos[j] = n
            parts.append(items[j][1])
            n += len(items[j][1])
        if i < len(lines):
            parts.append(lines[i][0])
            n += len(lines[i][0])
    return "".join(parts), pos


def fit_to_tokens(pool: Pool, build: Callable[[int], dict | None], target: int) -> dict | None:
    """Call ``build(budget)`` until the context is within 4% of ``target`` tokens (10% at worst).

    ``build`` must be deterministic (all random draws made beforehand) and return a dict with
    ``context`` and ``needle`` (char offset of the evidence). Adds ``length`` and
    ``needle_fraction`` measured with the real tokenizer.
    """
    budget, best = target, None
    for _ in range(6):
        got = build(budget)
        if got is None:
            return None
        got["context"] = got["context"].rstrip("\n")
        ids, offsets = pool.encode(got["context"])
        n = len(ids)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (got, n, offsets)
        if abs(n - target) <= 0.04 * target:
            break
        budget += target - n
    got, n, offsets = best
    if abs(n - target) > 0.1 * target:
        return None
    got["length"] = n
    ends = [end for _, end in offsets]
    got["needle_fraction"] = round(bisect.bisect_right(ends, got.pop("needle")) / max(1, n), 4)
    return got


# ----------------------------------------------------------------------------- task makers
def _kv_maker(pool: Pool, rng: random.Random, target: int, u: float) -> dict | None:
    n_pairs = max(4, target // 256)
    pairs: list[tuple[str, str]] = []
    used: set[str] = set()
    while len(pairs) < n_pairs:
        k, v = f"{rng.getrandbits(32):08x}", f"{rng.getrandbits(32):08x}"
        if k != v and not {k, v} & used:
            used |= {k, v}
            pairs.append((k, v))
    q = rng.randrange(n_pairs)
    records = [f"KEY {k} HAS VALUE {v}\n" for k, v in pairs]
    fracs = [rng.random() for _ in pairs]
    fracs[q] = u
    filler = filler_chunks(pool, rng, int(1.5 * target) + 64)
    rec_tokens = sum(pool.ntok(r) for r in records)

    def build(budget: int) -> dict:
        lines = prefix_lines(filler, budget - rec_tokens)
        text, pos = insert_items(lines, list(zip(fracs, records)))
        return {"context": text, "needle": pos[q], "doc_ids": {d for _, _, d in lines}}

    got = fit_to_tokens(pool, build, target)
    key, value = pairs[q]
    if got is None or got["context"].count(key) != 1 or got["context"].count(value) != 1:
        return None
    return {**got, "input": f"What is the VALUE of KEY {key}?", "answers": [value]}


_WORD = re.compile(r"[A-Za-z]{2,}")


def cue_lines(passage: str) -> list[str]:
    """Lines distinctive enough to identify a passage: long, wordy, unique within it."""
    lines = [s.strip() for s in passage.split("\n")]
    return [s for s in lines if 20 <= len(s) <= 150 and len(_WORD.findall(s)) >= 3
            and lines.count(s) == 1 and "Paragraph" not in s]


def passage_candidates(pool: Pool, rng: random.Random, target: int, label_tokens: int = 6
                        ) -> list[tuple[str, int, str]]:
    """Runs of held-out lines, ~target/20 tokens each, enough for the context: ``(text, tokens + the
    label's ``label_tokens``, doc id)``; the first is the needle passage."""
    p_tok = min(400, max(64, target // 20))
    cands: list[tuple[str, int, str]] = []
    total = 0
    for _ in range(100 * (target // p_tok + 4)):  # bounded: tiny pools may yield few passages
        if total >= 1.6 * target + 2 * p_tok:
            break
        doc = rng.choice(pool.docs)
        lines = pool.lines(doc)
        start, want, k, end = rng.randrange(len(lines)), int(p_tok * rng.uniform(0.7, 1.3)), 0, 0
        for end in range(start, len(lines)):
            k += lines[end][1]
            if k >= want:
                break
        text = "".join(t for t, _ in lines[start: end + 1]).strip("\n")
        if sum(bool(t.strip()) for t in text.split("\n")) >= 3:
            cands.append((text, k + label_tokens, doc.id))
            total += k + label_tokens
    return cands


def passage_order(needle: tuple, others: list[tuple], budget: int, u: float) -> tuple[list[tuple], int]:
    """Passages filling ``budget`` tokens with the needle at index k (the fraction ``u`` of the way in)."""
    taken, total = [], needle[1]
    for c in others:
        if total >= budget:
            break
        taken.append(c)
        total += c[1]
    k = min(len(taken), int(u * (len(taken) + 1)))
    return taken[:k] + [needle] + taken[k:], k


def _passage_maker(pool: Pool, rng: random.Random, target: int, u: float) -> dict | None:
    cands = passage_candidates(pool, rng, target)  # +6 tokens each: "Paragraph N:" header and separator
    cues = cue_lines(cands[0][0]) if cands else []
    if not cues:
        return None
    needle, cue = cands[0], rng.choice(cues)
    others = [c for c in cands[1:] if cue not in c[0]]

    def build(budget: int) -> dict:
        order, k = passage_order(needle, others, budget, u)
        blocks = [f"Paragraph {j + 1}:\n{text}" for j, (text, _, _) in enumerate(order)]
        pos = sum(len(b) + 2 for b in blocks[:k])
        return {"context": "\n\n".join(blocks), "needle": pos, "answer": f"Paragraph {k + 1}",
                "doc_ids": {d for _, _, d in order}}

    got = fit_to_tokens(pool, build, target)
    if got is None or got["context"].count(cue) != 1:
        return None
    return {**got, "input": f"Which paragraph contains the following line?\n{cue}",
            "answers": [got.pop("answer")]}


_IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]{3,}\b")
_COMMON = set(keyword.kwlist) | set(dir(builtins)) | {"self", "args", "kwargs", "return", "None"}


def _code_targets(pool: Pool, doc: Document) -> list[tuple[int, int, int]]:
    """(target line, anchor line, tokens from anchor to target) for completion-worthy lines.

    The anchor is the line where the target's least recently seen identifier last appeared:
    the farthest piece of context the completion needs.
    """
    lines = pool.lines(doc)
    cum = [0, *itertools.accumulate(k for _, k in lines)]
    last: dict[str, int] = {}
    out = []
    in_string = False  # inside a triple-quoted string (docstrings are prose, not code)
    for t, (line, _) in enumerate(lines):
        s = line.strip()
        idents = set(_IDENT.findall(line)) - _COMMON
        quotes = line.count('"""') + line.count("'''")
        is_code = not in_string and not quotes
        in_string ^= quotes % 2 == 1
        if (is_code and t >= 8 and 12 <= len(s) <= 100 and not s.startswith(("#", "@"))
                and re.search(r"[=(.\[]", s)):
            prev = [last[x] for x in idents if x in last]
            if prev:
                a = min(prev)
                out.append((t, a, cum[t] - cum[a]))
        for x in idents:
            last[x] = t
    return out


def _code_maker(pool: Pool, rng: random.Random, target: int, u: float) -> dict | None:
    if not pool.py:
        return None
    want = (1 - u) * target
    best = None
    for doc in rng.sample(pool.py, min(16, len(pool.py))):
        for t, a, d in pool.memo("code", doc, lambda: _code_targets(pool, doc)):
            if d <= 0.9 * target and (doc.id, t) not in pool.used:
                score = abs(d - want) + rng.random()  # random tie-break among equals
                if best is None or score < best[0]:
                    best = (score, doc, t, a)
    if best is None:
        return None
    _, doc, t, a = best
    pool.used.add((doc.id, t))
    lines = pool.lines(doc)
    header = f"# file: {_path(doc.id)}\n"
    filler = _files(pool, rng, int(1.5 * target) + 64, keep=lambda d: d.id != doc.id)

    def build(budget: int) -> dict | None:
        room = budget - pool.ntok(header)
        s, k = t, 0  # grow the current file backwards from the target line
        while s > 0 and k + lines[s - 1][1] <= room:
            s -= 1
            k += lines[s][1]
        if s > a:
            return None
        pre = prefix_lines(filler, room - k) if s == 0 else []
        head = "".join(x for x, _, _ in pre)
        cur = header + "".join(x for x, _ in lines[s:t])
        needle = len(head) + len(header) + sum(len(x) for x, _ in lines[s:a])
        return {"context": head + cur, "needle": needle,
                "doc_ids": {d for _, _, d in pre} | {doc.id}}

    got = fit_to_tokens(pool, build, target)
    if got is None:
        return None
    return {**got, "input": "Next line of code:", "answers": [lines[t][0].strip()]}


def _first_sentence(docstring: str) -> str:
    para = " ".join(docstring.strip().split("\n\n")[0].split())
    m = re.match(r"(.+?[.!?])(\s|$)", para)
    return m.group(1) if m else para


def _functions(doc: Document) -> list[tuple[str, str, str]]:
    """(name, first docstring sentence, dedented source head) of documented functions."""
    text = doc.text
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        # Truncated files: parse up to the last top-level definition.
        cut = max(text.rfind("\ndef "), text.rfind("\nclass "))
        try:
            tree = ast.parse(text[:cut]) if cut > 0 else None
        except (SyntaxError, ValueError):
            tree = None
    if tree is None:
        return []
    lines = text.split("\n")
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name.startswith(("__", "test")) or not (ds := ast.get_docstring(node)):
            continue
        sent = _first_sentence(ds)
        src = textwrap.dedent("\n".join(lines[node.lineno - 1: min(node.end_lineno, node.lineno + 30)]))
        if 4 <= len(sent.split()) <= 40 and len(sent) <= 240 and sent in src:
            out.append((node.name, sent, src.rstrip("\n") + "\n"))
    return out


def _top_level(lines: list[Line], idx: int) -> int:
    """Move an insertion point forward (at most 40 lines) to a blank line before top-level code."""
    for i in range(idx, min(idx + 40, len(lines))):
        if i > 0 and not lines[i - 1][0].strip() and lines[i][0][:1] not in (" ", "\t", "\n"):
            return i
    return idx


def _qa_maker(pool: Pool, rng: random.Random, target: int, u: float) -> dict | None:
    if not pool.py:
        return None
    fallback = None  # a used function, if every sampled one has been asked already
    for doc in rng.sample(pool.py, min(16, len(pool.py))):
        funcs = pool.memo("qa", doc, lambda: _functions(doc))
        # Fresh = neither this function nor its docstring sentence was asked yet (generated
        # bindings repeat one docstring in hundreds of files).
        fresh = [f for f in funcs if (doc.id, f[0]) not in pool.used and f[1] not in pool.used]
        if fresh:
            funcs = fresh
            break
        fallback = fallback or ((doc, funcs) if funcs else None)
    else:
        if fallback is None:
            return None
        doc, funcs = fallback
    name, sentence, src = rng.choice(funcs)
    needle = f"# file: {_path(doc.id)}\n{src}\n"
    n_needle = pool.ntok(needle)
    marker = f"def {name}("
    filler = _files(pool, rng, int(1.5 * target) + 64,
                    keep=lambda d: d.id != doc.id and marker not in d.text
                    and sentence not in d.text)

    def build(budget: int) -> dict:
        lines = prefix_lines(filler, budget - n_needle)
        text, pos = insert_items(lines, [(u, needle)], snap=_top_level)
        return {"context": text, "needle": pos[0], "doc_ids": {d for _, _, d in lines} | {doc.id}}

    got = fit_to_tokens(pool, build, target)
    if got is None or got["context"].count(marker) != 1:
        return None
    pool.used |= {(doc.id, name), sentence}
    question = f"According to its docstring, what does the function `{name}` do?"
    return {**got, "input": question, "answers": [sentence]}


# ----------------------------------------------------------------------------- public generators
def generate_examples(zt: "ZooTask", tokenizer: Any, docs: Any, n: int, seed: int = 0, context_tokens: int = 4096,
                      split: str | None = HELDOUT) -> list[dict]:
    """``n`` seeded examples of a zoo task from ``docs`` (needle fractions stratified over ``n``)."""
    task = zt.name
    pool = Pool(tokenizer, select_docs(docs, split))
    strata = list(range(n))
    random.Random(f"{task}:{seed}:strata").shuffle(strata)
    out = []
    for i in range(n):
        for attempt in range(_MAX_ATTEMPTS):
            rng = random.Random(f"{task}:{seed}:{i}:{attempt}")
            ex = zt.maker(pool, rng, context_tokens, (strata[i] + rng.random()) / n)
            if ex is not None:
                break
        else:
            raise RuntimeError(f"{task}: no valid example after {_MAX_ATTEMPTS} attempts "
                               f"(too few or too small documents for {context_tokens} tokens?)")
        out.append(_finish(task, ex, context_tokens))
    return out


def _finish(task: str, ex: dict, context_tokens: int) -> dict:
    body = {"context": ex["context"], "input": ex["input"], "answers": ex["answers"]}
    uid = hashlib.sha1(json.dumps([task, body], sort_keys=True).encode()).hexdigest()[:24]
    return {**body, "length": ex["length"], "dataset": task, "language": "en",
            "all_classes": None, "_id": uid, "needle_fraction": ex["needle_fraction"],
            "context_tokens": context_tokens, "doc_ids": sorted(ex["doc_ids"])}


def kv_retrieval(tokenizer: Any, docs: Any, n: int, seed: int = 0, context_tokens: int = 4096,
                 split: str | None = HELDOUT) -> list[dict]:
    """Key-value records hidden in held-out text; answer = the queried value (exact copy)."""
    return generate_examples(ZOO_TASKS["kv_retrieval"], tokenizer, docs, n, seed, context_tokens, split)


def passage_retrieval(tokenizer: Any, docs: Any, n: int, seed: int = 0,
                      context_tokens: int = 4096, split: str | None = HELDOUT) -> list[dict]:
    """Numbered held-out passages; given a line quoted from one, answer "Paragraph k"."""
    return generate_examples(ZOO_TASKS["passage_retrieval"], tokenizer, docs, n, seed, context_tokens, split)


def code_completion(tokenizer: Any, docs: Any, n: int, seed: int = 0,
                    context_tokens: int = 4096, split: str | None = HELDOUT) -> list[dict]:
    """Held-out Python cut before a line that needs far context; answer = that line."""
    return generate_examples(ZOO_TASKS["code_completion"], tokenizer, docs, n, seed, context_tokens, split)


def qa_f1(tokenizer: Any, docs: Any, n: int, seed: int = 0, context_tokens: int = 4096,
          split: str | None = HELDOUT) -> list[dict]:
    """A held-out function among held-out files; answer = first sentence of its docstring."""
    return generate_examples(ZOO_TASKS["qa_f1"], tokenizer, docs, n, seed, context_tokens, split)


Maker = Callable[[Pool, random.Random, int, float], "dict | None"]


@dataclasses.dataclass(frozen=True)
class ZooTask:
    """A zoo task: its maker, LongBench-style prompt template, generation length and metric.

    ``maker(pool, rng, target_tokens, needle_fraction)`` returns one raw example (``context``, ``input``,
    ``answers``, ``length``, ``needle_fraction``, ``doc_ids``) or ``None`` to be asked again with a new rng.
    """

    name: str
    maker: Maker
    prompt: str  # "{context}" and "{input}" placeholders; ends with "\n", the answer follows
    max_new_tokens: int
    metric: str  # name of a metric in namm/tasks/metrics.py

    def generate(self, tokenizer: Any, docs: Any, n: int, seed: int = 0, context_tokens: int = 4096,
                 split: str | None = HELDOUT) -> list[dict]:
        return generate_examples(self, tokenizer, docs, n, seed, context_tokens, split)

ZOO_TASKS: dict[str, ZooTask] = {t.name: t for t in [
    ZooTask("kv_retrieval", _kv_maker,
            "Some lines below are records of the form \"KEY <key> HAS VALUE <value>\".\n\n"
            "{context}\n\nQuestion: {input}\nAnswer with the value only.\nAnswer:\n",
            16, "exact_contains"),
    ZooTask("passage_retrieval", _passage_maker,
            "Below are numbered paragraphs, each starting with \"Paragraph <number>:\".\n\n"
            "{context}\n\n{input}\nAnswer with \"Paragraph <number>\" only.\nAnswer:\n",
            8, "retrieval"),
    ZooTask("code_completion", _code_maker,
            "Please complete the code given below.\n\n{context}\n\n{input}\n",
            64, "edit_sim"),
    ZooTask("qa_f1", _qa_maker,
            "Answer the question about the code below with a short phrase copied from it.\n\n"
            "{context}\n\nQuestion: {input}\nAnswer:\n",
            64, "qa_f1"),
]}
DATASET2PROMPT = {k: t.prompt for k, t in ZOO_TASKS.items()}
DATASET2MAXLEN = {k: t.max_new_tokens for k, t in ZOO_TASKS.items()}
DATASET2METRIC = {k: t.metric for k, t in ZOO_TASKS.items()}


def format_prompt(task: str, example: dict) -> str:
    """The model input for an example: the task's template filled with context and input."""
    return ZOO_TASKS[task].prompt.format(context=example["context"], input=example["input"])


def training_mixture(tokenizer: Any, docs: Any, n: int, seed: int = 0,
                     context_tokens: int | tuple[int, int] = (512, 4096),
                     tasks: Iterable[str] | None = None) -> Iterator[dict]:
    """Yield ``n`` task-formatted training texts built from TRAIN documents only.

    Tasks rotate round-robin (a balanced mix); ``context_tokens`` may be a (low, high) range
    sampled per example. Each item has ``task``, ``prompt``, ``answer``, ``text`` (= prompt +
    answer; append the eos token when tokenizing and mask the prompt if wanted), ``doc_ids``,
    ``context_tokens`` and ``needle_fraction``.
    """
    pool = Pool(tokenizer, select_docs(docs, TRAIN))
    names = list(tasks or ZOO_TASKS)
    for i in range(n):
        rng = random.Random(f"mixture:{seed}:{i}")
        name = names[i % len(names)]
        target = rng.randint(*context_tokens) if isinstance(context_tokens, tuple) else context_tokens
        for attempt in range(_MAX_ATTEMPTS):
            ex = ZOO_TASKS[name].maker(pool, random.Random(f"mixture:{seed}:{i}:{attempt}"), target,
                               rng.random())
            if ex is not None:
                break
        else:
            raise RuntimeError(f"{name}: no valid training example for {target} tokens")
        prompt = format_prompt(name, ex)
        yield {"task": name, "prompt": prompt, "answer": ex["answers"][0],
               "text": prompt + ex["answers"][0], "doc_ids": sorted(ex["doc_ids"]),
               "context_tokens": target, "needle_fraction": ex["needle_fraction"]}


# ----------------------------------------------------------------------------- files and the registry
def build_zoo(out_dir: str | os.PathLike, tokenizer: Any, docs: Any, n: int, seed: int = 0,
              context_tokens: int = 4096, tasks: Iterable[str] | None = None) -> dict[str, Path]:
    """Write ``{out_dir}/{task}.jsonl`` for each task (LongBench's one-file-per-dataset layout)."""
    return {name: write_jsonl(Path(out_dir) / f"{name}.jsonl",
                              ZOO_TASKS[name].generate(tokenizer, docs, n, seed, context_tokens))
            for name in (tasks or ZOO_TASKS)}


def _passage_chance(examples: list[dict]) -> float:
    """Guessing one of the numbered paragraphs uniformly: the mean of 1 / (paragraphs in the context)."""
    return 100.0 * sum(1.0 / max(1, ex["context"].count("Paragraph ")) for ex in examples) / len(examples)


_CHANCE = {"kv_retrieval": 0.0, "qa_f1": 0.0}  # exact copies of 8-hex values / docstring sentences


def register_zoo_task(task: ZooTask, family: str = "zoo-variant") -> ZooTask:
    """Add a zoo task (e.g. a format variant built from the public building blocks) to :data:`ZOO_TASKS`
    and to the task registry, so ``namm eval``, ``namm evolve`` and ``train-lm --tasks`` see it."""
    from .registry import register

    if task.name in ZOO_TASKS:
        raise ValueError(f"zoo task {task.name!r} exists; choose another name for a variant")
    ZOO_TASKS[task.name] = task
    register(task.name, "namm.tasks.zoo:text_task", family=family, name=task.name)
    return task


def text_task(name: str) -> TextTask:
    """The registry's view of a zoo task: examples from the default corpus, the zoo's own template."""
    t = ZOO_TASKS[name]

    def make(tokenizer, n: int, seed: int, context_tokens: int, data_dir: str | None, split: str = HELDOUT) -> list[dict]:
        return t.generate(tokenizer, default_corpus(), n, seed=seed, context_tokens=context_tokens, split=split)

    return TextTask(name=name, make_examples=make, template=t.prompt, metric=t.metric, max_new_tokens=t.max_new_tokens,
                    chance=_CHANCE.get(name), chance_fn=_passage_chance if name == "passage_retrieval" else None,
                    provenance=lambda: {"corpus": default_corpus().fingerprint()},
                    family="zoo", splits=(HELDOUT, TRAIN), description=(t.generate.__doc__ or "").strip())
