"""The training-step benchmark (benchmarks/train_step.py) compares like with like and writes its results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import cpu_small  # noqa: E402
import train_step  # noqa: E402


@pytest.mark.parametrize("model", ["mae_vit_mini_patch4_32px", "mae_vit_nano_patch4_28px"], ids=["RGB", "grey"])
def test_every_variant_computes_the_same_loss_from_the_same_weights(model):
    losses = {}
    for variant in train_step.VARIANTS:
        stepper = train_step.Stepper(variant, model, 2, torch.device("cpu"), False)
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


@pytest.mark.parametrize("threads", [1, 2])
def test_the_cpu_benchmark_times_both_variants_in_a_fresh_process_with_the_threads_it_names(threads):
    job = dict(threads=threads, compiled=False, variants=list(cpu_small.VARIANTS), batch_size=4, steps=1, repeats=2)
    out = subprocess.run([sys.executable, cpu_small.__file__, "--job", json.dumps(job)],
                         env=cpu_small.child_env(threads, cpu_small.SHORT_SPIN), capture_output=True, text=True,
                         check=True)  # fmt: skip
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["threads"] == threads
    assert set(measured["timings"]) == set(cpu_small.VARIANTS)
    assert all(len(seconds) == 2 and min(seconds) > 0 for seconds in measured["timings"].values())


def test_a_benchmarked_model_keeps_its_own_decoder_unless_a_depth_is_asked_for():
    assert len(train_step.build("mae_minimal", "mae_vit_nano_patch4_28px").decoder_blocks) == 2
    assert len(train_step.build("mae_minimal", "mae_vit_nano_patch4_28px", decoder_depth=1).decoder_blocks) == 1
