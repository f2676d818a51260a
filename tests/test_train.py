"""The pretraining tool, run for a few steps on the CPU: outputs, exact resume, signals, DDP, bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mae_minimal import MaskedAutoencoderViT
from mae_minimal.run_log import training_records
from mae_minimal.train import main

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--model",
    "mae_vit_mini_patch4_32px",
    "--dataset",
    "photos",
    "--epoch_length",
    "48",
    "--batch_size",
    "8",
    "--epochs",
    "3",
    "--num_workers",
    "0",
    "--log_every",
    "1",
    "--blr",
    "2e-3",
    "--warmup_epochs",
    "1",
    "--no_progress",
]  # fmt: skip  6 steps an epoch, a gentle warmup (Adam's first steps amplify rounding differences)


def run_main(*args):
    main([*FAST, *map(str, args)])


def log_records(output_dir):
    return [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]




def launch(*args, torchrun=False, nproc=2):
    command = (
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        if torchrun
        else [sys.executable]
    )
    return subprocess.run([*command, str(ROOT / "mae_minimal" / "train.py"), *FAST, *map(str, args)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_short_run_leaves_checkpoint_log_tensorboard_and_reconstructions(tmp_path):
    run_main("--max_steps", 3, "--output_dir", tmp_path)
    records = training_records(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert set(records[0]) == {"step", "epoch", "loss", "lr", "images_per_s"}
    held_out = log_records(tmp_path)[-1]
    assert held_out["step"] == 3 and held_out["mse_ratio"] == held_out["held_out_mse"] / held_out["visible_mean_mse"]
    checkpoint = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert checkpoint["step"] == 3
    assert {"model", "model_config", "optimizer", "scaler", "epoch", "pretrain_config", "args", "rng"} <= set(checkpoint)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000


def test_runs_as_a_script_and_as_a_module(tmp_path):
    result = launch("--max_steps", 1, "--output_dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "done: 1 steps" in result.stdout
    help_text = subprocess.run(
        [sys.executable, "-m", "mae_minimal.train", "--help"], capture_output=True, text=True
    )
    assert "--mask_ratio" in help_text.stdout and "--resume" in help_text.stdout


@pytest.mark.parametrize("masking", ["random", "block", "grid"])
def test_resuming_mid_epoch_continues_exactly_with_every_masking(tmp_path, masking):
    run_main("--masking", masking, "--max_steps", 10, "--output_dir", tmp_path / "straight")
    # step 5 is inside the first epoch of 6
    run_main("--masking", masking, "--max_steps", 5, "--output_dir", tmp_path / "stopped")
    run_main("--masking", masking, "--max_steps", 10, "--output_dir", tmp_path / "stopped", "--resume", "auto")
    straight, resumed = training_records(tmp_path / "straight"), training_records(tmp_path / "stopped")
    assert [r["step"] for r in resumed] == list(range(1, 11))
    assert [r["loss"] for r in resumed[5:]] == [r["loss"] for r in straight[5:]]
    weights = [
        torch.load(tmp_path / d / "checkpoint.pth", weights_only=True)["model"]
        for d in ("straight", "stopped")
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_two_ddp_processes_take_the_same_step_as_one_process_with_the_same_global_batch(tmp_path):
    two = launch("--max_steps", 2, "--batch_size", 2, "--accum_iter", 2, "--output_dir", tmp_path / "two",
                 torchrun=True)  # fmt: skip
    assert two.returncode == 0, two.stderr
    run_main("--max_steps", 2, "--batch_size", 8, "--output_dir", tmp_path / "one")
    one_weights = torch.load(tmp_path / "one" / "checkpoint.pth", weights_only=True)["model"]
    two_weights = torch.load(tmp_path / "two" / "checkpoint.pth", weights_only=True)["model"]
    for name, value in one_weights.items():
        torch.testing.assert_close(two_weights[name], value, rtol=1e-4, atol=1e-6)
    assert [r["loss"] for r in training_records(tmp_path / "two")] == pytest.approx(
        [r["loss"] for r in training_records(tmp_path / "one")]
    )


def start_in_background(output_dir, *args):
    command = [sys.executable, str(ROOT / "mae_minimal" / "train.py"), *FAST, "--epochs", "1000",
               "--output_dir", str(output_dir), *map(str, args)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_steps(output_dir, steps, process):
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        log = output_dir / "log.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= steps:
            return
        time.sleep(0.2)
    raise AssertionError(f"the run did not reach step {steps}: {process.communicate()}")


def test_kill_9_mid_run_loses_at_most_the_unsaved_steps(tmp_path):
    process = start_in_background(tmp_path, "--save_every", 1)
    wait_for_steps(tmp_path, 4, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved_step = torch.load(tmp_path / "checkpoint.pth", weights_only=True)["step"]
    assert saved_step >= 3
    run_main("--epochs", 1000, "--max_steps", saved_step + 2, "--output_dir", tmp_path, "--resume", "auto")
    assert [r["step"] for r in training_records(tmp_path)] == list(range(1, saved_step + 3))
    assert not list(tmp_path.glob("*.tmp"))


def test_sigterm_saves_a_checkpoint_at_the_next_step_and_exits(tmp_path):
    process = start_in_background(tmp_path)
    wait_for_steps(tmp_path, 2, process)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "stopped by SIGTERM" in stdout
    checkpoint = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert checkpoint["step"] == training_records(tmp_path)[-1]["step"] >= 2


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    run_main("--max_steps", 6, "--output_dir", tmp_path)
    original = MaskedAutoencoderViT.forward_loss
    monkeypatch.setattr(MaskedAutoencoderViT, "forward_loss", lambda *a: original(*a) * float("nan"))
    with pytest.raises(SystemExit) as exit_info:
        run_main("--max_steps", 9, "--output_dir", tmp_path, "--resume", "auto")
    assert exit_info.value.code == 2
    assert "the loss became nan by step 7" in capsys.readouterr().err
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True)["step"] == 6


def bad_input_cases(write_image_folder, tmp_path):
    broken = tmp_path / "broken"
    (broken / "cat").mkdir(parents=True)
    (broken / "cat" / "0.png").write_bytes(b"\x89PNG but not really")
    write_image_folder(tmp_path / "few", per_class=1)
    (tmp_path / "empty").mkdir()
    other_model = tmp_path / "other_model"
    main([*FAST, "--model", "mae_vit_mini_patch8_64px", "--max_steps", "1", "--output_dir", str(other_model)])
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((other_model / "checkpoint.pth").read_bytes()[:5000])
    random_bytes, empty = tmp_path / "random.pth", tmp_path / "empty.pth"
    random_bytes.write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8).numpy().tobytes())
    empty.write_bytes(b"")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    return {
        "missing data path": (
            ["--dataset", "imagefolder", "--data_path", tmp_path / "nowhere"],
            "no image folder at",
        ),
        "empty folder": (
            ["--dataset", "imagefolder", "--data_path", tmp_path / "empty"],
            "found no images in",
        ),
        "unreadable images": (["--dataset", "imagefolder", "--data_path", broken], "cannot read image"),
        "fewer images than a step": (
            ["--dataset", "imagefolder", "--data_path", tmp_path / "few"],
            "fewer than one",
        ),
        "input size": (["--input_size", 30], "not divisible by the patch size 4"),
        "mask ratio": (["--mask_ratio", 1.0], r"mask_ratio must be in \[0, 1\)"),
        "missing checkpoint": (["--resume", tmp_path / "nothing.pth"], "no checkpoint to resume at"),
        "checkpoint of another model": (
            ["--resume", other_model / "checkpoint.pth"],
            "made with other settings .--model mae_vit_mini_patch8_64px -> mae_vit_mini_patch4_32px.",
        ),
        "resume with another schedule": (
            ["--epochs", 5, "--resume", other_model / "checkpoint.pth", "--model", "mae_vit_mini_patch8_64px"],
            r"other settings \(--epochs 3.0 -> 5.0\)",
        ),
        "truncated checkpoint": (["--resume", truncated], "truncated.pth is not a readable checkpoint"),
        "random bytes as a checkpoint": (["--resume", random_bytes], "random.pth is not a readable checkpoint"),
        "empty checkpoint": (["--resume", empty], "empty.pth is not a readable checkpoint"),
        "resume with another batch size": (
            ["--resume", other_model / "checkpoint.pth", "--model", "mae_vit_mini_patch8_64px", "--batch_size", 4],
            r"other settings \(--batch_size 8 -> 4\)",
        ),
        "resume with another image size": (
            ["--resume", other_model / "checkpoint.pth", "--model", "mae_vit_mini_patch8_64px", "--input_size", 32],
            r"other settings \(--input_size None -> 32\)",
        ),
        "resume with another dataset": (
            ["--resume", other_model / "checkpoint.pth", "--model", "mae_vit_mini_patch8_64px", "--dataset", "shapes"],
            r"other settings \(--dataset photos -> shapes\)",
        ),
        "nothing removed": (["--mask_ratio", 0], "removes no patch"),
        "grid at a ratio it cannot make": (["--masking", "grid", "--mask_ratio", 0.5], "grid masking keeps one"),
        "negative lr": (["--blr", -1], "--blr must be a positive number"),
        "nan lr": (["--lr", "nan"], "--lr must be a positive number"),
        "negative workers": (["--num_workers", -1], "--num_workers must be at least 0"),
        "no log interval": (["--log_every", 0], "--log_every must be at least 1"),
        "output folder is a file": (["--output_dir", a_file], "is a file, not a folder"),
        "output folder cannot be made": (["--output_dir", a_file / "run"], "run cannot be created: .* is a file"),
        **({} if torch.cuda.is_available() else {"no GPU": (["--device", "cuda"], "PyTorch sees no GPU here")}),
    }


def test_each_bad_input_ends_with_one_clear_line_and_writes_nothing(write_image_folder, tmp_path, capsys):
    for name, (args, message) in bad_input_cases(write_image_folder, tmp_path).items():
        capsys.readouterr()
        output_dir = tmp_path / f"output {name}"
        with pytest.raises(SystemExit) as exit_info:
            run_main("--output_dir", output_dir, *args)
        error = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2, name
        assert len(error.splitlines()) == 1 and error.startswith("error: "), (name, error)
        assert re.search(message, error), (name, error)
        assert not output_dir.exists() and (tmp_path / "a_file").read_text() == "not a folder", name


def test_an_error_mid_run_with_data_loading_workers_ends_the_process_promptly_with_one_line(tmp_path):
    (tmp_path / "checkpoint.pth.tmp").mkdir()  # the first checkpoint write (step 6) fails
    command = [sys.executable, str(ROOT / "mae_minimal" / "train.py"), *FAST, "--num_workers", "2",
               "--output_dir", str(tmp_path)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=120)  # the workers ignore SIGTERM: it used to hang here for ever
    finally:
        process.kill()
    assert process.returncode == 2
    assert stderr.strip().splitlines() == [
        f"error: could not write the checkpoint {tmp_path / 'checkpoint.pth'} ([Errno 21] Is a directory: "
        f"'{tmp_path / 'checkpoint.pth.tmp'}'); the previous one, if any, is kept"
    ]


def test_a_failed_checkpoint_write_leaves_nothing_that_blocks_the_next_resume(tmp_path, monkeypatch, capsys):
    run_main("--max_steps", 6, "--output_dir", tmp_path)
    original_save = torch.save

    def disk_full(state, file):
        file.write(b"part of a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        run_main("--max_steps", 12, "--output_dir", tmp_path, "--resume", "auto")
    assert exit_info.value.code == 2
    assert "error: could not write the checkpoint" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.glob("checkpoint*")) == ["checkpoint.pth"]
    monkeypatch.setattr(torch, "save", original_save)
    run_main("--max_steps", 12, "--output_dir", tmp_path, "--resume", "auto")
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True)["step"] == 12


def test_a_resumed_run_logs_the_losses_of_an_uninterrupted_one_whatever_the_log_interval(tmp_path):
    run_main("--log_every", 5, "--max_steps", 12, "--output_dir", tmp_path / "straight")
    run_main("--log_every", 5, "--max_steps", 7, "--output_dir", tmp_path / "stopped")  # logs step 7 as its last
    run_main("--log_every", 5, "--max_steps", 12, "--output_dir", tmp_path / "stopped", "--resume", "auto")
    straight, resumed = training_records(tmp_path / "straight"), training_records(tmp_path / "stopped")
    assert [r["step"] for r in straight] == [5, 10, 12] and [r["step"] for r in resumed] == [5, 7, 10, 12]
    assert [r["loss"] for r in resumed if r["step"] != 7] == [r["loss"] for r in straight]


def test_an_unreadable_image_met_mid_run_is_skipped_with_a_warning_naming_it(write_image_folder, tmp_path, capsys,
                                                                              monkeypatch):  # fmt: skip
    write_image_folder(tmp_path / "data", per_class=10)
    from mae_minimal import data

    original = data.image_folder

    def truncated_after_the_checks(root, split, transform):  # as a file past the first 1,000: only read mid-run
        dataset = original(root, split, transform)
        if split == "val":  # built after the training split
            broken = tmp_path / "data" / "cat" / "3.png"
            broken.write_bytes(broken.read_bytes()[:60])
        return dataset

    monkeypatch.setattr(data, "image_folder", truncated_after_the_checks)
    run_main("--dataset", "imagefolder", "--data_path", tmp_path / "data", "--batch_size", 4, "--max_steps", 4,
             "--output_dir", tmp_path / "out")  # fmt: skip
    warnings = set(capsys.readouterr().err.strip().splitlines())
    assert len(warnings) == 1
    assert warnings.pop().startswith(f"warning: skipped unreadable image {tmp_path / 'data' / 'cat' / '3.png'} (")
    assert [r["step"] for r in training_records(tmp_path / "out")] == [1, 2, 3, 4]


def test_fewer_images_than_ranks_is_refused_under_torchrun(write_image_folder, tmp_path):
    write_image_folder(tmp_path / "one", classes=("cat",), per_class=1)
    result = launch("--dataset", "imagefolder", "--data_path", tmp_path / "one", "--batch_size", 1,
                    "--output_dir", tmp_path / "out", torchrun=True)  # fmt: skip
    assert result.returncode != 0
    assert "error: the dataset has 1 images, fewer than one optimizer step needs (2 ranks" in result.stderr
    assert "Traceback" not in result.stderr.split("error: ")[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("omp_num_threads, num_workers, expected", [(None, 0, 2), (None, 1, 1), (None, 4, 1), ("2", 1, 2)],
                         ids=["no workers", "one worker", "more workers than cores", "OMP_NUM_THREADS wins"])
def test_on_a_cpu_the_main_process_computes_with_the_cores_its_data_workers_leave(
    monkeypatch, omp_num_threads, num_workers, expected
):
    from mae_minimal.train import use_free_cores

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})  # a machine of two cores
    if omp_num_threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp_num_threads)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # where OMP_NUM_THREADS is set, the process started with it
    try:
        use_free_cores(num_workers)
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("user_setting, expected", [(None, "1000"), ("5", "5")], ids=["default", "user's"])
def test_train_py_sets_a_short_openmp_spin_before_torch_loads_unless_the_user_chose_one(user_setting, expected):
    # torch's OpenMP reads GOMP_SPINCOUNT once, when torch loads: the script must set it before that
    code = (f"import runpy, sys; runpy.run_path({str(ROOT / 'mae_minimal' / 'train.py')!r}, run_name='x'); "
            "import os; print(os.environ['GOMP_SPINCOUNT'])")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if user_setting is not None:
        env["GOMP_SPINCOUNT"] = user_setting
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected]
    source = (ROOT / "mae_minimal" / "train.py").read_text()
    assert source.index('os.environ.setdefault("GOMP_SPINCOUNT"') < source.index("\nimport torch")
