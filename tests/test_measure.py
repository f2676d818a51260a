"""The measuring tools the book's chapters share: FLOP counts, steps, interleaved timing."""

import torch

from mae_minimal.block import Block
from mae_minimal.measure import (
    count_flops,
    forward_backward,
    interleaved_seconds,
    meta_model,
    num_threads,
)


def test_meta_model_has_every_shape_and_no_storage(tiny_mae):
    real, meta = tiny_mae(), meta_model(tiny_mae)
    for (name, p), (meta_name, q) in zip(real.named_parameters(), meta.named_parameters(), strict=True):
        assert (name, p.shape) == (meta_name, q.shape)
        assert q.is_meta


def test_count_flops_of_a_block_equals_24_t_d2_plus_4_t2_d():
    tokens, width = 13, 64
    block = meta_model(Block, dim=width, num_heads=4)
    x = torch.empty(1, tokens, width, device="meta")
    assert count_flops(lambda: block(x)) == 24 * tokens * width**2 + 4 * tokens**2 * width


def test_count_flops_by_op_and_by_module_add_up_to_the_total():
    block = meta_model(Block, dim=32, num_heads=4)
    x = torch.empty(2, 5, 32, device="meta")
    total = count_flops(lambda: block(x))
    by_op, by_module = count_flops(lambda: block(x), by="op"), count_flops(lambda: block(x), by="module")
    assert sum(by_op.values()) == total
    assert by_module["Global"] == total
    assert by_module["Block.mlp"] == 2 * 2 * 5 * 32 * 128 * 2  # two linear layers, width 4 D


def test_forward_backward_of_the_encoder_leaves_the_decoder_without_gradients(tiny_mae):
    model = tiny_mae()
    imgs = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, model.patch_embed.num_patches)
    forward_backward(model, imgs, 0.75, noise, part="encoder")
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert model.decoder_pred.weight.grad is None
    model.zero_grad(set_to_none=True)
    forward_backward(model, imgs, 0.75, noise)
    assert model.decoder_pred.weight.grad is not None


def test_a_training_step_counts_about_three_forward_passes(tiny_mae):
    model = meta_model(tiny_mae)
    imgs = torch.empty(4, 3, 32, 32, device="meta")
    noise = torch.empty(4, model.patch_embed.num_patches, device="meta")
    forward = count_flops(lambda: model(imgs, 0.75, noise))
    step = count_flops(lambda: forward_backward(model, imgs, 0.75, noise))
    assert 2.5 * forward < step <= 3 * forward  # the images need no input gradient


def test_interleaved_calls_take_turns_and_warm_up_untimed():
    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    seconds = interleaved_seconds(calls, repeats=3, warmup=2)
    assert order == ["a", "b"] * 5
    assert [len(times) for times in seconds.values()] == [3, 3]
    assert all(t >= 0 for times in seconds.values() for t in times)


def test_num_threads_applies_inside_the_block_and_restores_after():
    before = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
