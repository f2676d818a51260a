"""The denoising autoencoder (mae_minimal/denoising.py): an MAE's modules with every patch seen,
every patch predicted and every patch scored; trained by the same loop as the MAE."""

import copy

import pytest
import torch

from mae_minimal import PretrainConfig, pretrain
from mae_minimal.classifier import ViTClassifier
from mae_minimal.data import build_dataset
from mae_minimal.denoising import DenoisingAutoencoder, pixel_noise
from mae_minimal.evaluate import denoising_errors
from mae_minimal.pretrain import Hooks, make_loader
from mae_minimal.distributed import Context

FAST = dict(batch_size=4, epochs=2, log_every=1, warmup_epochs=0.5, objective="denoise", dae_noise_std=0.5)


@pytest.fixture(scope="module")
def photos():
    return build_dataset("photos", "train", 32, length=24)


class Saves(Hooks):
    def __init__(self):
        self.saved = []

    def save(self, state):
        self.saved.append(copy.deepcopy(state))


def test_its_encoder_sees_every_patch_in_image_order_as_the_plain_vit_does(tiny_mae):
    mae = tiny_mae().eval()
    imgs = torch.randn(2, 3, 32, 32)
    vit = ViTClassifier.from_mae(mae, num_classes=2, global_pool=False).eval()
    with torch.no_grad():
        ours = mae.norm(mae.encode(imgs))
        latent, mask, _ = mae.forward_encoder(imgs, 0.0, torch.arange(16.0).expand(2, -1))
        assert torch.equal(ours, latent) and mask.sum() == 0  # nothing removed, nothing reordered
        assert torch.allclose(ours[:, 0], vit.forward_features(imgs), atol=1e-6)


def test_its_loss_is_the_mean_squared_error_of_every_patch_against_the_clean_image(tiny_mae):
    denoiser = DenoisingAutoencoder(tiny_mae(), noise_std=0.5)
    imgs, eps = torch.randn(2, 3, 32, 32), pixel_noise((3, 32, 32), 2, torch.Generator().manual_seed(0))
    loss, pred = denoiser(imgs, eps)
    assert pred.shape == (2, 16, 8 * 8 * 3)
    assert torch.allclose(loss, ((denoiser.mae.unpatchify(pred) - imgs) ** 2).mean())
    assert torch.allclose(denoiser.corrupt(imgs, eps) - imgs, 0.5 * eps, atol=1e-6)


def test_the_loader_hands_each_image_its_own_pixel_noise(tiny_mae, photos):
    config = PretrainConfig(**FAST)
    loader = make_loader(photos, tiny_mae(), config, Context(0, 1, torch.device("cpu")))
    loader.sampler.start_epoch(0)
    imgs, _, eps = next(iter(loader))
    assert eps.shape == imgs.shape and abs(eps.std().item() - 1) < 0.1
    assert not torch.equal(eps[0], eps[1])


def test_pretraining_it_lowers_its_held_out_error_and_resumes_exactly(tiny_mae, photos):
    config = PretrainConfig(**{**FAST, "epochs": 6, "lr": 3e-3, "save_every": 1})
    initial = tiny_mae().state_dict()
    straight_hooks, model = Saves(), tiny_mae()
    model.load_state_dict(initial)
    straight = pretrain(model, photos, config, hooks=straight_hooks)
    first, resumed_model = Saves(), tiny_mae()
    resumed_model.load_state_dict(initial)
    pretrain(resumed_model, photos, PretrainConfig(**{**vars(config), "max_steps": 5}), hooks=first)
    resumed = pretrain(tiny_mae(), photos, config, resume=first.saved[-1])
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in straight.log[5:]]
    untrained = tiny_mae()
    untrained.load_state_dict(initial)
    before = denoising_errors(DenoisingAutoencoder(untrained, 0.5), photos)
    after = denoising_errors(DenoisingAutoencoder(model, 0.5), photos)
    assert after["noisy_input_mse"] == pytest.approx(0.25, rel=0.05)  # the noise's variance
    assert after["mse"] < 0.7 * before["mse"], (before, after)
