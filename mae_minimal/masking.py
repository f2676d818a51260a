"""Masking: which patches the encoder sees.

Convention used everywhere in mae_minimal:

    mask: (N, L), 1 = removed (masked), 0 = kept (visible)
    ids_restore: (N, L), the permutation that undoes the shuffle

Every masking strategy is expressed as a `noise: (N, L)` tensor. The encoder keeps the
`num_kept(L, mask_ratio)` patches of lowest noise (a per-sample argsort), exactly as the
official `random_masking` does with uniform noise. Random masking is uniform noise;
block and grid masking are noise that is low on the patches they keep. So any strategy
plugs into `model(imgs, mask_ratio, noise=...)`, and a given noise always gives the same
mask.
"""

import math

import torch

MASKINGS = ("random", "block", "grid")


def num_kept(num_patches, mask_ratio):
    """How many of num_patches stay visible at mask_ratio, checked to be at least one.

    This is floor(L * (1 - mask_ratio)), as in the official code, except that a product
    which is an integer up to rounding error counts as that integer (the official int()
    keeps 9 of 100 patches at ratio 0.9, because 100 * (1 - 0.9) = 9.999999999999998).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    kept = math.floor(num_patches * (1.0 - mask_ratio) + 1e-6)
    if kept < 1:
        raise ValueError(
            f"mask_ratio={mask_ratio} keeps none of the {num_patches} patches, and the "
            "encoder needs at least one visible patch: use a mask_ratio of at most "
            f"{1 - 1 / num_patches:.4f}"
        )
    return kept


def random_masking(x, mask_ratio, noise=None):
    """Keep the patches of lowest noise in each sample.

    x: (N, L, D) tokens; noise: (N, L), uniform random when None.
    Returns x_kept: (N, L_kept, D), mask: (N, L) float, ids_restore: (N, L) long.
    """
    batch, length, dim = x.shape
    kept = num_kept(length, mask_ratio)
    if noise is None:
        noise = torch.rand(batch, length, device=x.device)
    elif noise.shape != (batch, length):
        raise ValueError(
            f"noise must have shape (N, L) = {(batch, length)}, "
            f"got {tuple(noise.shape)}"
        )

    # ascending: the first `kept` stay
    ids_shuffle = torch.argsort(noise.to(x.device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :kept]  # (N, L_kept)
    # (N, L_kept, D)
    x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    # a patch is removed when it was shuffled past `kept`
    mask = (ids_restore >= kept).float()
    return x_kept, mask, ids_restore


def mask_from_noise(noise, mask_ratio):
    """noise: (N, L) -> the mask random_masking makes from it: (N, L), 1 = removed."""
    tokens = torch.zeros(*noise.shape, 1, device=noise.device)  # (N, L, 1)
    return random_masking(tokens, mask_ratio, noise)[1]


def mask_to_noise(mask, generator=None):
    """mask: (N, L) with 1 = remove -> noise: (N, L) that makes argsort remove those
    patches first.

    Kept patches get noise in [0, 1) and masked ones in [1, 2), random inside each
    group, so when the mask ratio asks for more or fewer masked patches than `mask`
    marks, the difference is made up at random.
    """
    return mask.float() + torch.rand(
        mask.shape, generator=generator, device=mask.device
    )


def random_noise(batch, num_patches, generator=None, device=None):
    """Uniform noise: (N, L). With it, the kept patches are a uniformly random
    subset."""
    return torch.rand(batch, num_patches, generator=generator, device=device)


def grid_masking_noise(batch, grid_size, stride=2, generator=None):
    """Grid masking as noise: keep one patch in each stride x stride cell, at the same
    place in every cell of an image, that place drawn at random for each image.

    The paper's grid (Figure 6) keeps a fixed corner; a fixed corner would show the
    encoder only 1 / stride**2 of the positions during all of pretraining, so the offset
    is random here. grid_size = (rows, cols). On a grid divisible by stride this keeps
    1 / stride**2 of the patches, so use it with mask_ratio = 1 - 1 / stride**2 (0.75
    for the paper's stride 2).
    Returns noise: (N, rows * cols).
    """
    rows, cols = grid_size
    row_index, col_index = torch.meshgrid(
        torch.arange(rows), torch.arange(cols), indexing="ij"
    )
    # (N, row/col, 1, 1)
    offsets = torch.randint(stride, (batch, 2, 1, 1), generator=generator)
    removed = (  # (N, rows, cols)
        (row_index % stride != offsets[:, 0]) | (col_index % stride != offsets[:, 1])
    )
    return mask_to_noise(removed.flatten(1), generator)


def block_mask(grid_size, num_masked, min_block_patches, generator=None):
    """One BEiT-style block-wise mask: rectangles of random area and aspect ratio,
    placed at random, until num_masked patches are covered (or no block fits after 10
    tries).

    Returns mask: (rows, cols) bool, True = removed.
    """
    rows, cols = grid_size
    mask = torch.zeros(rows, cols, dtype=torch.bool)

    def uniform(low, high):
        return low + (high - low) * torch.rand((), generator=generator).item()

    def randint(high):
        return int(torch.randint(high, (), generator=generator))

    while int(mask.sum()) < num_masked:
        remaining = num_masked - int(mask.sum())
        for _ in range(10):
            area = uniform(min_block_patches, remaining)
            aspect = math.exp(uniform(math.log(0.3), math.log(1 / 0.3)))
            height = round(math.sqrt(area * aspect))
            width = round(math.sqrt(area / aspect))
            if not (0 < height < rows and 0 < width < cols):
                continue
            top, left = randint(rows - height + 1), randint(cols - width + 1)
            block = mask[top : top + height, left : left + width]
            newly_masked = int((~block).sum())
            if 0 < newly_masked <= remaining:
                block.fill_(True)
                break
        else:
            break
    return mask


def block_masking_noise(
    batch, grid_size, mask_ratio, min_block_patches=None, generator=None
):
    """Block-wise masking as noise (BEiT, Bao et al. 2021): masked patches come in
    rectangles.

    grid_size = (rows, cols). Blocks cover at least min_block_patches patches each; by
    default max(4, L // 12), which is BEiT's 16 on a 14x14 grid. Returns noise:
    (N, rows * cols); use it with the same mask_ratio.
    """
    rows, cols = grid_size
    length = rows * cols
    num_masked = length - num_kept(length, mask_ratio)
    if min_block_patches is None:
        min_block_patches = max(4, length // 12)
    masks = torch.stack(
        [
            block_mask(grid_size, num_masked, min_block_patches, generator).flatten()
            for _ in range(batch)
        ]
    )  # (N, L)
    return mask_to_noise(masks, generator)


def masking_noise(masking, grid_size, mask_ratio, batch=1, generator=None):
    """The noise (N, L) of a masking strategy by name ("random", "block" or "grid"), for
    use at mask_ratio. Grid masking keeps one patch in each s x s cell, so it needs
    mask_ratio = 1 - 1/s**2."""
    rows, cols = grid_size
    if masking == "random":
        return random_noise(batch, rows * cols, generator)
    if masking == "block":
        return block_masking_noise(batch, grid_size, mask_ratio, generator=generator)
    if masking == "grid":
        stride = round((1.0 - mask_ratio) ** -0.5)
        if abs(1.0 - 1.0 / stride**2 - mask_ratio) > 1e-6:
            raise ValueError(
                "grid masking keeps one patch in each s x s cell, so its mask_ratio is "
                f"1 - 1/s**2 (0.75 for s = 2, 0.8889 for s = 3), not {mask_ratio}"
            )
        return grid_masking_noise(batch, grid_size, stride, generator)
    raise ValueError(f"masking must be one of {', '.join(MASKINGS)}, got {masking!r}")
