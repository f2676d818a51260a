"""Checkpoints: loading the official `.pth` files, our own or any state_dict; saving
atomically.

What loads into what:
  - an MAE (MaskedAutoencoderViT) needs a full MAE checkpoint, such as the official
    `mae_visualize_vit_*.pth`; the `mae_pretrain_vit_*.pth` files hold only the encoder;
  - a ViTClassifier takes a full MAE or an encoder-only checkpoint (the decoder is
    dropped, the head and fc_norm start fresh) or a fine-tuned classifier (a head for
    another number of classes is dropped too).
Positional embeddings are resized when the checkpoint was trained at another patch grid:
its (rows, cols) is read off its model_config, or, for files without one (the official
ones), taken as square. Any other mismatch is an error that names it.

Checkpoints written by mae_minimal also carry the model's configuration ("model_config":
its class and constructor arguments), so `load_model(path)` rebuilds the model without
being told which.
"""

import os
import pickle
import re
import zipfile
from functools import partial
from pathlib import Path

import torch
from torch import nn

from mae_minimal.classifier import NEW_HEAD_KEYS, ViTClassifier
from mae_minimal.model import MaskedAutoencoderViT
from mae_minimal.patches import grid_shape
from mae_minimal.pos_embed import resize_pos_embed

# what a classifier leaves out of an MAE: the decoder, its mask token, and the encoder's
# own mask token of the encoder_sees_mask_tokens baseline
PRETRAINING_ONLY_KEY = re.compile(r"^(decoder_|mask_token$|encoder_mask_token$)")
MODEL_CLASSES = {cls.__name__: cls for cls in (MaskedAutoencoderViT, ViTClassifier)}


def read_checkpoint(path, weights_only=True):
    """The object a .pth file holds, or one clear error (missing, truncated, not a
    checkpoint).

    weights_only=True refuses to run pickled code: pass False only for files you trust
    that hold other Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as error:
        if not zipfile.is_zipfile(path):  # what torch.save writes
            raise ValueError(
                f"{path} is not a readable checkpoint "
                f"(truncated or another kind of file)"
            ) from None
        if "Weights only load failed" not in str(error):
            raise ValueError(
                f"{path} is not a readable checkpoint ({str(error).splitlines()[0]})"
            ) from None
        raise ValueError(
            f"{path} holds more than tensors; if you trust the file, "
            f"load it with weights_only=False"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable checkpoint (truncated or another kind of file: "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__})"
        ) from None


def read_state_dict(source, weights_only=True):
    """source: a path to a .pth file, or a loaded object -> the state_dict it holds.

    Official and mae_minimal checkpoints keep the weights under "model"; a bare
    state_dict is accepted too.
    """
    if isinstance(source, (str, Path)):
        source = read_checkpoint(source, weights_only)
    for key in ("model", "state_dict"):
        if isinstance(source, dict) and key in source and isinstance(source[key], dict):
            return source[key]
    return source


def describe_architecture(state_dict):
    """The sizes a state_dict implies:
    {"patch_size": 16, "embed_dim": 768, "depth": 12, ...}."""
    sizes = {}
    if "patch_embed.proj.weight" in state_dict:
        embed_dim, in_chans, patch_size, _ = state_dict["patch_embed.proj.weight"].shape
        sizes.update(embed_dim=embed_dim, in_chans=in_chans, patch_size=patch_size)
    if "blocks.0.mlp.fc1.weight" in state_dict:
        sizes["mlp_hidden_dim"] = state_dict["blocks.0.mlp.fc1.weight"].shape[0]
    for prefix, name in (("blocks", "depth"), ("decoder_blocks", "decoder_depth")):
        indices = {
            int(k.split(".")[1]) for k in state_dict if k.startswith(prefix + ".")
        }
        if indices:
            sizes[name] = max(indices) + 1
    if "decoder_embed.weight" in state_dict:
        sizes["decoder_embed_dim"] = state_dict["decoder_embed.weight"].shape[0]
    if "decoder_pred.weight" in state_dict:
        sizes["decoder_pred_dim"] = state_dict["decoder_pred.weight"].shape[0]
    return sizes


def check_same_architecture(checkpoint, model_state):
    theirs, ours = describe_architecture(checkpoint), describe_architecture(model_state)
    different = [name for name in ours if name in theirs and theirs[name] != ours[name]]
    if different:
        listing = ", ".join(
            f"{name}: checkpoint {theirs[name]}, model {ours[name]}"
            for name in different
        )
        raise ValueError(
            f"the checkpoint is for another architecture ({listing}); build the model "
            f"with the checkpoint's sizes, for example with the matching mae_vit_* or "
            f"vit_* factory"
        )


def checkpoint_grid(checkpoint, name, num_patches):
    """The (rows, cols) of the patch grid of positional table `name` (num_patches
    positions) in a checkpoint: the one its model_config says, else the square one (as
    in the official files)."""
    if isinstance(checkpoint, dict) and "model_config" in checkpoint:
        kwargs = checkpoint["model_config"]["kwargs"]
        height, width = (
            (kwargs["img_size"],) * 2
            if isinstance(kwargs["img_size"], int)
            else kwargs["img_size"]
        )
        return grid_shape((height, width), kwargs["patch_size"])
    side = round(num_patches**0.5)
    if side * side != num_patches:
        raise ValueError(
            f"the checkpoint's {name} has {num_patches} positions, not a square grid, "
            f"and the checkpoint does not say its (rows, cols): load the whole "
            f"checkpoint file (it carries model_config), not only its state_dict"
        )
    return side, side


def classifier_entries(state_dict, model_state):
    """The entries of a checkpoint that a ViTClassifier takes: not the decoder or the
    mask token, not the final norm when it pools globally (it has fc_norm instead), not
    a head made for another number of classes."""
    kept = {k: v for k, v in state_dict.items() if not PRETRAINING_ONLY_KEY.match(k)}
    if "norm.weight" not in model_state:
        kept = {k: v for k, v in kept.items() if not k.startswith("norm.")}
    head = kept.get("head.weight")
    if head is not None and head.shape != model_state["head.weight"].shape:
        kept = {k: v for k, v in kept.items() if not k.startswith("head.")}
    return kept


def load_checkpoint(model, source, weights_only=True):
    """Load `source` (a path or a state_dict, see read_state_dict) into `model`,
    checked.

    Returns the model.
    """
    checkpoint = (
        read_checkpoint(source, weights_only)
        if isinstance(source, (str, Path))
        else source
    )
    state_dict = dict(read_state_dict(checkpoint))
    model_state = model.state_dict()
    check_same_architecture(state_dict, model_state)

    for name in ("pos_embed", "decoder_pos_embed"):
        if name in state_dict and name in model_state:
            grid = checkpoint_grid(checkpoint, name, state_dict[name].shape[1] - 1)
            state_dict[name] = resize_pos_embed(state_dict[name], grid, model.grid_size)

    is_classifier = "head.weight" in model_state
    if is_classifier:
        state_dict = classifier_entries(state_dict, model_state)

    for key, value in state_dict.items():
        if key in model_state and value.shape != model_state[key].shape:
            raise ValueError(
                f"{key} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(model_state[key].shape)} in the model"
            )
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    if not is_classifier and any(PRETRAINING_ONLY_KEY.match(k) for k in missing):
        raise ValueError(
            "the checkpoint holds only an encoder (like the official "
            "mae_pretrain_vit_*.pth), but an MAE needs its decoder too: load it into a "
            "ViTClassifier, or use a full MAE checkpoint (the official "
            "mae_visualize_vit_*.pth) to see reconstructions"
        )
    if is_classifier:
        missing = [k for k in missing if k not in NEW_HEAD_KEYS]
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint does not fit the model: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    model.load_state_dict(state_dict, strict=not is_classifier)
    return model


def model_config(model):
    """How to rebuild `model` (an MAE or a classifier): {"class": name, "kwargs":
    constructor arguments}, the norm layer written as its LayerNorm eps so that the
    config holds only plain values."""
    kwargs = dict(model.config)
    norm = kwargs.pop("norm_layer")(1)
    if type(norm) is not nn.LayerNorm:
        raise ValueError(
            f"only LayerNorm norm layers can be written in a checkpoint's config, "
            f"not {type(norm)}"
        )
    return {
        "class": type(model).__name__,
        "kwargs": {**kwargs, "layer_norm_eps": norm.eps},
    }


ENCODER_ARGS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                "mlp_ratio")  # fmt: skip


def encoder_kwargs(config):
    """The encoder's constructor arguments (ViTEncoder's) in a model_config."""
    kwargs = config["kwargs"]
    return {
        **{name: kwargs[name] for name in ENCODER_ARGS},
        "norm_layer": partial(nn.LayerNorm, eps=kwargs["layer_norm_eps"]),
    }


def build_model(config):
    """The model that model_config describes, freshly initialised."""
    if not isinstance(config, dict) or config.get("class") not in MODEL_CLASSES:
        raise ValueError(f"not a model configuration: {config!r}")
    kwargs = dict(config["kwargs"])
    kwargs["norm_layer"] = partial(nn.LayerNorm, eps=kwargs.pop("layer_norm_eps"))
    return MODEL_CLASSES[config["class"]](**kwargs)


def load_model(source):
    """The model, with its weights, of a checkpoint written by mae_minimal (train.py,
    evaluate.py, pretrain or a reference run): source is a path or a loaded
    checkpoint."""
    checkpoint = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint:
        raise ValueError(
            f"{source if isinstance(source, (str, Path)) else 'the checkpoint'} does "
            f"not say which model it holds (an official or older checkpoint?): build "
            f"the model with its factory, then load_checkpoint"
        )
    model = build_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    return model


def save_checkpoint(state, path):
    """torch.save(state, path) written whole or not at all: a temporary file, synced to
    disk, then renamed over `path`, so that a kill mid-write leaves the previous
    checkpoint intact, and a failed write (a full disk) leaves nothing behind."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        try:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        except BaseException:
            temporary.unlink()
            raise
    os.replace(temporary, path)
