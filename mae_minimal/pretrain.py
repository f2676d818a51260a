"""The training loop: one optimizer step (`train_step`) and MAE pretraining
(`pretrain`).

train.py, evaluate.py, the notebooks and the tests all train through these two
functions; train.py only adds the command line, torchrun, signals and the output folder
(as `Hooks`).

A run is fully determined by its model, dataset and `PretrainConfig`: each image's
augmentation and masking noise are seeded by (seed, epoch, index) (sampler.py), so a run
resumed from a checkpoint, or split over several processes, takes exactly the steps of
one uninterrupted process.
"""

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mae_minimal import distributed
from mae_minimal.checkpoint import model_config
from mae_minimal.data import normalization
from mae_minimal.denoising import DenoisingAutoencoder, pixel_noise
from mae_minimal.masking import MASKINGS, masking_noise, num_kept
from mae_minimal.optim import lr_at, param_groups, set_lr
from mae_minimal.sampler import ResumableDistributedSampler, SeededItems

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# remove patches (the paper), or add Gaussian noise to every pixel (denoising.py)
OBJECTIVES = ("mae", "denoise")


@dataclass
class PretrainConfig:
    """Everything that decides what a pretraining run computes (train.py's flags of the
    same names)."""

    # mae | denoise (a classical denoising autoencoder; masking is then unused)
    objective: str = "mae"
    mask_ratio: float = 0.75
    masking: str = "random"  # random | block | grid: how the removed patches are chosen
    # denoise: the noise's std, in the units of the normalised images
    dae_noise_std: float = 0.75
    batch_size: int = 32  # images per process per micro-step
    accum_iter: int = 1  # micro-steps per optimizer step
    # may be fractional: the run is round(epochs * steps an epoch) steps
    epochs: float = 10
    max_steps: int | None = None  # stop early; the schedule stays that of `epochs`
    blr: float = 2e-3  # lr = blr * effective batch / 256
    lr: float | None = None  # an absolute lr instead of blr
    min_lr: float = 0.0
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    seed: int = 0
    num_workers: int = 0
    precision: str = "auto"  # auto: bf16 on GPUs (fp16 on older ones), fp32 on CPUs
    compile: bool = False
    log_every: int = 10  # optimizer steps between log records
    # optimizer steps between checkpoints; 0: at the end of each epoch
    save_every: int = 0

    def effective_batch(self, world_size):
        """Images per optimizer step, over all processes."""
        return self.batch_size * self.accum_iter * world_size


def check_config(config, num_patches, grid_size):
    """Raise a ValueError naming the first setting that cannot work."""
    positive = dict(
        batch_size=config.batch_size, accum_iter=config.accum_iter,
        log_every=config.log_every, max_steps=config.max_steps or 1)  # fmt: skip
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}")
    if not (math.isfinite(config.epochs) and config.epochs > 0):
        raise ValueError(f"--epochs must be a positive number, got {config.epochs}")
    for name in ("num_workers", "save_every", "weight_decay", "min_lr",
                 "warmup_epochs"):  # fmt: skip
        if not getattr(config, name) >= 0:
            raise ValueError(
                f"--{name} must be at least 0, got {getattr(config, name)}"
            )
    lr_name, lr = ("lr", config.lr) if config.lr is not None else ("blr", config.blr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--{lr_name} must be a positive number, got {lr}")
    if config.precision not in PRECISIONS:
        raise ValueError(
            f"--precision must be one of {', '.join(PRECISIONS)}, "
            f"got {config.precision!r}"
        )
    if config.objective not in OBJECTIVES:
        raise ValueError(
            f"--objective must be one of {', '.join(OBJECTIVES)}, "
            f"got {config.objective!r}"
        )
    if config.objective == "denoise":
        if not (math.isfinite(config.dae_noise_std) and config.dae_noise_std > 0):
            raise ValueError(
                f"--dae_noise_std must be a positive number, got {config.dae_noise_std}"
            )
        return
    if config.masking not in MASKINGS:
        raise ValueError(
            f"--masking must be one of {', '.join(MASKINGS)}, got {config.masking!r}"
        )
    if num_kept(num_patches, config.mask_ratio) == num_patches:
        raise ValueError(
            f"--mask_ratio {config.mask_ratio} removes no patch: "
            f"there would be nothing to learn"
        )
    # checks the ratio suits the masking
    masking_noise(config.masking, grid_size, config.mask_ratio)


def resolved_precision(precision, device):
    """The precision that "auto" stands for: bf16 on a GPU that computes in it, fp16
    (with a gradient scaler, as the official code always does) on older GPUs, fp32 on a
    CPU."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def autocast_and_scaler(precision, device):
    """The autocast context and the gradient scaler (enabled for fp16 only) of a
    precision."""
    precision = resolved_precision(precision, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
    autocast = (
        torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    )
    return autocast, torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def train_step(
    model, loss_fn, micro_batches, optimizer, lr, scaler=None, autocast=None
):
    """One optimizer step at learning rate `lr` (times each group's lr_scale), its
    gradient accumulated over `micro_batches`.

    loss_fn(model, batch) -> a scalar loss. Each micro-batch's loss is divided by their
    number, so the step equals one on all of them at once; under DDP the gradients are
    averaged over processes once, at the last micro-batch. Returns the mean loss,
    detached (a 0-d tensor).
    """
    set_lr(optimizer, lr)
    scaler = scaler or torch.amp.GradScaler(enabled=False)
    total = 0.0
    for index, batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        sync = (
            model.no_sync()
            if isinstance(model, DistributedDataParallel) and not last
            else nullcontext()
        )
        with sync:
            with autocast or nullcontext():
                loss = loss_fn(model, batch)
            scaler.scale(loss / len(micro_batches)).backward()
        total = total + loss.detach() / len(micro_batches)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total


def mae_loss(mask_ratio, model, batch):
    """The loss of an MAE on a batch (images, labels, noise) already on the model's
    device."""
    imgs, _, noise = batch
    loss, _, _ = model(imgs, mask_ratio, noise)
    return loss


def denoising_loss(model, batch):
    """The loss of a DenoisingAutoencoder on a batch (images, labels, pixel noise)."""
    imgs, _, eps = batch
    loss, _ = model(imgs, eps)
    return loss


class Hooks:
    """What a run does besides training. Here every hook does nothing; train.py's writes
    files."""

    def step_done(self, step):
        """Called after each optimizer step."""

    def log(self, record):
        """record: {"step", "epoch", "loss", "lr", "images_per_s"}, every log_every
        steps."""

    def save(self, state):
        """state: everything needed to resume (see training_state), at each
        checkpoint."""

    def epoch_done(self, model, step):
        """At the end of each epoch and of the run, with the model in eval mode."""

    def stop_requested(self):
        """True to save and stop at this step boundary (train.py: after a SIGTERM or
        SIGINT)."""
        return False


@dataclass
class PretrainResult:
    step: int  # the last optimizer step taken
    stopped: bool  # True when a stop request ended the run early
    log: list  # the records given to Hooks.log


def ignore_stop_signals(worker_id):
    """Data-loading workers leave SIGTERM and SIGINT to the main process, which saves
    and stops. So they must be shut down by the run itself (shut_down_workers): at
    Python's exit they would be sent SIGTERM and waited for, for ever."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def shut_down_workers(loader):
    """End the data-loading processes of `loader` (persistent workers) now, however the
    run ends."""
    # torch keeps the workers' iterator here, and has no public close()
    if loader._iterator is not None:
        loader._iterator._shutdown_workers()
        loader._iterator = None


def make_loader(dataset, model, config, context):
    """A DataLoader of batches (images, labels, noise): the masking noise (N, L), or for
    the denoise objective the pixel noise (N, C, H, W). Its sampler (a
    ResumableDistributedSampler) gives each process its share of every epoch."""
    sampler = ResumableDistributedSampler(
        dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True,
        seed=config.seed, drop_last=True)  # fmt: skip
    if config.objective == "denoise":
        noise_of = partial(
            pixel_noise, (model.patch_embed.in_chans, *model.patch_embed.img_size)
        )
    else:
        noise_of = partial(
            masking_noise, config.masking, model.grid_size, config.mask_ratio
        )
    loader = DataLoader(
        SeededItems(dataset, noise_of, config.seed),
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=context.device.type == "cuda",
        persistent_workers=config.num_workers > 0,
        drop_last=True,
        worker_init_fn=ignore_stop_signals,
        generator=torch.Generator().manual_seed(config.seed),
    )
    return loader


def training_state(model, optimizer, scaler, step, steps_per_epoch, config, device,
                   normalization, unlogged):  # fmt: skip
    """A checkpoint: the weights, how to rebuild the model and normalise its inputs
    ((mean, std)), and everything else needed to resume; unlogged: (K,) the losses of
    the steps since the last log record, which a resumed run averages into its first
    one."""
    rng = {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    return dict(model=model.state_dict(), model_config=model_config(model),
                optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict() if scaler.is_enabled() else None,
                epoch=step // steps_per_epoch, step=step,
                pretrain_config=asdict(config), rng=rng, normalization=normalization,
                unlogged_losses=unlogged.cpu())  # fmt: skip


def restore(state, model, optimizer, scaler, device):
    """Load a training_state into the model, optimizer, scaler and random generators.
    Returns its step and the losses of its steps not yet logged (a list of 0-d
    tensors)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return state["step"], list(state.get("unlogged_losses", torch.zeros(0)).to(device))


def finite_mean(loss, step, context):
    """The loss averaged over processes, as a float; an error when it is not finite."""
    mean_loss = distributed.mean_over_ranks(loss, context)
    if not math.isfinite(mean_loss):
        raise FloatingPointError(
            f"the loss became {mean_loss} by step {step}; the last good checkpoint is "
            f"kept: lower --blr, or use --precision bf16 or fp32"
        )
    return mean_loss


@dataclass
class Schedule:
    """The steps of a run and its learning rate at each: a warmup, then a cosine
    (optim.lr_at)."""

    lr: float  # the peak lr
    steps_per_epoch: int
    total_steps: int  # of the whole schedule (config.epochs)
    last_step: int  # where this run stops (config.max_steps, if sooner)
    warmup_steps: int

    @classmethod
    def of(cls, config, batches_per_epoch, world_size):
        lr = (
            config.lr
            if config.lr is not None
            else config.blr * config.effective_batch(world_size) / 256
        )
        steps_per_epoch = batches_per_epoch // config.accum_iter
        total_steps = max(1, round(config.epochs * steps_per_epoch))
        last_step = min(total_steps, config.max_steps or total_steps)
        return cls(lr, steps_per_epoch, total_steps, last_step,
                   round(config.warmup_epochs * steps_per_epoch))  # fmt: skip

    def lr_at(self, step, min_lr):
        return lr_at(step, self.total_steps, self.warmup_steps, self.lr, min_lr)


def objective_and_loss(model, config, context):
    """What a training step runs and the loss it takes: the MAE at config.mask_ratio or
    (config.objective "denoise") the model as a denoising autoencoder; compiled if
    config.compile, wrapped in DistributedDataParallel under torchrun."""
    if config.objective == "denoise":
        objective = DenoisingAutoencoder(model, config.dae_noise_std)
        loss_fn = denoising_loss
    else:
        objective, loss_fn = model, partial(mae_loss, config.mask_ratio)
    forward = torch.compile(objective) if config.compile else objective
    if context.is_distributed:
        on_gpu = context.device.type == "cuda"
        forward = DistributedDataParallel(
            forward, device_ids=[context.device] if on_gpu else None
        )
    return forward, loss_fn


def step_batches(step, loader, schedule, config, device):
    """The micro-batches of each optimizer step from `step` to the run's last, on
    `device`: a list of config.accum_iter batches a step. A run resumed in the middle of
    an epoch skips the images that epoch has already used."""
    while step < schedule.last_step:
        epoch, step_in_epoch = divmod(step, schedule.steps_per_epoch)
        loader.sampler.start_epoch(
            epoch, skip=step_in_epoch * config.accum_iter * config.batch_size
        )
        batches = iter(loader)
        end_of_epoch = min(schedule.last_step, (epoch + 1) * schedule.steps_per_epoch)
        for _ in range(step, end_of_epoch):
            yield [
                [t.to(device, non_blocking=True) for t in next(batches)]
                for _ in range(config.accum_iter)
            ]
        step = end_of_epoch


class LossLog:
    """The run's log records (one line of log.jsonl each), and the losses and time of
    the steps since the last record."""

    def __init__(self, step, unlogged, images_per_step, context):
        self.records, self.unlogged = [], unlogged  # unlogged: 0-d loss tensors
        self.images_per_step, self.context = images_per_step, context
        self.since_step, self.since = step, time.perf_counter()

    def add(self, loss):
        self.unlogged.append(loss)

    def record(self, step, schedule, lr, forget_losses):
        """A new record: the mean loss over processes of the unlogged steps, the lr, the
        images per second since the last record (and on a GPU the peak memory)."""
        seconds = time.perf_counter() - self.since
        images_per_s = (step - self.since_step) * self.images_per_step / seconds
        loss = finite_mean(sum(self.unlogged) / len(self.unlogged), step, self.context)
        record = dict(step=step, epoch=step / schedule.steps_per_epoch, loss=loss,
                      lr=lr, images_per_s=images_per_s)  # fmt: skip
        device = self.context.device
        if device.type == "cuda":
            record["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        self.records.append(record)
        if forget_losses:
            self.unlogged = []
        self.since_step, self.since = step, time.perf_counter()
        return record

    def unlogged_losses(self, step):
        """(K,) the unlogged losses, averaged over processes, for a checkpoint; an error
        if their mean is not finite, so that no checkpoint keeps a diverged run."""
        device = self.context.device
        finite_mean(sum(self.unlogged, torch.zeros((), device=device)), step,
                    self.context)  # fmt: skip
        unlogged = torch.stack(self.unlogged) if self.unlogged else torch.zeros(0)
        return distributed.average_over_ranks(unlogged, self.context)


def pretrain(model, dataset, config, context=None, hooks=None, resume=None):
    """Pretrain `model` (a MaskedAutoencoderViT) on `dataset` of (image, label) pairs,
    with the MAE objective or (config.objective "denoise") as a denoising autoencoder.

    context: distributed.Context (default: this process alone, on the model's device);
    resume: a training_state to continue from. Returns a PretrainResult.
    """
    context = context or distributed.Context(0, 1, next(model.parameters()).device)
    hooks, device = hooks or Hooks(), context.device
    check_config(config, model.patch_embed.num_patches, model.grid_size)
    model.to(device).train()
    forward, loss_fn = objective_and_loss(model, config, context)
    loader = make_loader(dataset, model, config, context)
    schedule = Schedule.of(config, len(loader), context.world_size)
    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=schedule.lr, betas=(0.9, 0.95),
        fused=device.type == "cuda")  # fmt: skip
    autocast, scaler = autocast_and_scaler(config.precision, device)
    step, unlogged = (
        restore(resume, model, optimizer, scaler, device)
        if resume is not None
        else (0, [])
    )
    log = LossLog(step, unlogged, config.effective_batch(context.world_size), context)

    def save():
        hooks.save(training_state(
            model, optimizer, scaler, step, schedule.steps_per_epoch, config, device,
            normalization(dataset), log.unlogged_losses(step)))  # fmt: skip

    try:
        for micro_batches in step_batches(step, loader, schedule, config, device):
            lr = schedule.lr_at(step, config.min_lr)
            log.add(train_step(forward, loss_fn, micro_batches, optimizer, lr, scaler,
                               autocast))  # fmt: skip
            step += 1
            hooks.step_done(step)
            on_interval = step % config.log_every == 0
            if on_interval or step == schedule.last_step:
                # off the interval the losses stay unlogged: a resumed run logs them too
                hooks.log(log.record(step, schedule, lr, forget_losses=on_interval))
            if distributed.any_rank(hooks.stop_requested(), context):
                save()
                return PretrainResult(step, True, log.records)
            end_of_epoch = (
                step % schedule.steps_per_epoch == 0 or step == schedule.last_step
            )
            if end_of_epoch or (config.save_every and step % config.save_every == 0):
                save()
            if end_of_epoch:
                hooks.epoch_done(model.eval(), step)
                model.train()
    finally:
        shut_down_workers(loader)
    return PretrainResult(step, False, log.records)
