"""Where the NAMM's qa_f1 answers leave the full cache's (seed 3000, 64 instances, 2k tokens): at which
generated token, and when the first memory update inside generation comes (every n_up = 128 tokens
seen, prompt included). Reads this folder's predictions; regenerates the instances (seconds).

    python results/lm-zoo-heldout64-2026-11-26/qa_drift.py   # prints one line per instance the NAMM lost
"""
import json
from pathlib import Path

from transformers import AutoTokenizer

from namm.envs.zoo_tasks import format_prompt
from namm.evaluate import zoo_examples
from namm.zoo import ZOO_DIR

here = Path(__file__).parent / "eval" / "a"
tok = AutoTokenizer.from_pretrained(ZOO_DIR / "lm")


def preds(policy):
    lines = (here / policy / "predictions.jsonl").read_text().splitlines()
    return {r["_id"]: r for r in map(json.loads, lines) if r["task"] == "qa_f1"}


full, namm = preds("full"), preds("namm")
for ex in zoo_examples(tok, "qa_f1", 64, seed=3000, context_tokens=2048):
    f, n = full[ex["_id"]], namm[ex["_id"]]
    if n["score"] >= f["score"]:
        continue
    p = len(tok(format_prompt("qa_f1", ex))["input_ids"])
    ft = tok(f["prediction"], add_special_tokens=False)["input_ids"]
    nt = tok(n["prediction"], add_special_tokens=False)["input_ids"]
    d = next((i for i, (a, b) in enumerate(zip(ft, nt)) if a != b), min(len(ft), len(nt)))
    print(f"prompt {p} tokens: first update in generation after {(-p) % 128:3d} new tokens; "
          f"NAMM leaves the full cache's answer at token {d:2d} of {len(ft)}")
