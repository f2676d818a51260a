"""Pictures of what the MAE does: original, masked input, reconstruction, and the
reconstruction with the visible patches pasted back, one column per image (and, for a denoising
autoencoder, original, noisy input and output)."""

import os

import torch
from torchvision.utils import make_grid, save_image

from mae_minimal.data import IMAGENET_MEAN, IMAGENET_STD, denormalize


@torch.no_grad()
def reconstruction_rows(model, imgs, mask_ratio=0.75, noise=None, normalization=(IMAGENET_MEAN, IMAGENET_STD)):
    """imgs: (N, C, H, W) normalised with normalization = (mean, std) -> (4, N, C, H, W) in [0, 1]:
    original, masked (removed patches grey), reconstruction, reconstruction with the visible
    patches pasted back.

    A norm_pix_loss model predicts each patch normalised by its own mean and variance; to show it,
    those statistics are taken from the true patch, which leaks a little of the removed pixels
    (their mean colour and contrast) into the picture.
    """
    _, pred, mask = model(imgs, mask_ratio, noise)
    if model.norm_pix_loss:
        target = model.patchify(imgs)
        pred = pred * (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
    removed = model.unpatchify(mask.unsqueeze(-1).expand_as(pred).to(pred.dtype))  # (N, C, H, W), 1 = removed
    original = denormalize(imgs, *normalization)
    reconstruction = denormalize(model.unpatchify(pred).float(), *normalization)
    masked = original * (1 - removed) + 0.5 * removed
    pasted = original * (1 - removed) + reconstruction * removed
    return torch.stack([original, masked, reconstruction, pasted])


@torch.no_grad()
def denoising_rows(denoiser, imgs, eps, normalization=(IMAGENET_MEAN, IMAGENET_STD)):
    """imgs, eps: (N, C, H, W), imgs normalised, eps standard normal -> (3, N, C, H, W) in [0, 1]:
    original, noisy input (clamped for display), and the DenoisingAutoencoder's output."""
    noisy = denoiser.corrupt(imgs, eps)
    output = denoiser.mae.unpatchify(denoiser.denoise(noisy)).float()
    return torch.stack([denormalize(x, *normalization) for x in (imgs, noisy, output)])


def save_reconstruction_grid(rows, path):
    """Save (R, N, C, H, W) rows as one PNG, written whole (a temporary file, then a rename)."""
    grid = make_grid(rows.flatten(0, 1).cpu(), nrow=rows.shape[1], padding=2, pad_value=1.0)
    temporary = f"{path}.tmp.png"
    save_image(grid, temporary)
    os.replace(temporary, path)
