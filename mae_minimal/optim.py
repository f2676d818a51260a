"""The optimiser's parameter groups and the learning-rate schedule, shared by
pretraining, linear probing and fine-tuning.

Each group carries an "lr_scale"; at every step the loop sets
lr = schedule(step) * lr_scale.
"""

import math

NO_WEIGHT_DECAY = ("cls_token", "pos_embed", "mask_token", "encoder_mask_token")


def layer_id(name, depth):
    """The depth of a parameter in the ViT: 0 for the embeddings, i + 1 for blocks.i,
    depth + 1 above."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(model, weight_decay, layer_decay=None):
    """AdamW groups: no weight decay on 1-D parameters (norms, biases) and tokens, as
    the official code; with layer_decay, layer l of L gets
    lr_scale = layer_decay ** (L + 1 - l) (fine-tuning)."""
    depth = len(model.blocks) if layer_decay is not None else 0
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = 0.0 if parameter.ndim == 1 or name in NO_WEIGHT_DECAY else weight_decay
        layer = layer_id(name, depth) if layer_decay is not None else 0
        scale = layer_decay ** (depth + 1 - layer) if layer_decay is not None else 1.0
        group = groups.setdefault(
            (layer, decay), {"params": [], "weight_decay": decay, "lr_scale": scale}
        )
        group["params"].append(parameter)
    return list(groups.values())


def lr_at(step, total_steps, warmup_steps, lr, min_lr):
    """Linear warmup from 0 to lr over warmup_steps, then a half-cosine from lr down to
    min_lr."""
    if step < warmup_steps:
        return lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
