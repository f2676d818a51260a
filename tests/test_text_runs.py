"""The committed text reference runs (runs/text_mlm/mask_RATIO/, made by runs/make_text.py) are what
their command computes with today's code: the first steps are trained again and must log the
losses of the committed log, and the committed weights must give the committed metrics."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mae_minimal.run_log import training_records
from mae_minimal.text import build_corpus, corpus_digest, load_text_model

RUNS_DIR = Path(__file__).resolve().parents[1] / "runs"
TEXT_RUNS = sorted(path.parent for path in (RUNS_DIR / "text_mlm").glob("*/manifest.json"))
CHECKED_STEPS = 20


def make_text():
    spec = importlib.util.spec_from_file_location("make_text", RUNS_DIR / "make_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


def test_every_ratio_has_a_committed_text_run():
    assert [run.name for run in TEXT_RUNS] == sorted(f"mask_{ratio}" for ratio in make_text().RATIOS)


@pytest.mark.parametrize("run", TEXT_RUNS, ids=lambda path: path.name)
def test_a_text_run_was_made_by_its_command_on_this_corpus(run, corpus):
    manifest, module = json.loads((run / "manifest.json").read_text()), make_text()
    assert manifest["command"] == ["python", "runs/make_text.py", run.name.removeprefix("mask_")]
    assert manifest["settings"] == module.SETTINGS
    digests = [corpus_digest(ids) for ids in corpus]
    assert [manifest["corpus"]["train_sha256_16"], manifest["corpus"]["held_out_sha256_16"]] == digests, (
        "the docstrings of this Python's standard library differ from those the run was trained on"
    )


@pytest.mark.parametrize("run", TEXT_RUNS, ids=lambda path: path.name)
def test_the_first_steps_of_a_committed_text_run_reproduce_its_log(run, corpus):
    manifest, module = json.loads((run / "manifest.json").read_text()), make_text()
    threads = torch.get_num_threads()
    torch.set_num_threads(manifest["threads"])
    try:
        ratio = int(manifest["command"][2])
        _, again = module.train(ratio, corpus[0], manifest["settings"], max_steps=CHECKED_STEPS)
    finally:
        torch.set_num_threads(threads)
    committed = [r for r in training_records(run) if r["step"] <= CHECKED_STEPS]
    assert [r["step"] for r in again] == [r["step"] for r in committed] and committed
    for ours, theirs in zip(again, committed):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5), ours["step"]
        assert ours["lr"] == pytest.approx(theirs["lr"], rel=1e-9)


@pytest.mark.parametrize("run", TEXT_RUNS, ids=lambda path: path.name)
def test_the_committed_text_weights_give_the_committed_metrics(run, corpus):
    manifest, module = json.loads((run / "manifest.json").read_text()), make_text()
    metrics = json.loads((run / "metrics.json").read_text())
    again = module.metrics_of(load_text_model(run / "weights.pth"), int(manifest["command"][2]), *corpus,
                              manifest["settings"])  # fmt: skip
    for name, value in again.items():
        assert value == pytest.approx(metrics[name], rel=1e-4, abs=1e-6), name
    assert training_records(run)[-1]["loss"] == metrics["final_train_loss"]
    settings = manifest["settings"]
    assert len(training_records(run)) == settings["steps"] // settings["log_every"]


def test_the_learned_model_beats_the_bigram_guess_at_bert_s_ratio():
    metrics = json.loads((RUNS_DIR / "text_mlm" / "mask_15" / "metrics.json").read_text())
    assert metrics["accuracy"] > metrics["bigram_accuracy"] + 0.05


def test_the_corpus_ignores_methods_other_packages_add_to_standard_library_classes(monkeypatch, corpus):
    import logging

    def warning_once(self, *args):  # as transformers adds to logging.Logger when it is imported
        """A docstring from another package."""

    monkeypatch.setattr(logging.Logger, "warning_once", warning_once, raising=False)
    assert [corpus_digest(ids) for ids in build_corpus()] == [corpus_digest(ids) for ids in corpus]
