"""The training-step benchmark (benchmarks/train_step.py) compares like with like and writes its results."""

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import train_step  # noqa: E402


def test_every_variant_computes_the_same_loss_from_the_same_weights():
    losses = {}
    for variant in train_step.VARIANTS:
        stepper = train_step.Stepper(variant, "mae_vit_mini_patch4_32px", 2, torch.device("cpu"), False)
        stepper.model.eval()  # no dropout anywhere, but be explicit: the comparison is of the maths
        with torch.no_grad():
            losses[variant] = stepper.loss(stepper.images, stepper.noise).item()
    assert abs(losses["transformers"] - losses["mae_minimal"]) < 1e-5
    # the baseline has its own mask token in the encoder, so only its loss's size is comparable
    assert 0.1 < losses["mask_tokens"] / losses["mae_minimal"] < 10


def test_the_baseline_costs_more_flops_and_a_step_changes_the_weights():
    ours = train_step.Stepper("mae_minimal", "mae_vit_mini_patch4_32px", 2, torch.device("cpu"), False)
    baseline = train_step.Stepper("mask_tokens", "mae_vit_mini_patch4_32px", 2, torch.device("cpu"), False)
    assert baseline.flops_per_step() > 1.5 * ours.flops_per_step()
    before = ours.model.decoder_pred.weight.clone()
    ours.step()
    assert not torch.equal(before, ours.model.decoder_pred.weight)


def test_the_benchmark_writes_results_with_every_ratio(tmp_path):
    train_step.main(["--models", "mini", "--repeats", "2", "--output_dir", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["implementations"]
    assert {r["variant"] for r in rows} == set(train_step.VARIANTS)
    assert all(r["images_per_s"] > 0 and r["peak_memory_gb"] > 0 and len(r["all_seconds"]) == 2 for r in rows)
    assert [r["mask_ratio"] for r in results["mask_ratio"]] == [0.0, 0.25, 0.5, 0.75, 0.9]
    assert {(r["variant"], r["decoder_depth"]) for r in results["decoder_depth"]} == {
        (v, d) for v in ("mae_minimal", "mask_tokens") for d in (1, 8)
    }
    assert len(results["ratios"]) == 4 and all(v > 0 for v in results["ratios"].values())
    assert results["command"].startswith("python benchmarks/train_step.py --models mini --repeats 2")
    summary = (tmp_path / "summary.md").read_text()
    assert results["command"] in summary and "mae_minimal / transformers" in summary
