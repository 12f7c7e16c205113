#!/bin/bash
# The GPU side of bench/ in one command, for a lent device (15 minutes per task in all; this takes ~8):
#   device run: bash bench/gpu.sh            (carry .whl if the image lacks cma / pyyaml: see below)
# Llama-3-8B shape (random bf16 weights) at 8k, 16k and 32k for every bench_real policy, then the batched
# population bench on CUDA. Writes $OUT/<date>-<gpu>.json (device name, one row per policy x context) and
# $OUT/population.json, $OUT/log.txt. Wheels the image may lack: `pip download --only-binary=:all:
# --python-version 3.12 --no-deps -d .whl cma pyyaml tqdm` here, then carry .whl.
set -o pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
[ -d .whl ] && pip install -q --no-deps --no-index .whl/*.whl
gpu=$(python -c "import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())")
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  timeout 420 python bench/bench_real.py --model llama3-8b-shape --device cuda --dtype bfloat16 \
    --contexts 8192 16384 32768 --decode 64 --out "$OUT/$(date +%F)-$gpu.json"
  timeout 120 python bench/bench_population.py --device cuda --population 32 --samples 8 --layers 8 \
    --hidden 1024 --heads 16 --kv-heads 8 --out "$OUT/population.json"
} 2>&1 | tee "$OUT/log.txt"
