"""Named model sizes: the official ones, and small ones that train on a CPU.

One table, MODELS, names every model: an encoder size and, for an MAE, its decoder.
`create_model` builds any of them; the official factory names (mae_vit_base_patch16,
vit_base_patch16, ...) stay importable as functions.
"""

from functools import partial

from torch import nn

from mae_minimal.classifier import ViTClassifier
from mae_minimal.model import MaskedAutoencoderViT

BASE = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
LARGE = dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16)
HUGE = dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16)
# ViT-Tiny's width at half its depth, for 32x32 images (CIFAR) and 64x64 crops:
# 64 patches each.
MINI_32PX = dict(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3)
MINI_64PX = dict(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3)
# The book's model: 28x28 grey images (Fashion-MNIST) in 49 patches of 4x4,
# small enough for a CPU.
NANO_28PX = dict(
    img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=4, num_heads=4
)
# Half and twice its width (heads of 32 channels each), for chapter 8's
# scaling experiment.
PICO_28PX = {**NANO_28PX, "embed_dim": 64, "num_heads": 2}
MICRO_28PX = {**NANO_28PX, "embed_dim": 256, "num_heads": 8}
PAPER_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)
MINI_DECODER = dict(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
NANO_DECODER = dict(decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4)
LAYER_NORM = partial(nn.LayerNorm, eps=1e-6)

MAE_MODELS = {
    "mae_vit_base_patch16": {**BASE, **PAPER_DECODER},
    "mae_vit_large_patch16": {**LARGE, **PAPER_DECODER},
    "mae_vit_huge_patch14": {**HUGE, **PAPER_DECODER},
    "mae_vit_mini_patch4_32px": {**MINI_32PX, **MINI_DECODER},
    "mae_vit_mini_patch8_64px": {**MINI_64PX, **MINI_DECODER},
    "mae_vit_nano_patch4_28px": {**NANO_28PX, **NANO_DECODER},
    "mae_vit_pico_patch4_28px": {**PICO_28PX, **NANO_DECODER},
    "mae_vit_micro_patch4_28px": {**MICRO_28PX, **NANO_DECODER},
}
CLASSIFIERS = {
    "vit_base_patch16": BASE,
    "vit_large_patch16": LARGE,
    "vit_huge_patch14": HUGE,
    "vit_mini_patch4_32px": MINI_32PX,
    "vit_mini_patch8_64px": MINI_64PX,
    "vit_nano_patch4_28px": NANO_28PX,
    "vit_pico_patch4_28px": PICO_28PX,
    "vit_micro_patch4_28px": MICRO_28PX,
}


def create_model(name, **kwargs):
    """The model called `name` (a key of MAE_MODELS or CLASSIFIERS); kwargs override its
    sizes."""
    if name in MAE_MODELS:
        return MaskedAutoencoderViT(
            **{**MAE_MODELS[name], "norm_layer": LAYER_NORM, **kwargs}
        )
    if name in CLASSIFIERS:
        return ViTClassifier(
            **{**CLASSIFIERS[name], "norm_layer": LAYER_NORM, **kwargs}
        )
    raise ValueError(
        f"unknown model {name!r}; "
        f"choose one of {', '.join([*MAE_MODELS, *CLASSIFIERS])}"
    )


def mae_vit_base_patch16(**kwargs):
    return create_model("mae_vit_base_patch16", **kwargs)


def mae_vit_large_patch16(**kwargs):
    return create_model("mae_vit_large_patch16", **kwargs)


def mae_vit_huge_patch14(**kwargs):
    return create_model("mae_vit_huge_patch14", **kwargs)


def mae_vit_mini_patch4_32px(**kwargs):
    return create_model("mae_vit_mini_patch4_32px", **kwargs)


def mae_vit_mini_patch8_64px(**kwargs):
    return create_model("mae_vit_mini_patch8_64px", **kwargs)


def vit_base_patch16(**kwargs):
    return create_model("vit_base_patch16", **kwargs)


def vit_large_patch16(**kwargs):
    return create_model("vit_large_patch16", **kwargs)


def vit_huge_patch14(**kwargs):
    return create_model("vit_huge_patch14", **kwargs)


def vit_mini_patch4_32px(**kwargs):
    return create_model("vit_mini_patch4_32px", **kwargs)


def vit_mini_patch8_64px(**kwargs):
    return create_model("vit_mini_patch8_64px", **kwargs)


def mae_vit_nano_patch4_28px(**kwargs):
    return create_model("mae_vit_nano_patch4_28px", **kwargs)


def vit_nano_patch4_28px(**kwargs):
    return create_model("vit_nano_patch4_28px", **kwargs)
