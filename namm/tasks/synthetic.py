"""``synthetic_recall``: a task any model, even a random one, can be scored on (tests, smoke runs).

The context lists ``key=value`` pairs (keys: 2 letters, values: 4 digits); the model completes ``key=``
with its value. Scored by edit similarity, which gives partial credit, so even a random model has a
non-trivial fitness landscape. The alphabet matches :class:`namm.models.tiny.CharTokenizer`.
"""

from __future__ import annotations

import random

from .base import TextTask

__all__ = ["SYNTH_CHARS", "synthetic_examples", "text_task"]

SYNTH_CHARS = "0123456789abcdefghij=;\n "


def synthetic_examples(n: int, seed: int = 0, pairs: tuple[int, int] = (12, 24),
                       task: str = "synthetic_recall") -> list[dict]:
    """``n`` examples (dicts with context/input/answers like LongBench's)."""
    rng = random.Random(f"{task}/{seed}")
    letters = "abcdefghij"
    all_keys = [a + b for a in letters for b in letters]
    out = []
    for j in range(n):
        keys = rng.sample(all_keys, rng.randint(*pairs))
        vals = ["".join(rng.choice("0123456789") for _ in range(4)) for _ in keys]
        q = rng.randrange(len(keys))
        context = ";".join(f"{k}={v}" for k, v in zip(keys, vals))
        out.append({"context": context, "input": keys[q], "answers": [vals[q]], "length": len(context),
                    "dataset": task, "language": "en", "all_classes": None, "_id": f"{task}-{seed}-{j}"})
    return out


def text_task() -> TextTask:
    return TextTask(name="synthetic_recall", make_examples=lambda tok, n, seed, ctx, data_dir: synthetic_examples(n, seed),
                    template="{context}\n{input}=", metric="code_sim", max_new_tokens=6, family="synthetic",
                    description="key=value pairs; complete key= with its 4-digit value (edit similarity)")
