"""mae_minimal: Masked Autoencoders (He et al., 2022) in a few small, readable files.

Conventions shared by every file: images (N, C, H, W); patches (N, L, p*p*C) with pixels
in (p, q, c) order; mask (N, L) with 1 = removed, 0 = kept. Masking strategies are noise
(N, L): the encoder keeps the lowest-noise patches.
"""

from mae_minimal.checkpoint import (
    describe_architecture,
    load_checkpoint,
    load_model,
    read_state_dict,
)
from mae_minimal.classifier import ViTClassifier
from mae_minimal.factories import (
    create_model,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_mini_patch4_32px,
    mae_vit_mini_patch8_64px,
    mae_vit_nano_patch4_28px,
    vit_base_patch16,
    vit_huge_patch14,
    vit_large_patch16,
    vit_mini_patch4_32px,
    vit_mini_patch8_64px,
    vit_nano_patch4_28px,
)
from mae_minimal.masking import (
    block_masking_noise,
    grid_masking_noise,
    mask_to_noise,
    masking_noise,
    random_masking,
    random_noise,
)
from mae_minimal.model import MaskedAutoencoderViT
from mae_minimal.patches import patchify, unpatchify
from mae_minimal.pos_embed import get_2d_sincos_pos_embed, resize_pos_embed
from mae_minimal.pretrain import PretrainConfig, pretrain, train_step

__all__ = [
    "MaskedAutoencoderViT",
    "PretrainConfig",
    "ViTClassifier",
    "block_masking_noise",
    "create_model",
    "describe_architecture",
    "get_2d_sincos_pos_embed",
    "grid_masking_noise",
    "load_checkpoint",
    "load_model",
    "mae_vit_base_patch16",
    "mae_vit_huge_patch14",
    "mae_vit_large_patch16",
    "mae_vit_mini_patch4_32px",
    "mae_vit_mini_patch8_64px",
    "mae_vit_nano_patch4_28px",
    "mask_to_noise",
    "masking_noise",
    "patchify",
    "pretrain",
    "random_masking",
    "random_noise",
    "read_state_dict",
    "resize_pos_embed",
    "train_step",
    "unpatchify",
    "vit_base_patch16",
    "vit_huge_patch14",
    "vit_large_patch16",
    "vit_mini_patch4_32px",
    "vit_mini_patch8_64px",
    "vit_nano_patch4_28px",
]
