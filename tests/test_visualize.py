"""The architecture figure is drawn from the model it is given: its counts and sizes change with
the mask ratio and the model's size, and a highlighted stage stands out."""

import matplotlib
import pytest
import torch

from mae_minimal import mae_vit_nano_patch4_28px
from mae_minimal.visualize import (
    ARCHITECTURE_STAGES,
    architecture_figure,
    architecture_shapes,
    removed_pixels,
)

matplotlib.use("Agg")


def drawn_text(fig):
    return " | ".join(text.get_text() for text in fig.findobj(matplotlib.text.Text))


def test_shapes_are_those_of_a_forward_pass_of_the_nano_model():
    shapes = architecture_shapes(mae_vit_nano_patch4_28px(), mask_ratio=0.75)
    assert (shapes["num_patches"], shapes["kept"], shapes["removed"]) == (49, 12, 37)
    assert (shapes["encoder_tokens"], shapes["decoder_tokens"], shapes["patch_length"]) == (13, 50, 16)
    encoder, decoder = (shapes["width"], shapes["depth"]), (shapes["decoder_width"], shapes["decoder_depth"])
    assert (encoder, decoder) == ((128, 4), (64, 2))


def test_figure_labels_follow_the_mask_ratio():
    model = mae_vit_nano_patch4_28px()
    at_75 = drawn_text(architecture_figure(model, mask_ratio=0.75))
    at_50 = drawn_text(architecture_figure(model, mask_ratio=0.5))
    assert "keep 12 of 49" in at_75 and "+ 37 mask tokens" in at_75 and "on 13 tokens" in at_75
    assert "keep 24 of 49" in at_50 and "+ 25 mask tokens" in at_50 and "on 25 tokens" in at_50


def test_figure_labels_follow_the_model_size(tiny_mae):
    text = drawn_text(architecture_figure(tiny_mae(depth=3, decoder_depth=1)))
    assert "32x32x3" in text and "4x4 patches" in text and "16 tokens" in text
    assert "3 blocks, 32" in text and "1 block, 16" in text and "192 -> 32" in text


def test_the_token_stacks_have_one_bar_per_token():
    model = mae_vit_nano_patch4_28px()
    bars = len(architecture_figure(model).axes[0].patches)
    fewer = len(architecture_figure(model, mask_ratio=0.5).axes[0].patches)
    assert bars - fewer == 12 - 24  # the visible-token stack is the only one that changes length


@pytest.mark.parametrize("stage", ARCHITECTURE_STAGES)
def test_a_highlighted_stage_is_the_only_one_titled_in_bold(stage):
    fig = architecture_figure(mae_vit_nano_patch4_28px(), highlight=stage, details=False)
    bold = {t.get_text() for t in fig.axes[0].texts if t.get_fontweight() == "bold"}
    assert bold and all(t.get_fontweight() == "normal" or t.get_text() in bold for t in fig.axes[0].texts)
    assert len(bold) == {"decoder": 2, "patches": 2}.get(stage, 1)


def test_an_unknown_stage_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="patches"):
        architecture_figure(mae_vit_nano_patch4_28px(), highlight="attention")


def test_removed_pixels_cover_exactly_the_removed_patches():
    mask = torch.zeros(1, 49)
    mask[0, [0, 8]] = 1  # the top-left patch and the one diagonally below it
    pixels = removed_pixels(mask, patch_size=4, grid_size=(7, 7), channels=1)
    assert pixels.shape == (1, 1, 28, 28)
    assert pixels[0, 0, :4, :4].eq(1).all() and pixels[0, 0, 4:8, 4:8].eq(1).all()
    assert pixels.sum() == 2 * 16
