"""Distributed data parallel through torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK).

Run without torchrun, everything here is a single process: rank 0 of a world of 1.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def is_distributed(self):
        return self.world_size > 1


def setup(device_name):
    """Join the process group when torchrun started us (NCCL on GPUs, gloo on CPUs)."""
    device = torch.device(device_name)
    if "RANK" not in os.environ:
        return Context(rank=0, world_size=1, device=device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        device_id=device if device.type == "cuda" else None,
    )
    return Context(
        rank=dist.get_rank(), world_size=dist.get_world_size(), device=device
    )


def average_over_ranks(tensor, context):
    """The element-wise mean of a tensor over all ranks, as a new float32 tensor on the
    context's device."""
    tensor = tensor.to(context.device, torch.float32, copy=True)
    if context.is_distributed:
        dist.all_reduce(tensor)
        tensor /= context.world_size
    return tensor


def mean_over_ranks(value, context):
    """The mean of a float (or 0-d tensor) over all ranks, as a float."""
    return average_over_ranks(torch.as_tensor(value), context).item()


def any_rank(flag, context):
    """True on every rank when `flag` is true on at least one."""
    if not context.is_distributed:
        return bool(flag)
    tensor = torch.tensor(float(bool(flag)), device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def cleanup(context):
    if context.is_distributed:
        dist.destroy_process_group()
