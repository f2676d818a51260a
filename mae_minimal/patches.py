"""Images as sequences of patches.

An image of H x W pixels cut into p x p patches becomes a sequence of L = (H/p) * (W/p)
patches, read row by row. Inside a patch the pixels are flattened in (p, q, c) order:
row inside the patch, column inside the patch, then channel. That is the official MAE
order, so the official `decoder_pred` weights predict pixels in the order `patchify`
produces them.
"""

from einops import rearrange
from torch import nn


def grid_shape(image_size, patch_size):
    """The (rows, cols) of patches of an image of `image_size` = (H, W) pixels,
    checked."""
    height, width = image_size
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the patch size "
            f"{patch_size}: resize or crop the images to a multiple of {patch_size} "
            f"pixels on each side"
        )
    return height // patch_size, width // patch_size


def patchify(imgs, patch_size):
    """imgs: (N, C, H, W) -> patches: (N, L, p*p*C), pixels in (p, q, c) order."""
    grid_shape(imgs.shape[-2:], patch_size)
    return rearrange(
        imgs, "n c (h p) (w q) -> n (h w) (p q c)", p=patch_size, q=patch_size
    )


def unpatchify(patches, patch_size, grid_size, channels=3):
    """patches: (N, L, p*p*C) -> imgs: (N, C, H, W), with grid_size = (H/p, W/p)."""
    rows, cols = grid_size
    if (
        patches.shape[1] != rows * cols
        or patches.shape[2] != patch_size * patch_size * channels
    ):
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not fit a {rows}x{cols} grid "
            f"of {patch_size}x{patch_size} patches with {channels} channels"
        )
    return rearrange(patches, "n (h w) (p q c) -> n c (h p) (w q)",
                     h=rows, w=cols, p=patch_size, q=patch_size)  # fmt: skip


class PatchEmbed(nn.Module):
    """A linear map of each flattened patch to a token, written as a strided
    convolution.

    A convolution with kernel size and stride p applies one weight matrix to each p x p
    patch independently: exactly a linear layer on the patches, computed without copying
    them out.

    imgs: (N, C, H, W) -> tokens: (N, L, D)
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.img_size = (
            (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        )
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = grid_shape(self.img_size, patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=patch_size
        )

    def check_images(self, imgs):
        """Raise a clear error unless imgs is a (N, in_chans, H, W) batch of the size
        built for."""
        if imgs.ndim != 4 or imgs.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (N, {self.in_chans}, H, W), "
                f"got {tuple(imgs.shape)}"
            )
        if tuple(imgs.shape[-2:]) != self.img_size:
            height, width = imgs.shape[-2:]
            grid_shape((height, width), self.patch_size)
            raise ValueError(
                f"images are {height}x{width} but the model was built for "
                f"{self.img_size[0]}x{self.img_size[1]}: build it with "
                f"img_size=({height}, {width}) (load_checkpoint resizes the positional "
                f"embeddings) or resize the images"
            )

    def forward(self, imgs):
        self.check_images(imgs)
        return self.proj(imgs).flatten(2).transpose(1, 2)  # (N, D, h, w) -> (N, L, D)
