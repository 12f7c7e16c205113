#!/bin/bash
# Language-zoo table: NAMM (its saved budget/n_up) and full, then the baselines at the NAMM's measured mean cache fraction.
set -e
W=${W:-namm/weights/namm.safetensors}
OUT=${OUT:-runs/table}
CTX=${CTX:-2048}
N=${N:-16}
SEED=${SEED:-1000}
export HF_HUB_OFFLINE=1
.venv/bin/namm eval --model zoo --policy full,$W --samples $N --seed $SEED --context-tokens $CTX --out $OUT/a
F=$(python3 -c "import json,glob; r=[json.load(open(p)) for p in glob.glob('$OUT/a/*/results.json')]; print(round([x for x in r if x['policy'].startswith('namm')][0]['mean_cache_fraction'],3))")
echo "NAMM mean cache fraction: $F"
.venv/bin/namm eval --model zoo --policy h2o,l2,streamingllm,recency --budget $F --n-up 128 --samples $N --seed $SEED --context-tokens $CTX --out $OUT/b
