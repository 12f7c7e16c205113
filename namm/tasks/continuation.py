"""``lm_continuation``: how well a model continues long held-out files from what its memory kept.

Each instance is one held-out document of the offline corpus (Python, Markdown, reST, text) with at least
``context_tokens + 256`` tokens: the context is ``context_tokens`` tokens of it (cut at a line start), the
target the 256 tokens that follow. Scored by the target's teacher-forced likelihood through the memory
(``scoring="likelihood"``): ``100 exp(-NLL)`` per token, higher is better; results keep the raw ``nll``.
A dense signal every model gives, where greedy task answers of a small model are mostly wrong.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from typing import Any

from .base import TextTask
from .corpus import HELDOUT, TRAIN, default_corpus
from .zoo import Pool, select_docs

__all__ = ["TARGET_TOKENS", "generate", "text_task"]

TARGET_TOKENS = 256


def generate(tokenizer: Any, n: int, seed: int = 0, context_tokens: int = 2048, target_tokens: int = TARGET_TOKENS,
             docs: Any = None, split: str = HELDOUT) -> list[dict]:
    """``n`` instances from the long enough documents of ``split`` (held-out by default), in a seeded order;
    when there are fewer such documents than ``n``, later rounds cut each at an earlier place (never the same
    window twice)."""
    pool = Pool(tokenizer, select_docs(docs if docs is not None else default_corpus(), split))
    need = context_tokens + target_tokens
    long_docs = []
    for d in pool.docs:
        ids, offsets = pool.encode(d.text)
        if len(ids) >= need:
            long_docs.append((d, ids, offsets))
    if not long_docs:
        raise ValueError(f"lm_continuation: no {split} document has {need} tokens; use a shorter --context-tokens")
    order = list(range(len(long_docs)))
    random.Random(f"lm_continuation:{seed}").shuffle(order)
    out: list[dict] = []
    rnd = 0
    while len(out) < n:
        progressed = False
        for j in order:
            if len(out) >= n:
                break
            d, ids, offsets = long_docs[j]
            end = len(ids) - rnd * target_tokens  # round r ends r targets earlier
            start = end - need
            if start < 0:
                continue
            progressed = True
            line_starts = [0] + [i + 1 for i, c in enumerate(d.text) if c == "\n"]
            ctx_end = offsets[start + context_tokens][0]  # char where the target begins
            cut = line_starts[max(0, bisect.bisect_right(line_starts, ctx_end) - 1)]  # back to a line start
            ctx_start = offsets[start][0]
            tgt_end = offsets[end - 1][1]
            context, target = d.text[ctx_start:cut], d.text[cut:tgt_end]
            if not context.strip() or not target.strip():
                continue
            uid = hashlib.sha1(f"lm_continuation:{d.id}:{start}:{context_tokens}".encode()).hexdigest()[:24]
            out.append({"context": context, "input": "", "answers": [target], "length": pool.ntok(context),
                        "dataset": "lm_continuation", "language": "en", "all_classes": None, "_id": uid,
                        "needle_fraction": None, "context_tokens": context_tokens, "doc_id": d.id,
                        "chance": 1.0 / len(tokenizer)})  # a uniform guess over the vocabulary: exp(-ln V)
        if not progressed:
            raise ValueError(f"lm_continuation: only {len(out)} windows of {need} tokens in the {split} documents; "
                             f"use fewer --samples or a shorter --context-tokens")
        rnd += 1
    return out


def text_task() -> TextTask:
    return TextTask(
        name="lm_continuation",
        make_examples=lambda tok, n, seed, ctx, data_dir, split=HELDOUT: generate(tok, n, seed, ctx, split=split),
        template="{context}", metric="qa_f1", max_new_tokens=TARGET_TOKENS, scoring="likelihood",
        chance_fn=lambda exs: 100.0 * sum(ex["chance"] for ex in exs) / len(exs),
        provenance=lambda: {"corpus": default_corpus().fingerprint()}, family="lm_continuation", splits=(HELDOUT, TRAIN),
        description="continue a held-out long file: 100 exp(-NLL) of the next 256 tokens")
