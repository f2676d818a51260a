#!/usr/bin/env bash
# The GPU checks of the training tool, in one run of a few minutes on one GPU:
#  1. pretraining throughput of train.py (images/s, data loading included) at ViT-B/16 and
#     ViT-L/16 on 224-pixel offline photos, bf16, without and with --compile;
#  2. a short pretraining of the small MAE, then linear probes of its encoder and of a randomly
#     initialised one on the labelled shapes.
# Usage: bash benchmarks/gpu_train.sh [results folder]   (default benchmarks/results/gpu_train)
set -euo pipefail
results=${1:-benchmarks/results/gpu_train}
work=$(mktemp -d)
mkdir -p "$results"
workers=$(( $(nproc) - 2 ))

{
  date -u +"date: %Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /'
  python -c "import torch; print('torch:', torch.__version__, 'cuda:', torch.version.cuda)"
  echo "cpu cores: $(nproc), data-loading workers: $workers"
} | tee "$results/machine.txt"

for model in mae_vit_base_patch16 mae_vit_large_patch16; do
  batch=$([ "$model" = mae_vit_base_patch16 ] && echo 256 || echo 128)
  for compile in no yes; do
    name="${model}_compile-${compile}"
    flags=$([ "$compile" = yes ] && echo --compile || true)
    echo "== $name (batch $batch)"
    timeout 240 python mae_minimal/train.py --model "$model" --batch_size "$batch" --epochs 1 \
      --epoch_length $((batch * 80)) --max_steps 80 --log_every 20 --num_workers "$workers" \
      --no_progress --output_dir "$work/$name" $flags > "$work/$name.out" 2>&1 \
      || { echo "failed:"; tail -5 "$work/$name.out"; }
    cp "$work/$name/log.jsonl" "$results/$name.jsonl" 2>/dev/null || true
  done
done

echo "== short pretraining of the small MAE, then linear probes"
python mae_minimal/train.py --batch_size 256 --epochs 60 --blr 1.5e-3 --warmup_epochs 5 \
  --num_workers "$workers" --no_progress --output_dir "$work/mini" > "$work/mini.out" 2>&1
cp "$work/mini/log.jsonl" "$results/mini_pretrain.jsonl"
cp "$work/mini/reconstructions.png" "$results/mini_reconstructions.png"
python mae_minimal/evaluate.py linprobe --checkpoint "$work/mini/checkpoint.pth" --no_progress \
  --output_dir "$work/probe_pretrained" | tee "$results/linprobe.txt"
python mae_minimal/evaluate.py linprobe --random_init --model vit_mini_patch8_64px --no_progress \
  --output_dir "$work/probe_random" | tee -a "$results/linprobe.txt"

python benchmarks/summarize_gpu_train.py "$results" | tee "$results/summary.md"
