"""Pictures of what the MAE does: original, masked input, reconstruction, and the
reconstruction with the visible patches pasted back, one column per image (and, for a
denoising autoencoder, original, noisy input and output)."""

import os

import torch
from torchvision.utils import make_grid, save_image

from mae_minimal.data import IMAGENET_MEAN, IMAGENET_STD, denormalize
from mae_minimal.patches import unpatchify


def removed_pixels(mask, patch_size, grid_size, channels=3):
    """mask: (N, L), 1 = removed -> (N, C, H, W), 1 on the pixels of removed patches."""
    patch_values = patch_size * patch_size * channels
    values = mask.float()[..., None].expand(-1, -1, patch_values)  # (N, L, p*p*C)
    return unpatchify(values, patch_size, grid_size, channels)


@torch.no_grad()
def reconstruction_rows(
    model,
    imgs,
    mask_ratio=0.75,
    noise=None,
    normalization=(IMAGENET_MEAN, IMAGENET_STD),
):
    """imgs: (N, C, H, W) normalised with normalization = (mean, std) -> (4, N, C, H, W)
    in [0, 1]: original, masked (removed patches grey), reconstruction, reconstruction
    with the visible patches pasted back.

    A norm_pix_loss model predicts each patch normalised by its own mean and variance;
    to show it, those statistics are taken from the true patch, which leaks a little of
    the removed pixels (their mean colour and contrast) into the picture."""
    _, pred, mask = model(imgs, mask_ratio, noise)
    if model.norm_pix_loss:
        target = model.patchify(imgs)
        std = (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        pred = pred * std + target.mean(dim=-1, keepdim=True)
    channels = model.patch_embed.in_chans
    removed = removed_pixels(mask, model.patch_size, model.grid_size, channels)
    original = denormalize(imgs, *normalization)
    reconstruction = denormalize(model.unpatchify(pred).float(), *normalization)
    masked = original * (1 - removed) + 0.5 * removed
    pasted = original * (1 - removed) + reconstruction * removed
    return torch.stack([original, masked, reconstruction, pasted])


@torch.no_grad()
def denoising_rows(denoiser, imgs, eps, normalization=(IMAGENET_MEAN, IMAGENET_STD)):
    """imgs, eps: (N, C, H, W), imgs normalised, eps standard normal -> (3, N, C, H, W)
    in [0, 1]: original, noisy input (clamped for display), and the
    DenoisingAutoencoder's output."""
    noisy = denoiser.corrupt(imgs, eps)
    output = denoiser.mae.unpatchify(denoiser.denoise(noisy)).float()
    return torch.stack([denormalize(x, *normalization) for x in (imgs, noisy, output)])


def save_reconstruction_grid(rows, path):
    """Save (R, N, C, H, W) rows as one PNG, written whole (a temporary file, then a
    rename)."""
    grid = make_grid(
        rows.flatten(0, 1).cpu(), nrow=rows.shape[1], padding=2, pad_value=1.0
    )
    temporary = f"{path}.tmp.png"
    save_image(grid, temporary)
    os.replace(temporary, path)


ARCHITECTURE_STAGES = ("patches", "masking", "encoder", "decoder", "loss")
TOKEN_COLOURS = {
    "cls token": "#f2c14e",
    "visible patch": "#4c78a8",
    "mask token": "#bdbdbd",
    "removed patch, scored": "#e45756",
}
KEPT_AT_LOSS = "#c6d4e6"  # a visible patch, which the loss leaves out


@torch.no_grad()
def architecture_shapes(model, mask_ratio=0.75):
    """What one forward pass of `model` on a (1, C, H, W) image does, as numbers for a
    picture: the image and grid size, the patch length p*p*C, the token counts before
    and after masking, the mask (L values, 1 = removed), and the width and depth of the
    encoder and the decoder, all read from the model and from its outputs: latent
    (1, 1 + L_kept, D), pred (1, L, p*p*C) and mask (1, L).
    """
    channels = model.patch_embed.in_chans
    rows, cols = model.grid_size
    p = model.patch_size
    imgs = torch.zeros(1, channels, rows * p, cols * p, device=model.cls_token.device)
    latent, mask, ids_restore = model.forward_encoder(imgs, mask_ratio)
    pred = model.forward_decoder(latent, ids_restore, mask)
    return dict(
        image=(rows * p, cols * p, channels),
        grid=(rows, cols),
        patch_length=pred.shape[2],
        num_patches=pred.shape[1],
        encoder_tokens=latent.shape[1],
        removed=int(mask.sum()),
        kept=int((mask == 0).sum()),
        mask_row=mask[0].tolist(),
        width=latent.shape[2],
        depth=len(model.blocks),
        decoder_width=model.decoder_embed.out_features,
        decoder_depth=len(model.decoder_blocks),
        decoder_tokens=pred.shape[1] + 1,
    )


def architecture_panels(s):
    """The figure's columns from architecture_shapes' numbers: (stage, title, lines of
    details) for each."""
    rows, cols = s["grid"]

    def blocks(depth):
        return f"{depth} block" + ("s" if depth != 1 else "")

    image = "x".join(map(str, s["image"]))
    return [
        ("patches", "image", [image, f"{rows}x{cols} patches"]),
        ("patches", "patch tokens",
         [f"{s['num_patches']} tokens", f"{s['patch_length']} -> {s['width']}"]),
        ("masking", "random masking",
         [f"keep {s['kept']} of {s['num_patches']}", "+ cls token"]),
        ("encoder", "encoder",
         [f"{blocks(s['depth'])}, {s['width']}", f"on {s['encoder_tokens']} tokens"]),
        ("decoder", "mask tokens",
         [f"+ {s['removed']} mask tokens", f"unshuffle, {s['decoder_width']}"]),
        ("decoder", "decoder", [f"{blocks(s['decoder_depth'])}, {s['decoder_width']}",
                                f"on {s['decoder_tokens']} tokens"]),
        ("loss", "loss", [f"MSE on the {s['removed']}", "removed patches"]),
    ]  # fmt: skip


def draw_patch_grid(ax, x, colours, grid, alpha):
    """The image as its grid of patches, centred at (x, 0.5), one colour per patch."""
    from matplotlib.patches import Rectangle

    rows, cols = grid
    side = min(0.8 / cols, 0.8 / rows)
    for index, colour in enumerate(colours):
        r, c = divmod(index, cols)
        left, top = x - cols * side / 2 + c * side, 0.5 + rows * side / 2 - r * side
        ax.add_patch(Rectangle((left, top - side), side, side, facecolor=colour,
                               edgecolor="white", linewidth=0.5,
                               alpha=alpha))  # fmt: skip


def draw_token_stack(ax, x, kinds, width, tall, alpha):
    """A sequence of tokens as a stack of bars centred at (x, 0.5), one bar per token,
    a sequence of `tall` tokens filling the height."""
    from matplotlib.patches import Rectangle

    height = 1.0 / tall
    top = 0.5 + len(kinds) * height / 2
    for index, kind in enumerate(kinds):
        corner = (x - width / 2, top - (index + 1) * height)
        ax.add_patch(Rectangle(corner, width, height, facecolor=TOKEN_COLOURS[kind],
                               edgecolor="white", linewidth=0.3,
                               alpha=alpha))  # fmt: skip


def draw_blocks(ax, x, tokens, tall, alpha):
    """A stack of transformer blocks, as tall as the sequence it runs on."""
    from matplotlib.patches import Rectangle

    height = max(tokens / tall, 0.12)
    ax.add_patch(Rectangle((x - 0.32, 0.5 - height / 2), 0.64, height,
                           facecolor="#72b7b2", edgecolor="black", linewidth=0.8,
                           alpha=alpha))  # fmt: skip


def architecture_drawings(ax, s):
    """For each column of architecture_panels, a function (x, alpha) that draws it."""
    widest = max(s["patch_length"], s["width"], s["decoder_width"])
    encoder_bar, decoder_bar = (0.55 * (w / widest) ** 0.5
                                for w in (s["width"], s["decoder_width"]))  # fmt: skip
    tall = s["decoder_tokens"]  # the longest sequence fills the height
    kept_flags = [m == 0 for m in s["mask_row"]]
    patches = ["visible patch"] * s["num_patches"]
    visible = ["cls token"] + ["visible patch"] * (s["encoder_tokens"] - 1)
    in_order = ["cls token"] + [
        "visible patch" if keep else "mask token" for keep in kept_flags
    ]
    scored = [KEPT_AT_LOSS if keep else TOKEN_COLOURS["removed patch, scored"]
              for keep in kept_flags]  # fmt: skip
    every_patch = [TOKEN_COLOURS["visible patch"]] * s["num_patches"]
    return [
        lambda x, a: draw_patch_grid(ax, x, every_patch, s["grid"], a),
        lambda x, a: draw_token_stack(ax, x, patches, encoder_bar, tall, a),
        lambda x, a: draw_token_stack(ax, x, visible, encoder_bar, tall, a),
        lambda x, a: draw_blocks(ax, x, s["encoder_tokens"], tall, a),
        lambda x, a: draw_token_stack(ax, x, in_order, decoder_bar, tall, a),
        lambda x, a: draw_blocks(ax, x, s["decoder_tokens"], tall, a),
        lambda x, a: draw_patch_grid(ax, x, scored, s["grid"], a),
    ]


def architecture_figure(model, highlight=None, mask_ratio=0.75, details=True):
    """Draw the MAE of `model` as the paper's Figure 1 does, from its real shapes: image
    -> patches -> random masking -> encoder on the visible tokens -> mask tokens and
    unshuffle -> decoder -> loss on the removed patches. Token stacks are drawn to
    scale: one bar per token, as wide as the token (square root of its width), so the
    encoder's short stack and the decoder's tall one show the asymmetry.

    highlight: one of ARCHITECTURE_STAGES, in colour with the others faded; None: all.
    details: False leaves out the shape lines under each stage (a smaller figure).
    Returns the matplotlib Figure, not shown.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Patch

    if highlight not in (None, *ARCHITECTURE_STAGES):
        raise ValueError(
            f"highlight must be None or one of {ARCHITECTURE_STAGES}, got {highlight!r}"
        )
    s = architecture_shapes(model, mask_ratio)
    panels = architecture_panels(s)
    fig, ax = plt.subplots(figsize=(8.4, 3.1 if details else 2.4))
    ax.set_xlim(-0.5, len(panels) - 0.5)
    ax.set_ylim(-0.72 if details else -0.3, 1.3)
    ax.axis("off")
    drawings = architecture_drawings(ax, s)
    columns = zip(panels, drawings, strict=True)
    for x, ((stage, title, lines), draw) in enumerate(columns):
        a = 1.0 if highlight in (None, stage) else 0.25
        draw(x, a)
        weight = "bold" if highlight == stage else "normal"
        ax.text(x, 1.2, title, ha="center", va="center", fontsize=10, fontweight=weight,
                alpha=max(a, 0.5))  # fmt: skip
        if details:
            ax.text(x, -0.1, "\n".join(lines), ha="center", va="top", fontsize=9,
                    alpha=max(a, 0.5), linespacing=1.4)  # fmt: skip
        if x:
            ax.add_patch(FancyArrowPatch((x - 0.62, 0.5), (x - 0.38, 0.5),
                                         arrowstyle="-|>", mutation_scale=10,
                                         color="black"))  # fmt: skip
    legend = [Patch(facecolor=c, label=kind) for kind, c in TOKEN_COLOURS.items()]
    ax.legend(handles=legend, loc="lower center", ncol=4, fontsize=9, frameon=False,
              bbox_to_anchor=(0.5, -0.02), handlelength=1.2,
              columnspacing=1.5)  # fmt: skip
    fig.tight_layout(pad=0.3)
    return fig
