"""The committed reference runs (runs/NAME/) are what their commands compute with today's code:
the first steps of every run are trained again and must log the losses its committed log holds."""

import json
from pathlib import Path

import pytest
import torch

from mae_minimal import load_model
from mae_minimal.data import build_dataset
from mae_minimal.evaluate import evaluate_encoder, evaluation_sets, pretext_errors
from mae_minimal.run_log import training_records
from mae_minimal.train import get_args_parser
from mae_minimal.train import main as train_main

RUNS_DIR = Path(__file__).resolve().parents[1] / "runs"
RUNS = sorted(path.parent for path in RUNS_DIR.glob("*/manifest.json"))
CHECKED_STEPS = 20


def test_there_is_a_committed_reference_run():
    assert RUNS, "runs/ holds no reference run (python runs/make.py NAME makes one)"


@pytest.mark.parametrize("run", RUNS, ids=lambda path: path.name)
def test_the_first_steps_of_a_committed_run_reproduce_its_log(run, tmp_path):
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["command"][:2] == ["python", "mae_minimal/train.py"]
    torch.set_num_threads(manifest["threads"])
    train_main([*manifest["command"][2:], "--max_steps", str(CHECKED_STEPS), "--output_dir", str(tmp_path),
                "--no_progress"])  # fmt: skip
    committed = [r for r in training_records(run) if r["step"] <= CHECKED_STEPS]
    again = training_records(tmp_path)
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
    errors = pretext_errors(model, held_out, vars(flags))
    for name, value in errors.items():
        assert value == pytest.approx(metrics[name], rel=1e-4), name
    assert training_records(run)[-1]["loss"] == metrics["final_train_loss"]


EVALUATED = sorted(path.parent.name for path in RUNS_DIR.glob("*/evaluation.json"))
CHECKED_EVALUATION = "random_75"  # one run's evaluation is redone in CI (all of them take an hour)


def test_the_committed_evaluation_of_a_run_reproduces_for_its_first_seed():
    assert CHECKED_EVALUATION in EVALUATED, f"runs/{CHECKED_EVALUATION} has no evaluation.json"
    committed = json.loads((RUNS_DIR / CHECKED_EVALUATION / "evaluation.json").read_text())
    settings = committed["settings"]
    torch.set_num_threads(committed["threads"])
    sets = evaluation_sets(settings["dataset"], settings["labelled"], settings["probe"], settings["test"])
    again = evaluate_encoder(RUNS_DIR / CHECKED_EVALUATION / "weights.pth", *sets, classes=10,
                             seeds=settings["seeds"][:1], finetune_epochs=settings["finetune_epochs"],
                             probe_epochs=settings["probe_epochs"], model_name=settings["model_name"])  # fmt: skip
    for protocol, scores in again.items():
        assert scores[0] == pytest.approx(committed[protocol][0], abs=1e-9), protocol


@pytest.mark.parametrize("name", EVALUATED)
def test_an_evaluation_was_made_by_its_command_with_three_seeds(name):
    evaluation = json.loads((RUNS_DIR / name / "evaluation.json").read_text())
    assert evaluation["command"] == ["python", "runs/make.py", "--evaluate", name]
    assert len(evaluation["settings"]["seeds"]) >= 3
    assert all(len(evaluation[p]) == len(evaluation["settings"]["seeds"]) for p in ("fine_tune", "linear_probe"))
