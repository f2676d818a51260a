from functools import partial

import pytest
import timm.models.vision_transformer as timm_vit
import torch
from torch import nn

from mae_minimal import mae_vit_base_patch16, mae_vit_mini_patch4_32px, mae_vit_mini_patch8_64px
from mae_minimal.block import Block


def official_state_dict_shapes(embed_dim, depth, patch_size, num_patches, decoder_dim, decoder_depth):
    """Names and shapes of the official models_mae.MaskedAutoencoderViT's state_dict (3 channels)."""

    def block(prefix, dim):
        return {
            f"{prefix}.norm1.weight": (dim,), f"{prefix}.norm1.bias": (dim,),
            f"{prefix}.attn.qkv.weight": (3 * dim, dim), f"{prefix}.attn.qkv.bias": (3 * dim,),
            f"{prefix}.attn.proj.weight": (dim, dim), f"{prefix}.attn.proj.bias": (dim,),
            f"{prefix}.norm2.weight": (dim,), f"{prefix}.norm2.bias": (dim,),
            f"{prefix}.mlp.fc1.weight": (4 * dim, dim), f"{prefix}.mlp.fc1.bias": (4 * dim,),
            f"{prefix}.mlp.fc2.weight": (dim, 4 * dim), f"{prefix}.mlp.fc2.bias": (dim,),
        }  # fmt: skip

    shapes = {
        "cls_token": (1, 1, embed_dim),
        "pos_embed": (1, num_patches + 1, embed_dim),
        "patch_embed.proj.weight": (embed_dim, 3, patch_size, patch_size),
        "patch_embed.proj.bias": (embed_dim,),
        "norm.weight": (embed_dim,),
        "norm.bias": (embed_dim,),
        "decoder_embed.weight": (decoder_dim, embed_dim),
        "decoder_embed.bias": (decoder_dim,),
        "mask_token": (1, 1, decoder_dim),
        "decoder_pos_embed": (1, num_patches + 1, decoder_dim),
        "decoder_norm.weight": (decoder_dim,),
        "decoder_norm.bias": (decoder_dim,),
        "decoder_pred.weight": (patch_size**2 * 3, decoder_dim),
        "decoder_pred.bias": (patch_size**2 * 3,),
    }
    for i in range(depth):
        shapes.update(block(f"blocks.{i}", embed_dim))
    for i in range(decoder_depth):
        shapes.update(block(f"decoder_blocks.{i}", decoder_dim))
    return shapes


def test_base_model_has_exactly_the_official_state_dict_names_and_shapes():
    with torch.device("meta"):
        model = mae_vit_base_patch16()
    ours = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    assert ours == official_state_dict_shapes(768, 12, 16, 196, 512, 8)


def test_block_equals_timms_vit_block_the_official_code_builds_on():
    ours = Block(64, 4, 4.0, partial(nn.LayerNorm, eps=1e-6))
    theirs = timm_vit.Block(64, 4, 4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 10, 64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_forward_returns_loss_predictions_and_mask_of_the_documented_shapes(tiny_mae):
    loss, pred, mask = tiny_mae()(torch.randn(3, 3, 32, 32), mask_ratio=0.75)
    assert loss.shape == () and torch.isfinite(loss)
    assert pred.shape == (3, 16, 8 * 8 * 3)
    assert mask.shape == (3, 16) and mask.sum(dim=1).tolist() == [12.0] * 3


@pytest.mark.parametrize("factory, size", [(mae_vit_mini_patch4_32px, 32), (mae_vit_mini_patch8_64px, 64)])
def test_small_presets_run_on_their_image_size(factory, size):
    loss, pred, _ = factory()(torch.randn(2, 3, size, size))
    assert pred.shape == (2, 64, 48 if size == 32 else 192) and torch.isfinite(loss)


def test_non_square_images_are_supported(tiny_mae):
    model = tiny_mae(img_size=(16, 48))
    imgs = torch.randn(2, 3, 16, 48)
    loss, pred, mask = model(imgs, 0.5)
    assert pred.shape == (2, 12, 192) and mask.sum() == 12
    assert model.unpatchify(model.patchify(imgs)).equal(imgs)


def test_the_same_noise_makes_the_forward_pass_deterministic(tiny_mae):
    model, imgs, noise = tiny_mae(), torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    first, second = model(imgs, 0.75, noise), model(imgs, 0.75, noise)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_loss_ignores_predictions_at_visible_patches(tiny_mae):
    model, imgs = tiny_mae(), torch.randn(2, 3, 32, 32)
    loss, pred, mask = model(imgs, 0.75)
    visible = (mask == 0).unsqueeze(-1)
    changed_at_visible = torch.where(visible, pred + 100.0, pred)
    changed_at_masked = torch.where(visible, pred, pred + 1.0)
    assert torch.equal(model.forward_loss(imgs, changed_at_visible, mask), loss)
    assert model.forward_loss(imgs, changed_at_masked, mask) > loss


def test_loss_is_the_mean_squared_error_over_masked_patches(tiny_mae):
    model, imgs = tiny_mae(), torch.randn(1, 3, 32, 32)
    target = model.patchify(imgs)
    pred = target.clone()
    mask = torch.zeros(1, 16)
    mask[0, [3, 7]] = 1
    pred[0, 3] += 2.0  # squared error 4 on every pixel of patch 3, 0 elsewhere
    assert model.forward_loss(imgs, pred, mask).item() == pytest.approx(2.0)


def test_norm_pix_loss_targets_each_patch_normalised_by_its_own_statistics(tiny_mae):
    model, imgs = tiny_mae(norm_pix_loss=True), torch.randn(1, 3, 32, 32) * 5 + 3
    patches = model.patchify(imgs)
    normalised = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
    mask = torch.ones(1, 16)
    assert model.forward_loss(imgs, normalised, mask).item() == pytest.approx(0.0, abs=1e-10)
    assert model.forward_loss(imgs, patches, mask) > 1.0


def test_zero_mask_ratio_gives_a_zero_loss_not_nan(tiny_mae):
    loss, pred, mask = tiny_mae()(torch.randn(2, 3, 32, 32), mask_ratio=0.0)
    assert mask.sum() == 0 and loss.item() == 0.0


def test_zero_mask_ratio_still_puts_predictions_in_image_order(tiny_mae):
    model, imgs = tiny_mae(), torch.randn(2, 3, 32, 32)
    _, reference, _ = model(imgs, 0.0, noise=torch.arange(16.0).expand(2, -1))  # identity shuffle
    _, shuffled, _ = model(imgs, 0.0, noise=torch.rand(2, 16))
    torch.testing.assert_close(shuffled, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ratio, message", [(1.0, r"must be in \[0, 1\)"), (0.99, "keeps none")])
def test_bad_mask_ratios_get_clear_errors(tiny_mae, ratio, message):
    with pytest.raises(ValueError, match=message):
        tiny_mae()(torch.randn(1, 3, 32, 32), ratio)


def test_images_of_another_size_get_a_clear_error(tiny_mae):
    with pytest.raises(ValueError, match="built for 32x32"):
        tiny_mae()(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="not divisible by the patch size 8"):
        tiny_mae(img_size=30)


def test_every_trainable_parameter_gets_a_gradient_in_every_variant(tiny_mae):
    # DDP without find_unused_parameters needs this
    for model in (
        tiny_mae(),
        tiny_mae(encoder_sees_mask_tokens=True),
        tiny_mae(decoder_pos_embed_to="mask"),
        tiny_mae(decoder_pos_embed_to="none"),
    ):
        model(torch.randn(2, 3, 32, 32))[0].backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == []
        assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad


def test_encoder_with_mask_tokens_processes_every_position(tiny_mae):
    model = tiny_mae(encoder_sees_mask_tokens=True)
    latent, mask, ids_restore = model.forward_encoder(torch.randn(2, 3, 32, 32), 0.75)
    assert latent.shape == (2, 1 + 16, 32) and mask.sum() == 24
    assert model.mask_token is None and "mask_token" not in model.state_dict()
    assert model.forward_decoder(latent, ids_restore).shape == (2, 16, 192)


def test_encoder_with_mask_tokens_sees_nothing_of_the_masked_pixels(tiny_mae):
    model, imgs, noise = tiny_mae(encoder_sees_mask_tokens=True), torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    _, pred, mask = model(imgs, 0.75, noise)
    removed_pixels = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, 192)).bool()
    _, pred_after_change, _ = model(torch.where(removed_pixels, imgs + 5.0, imgs), 0.75, noise)
    assert torch.equal(pred, pred_after_change)


def test_decoder_positional_embedding_switch_changes_only_where_it_is_added(tiny_mae):
    imgs, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    for where, changes_visible, changes_masked in [
        ("all", True, True),
        ("mask", False, True),
        ("none", False, False),
    ]:
        model = tiny_mae(decoder_pos_embed_to=where)
        latent, mask, ids_restore = model.forward_encoder(imgs, 0.75, noise)
        base = model.forward_decoder(latent, ids_restore, mask)
        for removed, expect_change in ((0, changes_visible), (1, changes_masked)):
            with torch.no_grad():
                model.decoder_pos_embed[0, 1:][mask[0] == removed] += 1.0
            changed = model.forward_decoder(latent, ids_restore, mask)
            assert (not torch.equal(changed, base)) == expect_change, (where, removed)
            base = changed


def test_unknown_switch_values_are_rejected(tiny_mae):
    with pytest.raises(ValueError, match="decoder_pos_embed_to must be one of"):
        tiny_mae(decoder_pos_embed_to="visible")
    with pytest.raises(ValueError, match="does not have"):
        tiny_mae(encoder_sees_mask_tokens=True, decoder_pos_embed_to="mask")


def test_a_width_not_divisible_by_the_heads_is_rejected(tiny_mae):
    with pytest.raises(ValueError, match="not divisible by the number of heads"):
        tiny_mae(embed_dim=30, num_heads=4)


@pytest.mark.parametrize("encoder_sees_mask_tokens", [False, True])
def test_torch_compile_captures_the_whole_forward_pass_in_one_graph(encoder_sees_mask_tokens):
    import torch._dynamo

    model = mae_vit_mini_patch4_32px(encoder_sees_mask_tokens=encoder_sees_mask_tokens)
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32), 0.75)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
