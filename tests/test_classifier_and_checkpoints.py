import argparse

import pytest
import torch

from mae_minimal import (
    ViTClassifier,
    describe_architecture,
    load_checkpoint,
    mae_vit_base_patch16,
    vit_base_patch16,
)
from mae_minimal.checkpoint import model_config
from mae_minimal.pos_embed import resize_pos_embed


def encoder_only(state_dict):
    """What the official mae_pretrain_vit_*.pth files hold: the MAE state_dict without its decoder."""
    return {k: v for k, v in state_dict.items() if not (k.startswith("decoder_") or k == "mask_token")}


def test_classifier_features_equal_the_mae_encoders_on_the_unmasked_image(tiny_mae):
    # with nothing masked the encoder sees every patch, in shuffled order; the cls token and the
    # mean of the patch tokens do not depend on that order
    mae, imgs = tiny_mae(), torch.randn(2, 3, 32, 32)
    latent, _, _ = mae.forward_encoder(imgs, mask_ratio=0.0)
    by_cls = ViTClassifier.from_mae(mae, num_classes=5, global_pool=False)
    by_pool = ViTClassifier.from_mae(mae, num_classes=5, global_pool=True)
    torch.testing.assert_close(by_cls.forward_features(imgs), latent[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(by_pool.fc_norm.weight, torch.ones(32))  # fresh, not the encoder's norm
    assert by_pool(imgs).shape == by_cls(imgs).shape == (2, 5)


def test_a_classifier_loads_the_encoder_of_the_mask_tokens_in_encoder_baseline(tiny_mae):
    torch.manual_seed(0)
    mae = tiny_mae(encoder_sees_mask_tokens=True)
    classifier = ViTClassifier.from_mae(mae, num_classes=5, global_pool=False)
    torch.testing.assert_close(classifier.blocks[0].attn.qkv.weight, mae.blocks[0].attn.qkv.weight)


def test_global_pool_classifier_has_the_official_fine_tuning_names():
    with torch.device("meta"):
        keys = vit_base_patch16(num_classes=10).state_dict().keys()
    assert {"fc_norm.weight", "head.weight", "head.bias"} <= keys and "norm.weight" not in keys
    with torch.device("meta"):
        keys = vit_base_patch16(num_classes=10, global_pool=False).state_dict().keys()
    assert "norm.weight" in keys and "fc_norm.weight" not in keys


def test_official_style_file_of_a_full_mae_loads_strictly(tiny_mae, tmp_path):
    mae = tiny_mae()
    torch.save({"model": mae.state_dict()}, tmp_path / "mae_visualize.pth")
    other = load_checkpoint(tiny_mae(), tmp_path / "mae_visualize.pth")
    imgs, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    assert torch.equal(other(imgs, 0.75, noise)[1], mae(imgs, 0.75, noise)[1])


def test_encoder_only_file_loads_into_a_classifier_but_not_into_an_mae(tiny_mae, tmp_path):
    mae = tiny_mae()
    torch.save({"model": encoder_only(mae.state_dict())}, tmp_path / "mae_pretrain.pth")
    classifier = load_checkpoint(ViTClassifier(num_classes=3, **tiny_mae().encoder_config), tmp_path / "mae_pretrain.pth")
    assert torch.equal(classifier.blocks[1].mlp.fc2.weight, mae.blocks[1].mlp.fc2.weight)
    with pytest.raises(ValueError, match="holds only an encoder"):
        load_checkpoint(tiny_mae(), tmp_path / "mae_pretrain.pth")


def test_checkpoint_of_another_architecture_names_the_mismatch(tiny_mae):
    with torch.device("meta"):
        base = mae_vit_base_patch16().state_dict()
    with pytest.raises(
        ValueError, match=r"embed_dim: checkpoint 768, model 32.*depth: checkpoint 12, model 2"
    ):
        load_checkpoint(tiny_mae(), base)
    with pytest.raises(ValueError, match="decoder_depth: checkpoint 1, model 3"):
        load_checkpoint(tiny_mae(decoder_depth=3), tiny_mae().state_dict())


def test_a_failed_load_leaves_the_model_untouched(tiny_mae):
    model = tiny_mae()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError):
        load_checkpoint(model, encoder_only(tiny_mae().state_dict()))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_checkpoint_from_another_resolution_gets_its_positions_resized(tiny_mae):
    small = tiny_mae()
    large = load_checkpoint(tiny_mae(img_size=48), small.state_dict())
    assert large.pos_embed.shape == (1, 1 + 36, 32) and large.decoder_pos_embed.shape == (1, 1 + 36, 16)
    assert torch.isfinite(large(torch.randn(1, 3, 48, 48))[0])


def test_fine_tuned_head_for_another_number_of_classes_is_replaced(tiny_mae):
    fine_tuned = ViTClassifier(num_classes=1000, **tiny_mae().encoder_config)
    classifier = load_checkpoint(ViTClassifier(num_classes=7, **tiny_mae().encoder_config), fine_tuned.state_dict())
    assert classifier.head.weight.shape == (7, 32)
    assert torch.equal(classifier.fc_norm.weight, fine_tuned.fc_norm.weight)


def test_missing_file_and_foreign_pickles_get_clear_errors(tiny_mae, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        load_checkpoint(tiny_mae(), tmp_path / "missing.pth")
    torch.save({"model": tiny_mae().state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "full.pth")
    with pytest.raises(ValueError, match="weights_only=False"):
        load_checkpoint(tiny_mae(), tmp_path / "full.pth")
    assert load_checkpoint(tiny_mae(), tmp_path / "full.pth", weights_only=False) is not None


def test_describe_architecture_reads_the_sizes_off_a_state_dict(tiny_mae):
    sizes = describe_architecture(tiny_mae().state_dict())
    assert sizes == dict(
        embed_dim=32, in_chans=3, patch_size=8, mlp_hidden_dim=128, depth=2,
        decoder_depth=1, decoder_embed_dim=16, decoder_pred_dim=192,
    )  # fmt: skip


def full_checkpoint(model):
    return {"model": model.state_dict(), "model_config": model_config(model)}


def test_a_non_square_checkpoint_is_resized_to_another_grid_never_loaded_transposed(tiny_mae):
    wide = tiny_mae(img_size=(16, 32))  # a 2x4 grid
    wide.initialize_weights()
    tall = load_checkpoint(tiny_mae(img_size=(32, 16)), full_checkpoint(wide))  # the same 9 slots, as 4x2
    assert torch.equal(tall.pos_embed, resize_pos_embed(wide.pos_embed, (2, 4), (4, 2)))
    assert not torch.equal(tall.pos_embed, wide.pos_embed)
    same = load_checkpoint(tiny_mae(img_size=(16, 32)), full_checkpoint(wide))
    assert torch.equal(same.pos_embed, wide.pos_embed) and torch.equal(same.decoder_pos_embed, wide.decoder_pos_embed)
    square = load_checkpoint(tiny_mae(img_size=32), full_checkpoint(wide))
    assert torch.equal(square.pos_embed, resize_pos_embed(wide.pos_embed, (2, 4), (4, 4)))


def test_a_bare_non_square_table_whose_grid_is_unknown_is_refused(tiny_mae):
    with pytest.raises(ValueError, match="pos_embed has 8 positions, not a square grid.*load the whole checkpoint"):
        load_checkpoint(tiny_mae(img_size=(32, 16)), tiny_mae(img_size=(16, 32)).state_dict())


@pytest.mark.parametrize("content", ["truncated", "random bytes", "empty"])
def test_a_file_that_is_not_a_whole_checkpoint_gets_one_line_naming_it(tiny_mae, tmp_path, content):
    torch.save(full_checkpoint(tiny_mae()), tmp_path / "whole.pth")
    whole = (tmp_path / "whole.pth").read_bytes()
    data = {"truncated": whole[: len(whole) // 2], "random bytes": torch.randint(0, 256, (5000,),
            dtype=torch.uint8).numpy().tobytes(), "empty": b""}[content]  # fmt: skip
    (tmp_path / "bad.pth").write_bytes(data)
    with pytest.raises(ValueError) as error:
        load_checkpoint(tiny_mae(), tmp_path / "bad.pth")
    assert str(error.value).startswith(f"{tmp_path / 'bad.pth'} is not a readable checkpoint")
    assert len(str(error.value).splitlines()) == 1
