"""The library training loop (mae_minimal/pretrain.py), called as a function: one step, accumulation,
the learning rate, masking strategies, resuming, stopping, and models rebuilt from what it saves."""

import copy
import multiprocessing
from functools import partial

import pytest
import torch

from mae_minimal import PretrainConfig, load_model, pretrain, train_step
from mae_minimal.checkpoint import model_config
from mae_minimal.data import build_dataset
from mae_minimal.distributed import Context
from mae_minimal.pretrain import Hooks, Schedule, mae_loss, make_loader, resolved_precision

FAST = dict(batch_size=4, epochs=2, log_every=1, warmup_epochs=0.5)


@pytest.fixture(scope="module")
def photos():
    """24 random 32x32 crops of the offline photographs: 6 steps an epoch at batch 4."""
    return build_dataset("photos", "train", 32, length=24)


class Recorder(Hooks):
    """Keeps every saved state; asks to stop after `stop_after` steps."""

    def __init__(self, stop_after=None):
        self.saved, self.stop_after, self.step = [], stop_after, 0

    def step_done(self, step):
        self.step = step

    def save(self, state):
        self.saved.append(copy.deepcopy(state))

    def stop_requested(self):
        return self.stop_after is not None and self.step >= self.stop_after


def test_accumulating_two_micro_batches_takes_the_step_of_one_batch_of_both(tiny_mae):
    imgs, noise = torch.randn(8, 3, 32, 32), torch.rand(8, 16)
    whole, halves = tiny_mae(), tiny_mae()
    halves.load_state_dict(whole.state_dict())
    loss_fn = partial(mae_loss, 0.75)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (whole, halves)]
    for group in optimizers[0].param_groups + optimizers[1].param_groups:
        group["lr_scale"] = 1.0
    one = train_step(whole, loss_fn, [(imgs, None, noise)], optimizers[0], lr=0.1)
    two = train_step(halves, loss_fn, [(imgs[:4], None, noise[:4]), (imgs[4:], None, noise[4:])], optimizers[1], lr=0.1)
    torch.testing.assert_close(one, two)  # every image masks the same number of patches: equal means
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(halves.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(whole.decoder_pred.weight, tiny_mae().decoder_pred.weight)


def test_the_lr_is_blr_times_the_effective_batch_over_256_unless_given():
    config = PretrainConfig(batch_size=8, accum_iter=2, blr=1e-3, epochs=3, warmup_epochs=1)
    schedule = Schedule.of(config, batches_per_epoch=10, world_size=4)
    assert schedule.lr == pytest.approx(1e-3 * 8 * 2 * 4 / 256)
    assert (schedule.steps_per_epoch, schedule.total_steps, schedule.warmup_steps) == (5, 15, 5)
    assert Schedule.of(PretrainConfig(lr=0.5), 10, 4).lr == 0.5
    assert Schedule.of(PretrainConfig(epochs=3, max_steps=7), 10, 1).last_step == 7


@pytest.mark.parametrize("computes_in_bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_precision_is_bf16_on_gpus_that_compute_in_it_and_fp16_on_older_ones(
        monkeypatch, computes_in_bf16, expected):
    # an older GPU (a T4) can emulate bf16, slowly: "auto" must ask for bf16 in hardware
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or computes_in_bf16)
    assert resolved_precision("auto", torch.device("cuda")) == expected
    assert resolved_precision("auto", torch.device("cpu")) == "fp32"
    assert resolved_precision("fp32", torch.device("cuda")) == "fp32"


def test_a_fractional_number_of_epochs_runs_that_share_of_the_steps(tiny_mae, photos):
    schedule = Schedule.of(PretrainConfig(epochs=4 / 3, warmup_epochs=1 / 6), batches_per_epoch=468, world_size=1)
    assert (schedule.total_steps, schedule.last_step, schedule.warmup_steps) == (624, 624, 78)
    result = pretrain(tiny_mae(), photos, PretrainConfig(**{**FAST, "epochs": 1.5}))
    assert result.step == 9 and [r["step"] for r in result.log][-1] == 9  # 6 steps an epoch


def test_a_run_logs_every_step_and_its_lr_warms_up_then_decays(tiny_mae, photos):
    result = pretrain(tiny_mae(), photos, PretrainConfig(**FAST))
    assert [r["step"] for r in result.log] == list(range(1, 13)) and not result.stopped
    lrs = [r["lr"] for r in result.log]
    peak = lrs.index(max(lrs))
    assert lrs[0] == 0 and lrs[:peak] == sorted(lrs[:peak]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)


def visible_patches(noise, kept=16):
    """noise: (N, 64) -> (N, 8, 8), 1 where a patch stays visible (the `kept` lowest noise)."""
    return torch.zeros_like(noise).scatter_(1, noise.argsort(dim=1)[:, :kept], 1.0).view(-1, 8, 8)


def borders(grid):
    """How many neighbouring pairs of patches differ: (N, rows, cols) -> a number."""
    return int((grid[:, 1:] != grid[:, :-1]).sum() + (grid[:, :, 1:] != grid[:, :, :-1]).sum())


@pytest.mark.parametrize("masking", ["random", "block", "grid"])
def test_every_masking_strategy_reaches_the_model_as_noise(tiny_mae, photos, masking):
    model = tiny_mae(img_size=32, patch_size=4)  # an 8 x 8 grid
    config = PretrainConfig(masking=masking, **FAST)
    loader = make_loader(photos, model, config, Context(0, 1, torch.device("cpu")))
    loader.sampler.start_epoch(0)
    _, _, noise = next(iter(loader))
    kept = visible_patches(noise)
    if masking == "grid":  # one visible patch in each 2 x 2 cell
        assert torch.equal(kept.unfold(1, 2, 2).unfold(2, 2, 2).sum(dim=(-1, -2)), torch.ones(4, 4, 4))
    if masking == "block":  # removed patches come in rectangles: far fewer visible/removed borders
        assert borders(kept) < 0.7 * borders(visible_patches(torch.rand(4, 64)))
    result = pretrain(model, photos, PretrainConfig(masking=masking, max_steps=2, **FAST))
    assert result.step == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.log)


def model_with(tiny_mae, state_dict):
    model = tiny_mae()
    model.load_state_dict(state_dict)
    return model


def test_resuming_from_a_saved_state_continues_exactly(tiny_mae, photos):
    config = PretrainConfig(save_every=1, **FAST)
    straight_hooks, initial = Recorder(), tiny_mae().state_dict()
    straight = pretrain(model_with(tiny_mae, initial), photos, config, hooks=straight_hooks)
    first = Recorder()
    pretrain(model_with(tiny_mae, initial), photos, PretrainConfig(**{**vars(config), "max_steps": 4}), hooks=first)
    torch.manual_seed(123)  # whatever happened in between: the state carries the random generators
    second = Recorder()
    resumed = pretrain(tiny_mae(), photos, config, hooks=second, resume=first.saved[-1])
    assert first.saved[-1]["step"] == 4
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in straight.log[4:]]
    ours, theirs = second.saved[-1]["model"], straight_hooks.saved[-1]["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_stop_request_saves_and_returns_at_the_next_step_boundary(tiny_mae, photos):
    hooks = Recorder(stop_after=3)
    result = pretrain(tiny_mae(), photos, PretrainConfig(**FAST), hooks=hooks)
    assert result.stopped and result.step == 3 and hooks.saved[-1]["step"] == 3


def test_load_model_rebuilds_the_model_a_run_saved_without_being_told_which(tiny_mae, photos):
    model = tiny_mae(norm_pix_loss=True, decoder_pos_embed_to="mask")
    hooks = Recorder()
    pretrain(model, photos, PretrainConfig(max_steps=2, **FAST), hooks=hooks)
    rebuilt = load_model(hooks.saved[-1])
    assert type(rebuilt) is type(model) and model_config(rebuilt) == model_config(model)
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    model.eval(), rebuilt.eval()
    assert torch.equal(model(imgs, 0.75, noise)[1], rebuilt(imgs, 0.75, noise)[1])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(mask_ratio=0.0), "removes no patch"),
        (dict(masking="grid", mask_ratio=0.6), "grid masking keeps one patch"),
        (dict(masking="spiral"), "--masking must be one of"),
        (dict(batch_size=0), "--batch_size must be at least 1"),
        (dict(epochs=0), "--epochs must be a positive number"),
        (dict(blr=float("nan")), "--blr must be a positive number"),
        (dict(precision="fp8"), "--precision must be one of"),
        (dict(objective="inpaint"), "--objective must be one of"),
        (dict(objective="denoise", dae_noise_std=0.0), "--dae_noise_std must be a positive number"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_any_step(tiny_mae, photos, change, message):
    model = tiny_mae()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message):
        pretrain(model, photos, PretrainConfig(**{**FAST, **change}))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class FailingHooks(Hooks):
    def step_done(self, step):
        if step == 2:
            raise OSError("no space left on device")


def test_a_failing_run_shuts_its_data_loading_workers_down_before_the_error_leaves_it(tiny_mae, photos):
    with pytest.raises(OSError, match="no space left"):
        pretrain(tiny_mae(), photos, PretrainConfig(**FAST, num_workers=2), hooks=FailingHooks())
    assert multiprocessing.active_children() == []  # they ignore SIGTERM: left to Python's exit, it would hang


def test_a_resumed_run_averages_the_steps_logged_before_the_stop_into_its_first_log_record(tiny_mae, photos):
    config = PretrainConfig(save_every=1, **{**FAST, "log_every": 5})
    initial = tiny_mae().state_dict()
    straight = pretrain(model_with(tiny_mae, initial), photos, config)
    first = Recorder()
    pretrain(model_with(tiny_mae, initial), photos, PretrainConfig(**{**vars(config), "max_steps": 7}), hooks=first)
    resumed = pretrain(tiny_mae(), photos, config, resume=first.saved[-1])
    assert [r["step"] for r in straight.log] == [5, 10, 12] and [r["step"] for r in resumed.log] == [10, 12]
    assert [r["loss"] for r in resumed.log] == [r["loss"] for r in straight.log[1:]]
