#!/bin/bash
# Validation seed 500, 128 instances of each evolved task at 2k tokens (~35 min on 2 CPU cores), then every
# variant against the full cache and against the shipped NAMM, paired on the same instances.
# Findings: results/lm-zoo-val128-2026-11-26/README.md.
#   bash experiments/lm-zoo/val128.sh OUT
set -e
O=${1:?usage: val128.sh OUT}
D=$(dirname "$0")
.venv/bin/python "$D/variants.py" "$O/weights"
for p in full namm p5_-0.2 p5_-0.1 rank50; do
  w=$p; [ -f "$O/weights/$p.safetensors" ] && w=$O/weights/$p.safetensors
  .venv/bin/namm eval --policy "$w" --tasks kv_retrieval,qa_f1 --samples 128 --seed 500 \
    --context-tokens 2048 --out "$O/eval/$p"
done
for p in namm p5_-0.2 p5_-0.1 rank50; do
  .venv/bin/namm compare "$O/eval/$p" "$O/eval/full" --out "$O/compare/${p}_vs_full.json"
  [ $p = namm ] || .venv/bin/namm compare "$O/eval/$p" "$O/eval/namm" --out "$O/compare/${p}_vs_namm.json"
done
