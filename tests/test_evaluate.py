"""Linear probing and fine-tuning, as functions and from the shell, on the offline labelled data."""

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from mae_minimal import mae_vit_mini_patch4_32px
from mae_minimal.checkpoint import model_config
from mae_minimal.data import build_dataset
from mae_minimal.evaluate import (
    build_classifier,
    evaluate_encoder,
    fine_tune,
    linear_probe,
    main,
    mean_and_sem,
    pixels,
    reconstruction_errors,
)
from mae_minimal.masking import masking_noise
from mae_minimal.train import main as pretrain

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_ONE_STEP = ["--model", "mae_vit_mini_patch4_32px", "--dataset", "photos", "--epoch_length", "16",
                     "--batch_size", "8", "--max_steps", "1", "--num_workers", "0", "--no_progress"]  # fmt: skip


def small_shapes():
    train = build_dataset("shapes", "train", 32, augment=False, length=120)
    val = build_dataset("shapes", "val", 32, augment=False, length=40)
    return train, val


def test_linear_probe_trains_only_a_head_on_frozen_features():
    train, val = small_shapes()
    classifier = build_classifier("vit_mini_patch4_32px", 10, mae_vit_mini_patch4_32px().state_dict(), False)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    result = linear_probe(classifier, train, val, epochs=30, warmup_epochs=2, batch_size=32, progress=False)
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    assert result["top1"] > 0.2  # ten classes: chance is 0.1
    assert 0 < result["train_loss"] < 2.3  # below the loss of a uniform guess, log(10)


def test_fine_tuning_trains_the_encoder_too():
    train, val = small_shapes()
    classifier = build_classifier("vit_mini_patch4_32px", 10)
    before = classifier.blocks[0].attn.qkv.weight.clone()
    result = fine_tune(classifier, train, val, epochs=2, warmup_epochs=1, batch_size=32, progress=False)
    assert not torch.equal(before, classifier.blocks[0].attn.qkv.weight)
    assert result["train_loss"] < 2.3  # the loss of a uniform guess over ten classes is log(10)


@pytest.mark.parametrize("mode", ["linprobe", "finetune"])
def test_each_mode_runs_from_a_train_checkpoint_and_from_random_init(tmp_path, mode):
    pretrain([*PRETRAIN_ONE_STEP, "--output_dir", str(tmp_path / "pretrain")])
    common = [mode, "--dataset", "shapes", "--train_size", "64", "--epochs", "1", "--warmup_epochs", "0",
              "--batch_size", "32", "--no_progress"]  # fmt: skip
    pretrained = main([*common, "--checkpoint", str(tmp_path / "pretrain" / "checkpoint.pth"),
                       "--output_dir", str(tmp_path / "a")])  # fmt: skip
    random = main(
        [*common, "--random_init", "--model", "vit_mini_patch4_32px", "--output_dir", str(tmp_path / "b")]
    )
    assert pretrained["encoder"] == random["encoder"] == dict(img_size=32, patch_size=4, embed_dim=192, depth=6)
    assert json.loads((tmp_path / "a" / f"{mode}.json").read_text())["top1"] == pretrained["top1"]
    assert random["init"] == "random" and pretrained["pool"] == ("cls" if mode == "linprobe" else "mean")


def test_runs_as_a_script(tmp_path):
    script = str(ROOT / "mae_minimal" / "evaluate.py")
    args = [
        "linprobe",
        "--dataset",
        "shapes",
        "--random_init",
        "--model",
        "vit_mini_patch4_32px",
        "--train_size",
        "32",
        "--epochs",
        "1",
    ]
    command = [sys.executable, script, *args, "--no_progress", "--output_dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "top-1" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "none.pth"], "no checkpoint file at"),
        (["--random_init"], "--model is needed"),
        (["--random_init", "--model", "vit_mini_patch4_32px", "--dataset", "photos"], "photos has no labels"),
        (["--random_init", "--model", "vit_mini_patch4_32px", "--lr", "-1"], "--lr must be a positive number"),
        (["--random_init", "--model", "vit_mini_patch4_32px", "--blr", "nan"], "--blr must be a positive number"),
        (["--random_init", "--model", "vit_mini_patch4_32px", "--layer_decay", "0"], "--layer_decay must be in"),
        (["--checkpoint", "empty.pth"], "empty.pth is not a readable checkpoint"),
    ],
    ids=["missing checkpoint", "no model for a random init", "unlabelled dataset", "negative lr", "nan blr",
         "no layer decay", "empty checkpoint"],
)
def test_bad_input_gets_one_clear_line_and_writes_nothing(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["linprobe", *args, "--output_dir", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(error.splitlines()) == 1 and error.startswith("error: ") and message in error
    assert not (tmp_path / "out").exists()


RANDOM_PROBE = ["linprobe", "--random_init", "--model", "vit_mini_patch4_32px", "--dataset", "shapes", "--train_size",
                "32", "--epochs", "1", "--no_progress"]  # fmt: skip


@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(where, tmp_path, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    output_dir = tmp_path / "a_file" if where == "a file" else tmp_path / "a_file" / "results"
    monkeypatch.setattr("mae_minimal.evaluate.build_dataset", lambda *a, **k: pytest.fail("the work started"))
    with pytest.raises(SystemExit) as exit_info:
        main([*RANDOM_PROBE, "--output_dir", str(output_dir)])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(error.splitlines()) == 1
    assert error.startswith(f"error: --output_dir {output_dir} ") and "is a file, not a folder" in error


def test_the_accuracy_is_printed_even_when_the_result_cannot_be_written(tmp_path, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        main([*RANDOM_PROBE, "--output_dir", str(tmp_path)])
    output = capsys.readouterr()
    assert exit_info.value.code == 2 and "top-1" in output.out
    assert output.err.strip().splitlines() == [
        f"error: could not write the result to {tmp_path} ([Errno 28] No space left on device); it is printed above"
    ]


def test_reconstruction_errors_compare_the_model_with_the_visible_mean_fill(tiny_mae):
    imgs = torch.randn(6, 3, 32, 32)
    dataset = torch.utils.data.TensorDataset(imgs, torch.zeros(6))
    model = tiny_mae()
    errors = reconstruction_errors(model, dataset, seed=0)
    noise = masking_noise("random", model.grid_size, 0.75, 6, torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, pred, mask = model(imgs, 0.75, noise)
    target = model.patchify(imgs)
    removed = mask.bool()
    visible_mean = torch.stack([target[i][~removed[i]].mean() for i in range(6)])
    expected_fill = torch.cat([(target[i][removed[i]] - visible_mean[i]) ** 2 for i in range(6)]).mean()
    assert errors["visible_mean_mse"] == pytest.approx(expected_fill.item(), rel=1e-5)
    assert errors["mse"] == pytest.approx(((pred - target) ** 2)[removed].mean().item(), rel=1e-5)
    assert errors["ratio"] == pytest.approx(errors["mse"] / errors["visible_mean_mse"])


def test_reconstruction_errors_of_a_norm_pix_model_compare_it_with_flat_patches(tiny_mae):
    imgs = torch.randn(6, 3, 32, 32) * 3 + 1
    dataset = torch.utils.data.TensorDataset(imgs, torch.zeros(6))
    model = tiny_mae(norm_pix_loss=True)
    errors = reconstruction_errors(model, dataset, seed=0)
    noise = masking_noise("random", model.grid_size, 0.75, 6, torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss, pred, mask = model(imgs, 0.75, noise)
    assert errors["mse"] == pytest.approx(loss.item(), rel=1e-5)  # the loss is the mse on removed patches
    assert errors["flat_patch_mse"] == pytest.approx(model.forward_loss(imgs, torch.zeros_like(pred), mask).item())
    assert errors["ratio"] == pytest.approx(errors["mse"] / errors["flat_patch_mse"])


def test_the_standard_error_is_the_spread_of_the_mean_over_seeds():
    mean, sem = mean_and_sem([0.7, 0.8, 0.9])
    assert mean == pytest.approx(0.8) and sem == pytest.approx(0.1 / 3**0.5)
    assert mean_and_sem([0.5]) == (0.5, 0.0)


def test_raw_pixels_are_one_feature_vector_per_image():
    features, labels = pixels(build_dataset("shapes", "val", 32, augment=False, length=5))
    assert features.shape == (5, 3 * 32 * 32) and labels.shape == (5,)


def test_evaluate_encoder_scores_each_protocol_once_per_seed_as_its_parts_do(tiny_mae):
    imgs, labels = torch.randn(48, 3, 32, 32), torch.arange(48) % 3
    dataset = torch.utils.data.TensorDataset(imgs, labels)
    mae = tiny_mae()
    checkpoint = {"model": mae.state_dict(), "model_config": model_config(mae)}
    scores = evaluate_encoder(checkpoint, dataset, dataset, dataset, classes=3, seeds=(0, 1), finetune_epochs=1,
                              probe_epochs=2)  # fmt: skip
    assert set(scores) == {"fine_tune", "linear_probe"} and all(len(s) == 2 for s in scores.values())
    torch.manual_seed(1)
    classifier = build_classifier(None, 3, checkpoint, global_pool=True)
    by_hand = fine_tune(classifier, dataset, dataset, epochs=1, blr=4e-3, batch_size=64, layer_decay=0.75,
                        warmup_epochs=1, seed=1, progress=False)  # fmt: skip
    assert scores["fine_tune"][1] == by_hand["top1"]


def test_a_random_encoder_is_drawn_anew_for_every_seed(tiny_mae):
    dataset = torch.utils.data.TensorDataset(torch.randn(40, 3, 32, 32), torch.arange(40) % 2)
    probe = partial(evaluate_encoder, None, dataset, dataset, dataset, classes=2, probe_epochs=1,
                    model_name="vit_mini_patch4_32px", protocols=("linear_probe",))  # fmt: skip
    assert probe(seeds=(0, 1))["linear_probe"][1] == probe(seeds=(1,))["linear_probe"][0]
