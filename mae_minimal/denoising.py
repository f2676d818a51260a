"""The classical denoising autoencoder (Vincent et al., 2008), made of an MAE's own
modules.

The MAE paper calls itself "a form of denoising autoencoding". Chapter 12 trains both on
the same architecture and budget: `train.py --objective denoise` adds Gaussian noise to
every pixel instead of removing patches. Three things change from the MAE's forward
pass:
  the encoder sees every patch (of the noisy image), in image order;
  the decoder predicts every patch (no mask token is needed: nothing is missing);
  the loss counts every patch, against the clean image.
"""

import torch
from torch import nn


def pixel_noise(shape, batch=1, generator=None):
    """Standard normal noise for `batch` images of shape (C, H, W): (N, C, H, W)."""
    return torch.randn(batch, *shape, generator=generator)


class DenoisingAutoencoder(nn.Module):
    """Wraps a MaskedAutoencoderViT (whose weights it trains) with the denoising
    objective.

    noise_std: the standard deviation of the added noise, in the units of the normalised
    images (1.0 is noise as strong as the images' own variation).
    """

    def __init__(self, mae, noise_std):
        super().__init__()
        if not noise_std > 0:
            raise ValueError(
                f"--dae_noise_std must be a positive number, got {noise_std}"
            )
        self.mae, self.noise_std = mae, noise_std

    def corrupt(self, imgs, eps):
        """imgs, eps: (N, C, H, W), eps standard normal -> the noisy images."""
        return imgs + self.noise_std * eps

    def denoise(self, noisy_imgs):
        """noisy_imgs: (N, C, H, W) -> pred: (N, L, p*p*C), every patch encoded and
        predicted."""
        mae = self.mae
        latent = mae.norm(mae.encode(noisy_imgs))  # (N, 1 + L, D), image order
        batch, length = latent.shape[0], latent.shape[1] - 1
        in_image_order = torch.arange(length, device=latent.device).expand(batch, -1)
        return mae.forward_decoder(
            latent, in_image_order, latent.new_zeros(batch, length)
        )

    def forward(self, imgs, eps):
        """imgs: (N, C, H, W) clean, eps: (N, C, H, W) standard normal -> loss (mean
        squared error of every predicted patch against the clean one, in the MAE's loss
        target) and pred."""
        pred = self.denoise(self.corrupt(imgs, eps))
        return ((pred - self.mae.loss_target(imgs)) ** 2).mean(), pred
