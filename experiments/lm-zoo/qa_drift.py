"""Where the NAMM's qa_f1 answers leave the full cache's (seed 3000, 64 instances, 2k tokens): at which
generated token, and when the first memory update inside generation comes (every n_up = 128 tokens seen,
prompt included). Reads the table's predictions (run it first); regenerates the instances (seconds).
Findings: results/lm-zoo-heldout64-2026-11-26/qa_drift.txt.

    namm table --model zoo --tasks zoo --samples 64 --seed 3000 --match mean \
        --baselines h2o,l2,streamingllm,recency --out RUN
    python experiments/lm-zoo/qa_drift.py RUN    # one line per instance the NAMM lost
"""
import json
import sys
from pathlib import Path

from namm import models
from namm.evaluation.text import task_examples
from namm.tasks import make

run = Path(sys.argv[1])
_, tok = models.load("zoo")


def preds(policy):
    lines = (run / policy / "predictions.jsonl").read_text().splitlines()
    return {r["_id"]: r for r in map(json.loads, lines) if r["task"] == "qa_f1"}


full, namm = preds("full"), preds("namm")
for ex in task_examples(tok, "qa_f1", 64, seed=3000, context_tokens=2048):
    f, n = full[ex["_id"]], namm[ex["_id"]]
    if n["score"] >= f["score"]:
        continue
    p = len(tok(make("qa_f1").prompt(ex))["input_ids"])
    ft = tok(f["prediction"], add_special_tokens=False)["input_ids"]
    nt = tok(n["prediction"], add_special_tokens=False)["input_ids"]
    d = next((i for i, (a, b) in enumerate(zip(ft, nt)) if a != b), min(len(ft), len(nt)))
    print(f"prompt {p} tokens: first update in generation after {(-p) % 128:3d} new tokens; "
          f"NAMM leaves the full cache's answer at token {d:2d} of {len(ft)}")
