import pytest
import torch

from mae_minimal import block_masking_noise, grid_masking_noise, mask_to_noise, random_masking
from mae_minimal.masking import block_mask, mask_from_noise, num_kept


def test_random_masking_keeps_exactly_the_asked_number_of_patches():
    x = torch.randn(4, 196, 8)
    x_kept, mask, ids_restore = random_masking(x, 0.75)
    assert x_kept.shape == (4, 49, 8)
    assert mask.shape == ids_restore.shape == (4, 196)
    assert mask.sum(dim=1).tolist() == [147.0] * 4


def test_kept_tokens_are_exactly_the_unmasked_ones():
    x = torch.arange(16.0).reshape(1, 16, 1).expand(3, -1, -1)  # token i holds the value i
    x_kept, mask, _ = random_masking(x, 0.5)
    for sample in range(3):
        kept_values = sorted(x_kept[sample, :, 0].tolist())
        assert kept_values == torch.nonzero(mask[sample] == 0).flatten().float().tolist()


def test_each_sample_gets_its_own_mask():
    _, mask, _ = random_masking(torch.randn(8, 64, 4), 0.75)
    assert len({tuple(row.tolist()) for row in mask}) == 8


def test_ids_restore_undoes_the_shuffle():
    x = torch.randn(2, 10, 3)
    noise = torch.rand(2, 10)
    ids_shuffle = torch.argsort(noise, dim=1)
    shuffled = torch.gather(x, 1, ids_shuffle.unsqueeze(-1).expand(-1, -1, 3))
    _, _, ids_restore = random_masking(x, 0.3, noise)
    restored = torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.equal(restored, x)


def test_the_same_noise_gives_the_same_mask_and_the_lowest_noise_is_kept():
    noise = torch.rand(2, 16)
    first = random_masking(torch.randn(2, 16, 4), 0.75, noise)[1]
    second = random_masking(torch.randn(2, 16, 4), 0.75, noise)[1]
    assert torch.equal(first, second)
    lowest_four = torch.argsort(noise, dim=1)[:, :4]
    assert (torch.gather(first, 1, lowest_four) == 0).all()


def test_zero_ratio_keeps_every_patch():
    x = torch.randn(2, 9, 4)
    x_kept, mask, _ = random_masking(x, 0.0)
    assert x_kept.shape == x.shape and mask.sum() == 0


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_zero_to_one_is_rejected(ratio):
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        random_masking(torch.randn(1, 16, 4), ratio)


def test_ratio_that_would_keep_no_patch_is_rejected():
    with pytest.raises(ValueError, match="keeps none of the 16 patches"):
        random_masking(torch.randn(1, 16, 4), 0.95)


def test_kept_count_is_not_lost_to_rounding_error():
    assert num_kept(100, 0.9) == 10  # 100 * (1 - 0.9) is 9.999999999999998 in floating point
    assert num_kept(196, 0.75) == 49
    assert num_kept(196, 0.9) == 19  # floor(19.6), as the official code


def test_noise_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"noise must have shape \(N, L\)"):
        random_masking(torch.randn(2, 16, 4), 0.75, torch.rand(2, 15))


def test_mask_to_noise_removes_exactly_the_marked_patches():
    marked = torch.zeros(3, 16)
    marked[:, [1, 2, 5, 11]] = 1
    _, mask, _ = random_masking(torch.randn(3, 16, 4), 0.25, mask_to_noise(marked))
    assert torch.equal(mask, marked)


def test_grid_masking_keeps_the_same_place_in_every_two_by_two_cell_of_an_image():
    noise = grid_masking_noise(64, (4, 6), generator=torch.Generator().manual_seed(0))
    _, mask, _ = random_masking(torch.randn(64, 24, 4), 0.75, noise)
    offsets = set()
    for image_mask in mask.view(64, 4, 6):
        kept_rows, kept_cols = torch.nonzero(image_mask == 0, as_tuple=True)
        row, col = int(kept_rows[0]) % 2, int(kept_cols[0]) % 2
        expected = torch.ones(4, 6)
        expected[row::2, col::2] = 0
        assert torch.equal(image_mask, expected)
        offsets.add((row, col))
    assert offsets == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every position is seen by some image


def boundary_length(mask):
    """The number of grid edges between a masked and a kept patch: small for compact blocks."""
    mask = mask.int()
    return int((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())


def test_block_masks_are_compact_and_cover_close_to_the_asked_count():
    generator = torch.Generator().manual_seed(0)
    blocks = [block_mask((14, 14), 98, 16, generator) for _ in range(50)]
    randoms = [(torch.rand(196, generator=generator).argsort() < 98).reshape(14, 14) for _ in range(50)]
    assert all(90 <= int(mask.sum()) <= 98 for mask in blocks)
    # half of a 14x14 grid masked at random has a boundary of about 182 edges; blocks far less
    assert max(boundary_length(mask) for mask in blocks) < 0.5 * min(boundary_length(m) for m in randoms)


def test_block_masking_noise_masks_the_block_mask():
    expected = block_mask((8, 8), 32, 5, torch.Generator().manual_seed(3))
    noise = block_masking_noise(
        1, (8, 8), 0.5, min_block_patches=5, generator=torch.Generator().manual_seed(3)
    )
    _, mask, _ = random_masking(torch.randn(1, 64, 4), 0.5, noise)
    marked = expected.flatten().float()
    assert marked.sum() == 32
    assert torch.equal(mask[0], marked)


def test_block_masking_gives_different_masks_per_sample():
    noise = block_masking_noise(4, (8, 8), 0.5)
    _, mask, _ = random_masking(torch.randn(4, 64, 4), 0.5, noise)
    assert mask.sum(dim=1).tolist() == [32.0] * 4
    assert len({tuple(row.tolist()) for row in mask}) == 4


def test_mask_from_noise_removes_the_patches_of_highest_noise():
    noise = torch.rand(3, 49, generator=torch.Generator().manual_seed(0))
    mask = mask_from_noise(noise, 0.75)
    kept = num_kept(49, 0.75)
    highest_kept = noise.sort(dim=1).values[:, kept - 1 : kept]
    assert torch.equal(mask.bool(), noise > highest_kept)
