"""Make a reference run: train it from its command, then keep what the book and the tests read.

    python runs/make.py fashion_mnist           # about 37 minutes on one CPU core
    python runs/make.py random_75               # one of Part 2's runs: 9 minutes on an idle core
    python runs/make.py --evaluate random_75    # fine-tune and probe its encoder: about 4 minutes
    python runs/make.py --evaluate random_init  # the same evaluation of a randomly initialised encoder
    python runs/make.py --list

A run is its command (RUNS below, the flags of mae_minimal/train.py). It leaves in runs/NAME/:
  weights.pth        the model in fp16 with its configuration (mae_minimal.load_model reads it)
  log.jsonl          train.py's log
  metrics.json       the held-out error on the run's own task (evaluate.pretext_errors): masked-patch MSE against
                     a trivial fill; for a denoising autoencoder, its output's MSE against the noisy input's
  reconstructions.png  train.py's picture of held-out images at the end
  manifest.json      the exact command, commit, torch version, machine, threads and wall time
  evaluation.json    with --evaluate: held-out top-1 of its encoder fine-tuned on 1,000 labels and
                     linearly probed (evaluate.evaluate_encoder, three seeds), and how it was made
tests/test_runs.py re-runs the first steps of every committed run and compares them with its log.
"""

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mae_minimal import load_model
from mae_minimal.checkpoint import read_checkpoint
from mae_minimal.data import build_dataset
from mae_minimal.evaluate import evaluate_encoder, evaluation_sets, pretext_errors
from mae_minimal.train import main as train_main

RUNS_DIR = Path(__file__).resolve().parent
THREADS = 1  # one thread: the run shares the machine's two cores well with other work
# The recipe of Part 2's runs: the reference MAE's, for 4 epochs instead of 10, so that every
# condition of a chapter is one run of about 15 minutes that differs from the others in one flag.
PART2 = ["--model", "mae_vit_nano_patch4_28px", "--dataset", "fashion_mnist", "--batch_size", "128", "--epochs", "4",
         "--warmup_epochs", "0.5", "--blr", "3e-3", "--weight_decay", "0.05", "--seed", "0", "--num_workers", "0",
         "--log_every", "10"]  # fmt: skip


def part2_with(**changes):
    """PART2 with some of its flags' values changed: part2_with(epochs="8")."""
    flags = list(PART2)
    for name, value in changes.items():
        flags[flags.index(f"--{name}") + 1] = value
    return flags


RUNS = {
    # The book's reference MAE: Fashion-MNIST, 75% random masking, pixel loss.
    "fashion_mnist": ["--model", "mae_vit_nano_patch4_28px", "--dataset", "fashion_mnist", "--mask_ratio", "0.75",
                      "--masking", "random", "--batch_size", "128", "--epochs", "10", "--warmup_epochs", "0.5",
                      "--blr", "3e-3", "--weight_decay", "0.05", "--seed", "0", "--num_workers", "0",
                      "--log_every", "10"],  # fmt: skip
    # Chapter 10 (how to mask) and its mask-ratio sweep; random_75 is also the baseline of chapters 5 and 11.
    "random_75": [*PART2, "--masking", "random", "--mask_ratio", "0.75"],
    "block_75": [*PART2, "--masking", "block", "--mask_ratio", "0.75"],
    "grid_75": [*PART2, "--masking", "grid", "--mask_ratio", "0.75"],
    "block_50": [*PART2, "--masking", "block", "--mask_ratio", "0.5"],
    "random_25": [*PART2, "--masking", "random", "--mask_ratio", "0.25"],
    "random_50": [*PART2, "--masking", "random", "--mask_ratio", "0.5"],
    "random_90": [*PART2, "--masking", "random", "--mask_ratio", "0.9"],
    # Chapter 11: where the decoder adds its positions (random_75 adds them to all tokens).
    "decoder_pos_mask": [*PART2, "--masking", "random", "--mask_ratio", "0.75", "--decoder_pos_embed_to", "mask"],
    "decoder_pos_none": [*PART2, "--masking", "random", "--mask_ratio", "0.75", "--decoder_pos_embed_to", "none"],
    # A second pretraining seed of two conditions: how far apart runs that differ only in their seed end up.
    "random_75_seed1": [*PART2[:-6], "--seed", "1", *PART2[-4:], "--masking", "random", "--mask_ratio", "0.75"],
    "decoder_pos_mask_seed1": [*PART2[:-6], "--seed", "1", *PART2[-4:], "--masking", "random", "--mask_ratio",
                               "0.75", "--decoder_pos_embed_to", "mask"],  # fmt: skip
    # Chapter 5: norm-pix targets (paper Table 1d).
    "norm_pix_75": [*PART2, "--masking", "random", "--mask_ratio", "0.75", "--norm_pix_loss"],
    # Chapter 12: [M] in the encoder (paper Table 1c), and a classical denoising autoencoder, both
    # against random_75 with the same architecture, data and steps.
    "encoder_mask_tokens": [*PART2, "--masking", "random", "--mask_ratio", "0.75", "--encoder_sees_mask_tokens"],
    "denoising": [*PART2, "--objective", "denoise", "--dae_noise_std", "0.75"],
    # Chapter 8: half and twice random_75's width at its training FLOPs (twice and 1/3 its epochs:
    # their steps cost 0.50x and 3.0x), each warmed up for the first 1/8 of its steps.
    "scale_pico": [*part2_with(model="mae_vit_pico_patch4_28px", epochs="8", warmup_epochs="1"), "--masking",
                   "random", "--mask_ratio", "0.75"],  # fmt: skip
    "scale_micro": [*part2_with(model="mae_vit_micro_patch4_28px", epochs="1.3333", warmup_epochs="0.1667"),
                    "--masking", "random", "--mask_ratio", "0.75"],  # fmt: skip
}

# The shared evaluation of every run's encoder (and of random_init, the same encoder untrained).
EVALUATION_SETS = dict(dataset="fashion_mnist", labelled=1000, probe=10_000, test=None)
EVALUATION = dict(seeds=(0, 1, 2), finetune_epochs=10, probe_epochs=30, model_name="vit_nano_patch4_28px")
RANDOM_INIT = "random_init"


def commit():
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=RUNS_DIR, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def keep_results(name, output_dir, seconds, started_at_commit):
    """Write runs/NAME/ from a finished train.py output folder."""
    run_dir = RUNS_DIR / name
    run_dir.mkdir(exist_ok=True)
    checkpoint = read_checkpoint(Path(output_dir) / "checkpoint.pth")
    weights = {k: v.half() if v.is_floating_point() else v for k, v in checkpoint["model"].items()}
    torch.save({"model": weights, "model_config": checkpoint["model_config"],
                "normalization": checkpoint["normalization"]}, run_dir / "weights.pth")  # fmt: skip
    for file in ("log.jsonl", "reconstructions.png"):
        shutil.copy(Path(output_dir) / file, run_dir / file)
    args = checkpoint["args"]
    model = load_model(run_dir / "weights.pth")
    held_out = build_dataset(args["dataset"], "val", model.patch_embed.img_size[0], args["data_path"], augment=False)
    errors = pretext_errors(model, held_out, args)
    losses = [r["loss"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in r]
    metrics = {"held_out_images": len(held_out), **errors, "final_train_loss": losses[-1]}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    manifest = {"command": ["python", "mae_minimal/train.py", *RUNS[name]], "commit": started_at_commit,
                "torch": torch.__version__, "python": platform.python_version(), "machine": platform.processor()
                or platform.machine(), "cpu_count": __import__("os").cpu_count(), "threads": THREADS,
                "wall_time_s": round(seconds), "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return metrics


def evaluate_run(name):
    """Write runs/NAME/evaluation.json: evaluate_encoder on the run's weights (random_init: none)."""
    started_at_commit, started = commit(), time.perf_counter()
    sets = evaluation_sets(**EVALUATION_SETS)
    weights = None if name == RANDOM_INIT else RUNS_DIR / name / "weights.pth"
    scores = evaluate_encoder(weights, *sets, classes=10, **EVALUATION)
    evaluation = {**scores, "command": ["python", "runs/make.py", "--evaluate", name], "commit": started_at_commit,
                  "settings": {**EVALUATION_SETS, **EVALUATION, "test_images": len(sets[2])}, "threads": THREADS,
                  "torch": torch.__version__, "wall_time_s": round(time.perf_counter() - started)}  # fmt: skip
    (RUNS_DIR / name).mkdir(exist_ok=True)
    (RUNS_DIR / name / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    return evaluation


def main(argv=None):
    parser = argparse.ArgumentParser(description="Make a reference run under runs/.")
    parser.add_argument("name", nargs="?", choices=[*RUNS, RANDOM_INIT])
    parser.add_argument("--list", action="store_true", help="print the runs and their commands")
    parser.add_argument("--evaluate", action="store_true", help="evaluate the run's committed weights")
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        for name, flags in RUNS.items():
            print(name, " ".join(flags))
        return
    torch.set_num_threads(THREADS)
    if args.evaluate:
        print(json.dumps(evaluate_run(args.name), indent=2))
        return
    if args.name == RANDOM_INIT:
        parser.error("random_init is not trained: use --evaluate random_init")
    started_at_commit = commit()  # the code the run trains with
    with tempfile.TemporaryDirectory() as output_dir:
        started = time.perf_counter()
        train_main([*RUNS[args.name], "--output_dir", output_dir, "--no_progress"])
        metrics = keep_results(args.name, output_dir, time.perf_counter() - started, started_at_commit)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    sys.exit(main())
