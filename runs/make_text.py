"""Make a reference run of chapter 9's masked character model: train it, keep what the book reads.

    python runs/make_text.py 75           # one ratio (in %): about 3 minutes on one CPU core
    python runs/make_text.py --list

The model, corpus and scoring live in mae_minimal/text.py; training is the package's one training
step (mae_minimal.pretrain.train_step) with AdamW and a warmup then cosine (mae_minimal.optim),
as for the image runs. Each run leaves in runs/text_mlm/mask_RATIO/:
  weights.pth     the model (fp32, about 1.7 MB) and its configuration (mae_minimal.text.load_text_model)
  log.jsonl       step, mean training loss over the last 10 steps, lr (every 10 steps)
  metrics.json    held-out accuracy on the hidden characters, of the model, of the bigram guess and of
                  the most frequent character, and the shares recovered (mae_minimal.text.text_scores)
  manifest.json   the exact command, settings, commit, torch version, threads, wall time and date
tests/test_text_runs.py re-trains the first steps of every committed run and compares them with its log.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from mae_minimal.masking import mask_from_noise
from mae_minimal.optim import lr_at, param_groups
from mae_minimal.pretrain import train_step
from mae_minimal.text import (
    TEXT_LENGTH,
    BigramGuess,
    MaskedCharModel,
    build_corpus,
    corpus_digest,
    held_out_windows,
    load_text_model,
    masked_char_loss,
    random_windows,
    text_scores,
)

RUNS_DIR = Path(__file__).resolve().parent / "text_mlm"
THREADS = 1
RATIOS = (15, 25, 50, 75, 90)  # BERT's 15%, and the image runs' 25, 50, 75 and 90%
# One recipe for every ratio; only the ratio differs.
SETTINGS = dict(dim=128, depth=2, num_heads=4, batch_size=32, steps=1500, warmup_steps=75, lr=2e-3,
                min_lr=1e-5, weight_decay=0.05, seed=0, log_every=10, eval_seed=0)  # fmt: skip


def run_dir(ratio):
    return RUNS_DIR / f"mask_{ratio}"


def commit():
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=RUNS_DIR.parent, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def train(ratio, train_ids, settings=SETTINGS, max_steps=None, device="cpu"):
    """Train one model at `ratio` (in %) from seed settings["seed"]; returns (model, log records).
    The batches and masks are drawn on the CPU, so the same seed gives the same data on any device."""
    s = settings
    torch.manual_seed(s["seed"])
    model = MaskedCharModel(dim=s["dim"], depth=s["depth"], num_heads=s["num_heads"]).to(device).train()
    optimizer = torch.optim.AdamW(param_groups(model, s["weight_decay"]), lr=s["lr"], betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(s["seed"])
    log, losses = [], []
    for step in range(max_steps or s["steps"]):
        text = random_windows(train_ids, s["batch_size"], TEXT_LENGTH, generator)  # (B, T)
        noise = torch.rand(text.shape, generator=generator)
        mask = mask_from_noise(noise, ratio / 100).bool()
        lr = lr_at(step, s["steps"], s["warmup_steps"], s["lr"], s["min_lr"])
        batch = (text.to(device), mask.to(device))
        losses.append(train_step(model, masked_char_loss, [batch], optimizer, lr).item())
        if (step + 1) % s["log_every"] == 0:
            log.append(dict(step=step + 1, loss=sum(losses) / len(losses), lr=lr))
            losses = []
    return model.eval(), log


def metrics_of(model, ratio, train_ids, held_out_ids, settings=SETTINGS):
    texts = held_out_windows(held_out_ids)  # (N, T)
    scores = text_scores(model, BigramGuess(train_ids), texts, ratio / 100, settings["eval_seed"])
    return {"ratio": ratio / 100, "held_out_windows": len(texts), **scores}


def make(ratio):
    started_at_commit, started = commit(), time.perf_counter()
    train_ids, held_out_ids = build_corpus()
    model, log = train(ratio, train_ids)
    seconds = time.perf_counter() - started
    out = run_dir(ratio)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_config": model.config}, out / "weights.pth")
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    metrics = {**metrics_of(load_text_model(out / "weights.pth"), ratio, train_ids, held_out_ids),
               "final_train_loss": log[-1]["loss"]}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    manifest = {"command": ["python", "runs/make_text.py", str(ratio)], "settings": SETTINGS,
                "corpus": {"train_characters": len(train_ids), "held_out_characters": len(held_out_ids),
                           "train_sha256_16": corpus_digest(train_ids),
                           "held_out_sha256_16": corpus_digest(held_out_ids)},
                "commit": started_at_commit, "torch": torch.__version__, "python": platform.python_version(),
                "machine": platform.processor() or platform.machine(), "threads": THREADS,
                "wall_time_s": round(seconds), "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description="Make a reference run of the masked character model.")
    parser.add_argument("ratio", nargs="?", type=int, choices=RATIOS, help="the masking ratio, in %%")
    parser.add_argument("--list", action="store_true", help="print the runs and their settings")
    args = parser.parse_args(argv)
    if args.list or args.ratio is None:
        print("ratios (%):", *RATIOS)
        print("settings:", json.dumps(SETTINGS))
        return
    torch.set_num_threads(THREADS)
    print(json.dumps(make(args.ratio), indent=2))


if __name__ == "__main__":
    sys.exit(main())
