"""Numerical parity with Hugging Face transformers' ViTMAEForPreTraining, a port of the official code."""

import pytest
import torch
from transformers import ViTMAEForPreTraining

from mae_minimal import (
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_mini_patch4_32px,
)
from mae_minimal.hf_convert import from_hf, from_hf_state_dict, hf_config, to_hf, to_hf_state_dict

TOLERANCE = dict(rtol=0, atol=2e-5)


def randomised(model):
    """Every learned weight random, biases and LayerNorms included, so no mix-up can hide."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn_like(parameter) * 0.1 + (1.0 if "norm" in name else 0.0))
    return model.eval()


def compare(ours, imgs, mask_ratio=0.75):
    theirs = to_hf(ours, mask_ratio=mask_ratio)
    noise = torch.rand(imgs.shape[0], ours.patch_embed.num_patches)
    with torch.no_grad():
        loss, pred, mask = ours(imgs, mask_ratio, noise)
        out = theirs(pixel_values=imgs, noise=noise)
    assert torch.equal(mask, out.mask)
    torch.testing.assert_close(pred, out.logits, **TOLERANCE)
    torch.testing.assert_close(loss, out.loss, **TOLERANCE)


@pytest.mark.parametrize("factory", [mae_vit_base_patch16, mae_vit_large_patch16, mae_vit_huge_patch14])
def test_parameter_counts_equal_transformers_for_the_official_sizes(factory):
    with torch.device("meta"):
        ours = factory()
        theirs = ViTMAEForPreTraining(hf_config(ours))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_small_model_matches_transformers(norm_pix_loss):
    ours = randomised(mae_vit_mini_patch4_32px(norm_pix_loss=norm_pix_loss))
    compare(ours, torch.randn(4, 3, 32, 32))


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_base_model_matches_transformers_on_224_pixel_images(norm_pix_loss):
    ours = randomised(mae_vit_base_patch16(norm_pix_loss=norm_pix_loss))
    compare(ours, torch.randn(2, 3, 224, 224))


def test_parity_holds_at_other_mask_ratios(tiny_mae):
    ours = randomised(tiny_mae())
    for ratio in (0.25, 0.5, 0.9):
        compare(ours, torch.randn(3, 3, 32, 32), mask_ratio=ratio)


def test_a_transformers_model_converts_to_an_equal_model_of_ours(tiny_mae):
    theirs = ViTMAEForPreTraining(hf_config(tiny_mae(), mask_ratio=0.5)).eval()
    ours = from_hf(theirs)
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        loss, pred, _ = ours(imgs, 0.5, noise)
        out = theirs(pixel_values=imgs, noise=noise)
    torch.testing.assert_close(pred, out.logits, **TOLERANCE)
    torch.testing.assert_close(loss, out.loss, **TOLERANCE)


def test_conversion_round_trips_exactly_both_ways(tiny_mae):
    ours = randomised(tiny_mae())
    back = from_hf_state_dict(to_hf_state_dict(ours.state_dict()))
    assert back.keys() == ours.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())
    hf_state = to_hf(ours).state_dict()
    again = to_hf_state_dict(from_hf_state_dict(hf_state))
    assert again.keys() == hf_state.keys()
    assert all(torch.equal(again[k], v) for k, v in hf_state.items())


def test_weights_without_a_transformers_counterpart_are_named_in_the_error(tiny_mae):
    with pytest.raises(KeyError, match="encoder_mask_token"):
        to_hf_state_dict(tiny_mae(encoder_sees_mask_tokens=True).state_dict())
    with pytest.raises(ValueError, match="square images only"):
        hf_config(tiny_mae(img_size=(16, 32)))
