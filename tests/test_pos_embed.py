import pytest
import torch
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

from mae_minimal import get_2d_sincos_pos_embed, resize_pos_embed


def test_sincos_embedding_has_a_zero_cls_slot_then_one_row_per_patch():
    embed = get_2d_sincos_pos_embed(64, (3, 5), cls_token=True)
    assert embed.shape == (1 + 15, 64)
    assert torch.equal(embed[0], torch.zeros(64))
    assert get_2d_sincos_pos_embed(64, 4).shape == (16, 64)


def test_sincos_embedding_has_the_official_column_first_layout():
    # transformers documents that the official MAE layout is [sin_w|cos_w|sin_h|cos_h] and
    # rotates its own [h|w] table by half to reproduce it; the released checkpoints use it.
    theirs = build_2d_sinusoidal_position_embedding(14, 14, embed_dim=768, cls_token=True)
    theirs = torch.cat([theirs[:, 384:], theirs[:, :384]], dim=1)
    torch.testing.assert_close(get_2d_sincos_pos_embed(768, 14, cls_token=True), theirs)


def test_first_half_encodes_the_column_and_second_half_the_row_on_a_non_square_grid():
    embed = get_2d_sincos_pos_embed(16, (2, 3)).reshape(2, 3, 16)  # (rows, cols, D)
    assert torch.equal(embed[0, :, :8], embed[1, :, :8])  # same column -> same first half
    assert torch.equal(embed[:, 0, 8:], embed[:, 2, 8:])  # same row -> same second half
    assert not torch.equal(embed[0, 0, :8], embed[0, 1, :8])


def test_nearby_positions_are_more_similar_than_distant_ones():
    embed = get_2d_sincos_pos_embed(256, 8).reshape(8, 8, 256)
    along_a_row = embed[0, 0] @ embed[0].T  # similarity of (0, 0) to (0, 0..7)
    along_the_diagonal = torch.stack([embed[0, 0] @ embed[i, i] for i in range(8)])
    assert (along_a_row.diff() < 0).all()
    assert (along_the_diagonal.diff() < 0).all()


def test_dimension_not_divisible_by_four_is_rejected():
    with pytest.raises(ValueError, match="divisible by 4"):
        get_2d_sincos_pos_embed(30, 4)


def test_resize_keeps_the_cls_slot_and_gives_the_new_grid():
    pos_embed = get_2d_sincos_pos_embed(32, 4, cls_token=True)[None]
    pos_embed[:, 0] = 7.0
    resized = resize_pos_embed(pos_embed, (4, 4), (6, 8))
    assert resized.shape == (1, 1 + 48, 32)
    assert torch.equal(resized[:, 0], pos_embed[:, 0])
    assert resize_pos_embed(pos_embed, (4, 4), (4, 4)) is pos_embed


def test_resize_preserves_a_smooth_embedding():
    # a table that is linear in the column index stays (nearly) linear after resampling
    cols = torch.arange(4.0).repeat(4)  # (16,), row by row
    pos_embed = torch.cat([torch.zeros(1), cols])[None, :, None]  # (1, 17, 1)
    resized = resize_pos_embed(pos_embed, (4, 4), (4, 8))[0, 1:, 0].reshape(4, 8)
    assert torch.allclose(resized[0], resized[3])
    assert (resized[0].diff() > 0).all()


def test_resize_rejects_a_table_that_does_not_fit_the_old_grid():
    with pytest.raises(ValueError, match="does not fit a cls slot plus a 4x4 grid"):
        resize_pos_embed(torch.zeros(1, 10, 8), (4, 4), (2, 2))
