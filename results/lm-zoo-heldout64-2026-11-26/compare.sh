#!/bin/bash
# Paired comparisons of the shipped NAMM against every other policy on the same 64 x 4 instances
# (seed 3000): compare/namm_vs_<policy>.json and compare.csv (B = NAMM, A = the other policy).
#   bash compare.sh [FOLDER]
set -e
R=${1:-$(dirname "$0")}  # a folder holding eval/a and eval/b (default: this one)
for p in full h2o l2 streamingllm recency; do
  d=$R/eval/a/$p; [ -d "$d" ] || d=$R/eval/b/$p
  .venv/bin/namm compare "$d" "$R/eval/a/namm" --out "$R/compare/namm_vs_$p.json"
done
python3 - "$R" <<'PY'
import csv, json, sys
from pathlib import Path
r = Path(sys.argv[1])
with open(r / "compare.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["other", "task", "n", "other_score", "namm_score", "namm_minus_other", "ci_low", "ci_high", "namm_better", "namm_worse"])
    for p in ("full", "h2o", "l2", "streamingllm", "recency"):
        c = json.loads((r / "compare" / f"namm_vs_{p}.json").read_text())
        for t, v in [*c["tasks"].items(), ("mean", {**c["mean"], "n": "", "wins": "", "losses": ""})]:
            w.writerow([p, t, v["n"], f"{v['a']:.2f}", f"{v['b']:.2f}", f"{v['diff']:+.2f}", f"{v['ci'][0]:+.2f}",
                        f"{v['ci'][1]:+.2f}", v["wins"], v["losses"]])
PY
