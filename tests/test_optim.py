import pytest

from mae_minimal import ViTClassifier
from mae_minimal.optim import lr_at, param_groups


def test_lr_warms_up_linearly_then_follows_a_half_cosine_to_min_lr():
    assert lr_at(0, 100, 10, lr=1.0, min_lr=0.1) == 0.0
    assert lr_at(5, 100, 10, lr=1.0, min_lr=0.1) == pytest.approx(0.5)
    assert lr_at(10, 100, 10, lr=1.0, min_lr=0.1) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, lr=1.0, min_lr=0.1) == pytest.approx(0.55)  # half way down the cosine
    assert lr_at(100, 100, 10, lr=1.0, min_lr=0.1) == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_and_tokens(tiny_mae):
    model = tiny_mae()
    groups = param_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    undecayed = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert {"cls_token", "mask_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias"} <= undecayed
    assert {"blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "decoder_pred.weight"} <= decayed
    assert all(p.ndim > 1 for g in groups if g["weight_decay"] for p in g["params"])
    assert "pos_embed" not in undecayed | decayed  # frozen: not optimised at all


def test_layer_decay_scales_the_lr_down_from_the_head_to_the_embeddings():
    classifier = ViTClassifier(num_classes=3, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    names = {id(p): n for n, p in classifier.named_parameters()}
    scale = {
        names[id(p)]: g["lr_scale"]
        for g in param_groups(classifier, 0.05, layer_decay=0.5)
        for p in g["params"]
    }
    assert scale["head.weight"] == scale["fc_norm.weight"] == 1.0
    assert scale["blocks.1.attn.qkv.weight"] == 0.5
    assert scale["blocks.0.attn.qkv.weight"] == 0.25
    assert scale["patch_embed.proj.weight"] == scale["cls_token"] == 0.125
