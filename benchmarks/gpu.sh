#!/usr/bin/env bash
# The GPU part of the training-step benchmark, in one run of a few minutes on one GPU:
# mae_minimal against transformers' ViTMAEForPreTraining and against the mask-tokens-in-encoder
# baseline at ViT-B/16 and ViT-L/16, 224 px, bf16, without and with torch.compile (ours and
# transformers'; compiling the baseline too would add minutes for no goal); model FLOPs
# utilisation against the chip's bf16 peak; step time against mask ratio and decoder depth.
# Usage: bash benchmarks/gpu.sh [results folder]   (default benchmarks/results/train_step_cuda)
set -euo pipefail
results=${1:-benchmarks/results/train_step_cuda}
mkdir -p "$results"
{
  date -u +"date: %Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | sed 's/^/gpu: /'
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} | tee "$results/machine.txt"
timeout "${TIMEOUT:-360}" python3 benchmarks/train_step.py --device cuda --batch_size "${BATCH_SIZE:-128}" \
  --compiled_variants mae_minimal transformers --output_dir "$results" 2>&1 | tee "$results/run.log"
