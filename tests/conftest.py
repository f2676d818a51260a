from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mae_minimal import MaskedAutoencoderViT

TINY = dict(
    img_size=32,
    patch_size=8,
    embed_dim=32,
    depth=2,
    num_heads=4,
    decoder_embed_dim=16,
    decoder_depth=1,
    decoder_num_heads=2,
    norm_layer=partial(nn.LayerNorm, eps=1e-6),
)


def make_tiny_mae(**overrides):
    return MaskedAutoencoderViT(**{**TINY, **overrides})


@pytest.fixture
def tiny_mae():
    """tiny_mae(**overrides): an MAE small enough for unit tests, 32x32 images in a 4x4 grid of 8x8 patches."""
    return make_tiny_mae


def make_image_folder(root, classes=("cat", "dog"), per_class=5, size=20):
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size + 4, 3), 40 * label + 10 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


@pytest.fixture
def write_image_folder():
    """write_image_folder(root, classes, per_class, size): class subfolders of small PNG images."""
    return make_image_folder


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
