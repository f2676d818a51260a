"""Weights to and from Hugging Face transformers' ViTMAEForPreTraining
(transformers >= 5).

The two models compute the same function; they differ in names, and in that transformers
keeps separate query, key and value projections where we keep one fused `qkv` (rows q,
then k, then v). transformers is imported only inside to_hf and from_hf: mae_minimal
does not depend on it.
"""

import re
from functools import partial

import torch
from torch import nn

from mae_minimal.model import MaskedAutoencoderViT

TOP_LEVEL = {
    "cls_token": "vit.embeddings.cls_token",
    "pos_embed": "vit.embeddings.position_embeddings",
    "patch_embed.proj": "vit.embeddings.patch_embeddings.projection",
    "norm": "vit.layernorm",
    "decoder_embed": "decoder.decoder_embed",
    "mask_token": "decoder.mask_token",
    "decoder_pos_embed": "decoder.decoder_pos_embed",
    "decoder_norm": "decoder.decoder_norm",
    "decoder_pred": "decoder.decoder_pred",
}
BLOCK_STACKS = {"blocks": "vit.layers", "decoder_blocks": "decoder.decoder_layers"}
INSIDE_BLOCK = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.o_proj",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
QKV_PARTS = ("attention.q_proj", "attention.k_proj", "attention.v_proj")
OUR_BLOCK_KEY = re.compile(r"^(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)$")
HF_BLOCK_KEY = re.compile(
    r"^(vit\.layers|decoder\.decoder_layers)\.(\d+)\.(.+)\.(weight|bias)$"
)


def split_leaf(key):
    """ "norm.weight" -> ("norm", ".weight"); "cls_token" -> ("cls_token", "")."""
    module, _, leaf = key.rpartition(".")
    return (module, "." + leaf) if leaf in ("weight", "bias") and module else (key, "")


def rename(table, module, key):
    if module not in table:
        raise KeyError(f"{key} has no counterpart in the other model")
    return table[module]


def to_hf_state_dict(state_dict):
    """Our state_dict (official names) -> a ViTMAEForPreTraining state_dict."""
    converted = {}
    for key, value in state_dict.items():
        block = OUR_BLOCK_KEY.match(key)
        if block is None:
            module, leaf = split_leaf(key)
            converted[rename(TOP_LEVEL, module, key) + leaf] = value
            continue
        stack, index, module, leaf = block.groups()
        prefix = f"{BLOCK_STACKS[stack]}.{index}."
        if module == "attn.qkv":
            for part, tensor in zip(QKV_PARTS, value.chunk(3, dim=0), strict=True):
                converted[f"{prefix}{part}.{leaf}"] = tensor
        else:
            converted[f"{prefix}{rename(INSIDE_BLOCK, module, key)}.{leaf}"] = value
    return converted


def from_hf_state_dict(state_dict):
    """A ViTMAEForPreTraining state_dict -> ours (official names), with q, k, v fused
    into qkv."""
    top_level = {hf: ours for ours, hf in TOP_LEVEL.items()}
    stacks = {hf: ours for ours, hf in BLOCK_STACKS.items()}
    inside_block = {hf: ours for ours, hf in INSIDE_BLOCK.items()}
    converted, qkv_parts = {}, {}
    for key, value in state_dict.items():
        block = HF_BLOCK_KEY.match(key)
        if block is None:
            module, leaf = split_leaf(key)
            converted[rename(top_level, module, key) + leaf] = value
            continue
        stack, index, module, leaf = block.groups()
        prefix = f"{stacks[stack]}.{index}."
        if module in QKV_PARTS:
            qkv_parts.setdefault(f"{prefix}attn.qkv.{leaf}", {})[module] = value
        else:
            converted[f"{prefix}{rename(inside_block, module, key)}.{leaf}"] = value
    for key, parts in qkv_parts.items():
        converted[key] = torch.cat([parts[name] for name in QKV_PARTS], dim=0)
    return converted


def hf_config(model, mask_ratio=0.75):
    """The transformers ViTMAEConfig of an MAE of ours."""
    from transformers import ViTMAEConfig

    height, width = model.patch_embed.img_size
    if height != width:
        raise ValueError(
            f"transformers' ViTMAE supports square images only, "
            f"this model takes {height}x{width}"
        )
    return ViTMAEConfig(
        image_size=height,
        patch_size=model.patch_size,
        num_channels=model.patch_embed.in_chans,
        hidden_size=model.cls_token.shape[-1],
        num_hidden_layers=len(model.blocks),
        num_attention_heads=model.blocks[0].attn.num_heads,
        intermediate_size=model.blocks[0].mlp.fc1.out_features,
        decoder_hidden_size=model.decoder_embed.out_features,
        decoder_num_hidden_layers=len(model.decoder_blocks),
        decoder_num_attention_heads=model.decoder_blocks[0].attn.num_heads,
        decoder_intermediate_size=model.decoder_blocks[0].mlp.fc1.out_features,
        layer_norm_eps=model.norm.eps,
        norm_pix_loss=model.norm_pix_loss,
        mask_ratio=mask_ratio,
        qkv_bias=True,
        hidden_act="gelu",
    )


def to_hf(model, mask_ratio=0.75):
    """Our MaskedAutoencoderViT -> an equal transformers ViTMAEForPreTraining (in eval
    mode)."""
    from transformers import ViTMAEForPreTraining

    hf_model = ViTMAEForPreTraining(hf_config(model, mask_ratio))
    hf_model.load_state_dict(to_hf_state_dict(model.state_dict()), strict=True)
    return hf_model.eval()


def from_hf(hf_model):
    """A transformers ViTMAEForPreTraining -> an equal MaskedAutoencoderViT of ours."""
    config = hf_model.config
    mlp_ratio = config.intermediate_size / config.hidden_size
    if config.decoder_intermediate_size / config.decoder_hidden_size != mlp_ratio:
        raise ValueError(
            "the encoder and decoder of this ViTMAE have different MLP ratios; "
            "MAE shares one"
        )
    if config.hidden_act != "gelu" or not config.qkv_bias:
        raise ValueError(
            "only ViTMAE models with GELU activations and qkv biases "
            "have an MAE equivalent"
        )
    model = MaskedAutoencoderViT(
        img_size=config.image_size,
        patch_size=config.patch_size,
        in_chans=config.num_channels,
        embed_dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        decoder_embed_dim=config.decoder_hidden_size,
        decoder_depth=config.decoder_num_hidden_layers,
        decoder_num_heads=config.decoder_num_attention_heads,
        mlp_ratio=mlp_ratio,
        norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps),
        norm_pix_loss=config.norm_pix_loss,
    )
    model.load_state_dict(from_hf_state_dict(hf_model.state_dict()), strict=True)
    return model
