"""The book's scale on this CPU: training steps of the 28-pixel MAE, threads, a busy neighbour.

    python benchmarks/cpu_small.py            # about 10 minutes on 2 cores; nothing else running

Three questions, each answered in fresh processes (a process's thread settings are fixed at start):
  steps      images/s of one training step (batch 128, mask ratio 0.75, fused AdamW) of mae_minimal
             and of transformers' ViTMAEForPreTraining with the same configuration and weights,
             timed in alternating blocks (interleaved), repeated, medians reported; at 1 and 2
             threads, eager and compiled, on an idle machine and next to one busy process
  policies   the same eager step under three thread settings, idle and busy, in --policy_rounds
             rounds (medians over every round's blocks): 2 threads with libgomp's default spin before
             an idle thread sleeps (GOMP_SPINCOUNT=300000), 2 threads with a short spin (1000, what
             train.py sets), and one thread
  recipe     the first reference run's command (runs/fashion_mnist) through train.py for --recipe_steps
             steps, idle and busy: minutes per 3,000 steps, from train.py's own logged images/s
The busy neighbour is a second training process (the same model at one thread), the kind of
process that shares a laptop's cores with a run. Also written: where the time of one eager step
goes (torch.profiler, one thread), and one thread's rate on a large matrix product. Results: benchmarks/results/cpu_small/{results.json,summary.md}.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_step  # noqa: E402  (the Stepper: one variant's model, optimizer and inputs)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "mae_vit_nano_patch4_28px"
VARIANTS = ("mae_minimal", "transformers")
LIBGOMP_DEFAULT_SPIN = "300000"  # GCC's documented default when OMP_WAIT_POLICY is unset
SHORT_SPIN = "1000"
# (name, threads, GOMP_SPINCOUNT, compiled)
STEP_CONDITIONS = [("1 thread", 1, SHORT_SPIN, False), ("2 threads", 2, SHORT_SPIN, False),
                   ("1 thread, compiled", 1, SHORT_SPIN, True), ("2 threads, compiled", 2, SHORT_SPIN, True)]
POLICY_CONDITIONS = [("2 threads, default spin", 2, LIBGOMP_DEFAULT_SPIN, False),
                     ("2 threads, short spin", 2, SHORT_SPIN, False), ("1 thread", 1, SHORT_SPIN, False)]
RECIPE = ["--model", MODEL, "--dataset", "fashion_mnist", "--mask_ratio", "0.75", "--batch_size", "128",
          "--epochs", "10", "--warmup_epochs", "0.5", "--blr", "3e-3", "--weight_decay", "0.05", "--seed", "0",
          "--num_workers", "0", "--log_every", "10", "--no_progress"]  # fmt: skip


def time_steps(threads, compiled, variants, batch_size, steps, repeats):
    """{"threads": the threads used, "timings": {variant: [seconds per step, one per repeat]}},
    timed in this process with the variants interleaved."""
    torch.set_num_threads(threads)
    steppers = {v: train_step.Stepper(v, MODEL, batch_size, torch.device("cpu"), compiled) for v in variants}
    timings = train_step.interleaved_timings(train_step.stepping(steppers), repeats, steps, warmup_steps=3)
    return {"threads": torch.get_num_threads(), "timings": timings}


def where_the_time_goes(batch_size):
    """Share of one thread's eager step time per kind of operation (torch.profiler's self time)."""
    torch.set_num_threads(1)
    stepper = train_step.Stepper("mae_minimal", MODEL, batch_size, torch.device("cpu"), False)
    stepper.take_steps(3)
    with torch.profiler.profile() as profile:
        stepper.take_steps(5)
    kinds = {"matrix multiplies": ("aten::mm", "aten::addmm", "aten::bmm"), "attention": ("scaled_dot_product",),
             "GELU": ("gelu",), "layer norm": ("layer_norm",), "optimizer": ("adamw",)}  # fmt: skip
    totals = {kind: 0.0 for kind in [*kinds, "everything else"]}
    for event in profile.key_averages():
        kind = next((k for k, names in kinds.items() if any(n in event.key.lower() for n in names)), "everything else")
        totals[kind] += event.self_cpu_time_total
    return {kind: value / sum(totals.values()) for kind, value in totals.items()}


def matmul_gflops(size=1024, repeats=20):
    """One thread's rate on a large square fp32 matrix product, in GFLOP/s: what this CPU can do at
    best, the denominator of a CPU's FLOPs utilisation (median of repeats)."""
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds[2:]) / 1e9


def neighbour():
    """Train the same model forever at one thread: the busy process next to the measured one."""
    torch.set_num_threads(1)
    stepper = train_step.Stepper("mae_minimal", MODEL, 128, torch.device("cpu"), False)
    while True:
        stepper.step()


def child_env(threads, spin):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GOMP_SPINCOUNT": spin, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    return env


@contextmanager
def busy_neighbour(busy):
    """A neighbour process for the duration of the block, if busy (given 3 s to start stepping)."""
    if not busy:
        yield
        return
    process = subprocess.Popen([sys.executable, __file__, "--neighbour"], env=child_env(1, LIBGOMP_DEFAULT_SPIN))
    time.sleep(3)
    try:
        yield
    finally:
        process.kill()
        process.wait()


def run_condition(args, threads, spin, compiled, busy, variants):
    """Time the step in a fresh process with these settings, next to a busy neighbour or not."""
    job = dict(threads=threads, compiled=compiled, variants=variants, batch_size=args.batch_size,
               steps=args.steps, repeats=args.repeats)  # fmt: skip
    with busy_neighbour(busy):
        out = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], env=child_env(threads, spin),
                             capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["timings"]


def run_recipe(steps, busy):
    """Images/s that train.py logs on the reference recipe (median of its 10-step intervals, the
    first left out: it holds the start-up), with train.py's own thread settings."""
    with tempfile.TemporaryDirectory() as output_dir, busy_neighbour(busy):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "mae_minimal" / "train.py"), *RECIPE, "--max_steps", str(steps),
                        "--output_dir", output_dir], env=env, check=True, capture_output=True)  # fmt: skip
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (Path(output_dir) / "log.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records if "images_per_s" in r][1:]
    images_per_s = statistics.median(rates)
    return {"busy": busy, "steps": steps, "wall_s": wall, "images_per_s": images_per_s,
            "minutes_per_3000_steps": 3000 * 128 / images_per_s / 60}  # fmt: skip


def measure(args):
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/cpu_small.py", *sys.argv[1:]]),
        "model": MODEL, "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "policy_rounds": args.policy_rounds,
        "load_average_before": os.getloadavg()[0], "steps_rows": [], "policies": [], "recipe": [],
    }  # fmt: skip
    for name, threads, spin, compiled in STEP_CONDITIONS:
        for busy in (False, True) if not compiled else (False,):
            timings = run_condition(args, threads, spin, compiled, busy, VARIANTS)
            for variant, seconds in timings.items():
                results["steps_rows"].append(row(name, variant, busy, seconds, args.batch_size))
            print(f"  {name:<22} {'busy' if busy else 'idle'}: " + ", ".join(
                f"{v} {args.batch_size / statistics.median(s):.0f} img/s" for v, s in timings.items()), flush=True)
    policy_seconds = {(name, busy): [] for name, *_ in POLICY_CONDITIONS for busy in (False, True)}
    for round_ in range(args.policy_rounds):  # the settings in turn, the order reversed every round
        order = POLICY_CONDITIONS if round_ % 2 == 0 else POLICY_CONDITIONS[::-1]
        for name, threads, spin, compiled in order:
            for busy in (False, True):
                seconds = run_condition(args, threads, spin, compiled, busy, ["mae_minimal"])["mae_minimal"]
                policy_seconds[(name, busy)] += seconds
                print(f"  round {round_ + 1}, {name:<22} {'busy' if busy else 'idle'}: "
                      f"{args.batch_size / statistics.median(seconds):.0f} img/s", flush=True)  # fmt: skip
    for (name, busy), seconds in policy_seconds.items():
        results["policies"].append(row(name, "mae_minimal", busy, seconds, args.batch_size))
    for busy in (False, True):
        results["recipe"].append(run_recipe(args.recipe_steps, busy))
        print(f"  train.py recipe {'busy' if busy else 'idle'}: {results['recipe'][-1]['images_per_s']:.0f} img/s",
              flush=True)  # fmt: skip
    results["profile"] = json.loads(subprocess.run(
        [sys.executable, __file__, "--profile", str(args.batch_size)], env=child_env(1, SHORT_SPIN),
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])  # fmt: skip
    results["load_average_after"] = os.getloadavg()[0]
    results["ratios"] = ratios(results)
    return results


def row(condition, variant, busy, seconds, batch_size):
    return {"condition": condition, "variant": variant, "busy": busy, "all_seconds": seconds,
            "images_per_s": batch_size / statistics.median(seconds)}  # fmt: skip


def ratios(results):
    """mae_minimal over transformers per condition; busy over idle per policy; the recipe's time."""
    speed = {(r["condition"], r["variant"], r["busy"]): r["images_per_s"] for r in results["steps_rows"]}
    out = {}
    for condition, variant, busy in speed:
        if variant == "mae_minimal":
            out[f"mae_minimal / transformers, {condition}, {'busy' if busy else 'idle'}"] = (
                speed[(condition, variant, busy)] / speed[(condition, "transformers", busy)])
    fastest_idle = max(r["images_per_s"] for r in results["policies"] if not r["busy"])
    for r in results["policies"]:
        if r["busy"]:
            out[f"busy / fastest idle, {r['condition']}"] = r["images_per_s"] / fastest_idle
    for r in results["recipe"]:
        out[f"recipe minutes per 3,000 steps, {'busy' if r['busy'] else 'idle'}"] = r["minutes_per_3000_steps"]
    return out


def summary(results):
    """A markdown summary of the results."""
    lines = [f"# The book's scale on this CPU: {results['machine']}", "",
             f"{results['date']}; `{results['command']}`; {results['model']}, batch {results['batch_size']}, "
             f"median of {results['repeats']} interleaved blocks of {results['steps']} steps (thread settings: over {results['policy_rounds']} rounds); load average "
             f"{results['load_average_before']:.2f} before, {results['load_average_after']:.2f} after", "",
             "| condition | neighbour | variant | images/s |", "|---|---|---|---:|"]  # fmt: skip
    for r in results["steps_rows"] + results["policies"]:
        lines.append(f"| {r['condition']} | {'busy' if r['busy'] else 'idle'} | {r['variant']} | "
                     f"{r['images_per_s']:.0f} |")  # fmt: skip
    lines += ["", "| train.py, reference recipe | images/s | minutes per 3,000 steps |", "|---|---:|---:|"]
    lines += [f"| {'busy' if r['busy'] else 'idle'} | {r['images_per_s']:.0f} | {r['minutes_per_3000_steps']:.1f} |"
              for r in results["recipe"]]  # fmt: skip
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in results["ratios"].items()]
    lines += ["", "| one eager step, one thread | share of time |", "|---|---:|"]
    lines += [f"| {kind} | {share:.0%} |" for kind, share in results["profile"]["shares"].items()]
    lines += ["", f"One thread's rate on a 1024x1024 matrix product: {results['profile']['matmul_gflops']:.0f} GFLOP/s"]
    return "\n".join(lines) + "\n"


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per variant; the median is reported")
    parser.add_argument("--policy_rounds", type=int, default=3, help="rounds over the thread settings")
    parser.add_argument("--recipe_steps", type=int, default=200, help="train.py steps per recipe measurement")
    parser.add_argument("--output_dir", default="benchmarks/results/cpu_small")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # internal: one condition, in a fresh process
    parser.add_argument("--neighbour", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    if args.neighbour:
        neighbour()
    elif args.job:
        print(json.dumps(time_steps(**json.loads(args.job))))
    elif args.profile:
        print(json.dumps({"shares": where_the_time_goes(args.profile), "matmul_gflops": matmul_gflops()}))
    else:
        results = measure(args)
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (output_dir / "summary.md").write_text(summary(results))
        print(summary(results))


if __name__ == "__main__":
    main()
