"""Merge the two `namm eval` folders written by results/lm-zoo-2026-11-26/eval/table.sh (eval/a: full +
NAMM, eval/b: baselines at the NAMM's cache fraction) into table.csv and score_vs_cache.png (scatter +
per-task bars).

    python results/lm-zoo-likelihood-2026-11-26/make_table.py [FOLDER]   # default: this script's folder
"""
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
names = {"full": "full", "namm": "NAMM", "h2o": "H2O", "l2": "L2", "streamingllm": "StreamingLLM", "recency": "recency"}
rows = []
root = here / "eval" if (here / "eval" / "a").is_dir() else here  # results folders keep eval/; table.sh's OUT has a/, b/
for part in ("a", "b"):
    for p in sorted((root / part).glob("*/results.json")):
        r = json.loads(p.read_text())
        key = p.parent.name
        rows.append({"name": names.get(key, key), "policy": r["policy"], "mean_score": r["mean_score"],
                     "mean_cache_fraction": r["mean_cache_fraction"],
                     **{t: v["score"] for t, v in r["tasks"].items()}})
order = list(names.values())
rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
tasks = [k for k in rows[0] if k not in ("name", "policy", "mean_score", "mean_cache_fraction")]
with open(here / "table.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.6]})
for r in rows:
    ax.scatter(r["mean_cache_fraction"], r["mean_score"], s=50, label=r["name"])
ax.set_xlabel("mean cache fraction (kept / seen)")
ax.set_ylabel("mean score (4 tasks)")
ax.set_xlim(0, 1.05)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
width = 0.8 / len(rows)
for i, r in enumerate(rows):
    bx.bar([j + i * width for j in range(len(tasks))], [r[t] for t in tasks], width, label=r["name"])
bx.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, fontsize=8)
bx.set_ylabel("score")
bx.grid(alpha=0.3, axis="y")
fig.tight_layout()
fig.savefig(here / "score_vs_cache.png", dpi=100)
for r in rows:
    print(f"{r['name']:13s} {r['mean_score']:6.2f} @ {r['mean_cache_fraction']:.3f}  " + "  ".join(f"{t}={r[t]:.1f}" for t in tasks))
