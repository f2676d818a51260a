import pytest
import torch

from mae_minimal import patchify, unpatchify
from mae_minimal.patches import PatchEmbed


@pytest.mark.parametrize("height, width", [(32, 32), (16, 48)])
def test_unpatchify_inverts_patchify_for_square_and_non_square_images(height, width):
    imgs = torch.randn(2, 3, height, width)
    patches = patchify(imgs, 8)
    assert patches.shape == (2, (height // 8) * (width // 8), 8 * 8 * 3)
    assert torch.equal(unpatchify(patches, 8, (height // 8, width // 8)), imgs)


def test_patch_pixels_are_in_official_row_column_channel_order():
    # pixel value = 100 * channel + 10 * row + col, on one 2x2 patch with 3 channels
    channel, row, col = torch.meshgrid(torch.arange(3), torch.arange(2), torch.arange(2), indexing="ij")
    imgs = (100 * channel + 10 * row + col).float()[None]  # (1, 3, 2, 2)
    patch = patchify(imgs, 2)[0, 0].tolist()
    assert patch == [0, 100, 200, 1, 101, 201, 10, 110, 210, 11, 111, 211]


def test_patches_are_numbered_row_by_row():
    imgs = torch.zeros(1, 1, 4, 6)
    imgs[0, 0, 2:4, 0:2] = 1.0  # second row of patches, first column
    patches = patchify(imgs, 2)  # a 2x3 grid
    assert patches.sum(-1)[0].tolist() == [0, 0, 0, 4, 0, 0]


def test_patchify_rejects_images_not_divisible_by_the_patch_size():
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        patchify(torch.zeros(1, 3, 224, 230), 16)


def test_unpatchify_rejects_patches_that_do_not_fit_the_grid():
    with pytest.raises(ValueError, match="do not fit a 2x2 grid"):
        unpatchify(torch.zeros(1, 5, 12), 2, (2, 2))


def test_patch_embedding_is_a_linear_map_of_each_flattened_patch():
    embed = PatchEmbed(img_size=(16, 24), patch_size=8, in_chans=3, embed_dim=5)
    imgs = torch.randn(2, 3, 16, 24)
    # the conv kernel (D, c, p, q), flattened in the patches' (p, q, c) order, is the linear weight
    weight = embed.proj.weight.permute(0, 2, 3, 1).flatten(1)  # (D, p*q*c)
    expected = patchify(imgs, 8) @ weight.T + embed.proj.bias
    torch.testing.assert_close(embed(imgs), expected, rtol=1e-5, atol=1e-5)


def test_patch_embedding_rejects_images_of_another_size_or_channel_count():
    embed = PatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=4)
    with pytest.raises(ValueError, match="built for 32x32"):
        embed(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, H, W\)"):
        embed(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="not divisible"):
        embed(torch.zeros(1, 3, 30, 30))
