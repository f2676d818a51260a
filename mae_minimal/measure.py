"""Counting and timing a training step, the measurements several chapters make.

FLOPs are counted by PyTorch's FlopCounterMode (a multiply-add counts as 2) on models
built on the meta device, which have every shape and no storage: counting ViT-H costs
nothing. Times are taken from calls that take turns, so that a change in the machine's
load slows every variant alike instead of distorting their ratio.
"""

import contextlib
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mae_minimal.pretrain import autocast_and_scaler


def meta_model(factory, **kwargs):
    """factory(**kwargs) on the meta device: every parameter's shape, no storage."""
    with torch.device("meta"):
        return factory(**kwargs)


def count_flops(fn, by=None):
    """Run fn() and count its FLOPs: the total, or with by="op" a dict
    {operator: FLOPs}, with by="module" a dict {module name: FLOPs} ("Global" is the
    whole)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    counts = counter.get_flop_counts()
    if by == "op":
        return {str(op): flops for op, flops in counts["Global"].items()}
    if by == "module":
        return {module: sum(ops.values()) for module, ops in counts.items()}
    return counter.get_total_flops()


def forward_backward(model, imgs, mask_ratio, noise, part="all"):
    """One pretraining step's forward and backward passes, without the optimizer (which
    FLOP counts and speedups leave out). part="encoder": the encoder alone, with a
    stand-in loss to run its backward pass. imgs: (N, C, H, W); noise: (N, L)."""
    with autocast_and_scaler("auto", imgs.device)[0]:
        if part == "encoder":
            latent, _, _ = model.forward_encoder(imgs, mask_ratio, noise)
            loss = latent.float().pow(2).mean()
        else:
            loss, _, _ = model(imgs, mask_ratio, noise)
    loss.backward()


def interleaved_seconds(calls, repeats, warmup=1):
    """calls: {name: fn} -> {name: [seconds of each of `repeats` timed calls]}.

    The calls take turns (a, b, a, b, ...) after `warmup` untimed rounds. On a GPU the
    clock is read only after the GPU has finished."""

    def wait_for_gpu():
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()

    seconds = {name: [] for name in calls}
    for round_ in range(warmup + repeats):
        for name, fn in calls.items():
            wait_for_gpu()
            start = time.perf_counter()
            fn()
            wait_for_gpu()
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds


@contextlib.contextmanager
def num_threads(count):
    """Compute with `count` CPU threads inside the block, as before after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
