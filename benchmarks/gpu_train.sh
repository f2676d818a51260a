#!/usr/bin/env bash
# The GPU check of the training tool: pretraining throughput of train.py (images/s with data loading,
# logging and the optimizer included) at ViT-B/16 and ViT-L/16 on 224-pixel offline photos, bf16,
# without and with --compile. benchmarks/summarize_gpu_train.py sets it beside the bare training step
# that benchmarks/train_step.py timed at the same batch (its results.json, when given), which tells
# whether anything outside the model (data loading above all) limits the tool.
# Usage: bash benchmarks/gpu_train.sh [results folder] [train_step results.json]
#        (default folder benchmarks/results/gpu_train)
# STEPS, MODELS, BATCH_SIZE and RUN_TIMEOUT (seconds per run) in the environment change the runs (e.g. a try-out on a CPU).
set -uo pipefail
results=${1:-benchmarks/results/gpu_train}
train_step_results=${2:-}
steps=${STEPS:-60}
models=${MODELS:-"mae_vit_base_patch16 mae_vit_large_patch16"}
batch=${BATCH_SIZE:-128}
work=$(mktemp -d)
mkdir -p "$results"
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))

{
  date -u +"date: %Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
  python3 -c "import torch; print('torch:', torch.__version__, 'cuda:', torch.version.cuda)"
  echo "cpu cores: $(nproc), data-loading workers: $workers, dataset: photos, batch: $batch, steps per run: $steps"
} | tee "$results/machine.txt"

for model in $models; do
  for compile in no yes; do
    name="${model}_compile-${compile}"
    flags=$([ "$compile" = yes ] && echo --compile)
    echo "== $name"
    timeout "${RUN_TIMEOUT:-240}" python3 mae_minimal/train.py --model "$model" --dataset photos --batch_size "$batch" \
      --epochs 1 --epoch_length $((batch * steps)) --max_steps "$steps" --log_every $((steps / 6)) \
      --num_workers "$workers" --no_progress --output_dir "$work/$name" $flags > "$work/$name.out" 2>&1 \
      || { echo "failed:"; tail -5 "$work/$name.out"; }
    cp "$work/$name/log.jsonl" "$results/$name.jsonl" 2>/dev/null
  done
done

python3 benchmarks/summarize_gpu_train.py "$results" $train_step_results | tee "$results/summary.md"
