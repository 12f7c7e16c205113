#!/bin/bash
# Full-cache scores of the real models on every RULER task and lm_continuation at 1k, 2k and 4k tokens:
# which tasks a model can do (a task enters a claim only where the full cache is clearly above chance).
#   bash experiments/real-models/sweep.sh OUT [N] [N4K]   # N instances per task at 1k/2k (default 8), N4K at 4k
#                                                         # (default 4), seed 100; ~3 h on 2 cores with both models
set -e
O=${1:?usage: sweep.sh OUT [N] [N4K]}
N=${2:-8}
N4K=${3:-4}
for m in smollm2-135m gemma3-270m; do
  for ctx in 1024 2048 4096; do
    n=$N; [ $ctx = 4096 ] && n=$N4K
    .venv/bin/namm eval --model $m --tasks ruler,lm_continuation --policy full --samples $n --seed 100 \
      --context-tokens $ctx --batch-size 1 --out "$O/$m-$ctx"
  done
done
.venv/bin/python "$(dirname "$0")/sweep_table.py" "$O"
