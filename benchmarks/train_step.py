"""Time MAE pretraining steps (forward, backward, optimizer) of three implementations side by side.

    python benchmarks/train_step.py                      # this CPU, fp32
    python benchmarks/train_step.py --device cuda        # a GPU, bf16, with and without torch.compile

Variants, all built from the same weights and fed the same images and masking noise:
  mae_minimal     our MaskedAutoencoderViT: the encoder sees the visible patches only
  transformers    transformers' ViTMAEForPreTraining (SDPA attention), converted from the same weights
  mask_tokens     ours with encoder_sees_mask_tokens=True: the paper's baseline, the encoder also
                  processes a mask token for every removed patch

The variants are interleaved (one block of steps each, repeated), so a machine that slows down
part-way through slows every variant alike; medians over the repeats are reported. Also measured:
step time against the mask ratio (0 to 0.9) and against decoder depth (1 and 8 blocks).
Writes results.json and summary.md to --output_dir, and prints the summary.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch

from mae_minimal.factories import create_model
from mae_minimal.hf_convert import to_hf
from mae_minimal.measure import count_flops, interleaved_seconds
from mae_minimal.pretrain import autocast_and_scaler

MODELS = {"nano": "mae_vit_nano_patch4_28px", "mini": "mae_vit_mini_patch4_32px", "base": "mae_vit_base_patch16", "large": "mae_vit_large_patch16"}
VARIANTS = ("mae_minimal", "transformers", "mask_tokens")
MASK_RATIO = 0.75

# Dense bf16 peak of common accelerators, in TFLOP/s (vendor data sheets), for model FLOPs utilisation.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0,
                    "H100": 989.4, "A100": 312.0, "L4": 121.0, "A10G": 70.0, "L40S": 362.0}  # fmt: skip


def build(variant, model_name, decoder_depth=None, seed=0):
    """Our MAE for one variant (the transformers variant is converted from it), with weights that
    depend only on the seed and the architecture; decoder_depth None keeps the model's own."""
    torch.manual_seed(seed)
    depth = {} if decoder_depth is None else {"decoder_depth": decoder_depth}
    return create_model(model_name, encoder_sees_mask_tokens=variant == "mask_tokens", **depth)


def loss_function(variant, model):
    """(images, noise) -> the pretraining loss, the same call for every variant."""
    if variant == "transformers":
        return lambda images, noise: model(pixel_values=images, noise=noise).loss
    return lambda images, noise: model(images, MASK_RATIO, noise)[0]


class Stepper:
    """One variant ready to take training steps: model, optimizer, inputs, autocast."""

    def __init__(self, variant, model_name, batch_size, device, compile_model, decoder_depth=None):
        ours = build(variant, model_name, decoder_depth)
        patch_embed = ours.patch_embed  # the image size and patch count, shared by every variant
        self.model = (to_hf(ours, MASK_RATIO) if variant == "transformers" else ours).train().to(device)
        forward = torch.compile(self.model) if compile_model else self.model
        self.loss = loss_function(variant, forward)
        # fused AdamW (one kernel for all parameters) exists for CPUs and GPUs; on a CPU the
        # per-parameter loop would take a third of a ViT-B step at batch 2
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
        generator = torch.Generator().manual_seed(1)
        channels = patch_embed.proj.in_channels
        self.images = torch.randn(batch_size, channels, *patch_embed.img_size, generator=generator).to(device)
        self.noise = torch.rand(batch_size, patch_embed.num_patches, generator=generator).to(device)
        self.device = device
        self.autocast = autocast_and_scaler("auto", device)[0]  # the training tool's precision
        self.peak_memory_gb = 0.0  # on a GPU: the most this variant's steps have needed

    def persistent_bytes(self):
        """Memory that stays between steps: weights and optimizer state (gradients are freed)."""
        tensors = [*self.model.parameters(), *(t for state in self.optimizer.state.values()
                                               for t in state.values() if torch.is_tensor(t))]  # fmt: skip
        return sum(t.numel() * t.element_size() for t in tensors)

    def step(self):
        with self.autocast:
            loss = self.loss(self.images, self.noise)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def take_steps(self, steps):
        """`steps` training steps; on a GPU, keeps the most memory this variant has needed."""
        gpu = self.device.type == "cuda"
        if gpu:  # the other variants' weights are in memory too: count only this one's
            others = torch.cuda.memory_allocated() - self.persistent_bytes()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            self.step()
        if gpu:
            self.peak_memory_gb = max(self.peak_memory_gb, (torch.cuda.max_memory_allocated() - others) / 2**30)

    def flops_per_step(self):
        """FLOPs of one forward and backward pass, counted by torch.utils.flop_counter."""

        def forward_backward():
            with self.autocast:
                loss = self.loss(self.images, self.noise)
            loss.backward()

        flops = count_flops(forward_backward)
        self.optimizer.zero_grad(set_to_none=True)
        return flops


def interleaved_timings(blocks, repeats, steps, warmup_steps):
    """{name: [seconds per step, one per repeat]}: blocks[name](n) takes n steps; the blocks of
    `steps` steps take turns (measure.interleaved_seconds), after `warmup_steps` untimed steps each
    (which compile, allocate and warm the caches)."""
    for take_steps in blocks.values():
        take_steps(warmup_steps)
    calls = {name: partial(take_steps, steps) for name, take_steps in blocks.items()}
    seconds = interleaved_seconds(calls, repeats, warmup=0)
    return {name: [s / steps for s in values] for name, values in seconds.items()}


def stepping(steppers):
    """{name: take_steps} of the steppers, for interleaved_timings."""
    return {name: stepper.take_steps for name, stepper in steppers.items()}


def at_ratios(stepper, ratios):
    """{ratio: take_steps of `stepper` at that mask ratio}, for interleaved_timings."""

    def take_steps(ratio, steps):
        stepper.loss = lambda images, noise: stepper.model(images, ratio, noise)[0]
        stepper.take_steps(steps)

    return {ratio: partial(take_steps, ratio) for ratio in ratios}


def cpu_peak_memory_gb(variant, model_name, batch_size):
    """Peak resident memory (Linux's VmHWM) of a fresh process that builds one variant and takes two
    training steps. (getrusage's ru_maxrss would not do: a child inherits its parent's peak.)"""
    code = (
        f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import train_step; s = train_step.Stepper({variant!r}, {model_name!r}, {batch_size}, "
        "torch.device('cpu'), False); s.take_steps(2); "
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-2]) / 2**20  # "VmHWM:   123456 kB"


def machine_description(device):
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU, {threads} threads, torch {torch.__version__}"


def bf16_peak_tflops(device, override):
    if override or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def implementations(args, device, model_name):
    """Rows of throughput, memory and FLOPs for every variant (and compiled variant on a GPU)."""
    compile_options = (False, True) if device.type == "cuda" and not args.no_compile else (False,)
    peak = bf16_peak_tflops(device, args.peak_tflops)
    rows, flops = [], {}
    for compile_model in compile_options:  # uncompiled first: its FLOP counts hold for both
        variants = args.compiled_variants if compile_model else VARIANTS
        steppers = {v: Stepper(v, model_name, args.batch_size, device, compile_model) for v in variants}
        flops = flops or {v: steppers[v].flops_per_step() for v in VARIANTS}
        timings = interleaved_timings(stepping(steppers), args.repeats, args.steps, args.warmup_steps)
        for variant in variants:
            seconds = statistics.median(timings[variant])
            memory = steppers[variant].peak_memory_gb if device.type == "cuda" else (
                cpu_peak_memory_gb(variant, model_name, args.batch_size))  # fmt: skip
            row = {
                "model": model_name, "variant": variant, "compile": compile_model,
                "batch_size": args.batch_size, "seconds_per_step": seconds,
                "images_per_s": args.batch_size / seconds, "all_seconds": timings[variant],
                "tflops_per_step": flops[variant] / 1e12, "peak_memory_gb": memory,
            }  # fmt: skip
            if peak:
                row["mfu"] = flops[variant] / seconds / (peak * 1e12)
            rows.append(row)
            print(f"  {model_name} {variant:<13} compile={compile_model!s:<5} {row['images_per_s']:8.2f} img/s  "
                  f"{memory:.2f} GB" + (f"  MFU {row['mfu']:.1%}" if peak else ""), flush=True)  # fmt: skip
        del steppers
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def sweeps(args, device):
    """Step time of mae_minimal against the mask ratio, and of both designs against decoder depth."""
    base, large = MODELS[args.models[0]], MODELS[args.models[-1]]
    ratios = (0.0, 0.25, 0.5, 0.75, 0.9)
    stepper = Stepper("mae_minimal", base, args.batch_size, device, False)
    blocks = at_ratios(stepper, ratios)  # one model, the ratios interleaved
    ratio_timings = interleaved_timings(blocks, args.repeats, args.steps, args.warmup_steps)
    ratio_rows = []
    for ratio, values in ratio_timings.items():
        seconds = statistics.median(values)
        ratio_rows.append({"model": base, "mask_ratio": ratio, "seconds_per_step": seconds})
        print(f"  {base} mask ratio {ratio:.2f}: {seconds:.3f} s/step", flush=True)
    del stepper, blocks
    steppers = {
        (variant, depth): Stepper(variant, large, args.batch_size, device, False, decoder_depth=depth)
        for variant in ("mae_minimal", "mask_tokens")
        for depth in (1, 8)
    }
    timings = interleaved_timings(stepping(steppers), args.repeats, args.steps, args.warmup_steps)
    depth_rows = []
    for (variant, depth), values in timings.items():
        seconds = statistics.median(values)
        depth_rows.append({"model": large, "variant": variant, "decoder_depth": depth, "seconds_per_step": seconds})
        print(f"  {large} {variant:<11} decoder depth {depth}: {seconds:.3f} s/step", flush=True)
    return ratio_rows, depth_rows


def summary(results):
    """A markdown summary: the throughput table, the ratios and the two sweeps."""
    lines = [f"# Training-step benchmark, {results['machine']}", "",
             f"{results['date']}; `{results['command']}`; batch {results['batch_size']}, "
             f"median of {results['repeats']} blocks of {results['steps']} steps", "",
             "| model | variant | compile | images/s | peak memory (GB) | TFLOP/step | MFU |",
             "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in results["implementations"]:
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "n/a"
        lines.append(f"| {r['model']} | {r['variant']} | {r['compile']} | {r['images_per_s']:.2f} | "
                     f"{r['peak_memory_gb']:.2f} | {r['tflops_per_step']:.2f} | {mfu} |")  # fmt: skip
    lines += ["", "| ratio | value |", "|---|---:|"]
    for name, value in results["ratios"].items():
        lines.append(f"| {name} | {value:.2f}x |")
    lines += ["", "| model | mask ratio | s/step |", "|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['mask_ratio']} | {r['seconds_per_step']:.3f} |" for r in results["mask_ratio"]]
    lines += ["", "| model | variant | decoder depth | s/step |", "|---|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['variant']} | {r['decoder_depth']} | {r['seconds_per_step']:.3f} |"
              for r in results["decoder_depth"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def ratios(results):
    """Throughput of mae_minimal over each other variant, per model and compile setting, and the
    paper's Table 2 comparison: the mask-token baseline with an 8-block decoder against ours with 8 and 1."""
    by_key = {(r["model"], r["variant"], r["compile"]): r["images_per_s"] for r in results["implementations"]}
    out = {}
    for (model, variant, compiled), speed in by_key.items():
        if variant != "mae_minimal" and (model, "mae_minimal", compiled) in by_key:
            ours = by_key[(model, "mae_minimal", compiled)]
            out[f"{model} mae_minimal / {variant}{' (compiled)' if compiled else ''}"] = ours / speed
    depth = {(r["variant"], r["decoder_depth"]): r["seconds_per_step"] for r in results["decoder_depth"]}
    if depth:
        baseline = depth[("mask_tokens", 8)]
        for d in (8, 1):
            out[f"{results['decoder_depth'][0]['model']} mask_tokens depth 8 / mae_minimal depth {d} (time)"] = (
                baseline / depth[("mae_minimal", d)]
            )
    return out


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=["base", "large"], choices=list(MODELS))
    parser.add_argument("--batch_size", type=int, default=None, help="default: 2 on a CPU, 64 on a GPU")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed block (default: 1 CPU, 10 GPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per variant; the median is reported")
    parser.add_argument("--warmup_steps", type=int, default=None, help="default: 1 on a CPU, 5 on a GPU")
    parser.add_argument("--no_compile", action="store_true", help="on a GPU, skip the torch.compile runs")
    parser.add_argument("--compiled_variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="on a GPU, the variants also timed compiled (each compile takes a minute or more)")
    parser.add_argument("--no_sweeps", action="store_true", help="skip the mask-ratio and decoder-depth sweeps")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the chip's dense bf16 peak, for MFU")
    parser.add_argument("--output_dir", default=None, help="default: benchmarks/results/train_step_<device>")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device here")
    gpu = device.type == "cuda"
    args.batch_size = args.batch_size or (64 if gpu else 2)
    args.steps = args.steps or (10 if gpu else 1)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (5 if gpu else 1)
    output_dir = Path(args.output_dir or f"benchmarks/results/train_step_{device.type}")
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True

    results = {
        "machine": machine_description(device),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/train_step.py", *argv]),
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "implementations": [], "mask_ratio": [], "decoder_depth": [],
    }  # fmt: skip
    print(results["machine"], flush=True)
    for size in args.models:  # the results so far are written after each part: a cut-off run keeps them
        results["implementations"] += implementations(args, device, MODELS[size])
        write_results(results, output_dir)
    if not args.no_sweeps:
        results["mask_ratio"], results["decoder_depth"] = sweeps(args, device)
    print(write_results(results, output_dir))


def write_results(results, output_dir):
    """Write results.json and summary.md (with the ratios of what has been measured); returns the summary."""
    results["ratios"] = ratios(results)
    (output_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = summary(results)
    (output_dir / "summary.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
