"""Pretrain a masked autoencoder, on one CPU or many GPUs.

    python mae_minimal/train.py         # a small MAE on Fashion-MNIST, ~3 CPU-minutes
    python -m mae_minimal.train --help  # every flag
    torchrun --nproc_per_node=8 mae_minimal/train.py --model mae_vit_base_patch16 \\
        --dataset imagefolder --data_path /data/imagenet --batch_size 64 --accum_iter 8

The recipe is the paper's: AdamW (0.9, 0.95) with weight decay 0.05 except on 1-D
parameters, lr = blr * effective batch / 256 with a per-step warmup then a cosine,
random-resized crops and flips (flips only for Fashion-MNIST), and the loss on masked
patches only. The training loop itself is mae_minimal/pretrain.py; this file is its
command line. Defaults are sized for a few minutes on a laptop CPU (the 28-pixel model,
one epoch of Fashion-MNIST at batch 64, 937 steps at an lr of 1.5e-3); the paper's run
is --epochs 800 --warmup_epochs 40 --blr 1.5e-4 at an effective batch of 4096.

Written to --output_dir (on rank 0): checkpoint.pth (everything needed to resume),
log.jsonl (one line per logged step), TensorBoard events, and reconstructions.png of
fixed held-out images.
"""

import argparse
import os
import signal
import sys
from dataclasses import fields
from pathlib import Path

# Before torch loads OpenMP: an idle compute thread sleeps after a short spin instead of
# libgomp's default 300,000 spins. Alone on the machine it makes no difference; next to
# a busy process a step at 2 threads ran about 2x faster (benchmarks/cpu_small.py).
# OMP_* or GOMP_* set by the user win.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import torch  # noqa: E402

from mae_minimal import distributed
from mae_minimal.checkpoint import read_checkpoint, save_checkpoint
from mae_minimal.data import DATASETS, DataError, build_dataset, normalization
from mae_minimal.denoising import DenoisingAutoencoder, pixel_noise
from mae_minimal.evaluate import pretext_errors
from mae_minimal.factories import MAE_MODELS, create_model
from mae_minimal.masking import MASKINGS
from mae_minimal.model import DECODER_POS_EMBED_CHOICES
from mae_minimal.output_dir import check_output_dir
from mae_minimal.pretrain import (
    OBJECTIVES,
    PRECISIONS,
    Hooks,
    PretrainConfig,
    Schedule,
    check_config,
    pretrain,
)
from mae_minimal.run_log import RunLog
from mae_minimal.sampler import seeded_item
from mae_minimal.visualize import (
    denoising_rows,
    reconstruction_rows,
    save_reconstruction_grid,
)

CHECKPOINT = "checkpoint.pth"
NUM_SHOWN = 8  # held-out images in reconstructions.png
# flags that may change when a run is resumed: they do not change what it computes
RESUMABLE_CHANGES = {"resume", "max_steps", "num_workers", "log_every", "save_every",
                     "no_progress", "output_dir", "device", "compile"}  # fmt: skip


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Pretrain a masked autoencoder (He et al., 2022). Flags keep the "
        "names of the official main_pretrain.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--model", default="mae_vit_nano_patch4_28px", choices=list(MAE_MODELS),
        help="model size")  # fmt: skip
    add("--input_size", type=int, default=None,
        help="image side in pixels (default: the model's)")  # fmt: skip
    add("--mask_ratio", type=float, default=0.75, help="fraction of patches removed")
    add("--masking", default="random", choices=MASKINGS,
        help="how the removed patches are chosen (grid: one kept patch in each 2x2 "
        "cell at --mask_ratio 0.75)")  # fmt: skip
    add("--norm_pix_loss", action="store_true",
        help="predict each patch normalised by its own mean and std")  # fmt: skip
    add("--decoder_pos_embed_to", default="all", choices=DECODER_POS_EMBED_CHOICES,
        help="where the decoder adds its positions: all tokens (the paper), mask "
        "tokens only, or none (an ablation)")  # fmt: skip
    add("--encoder_sees_mask_tokens", action="store_true",
        help="an ablation: the encoder processes all patches with a mask token in the "
        "removed ones (paper Table 1c)")  # fmt: skip
    add("--objective", default="mae", choices=OBJECTIVES,
        help="mae: remove patches; denoise: a classical denoising autoencoder, "
        "Gaussian noise on every pixel "
        "(the masking flags are then unused)")  # fmt: skip
    add("--dae_noise_std", type=float, default=0.75,
        help="denoise: the noise's std, in the units of the normalised images (0.75 is "
        "0.26 in pixel values for Fashion-MNIST)")  # fmt: skip
    add("--batch_size", type=int, default=64,
        help="images per GPU (or process) per micro-step")  # fmt: skip
    add("--accum_iter", type=int, default=1,
        help="micro-steps accumulated into one optimizer step")  # fmt: skip
    add("--epochs", type=float, default=1,
        help="passes over the data; may be fractional (1.5)")  # fmt: skip
    add("--max_steps", type=int, default=None,
        help="stop after this many optimizer steps (schedule unchanged)")  # fmt: skip
    add("--blr", type=float, default=6e-3,
        help="base lr: lr = blr * effective batch / 256 (paper: 1.5e-4 at batch 4096; "
        "the small batches and short runs of a CPU need more)")  # fmt: skip
    add("--lr", type=float, default=None, help="absolute lr, overriding --blr")
    add("--min_lr", type=float, default=0.0, help="lr at the end of the cosine")
    add("--warmup_epochs", type=float, default=0.1, help="epochs of linear warmup")
    add("--weight_decay", type=float, default=0.05)
    add("--dataset", default="fashion_mnist", choices=DATASETS,
        help="fashion_mnist (offline from Debian's package, else downloaded), photos, "
        "digits, shapes (offline)")  # fmt: skip
    add("--data_path", default=None,
        help="folder of imagefolder data, or where cifar is (downloaded)")  # fmt: skip
    add("--epoch_length", type=int, default=None,
        help="crops per epoch of photos, images of shapes, or the first N images of "
        "fashion_mnist")  # fmt: skip
    add("--output_dir", default="output/mae_pretrain",
        help="where checkpoints, logs and pictures go")  # fmt: skip
    add("--resume", default=None, help="a checkpoint to continue from, or 'auto' for "
        "output_dir's latest")  # fmt: skip
    add("--seed", type=int, default=0)
    add("--num_workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 2)),
        help="data-loading processes per GPU (or process)")  # fmt: skip
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 on GPUs (fp16 on older ones), fp32 on CPUs",
    )
    add("--compile", action="store_true", help="compile the model with torch.compile")
    add("--log_every", type=int, default=10, help="optimizer steps between log lines")
    add("--save_every", type=int, default=0,
        help="optimizer steps between checkpoints (0: each epoch)")  # fmt: skip
    add("--no_progress", action="store_true", help="no progress bar")
    return parser


def pretrain_config(args):
    """The PretrainConfig of the flags of the same names."""
    return PretrainConfig(
        **{field.name: getattr(args, field.name) for field in fields(PretrainConfig)}
    )


def resume_source(args):
    """The checkpoint to continue from, or None to start afresh."""
    if args.resume == "auto":
        latest = Path(args.output_dir) / CHECKPOINT
        return latest if latest.is_file() else None
    return args.resume


def read_resumable(source, args):
    """The training state of checkpoint `source`, refused if it was made with other
    settings."""
    if not Path(source).is_file():
        raise FileNotFoundError(f"no checkpoint to resume at {source}")
    state = read_checkpoint(source)
    if not isinstance(state, dict) or "optimizer" not in state or "args" not in state:
        raise ValueError(
            f"{source} holds weights but no training state (optimizer, step) to resume"
        )
    changed = [
        f"--{name} {state['args'].get(name)} -> {value}"
        for name, value in vars(args).items()
        if name not in RESUMABLE_CHANGES and state["args"].get(name) != value
    ]
    if changed:
        raise ValueError(
            f"{source} was made with other settings ({', '.join(changed)}); "
            f"resume with the same ones, or start afresh in another --output_dir"
        )
    return state


def prepare(args, context):
    """Everything that can fail on bad input, checked before anything is written."""
    config = pretrain_config(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda, but PyTorch sees no GPU here: use --device cpu"
        )
    check_output_dir(args.output_dir)
    torch.manual_seed(args.seed)
    model = create_model(
        args.model,
        norm_pix_loss=args.norm_pix_loss,
        decoder_pos_embed_to=args.decoder_pos_embed_to,
        encoder_sees_mask_tokens=args.encoder_sees_mask_tokens,
        **({"img_size": args.input_size} if args.input_size is not None else {}),
    )
    check_config(config, model.patch_embed.num_patches, model.grid_size)
    source = resume_source(args)
    resume = read_resumable(source, args) if source is not None else None
    input_size = model.patch_embed.img_size[0]
    dataset = build_dataset(
        args.dataset, "train", input_size, args.data_path, length=args.epoch_length
    )
    needed = config.effective_batch(context.world_size)
    if len(dataset) < needed:
        raise DataError(
            f"the dataset has {len(dataset)} images, fewer than one optimizer step "
            f"needs ({context.world_size} ranks x {args.batch_size} images x "
            f"{args.accum_iter} micro-steps)"
        )
    held_out = build_dataset(
        args.dataset, "val", input_size, args.data_path, augment=False
    )
    if len(held_out) == 0:
        raise DataError(
            f"the held-out split of {args.dataset} is empty: "
            f"add images (or a val/ folder)"
        )
    return model, dataset, config, held_out, resume


class RunFiles(Hooks):
    """The output folder of a run (rank 0 only): checkpoint, log.jsonl, TensorBoard,
    reconstructions; and stop requests from SIGTERM or SIGINT, honoured at the next step
    boundary."""

    def __init__(self, args, context, held_out, first_step, last_step):
        self.args, self.context, self.held_out = args, context, held_out
        self.shown = torch.stack([
            seeded_item(held_out, i, seed=i)[0]
            for i in range(min(NUM_SHOWN, len(held_out)))])  # fmt: skip
        self.output_dir = Path(args.output_dir)
        self.signal_name = None
        self.run_log = RunLog(
            self.output_dir, first_step, last_step, enabled=context.is_main,
            progress_bar=not args.no_progress)  # fmt: skip

    def handle_signal(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def step_done(self, step):
        self.run_log.step_done()

    def log(self, record):
        self.run_log.write(record)

    def save(self, state):
        if self.context.is_main:
            try:
                save_checkpoint(
                    {**state, "args": vars(self.args)}, self.output_dir / CHECKPOINT
                )
            except OSError as error:
                raise OSError(
                    f"could not write the checkpoint {self.output_dir / CHECKPOINT} "
                    f"({error}); the previous one, if any, is kept"
                ) from None

    def epoch_done(self, model, step):
        if self.context.is_main:
            device, generator = (
                next(model.parameters()).device,
                torch.Generator().manual_seed(0),
            )
            shown, stats = self.shown.to(device), normalization(self.args.dataset)
            if self.args.objective == "denoise":
                eps = pixel_noise(shown.shape[1:], len(shown), generator).to(device)
                rows = denoising_rows(
                    DenoisingAutoencoder(model, self.args.dae_noise_std),
                    shown, eps, stats)  # fmt: skip
            else:
                noise = torch.rand(
                    len(shown), model.patch_embed.num_patches, generator=generator
                )
                rows = reconstruction_rows(
                    model, shown, self.args.mask_ratio, noise.to(device), stats
                )
            save_reconstruction_grid(rows, self.output_dir / "reconstructions.png")

    def stop_requested(self):
        return self.signal_name is not None

    def held_out_errors(self, model, step):
        """At the end of a run: the held-out error on the run's own task
        (evaluate.pretext_errors), printed and logged: for an MAE the masked-patch MSE
        against the visible-mean fill, for a denoising autoencoder the MSE of its output
        against that of the noisy input. Not for norm_pix_loss models."""
        if not self.context.is_main or model.norm_pix_loss:
            return
        errors = pretext_errors(model, self.held_out, vars(self.args),
                                device=next(model.parameters()).device)  # fmt: skip
        baseline = ("noisy_input_mse" if self.args.objective == "denoise"
                    else "visible_mean_mse")  # fmt: skip
        self.run_log.write({"step": step, "held_out_mse": errors["mse"],
                            baseline: errors[baseline],
                            "mse_ratio": errors["ratio"]})  # fmt: skip
        measured = (
            "MSE of the denoised images {:.4f}, of the noisy input {:.4f}"
            if baseline == "noisy_input_mse"
            else "masked-patch MSE {:.4f}, visible-mean fill {:.4f}"
        )
        print(
            f"held-out {measured.format(errors['mse'], errors[baseline])} "
            f"(ratio {errors['ratio']:.3f}) on {len(self.held_out)} images"
        )


def use_free_cores(num_workers):
    """On a CPU, compute with the cores that the data workers (one thread each)
    leave free, unless OMP_NUM_THREADS says how many: threads beyond the cores
    wait on each other."""
    if "OMP_NUM_THREADS" not in os.environ:
        linux = hasattr(os, "sched_getaffinity")
        cores = len(os.sched_getaffinity(0)) if linux else os.cpu_count()
        torch.set_num_threads(max(1, cores - num_workers))


def train(args, context, model, dataset, config, held_out, resume):
    """Run pretrain() with the output folder and signal handling. True when it ran to
    the end."""
    if context.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        use_free_cores(args.num_workers)
    if context.is_main:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    first_step = resume["step"] if resume is not None else 0
    schedule = Schedule.of(
        config, len(dataset) // context.world_size // config.batch_size,
        context.world_size)  # fmt: skip
    if context.is_main:
        print(
            f"pretraining {args.model} on {args.dataset} ({len(dataset)} images) on "
            f"{context.world_size} x {context.device.type}:\n  "
            f"{schedule.steps_per_epoch} steps an epoch, "
            f"steps {first_step + 1}..{schedule.last_step}, lr {schedule.lr:.2e}"
        )
    files = RunFiles(args, context, held_out, first_step, schedule.last_step)
    previous = {
        sig: signal.signal(sig, files.handle_signal)
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        result = pretrain(model, dataset, config, context, files, resume)
        if not result.stopped:
            files.held_out_errors(model, result.step)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        files.run_log.close()
    if context.is_main and result.stopped:
        print(
            f"stopped by {files.signal_name or 'a signal'} after step {result.step}; "
            f"checkpoint saved in {files.output_dir / CHECKPOINT}; "
            f"continue with --resume auto"
        )
    elif context.is_main:
        print(
            f"done: {result.step} steps; checkpoint, log.jsonl and reconstructions.png "
            f"in {files.output_dir}"
        )
    return not result.stopped


def fail(context, error):
    """End the run with one clear line (printed once, by rank 0) and exit status 2. An
    error that came with a traceback in its message (from a data-loading worker) is
    given by its last line; one of an unexpected kind is named."""
    if context.is_main:
        lines = str(error).strip().splitlines()
        message = lines[-1] if lines else ""
        if not isinstance(error, (DataError, ValueError, OSError, FloatingPointError)):
            message = f"{type(error).__name__}: {message}"
        print(f"error: {message}", file=sys.stderr)
    distributed.cleanup(context)
    sys.exit(2)


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    context = distributed.setup(args.device)
    try:
        prepared = prepare(args, context)
    except (DataError, ValueError, OSError) as error:
        fail(context, error)
    try:
        train(args, context, *prepared)
    except Exception as error:
        # one line, whatever it is: a bad file met mid-run, a full disk, a NaN loss...
        fail(context, error)
    distributed.cleanup(context)


if __name__ == "__main__":
    main()
