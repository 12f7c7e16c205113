"""Which KV head's eviction costs the shipped NAMM its accuracy? The shipped NAMM with ONE (layer, head)
kept whole, for each of the five heads it keeps least of, on 128 validation instances per task (seed 500,
2k tokens, kv_retrieval + qa_f1; 5-10 min per head on 2 cores, ~30 in all). Forcing a head raises the
cache above 0.5. Findings: results/lm-zoo-val128-2026-11-26/README.md.

    python experiments/lm-zoo/force_head.py OUT [L.H ...]      # default: 0.0 0.1 1.0 2.1 3.1
    namm compare VAL/namm OUT/force_2.1                          # VAL: experiments/lm-zoo/val128.sh's eval folder
"""
import sys
from pathlib import Path

from namm import models
from namm.checkpoint import resolve_policy
from namm.evaluation.text import evaluate, task_examples, write_results
from namm.policies import KeepWhole

out = Path(sys.argv[1])
specs = sys.argv[2:] or ["0.0", "0.1", "1.0", "2.1", "3.1"]
model, tok = models.load("zoo")
tasks = ["kv_retrieval", "qa_f1"]
exs = {t: task_examples(tok, t, 128, seed=500, context_tokens=2048) for t in tasks}
for spec in specs:
    layer, head = map(int, spec.split("."))
    res = evaluate(model, tok, KeepWhole(inner=resolve_policy("namm-zoo"), heads=((layer, head),)), tasks, 128, 500, 2048,
                   examples=exs, progress=False)
    write_results(out / f"force_{spec}", res)
    print(spec, {t: (round(v["score"], 1), round(v["mean_cache_fraction"], 3)) for t, v in res["tasks"].items()},
          flush=True)
