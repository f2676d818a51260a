"""Pretrain a masked autoencoder, on one CPU or many GPUs.

    python mae_minimal/train.py                      # a small MAE on the offline photos
    python -m mae_minimal.train --help               # every flag
    torchrun --nproc_per_node=8 mae_minimal/train.py --model mae_vit_base_patch16 \\
        --dataset imagefolder --data_path /data/imagenet --batch_size 64 --accum_iter 8

The recipe is the paper's: AdamW (0.9, 0.95) with weight decay 0.05 except on 1-D parameters,
lr = blr * effective batch / 256 with a per-step warmup then a cosine, random-resized crops and
flips, and the loss on masked patches only. Defaults are sized for a few minutes on a laptop CPU
(a small model, 10 epochs of 2048 crops at batch 32, a base lr of 2e-3: an lr of 2.5e-4); the paper's
run is --epochs 800 --warmup_epochs 40 --blr 1.5e-4 at an effective batch of 4096.

Written to --output_dir (on rank 0): checkpoint.pth (everything needed to resume), log.jsonl (one
line per logged step), TensorBoard events, and reconstructions.png of fixed held-out images.
"""

import argparse
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mae_minimal import distributed, factories
from mae_minimal.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from mae_minimal.data import DATASETS, DataError, build_dataset
from mae_minimal.masking import num_kept
from mae_minimal.optim import lr_at, param_groups, set_lr
from mae_minimal.run_log import RunLog
from mae_minimal.sampler import ResumableDistributedSampler, SeededItems, seeded_item
from mae_minimal.visualize import reconstruction_rows, save_reconstruction_grid

MAE_MODELS = [name for name in dir(factories) if name.startswith("mae_vit_")]
CHECKPOINT = "checkpoint.pth"
NUM_SHOWN = 8  # held-out images in reconstructions.png


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Pretrain a masked autoencoder (He et al., 2021). Flags keep the names of the "
        "official main_pretrain.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--model", default="mae_vit_mini_patch8_64px", choices=MAE_MODELS, help="model size")
    add("--input_size", type=int, default=None, help="image side in pixels (default: the model's)")
    add("--mask_ratio", type=float, default=0.75, help="fraction of patches removed")
    add("--norm_pix_loss", action="store_true", help="predict each patch normalised by its own mean and std")
    add("--batch_size", type=int, default=32, help="images per GPU (or process) per micro-step")
    add("--accum_iter", type=int, default=1, help="micro-steps accumulated into one optimizer step")
    add("--epochs", type=int, default=10)
    add(
        "--max_steps",
        type=int,
        default=None,
        help="stop after this many optimizer steps (schedule unchanged)",
    )
    add(
        "--blr",
        type=float,
        default=2e-3,
        help="base lr: lr = blr * effective batch / 256 (paper: 1.5e-4 at batch 4096; small "
        "batches and short runs need more, but above ~4e-3 short runs collapse the encoder's features)",
    )
    add("--lr", type=float, default=None, help="absolute lr, overriding --blr")
    add("--min_lr", type=float, default=0.0, help="lr at the end of the cosine")
    add("--warmup_epochs", type=float, default=1, help="epochs of linear warmup")
    add("--weight_decay", type=float, default=0.05)
    add("--dataset", default="photos", choices=DATASETS, help="offline: photos, digits, shapes")
    add("--data_path", default=None, help="folder of imagefolder data, or where cifar is (downloaded)")
    add("--epoch_length", type=int, default=None, help="crops per epoch of photos, images of shapes")
    add("--output_dir", default="output/mae_pretrain", help="where checkpoints, logs and pictures go")
    add("--resume", default=None, help="a checkpoint to continue from, or 'auto' for output_dir's latest")
    add("--seed", type=int, default=0)
    add(
        "--num_workers",
        type=int,
        default=max(1, min(8, (os.cpu_count() or 2) // 2)),
        help="data-loading processes per GPU (or process)",
    )
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="auto: bf16 on GPUs")
    add("--compile", action="store_true", help="compile the model with torch.compile")
    add("--log_every", type=int, default=10, help="optimizer steps between log lines")
    add("--save_every", type=int, default=0, help="optimizer steps between checkpoints (0: each epoch)")
    add("--no_progress", action="store_true", help="no progress bar")
    return parser


class StopRequest:
    """While active, remembers a SIGTERM or SIGINT so that the loop stops at the next step
    boundary; the previous handlers come back afterwards (a notebook's interrupt button too)."""

    def __enter__(self):
        self.signal_name = None
        self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc_info):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name


def ignore_stop_signals(worker_id):
    """Data-loading workers leave SIGTERM and SIGINT to the main process, which saves and exits."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_model(args):
    kwargs = dict(norm_pix_loss=args.norm_pix_loss)
    if args.input_size is not None:
        kwargs["img_size"] = args.input_size
    return getattr(factories, args.model)(**kwargs)


def resume_source(args):
    """The checkpoint to continue from, or None to start afresh."""
    if args.resume == "auto":
        latest = Path(args.output_dir) / CHECKPOINT
        return latest if latest.is_file() else None
    return args.resume


def prepare(args, context):
    """Everything that can fail on bad input, done before anything is written."""
    if args.batch_size < 1 or args.accum_iter < 1 or args.epochs < 1:
        raise ValueError("--batch_size, --accum_iter and --epochs must be at least 1")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError("--max_steps must be at least 1")
    torch.manual_seed(args.seed)
    model = build_model(args)
    num_kept(model.patch_embed.num_patches, args.mask_ratio)  # checks the mask ratio
    input_size = model.patch_embed.img_size[0]
    dataset = build_dataset(args.dataset, "train", input_size, args.data_path, length=args.epoch_length)
    needed = context.world_size * args.batch_size * args.accum_iter
    if len(dataset) < needed:
        raise DataError(
            f"the dataset has {len(dataset)} images, fewer than one optimizer step needs "
            f"({context.world_size} ranks x {args.batch_size} images x {args.accum_iter} micro-steps)"
        )
    held_out = build_dataset(args.dataset, "val", input_size, args.data_path, augment=False)
    if len(held_out) == 0:
        raise DataError(f"the held-out split of {args.dataset} is empty: add images (or a val/ folder)")
    shown = [seeded_item(held_out, i, seed=i)[0] for i in range(min(NUM_SHOWN, len(held_out)))]
    checkpoint = None
    source = resume_source(args)
    if source is not None:
        if not Path(source).is_file():
            raise FileNotFoundError(f"no checkpoint to resume at {source}")
        checkpoint = torch.load(source, map_location="cpu", weights_only=True)
        if "optimizer" not in checkpoint:
            raise ValueError(f"{source} holds weights but no training state (optimizer, step) to resume")
        load_checkpoint(model, read_state_dict(checkpoint))
    return model, dataset, torch.stack(shown), checkpoint


def autocast_context(args, device):
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return nullcontext(), False
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype), precision == "fp16"


def make_loader(args, context, dataset, num_patches):
    """Batches of (images, labels, masking noise), each rank its own share of every epoch."""
    sampler = ResumableDistributedSampler(
        dataset,
        num_replicas=context.world_size,
        rank=context.rank,
        shuffle=True,
        seed=args.seed,
        drop_last=True,
    )
    loader = DataLoader(
        SeededItems(dataset, num_patches, args.seed),
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.num_workers,
        pin_memory=context.device.type == "cuda",
        persistent_workers=args.num_workers > 0,
        drop_last=True,
        worker_init_fn=ignore_stop_signals,
        generator=torch.Generator().manual_seed(args.seed),
    )
    return sampler, loader


def train(args, context, model, dataset, shown, checkpoint):
    """The training loop. Returns True when it ran to the end, False when stopped by a signal."""
    device, output_dir = context.device, Path(args.output_dir)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(device)
    forward = torch.compile(model) if args.compile else model
    if context.is_distributed:
        forward = DistributedDataParallel(forward, device_ids=[device] if device.type == "cuda" else None)

    effective_batch = args.batch_size * args.accum_iter * context.world_size
    lr = args.lr if args.lr is not None else args.blr * effective_batch / 256
    optimizer = torch.optim.AdamW(
        param_groups(model, args.weight_decay), lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda"
    )
    autocast, use_scaler = autocast_context(args, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    num_patches = model.patch_embed.num_patches
    sampler, loader = make_loader(args, context, dataset, num_patches)
    steps_per_epoch = len(loader) // args.accum_iter
    total_steps = args.epochs * steps_per_epoch
    last_step = min(total_steps, args.max_steps or total_steps)
    warmup_steps = round(args.warmup_epochs * steps_per_epoch)

    step = 0
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        if use_scaler:
            scaler.load_state_dict(checkpoint["scaler"])
        step = checkpoint["step"]
        torch.set_rng_state(checkpoint["rng"]["cpu"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], device)

    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        print(
            f"pretraining {args.model} on {args.dataset} ({len(dataset)} images) on {context.world_size} x "
            f"{device.type}: {steps_per_epoch} steps an epoch, steps {step + 1}..{last_step}, lr {lr:.2e}"
        )
    run_log = RunLog(output_dir, step, last_step, enabled=context.is_main, progress_bar=not args.no_progress)

    def save():
        check_finite(interval_loss, step, output_dir, context)
        if context.is_main:
            rng = {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            }
            state = dict(
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict() if use_scaler else None,
                epoch=step // steps_per_epoch,  # completed epochs
                step=step,
                config=vars(args),
                rng=rng,
            )
            save_checkpoint(state, output_dir / CHECKPOINT)

    def show():
        if context.is_main:
            model.eval()
            noise = torch.rand(len(shown), num_patches, generator=torch.Generator().manual_seed(0))
            rows = reconstruction_rows(model, shown.to(device), args.mask_ratio, noise.to(device))
            save_reconstruction_grid(rows, output_dir / "reconstructions.png")
            model.train()

    model.train()
    interval_loss, interval_steps, interval_start = torch.zeros((), device=device), 0, time.perf_counter()
    with StopRequest() as stop:
        while step < last_step:
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            sampler.start_epoch(epoch, skip=step_in_epoch * args.accum_iter * args.batch_size)
            batches = iter(loader)
            while step < min(last_step, (epoch + 1) * steps_per_epoch):
                set_lr(optimizer, lr_at(step, total_steps, warmup_steps, lr, args.min_lr))
                for micro_step in range(args.accum_iter):
                    imgs, _, noise = next(batches)
                    imgs, noise = imgs.to(device, non_blocking=True), noise.to(device, non_blocking=True)
                    if (
                        context.is_distributed
                    ):  # average gradients over ranks once a step, not each micro-step
                        forward.require_backward_grad_sync = micro_step == args.accum_iter - 1
                    with autocast:
                        loss, _, _ = forward(imgs, args.mask_ratio, noise)
                    scaler.scale(loss / args.accum_iter).backward()
                    interval_loss += loss.detach() / args.accum_iter
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                interval_steps += 1
                run_log.step_done()

                if step % args.log_every == 0 or step == last_step:
                    mean_loss = check_finite(interval_loss / interval_steps, step, output_dir, context)
                    images_per_s = interval_steps * effective_batch / (time.perf_counter() - interval_start)
                    record = dict(step=step, epoch=step / steps_per_epoch, loss=mean_loss,
                                  lr=optimizer.param_groups[0]["lr"], images_per_s=images_per_s)  # fmt: skip
                    if device.type == "cuda":
                        record["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
                    run_log.write(record)
                    interval_loss.zero_()
                    interval_steps, interval_start = 0, time.perf_counter()
                if distributed.any_rank(stop.signal_name, context):
                    save()
                    run_log.close()
                    if context.is_main:
                        print(f"stopped by {stop.signal_name or 'a signal'} after step {step}; checkpoint "
                              f"saved in {output_dir / CHECKPOINT}; continue with --resume auto")  # fmt: skip
                    return False
                end_of_epoch = step % steps_per_epoch == 0
                if end_of_epoch or step == last_step or (args.save_every and step % args.save_every == 0):
                    save()
                if end_of_epoch or step == last_step:
                    show()
    run_log.close()
    if context.is_main:
        print(f"done: {step} steps; checkpoint, log.jsonl and reconstructions.png in {output_dir}")
    return True


def check_finite(loss, step, output_dir, context):
    """The loss averaged over ranks, as a float; an error when it is not finite."""
    mean_loss = distributed.mean_over_ranks(loss, context)
    if not math.isfinite(mean_loss):
        raise FloatingPointError(
            f"the loss became {mean_loss} by step {step}; the last good checkpoint is kept in "
            f"{output_dir / CHECKPOINT}: lower --blr, or use --precision bf16 or fp32"
        )
    return mean_loss


def fail(context, error):
    """End the run with one clear line (printed once, by rank 0) and exit status 2."""
    if context.is_main:
        print(f"error: {error}", file=sys.stderr)
    distributed.cleanup(context)
    sys.exit(2)


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    context = distributed.setup(args.device)
    try:
        prepared = prepare(args, context)
    except (DataError, ValueError, FileNotFoundError) as error:
        fail(context, error)
    try:
        train(args, context, *prepared)
    except FloatingPointError as error:
        fail(context, error)
    distributed.cleanup(context)


if __name__ == "__main__":
    main()
