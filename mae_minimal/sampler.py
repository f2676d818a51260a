"""Reproducible data order and randomness, so that a run resumed mid-epoch continues
exactly.

Two pieces:
  ResumableDistributedSampler: a DistributedSampler (each rank its share of a
    per-epoch shuffle) that can start an epoch part-way through, and that yields
    (epoch, index) pairs;
  SeededItems: a dataset wrapper that fixes each item's random augmentation and
    noise (masking or pixel) by (seed, epoch, index), whichever rank or worker
    process loads it.
Together they make a run independent of where it was stopped, of the number of
data-loading workers, and of how the global batch is split over ranks.
"""

import itertools

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class ResumableDistributedSampler(DistributedSampler):
    """Yields (epoch, index) for this rank, leaving out the first `skip` of the
    epoch."""

    skip = 0

    def start_epoch(self, epoch, skip=0):
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return (
            (self.epoch, index)
            for index in itertools.islice(super().__iter__(), self.skip, None)
        )

    def __len__(self):
        return super().__len__() - self.skip


def seeded_item(dataset, index, seed):
    """dataset[index] with torch's CPU random generator seeded by `seed`, and left as it
    was. (Only the CPU generator: torch.manual_seed would also queue seeds for every
    other device, at ten times the cost of loading a small image.)"""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return dataset[index]


class SeededItems(Dataset):
    """Item (epoch, index) -> (image, label, noise): the image augmented, and its noise
    drawn, from a generator seeded by (seed, epoch, index).

    noise_of(generator=...) -> (1, ...): the masking noise (1, L) of a masking strategy
    (masking.masking_noise), or a denoising autoencoder's pixel noise (1, C, H, W).
    """

    def __init__(self, dataset, noise_of, seed):
        self.dataset, self.noise_of, self.seed = dataset, noise_of, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, epoch_and_index):
        epoch, index = epoch_and_index
        item_seed = int(
            np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
        )
        image, label = seeded_item(self.dataset, index, item_seed)
        noise = self.noise_of(generator=torch.Generator().manual_seed(item_seed))[0]
        return image, label, noise
