from functools import partial

import pytest
import torch
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


def tiny_mae(**overrides):
    """An MAE small enough for unit tests: 32x32 images, a 4x4 grid of 8x8 patches."""
    return MaskedAutoencoderViT(**{**TINY, **overrides})


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
