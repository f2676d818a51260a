"""Fixed 2-D sine-cosine positional embeddings, and their resizing to another patch
grid.

A patch at grid position (row, col) gets a D-dimensional vector: the first D/2
dimensions encode the column, the last D/2 the row, each as D/4 sines then D/4 cosines
of the coordinate at geometrically spaced frequencies 1 / 10000^(k / (D/4)). This is the
official MAE layout (column first), so embeddings computed here equal those stored in
the released checkpoints.

Slot 0 belongs to the cls token and is all zeros.
"""

import torch
import torch.nn.functional as F


def sincos_1d(embed_dim, positions):
    """positions: (M,) float -> (M, embed_dim): embed_dim/2 sines, then embed_dim/2
    cosines."""
    if embed_dim % 2:
        raise ValueError(
            f"a 1-D sin-cos embedding needs an even dimension, got {embed_dim}"
        )
    exponents = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2)
    frequencies = 1.0 / 10000**exponents  # (D/2,)
    angles = positions.double()[:, None] * frequencies[None, :]  # (M, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    """The fixed embedding of a grid_size = (rows, cols) patch grid (an int means
    square).

    Returns (rows * cols, D), or (1 + rows * cols, D) with a leading zero row for the
    cls token. Patches are numbered row by row, as patchify numbers them.
    """
    if embed_dim % 4:
        raise ValueError(
            f"a 2-D sin-cos embedding needs a dimension divisible by 4, got {embed_dim}"
        )
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    row_index, col_index = torch.meshgrid(
        torch.arange(rows), torch.arange(cols), indexing="ij"
    )  # (rows, cols) each
    embed = torch.cat(
        [
            sincos_1d(embed_dim // 2, col_index.flatten()),
            sincos_1d(embed_dim // 2, row_index.flatten()),
        ],
        dim=1,
    )  # (rows * cols, D)
    if cls_token:
        embed = torch.cat([torch.zeros(1, embed_dim, dtype=embed.dtype), embed], dim=0)
    return embed.float()


def resize_pos_embed(pos_embed, old_grid, new_grid):
    """Bicubically resample a (1, 1 + old_rows * old_cols, D) embedding to a new_grid of
    patches.

    The cls slot is kept as it is. This is how a checkpoint is used at another
    resolution: the fixed sin-cos tables could simply be recomputed, but a fine-tuned
    model's learned table can only be resampled, so checkpoints are always resized this
    way (as the official code does). Returns (1, 1 + new_rows * new_cols, D).
    """
    old_rows, old_cols = old_grid
    new_rows, new_cols = new_grid
    if pos_embed.shape[1] != 1 + old_rows * old_cols:
        raise ValueError(
            f"a positional embedding of {pos_embed.shape[1]} slots does not fit "
            f"a cls slot plus a {old_rows}x{old_cols} grid"
        )
    if (old_rows, old_cols) == (new_rows, new_cols):
        return pos_embed
    cls_slot, grid = pos_embed[:, :1], pos_embed[:, 1:]
    # (1, D, rows, cols)
    grid = grid.reshape(1, old_rows, old_cols, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.float(), size=(new_rows, new_cols), mode="bicubic", align_corners=False
    )
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)  # (1, new L, D)
    return torch.cat([cls_slot, grid], dim=1)
