"""The committed reference runs (runs/NAME/) are what their commands compute with today's code:
the first steps of every run are trained again and must log the losses its committed log holds."""

import json
from pathlib import Path

import pytest
import torch

from mae_minimal import load_model
from mae_minimal.data import build_dataset
from mae_minimal.evaluate import reconstruction_errors
from mae_minimal.train import get_args_parser
from mae_minimal.train import main as train_main

RUNS = sorted(path.parent for path in (Path(__file__).resolve().parents[1] / "runs").glob("*/manifest.json"))
CHECKED_STEPS = 20


def read_log(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_there_is_a_committed_reference_run():
    assert RUNS, "runs/ holds no reference run (python runs/make.py NAME makes one)"


@pytest.mark.parametrize("run", RUNS, ids=lambda path: path.name)
def test_the_first_steps_of_a_committed_run_reproduce_its_log(run, tmp_path):
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["command"][:2] == ["python", "mae_minimal/train.py"]
    torch.set_num_threads(manifest["threads"])
    train_main([*manifest["command"][2:], "--max_steps", str(CHECKED_STEPS), "--output_dir", str(tmp_path),
                "--no_progress"])  # fmt: skip
    committed = [r for r in read_log(run / "log.jsonl") if "loss" in r and r["step"] <= CHECKED_STEPS]
    again = [r for r in read_log(tmp_path / "log.jsonl") if "loss" in r]
    assert [r["step"] for r in again] == [r["step"] for r in committed] and committed
    for ours, theirs in zip(again, committed):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5), ours["step"]
        assert ours["lr"] == pytest.approx(theirs["lr"], rel=1e-9)


@pytest.mark.parametrize("run", RUNS, ids=lambda path: path.name)
def test_the_committed_weights_give_the_committed_metrics(run):
    model = load_model(run / "weights.pth")
    metrics = json.loads((run / "metrics.json").read_text())
    flags = get_args_parser().parse_args(json.loads((run / "manifest.json").read_text())["command"][2:])
    held_out = build_dataset(flags.dataset, "val", model.patch_embed.img_size[0], augment=False)
    errors = reconstruction_errors(model, held_out, flags.mask_ratio, flags.masking)
    for name, value in errors.items():
        assert value == pytest.approx(metrics[name], rel=1e-4), name
    assert [r for r in read_log(run / "log.jsonl") if "loss" in r][-1]["loss"] == metrics["final_train_loss"]
