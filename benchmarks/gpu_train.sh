#!/usr/bin/env bash
# The GPU checks of the training tool, in one run of a few minutes on one GPU:
#  1. pretraining throughput of train.py (images/s, data loading included) at ViT-B/16 and
#     ViT-L/16 on 224-pixel offline photos, bf16, without and with --compile;
#  2. a short pretraining of the small MAE, then linear probes of its encoder and of a randomly
#     initialised one on the labelled shapes.
# Usage: bash benchmarks/gpu_train.sh [results folder]   (default benchmarks/results/gpu_train)
# STEPS, MODELS and MINI_EPOCHS in the environment shrink it for a try-out on a CPU.
set -uo pipefail
results=${1:-benchmarks/results/gpu_train}
steps=${STEPS:-80}
models=${MODELS:-"mae_vit_base_patch16 mae_vit_large_patch16"}
work=$(mktemp -d)
mkdir -p "$results"
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
dataset=photos
python3 -c "from mae_minimal.data import build_dataset; build_dataset('photos', 'train', 64)" 2>/dev/null \
  || { dataset=shapes; echo "the bundled photos are missing here: using the shapes"; }

{
  date -u +"date: %Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
  python3 -c "import torch; print('torch:', torch.__version__, 'cuda:', torch.version.cuda)"
  echo "cpu cores: $(nproc), data-loading workers: $workers, dataset: $dataset, steps per run: $steps"
} | tee "$results/machine.txt"

for model in $models; do
  case $model in *large*|*huge*) batch=128 ;; *base*) batch=256 ;; *) batch=64 ;; esac
  for compile in no yes; do
    name="${model}_compile-${compile}"
    flags=$([ "$compile" = yes ] && echo --compile)
    echo "== $name (batch $batch)"
    timeout 200 python3 mae_minimal/train.py --model "$model" --dataset "$dataset" --batch_size "$batch" \
      --epochs 1 --epoch_length $((batch * steps)) --max_steps "$steps" --log_every $((steps / 4)) \
      --num_workers "$workers" --no_progress --output_dir "$work/$name" $flags > "$work/$name.out" 2>&1 \
      || { echo "failed:"; tail -5 "$work/$name.out"; }
    cp "$work/$name/log.jsonl" "$results/$name.jsonl"
  done
done

echo "== short pretraining of the small MAE, then linear probes"
python3 mae_minimal/train.py --dataset "$dataset" --batch_size 256 --epochs "${MINI_EPOCHS:-150}" --blr 1.5e-3 \
  --warmup_epochs 10 --num_workers "$workers" --no_progress --output_dir "$work/mini" > "$work/mini.out" 2>&1 \
  || { echo "failed:"; tail -5 "$work/mini.out"; }
cp "$work/mini/log.jsonl" "$results/mini_pretrain.jsonl"
cp "$work/mini/reconstructions.png" "$results/mini_reconstructions.png"
python3 mae_minimal/evaluate.py linprobe --checkpoint "$work/mini/checkpoint.pth" --no_progress \
  --output_dir "$work/probe_pretrained" | tee "$results/linprobe.txt"
python3 mae_minimal/evaluate.py linprobe --random_init --model vit_mini_patch8_64px --no_progress \
  --output_dir "$work/probe_random" | tee -a "$results/linprobe.txt"

python3 benchmarks/summarize_gpu_train.py "$results" | tee "$results/summary.md"
