"""Named model sizes: the official ones, and small ones that train on a CPU.

Each encoder size is written once, in ENCODER_SIZES, and used by both the MAE factories (with the
paper's default decoder: 8 blocks of width 512) and the classifier factories.
"""

from functools import partial

from torch import nn

from mae_minimal.classifier import ViTClassifier
from mae_minimal.model import MaskedAutoencoderViT

ENCODER_SIZES = {
    "base_patch16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "large_patch16": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    "huge_patch14": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
    # ViT-Tiny's width at half its depth, for 32x32 images (CIFAR) and 64x64 crops: 64 patches each.
    "mini_patch4_32px": dict(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3),
    "mini_patch8_64px": dict(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3),
}
PAPER_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)
MINI_DECODER = dict(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
LAYER_NORM = partial(nn.LayerNorm, eps=1e-6)


def _mae(size, decoder, **kwargs):
    return MaskedAutoencoderViT(**{**ENCODER_SIZES[size], **decoder, "norm_layer": LAYER_NORM, **kwargs})


def _classifier(size, **kwargs):
    return ViTClassifier(**{**ENCODER_SIZES[size], "norm_layer": LAYER_NORM, **kwargs})


def mae_vit_base_patch16(**kwargs):
    return _mae("base_patch16", PAPER_DECODER, **kwargs)


def mae_vit_large_patch16(**kwargs):
    return _mae("large_patch16", PAPER_DECODER, **kwargs)


def mae_vit_huge_patch14(**kwargs):
    return _mae("huge_patch14", PAPER_DECODER, **kwargs)


def mae_vit_mini_patch4_32px(**kwargs):
    return _mae("mini_patch4_32px", MINI_DECODER, **kwargs)


def mae_vit_mini_patch8_64px(**kwargs):
    return _mae("mini_patch8_64px", MINI_DECODER, **kwargs)


def vit_base_patch16(**kwargs):
    return _classifier("base_patch16", **kwargs)


def vit_large_patch16(**kwargs):
    return _classifier("large_patch16", **kwargs)


def vit_huge_patch14(**kwargs):
    return _classifier("huge_patch14", **kwargs)


def vit_mini_patch4_32px(**kwargs):
    return _classifier("mini_patch4_32px", **kwargs)


def vit_mini_patch8_64px(**kwargs):
    return _classifier("mini_patch8_64px", **kwargs)
