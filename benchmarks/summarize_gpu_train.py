"""Summarise the logs of benchmarks/gpu_train.sh as a markdown table (images/s after warm-up), beside
the bare training step of benchmarks/train_step.py at the same batch when its results.json is given.

    python benchmarks/summarize_gpu_train.py RESULTS_FOLDER [TRAIN_STEP_RESULTS_JSON]
"""

import json
import statistics
import sys
from pathlib import Path

results = Path(sys.argv[1])
bare = {}  # (model, compiled) -> images/s of mae_minimal's bare step (no data loading)
if len(sys.argv) > 2 and Path(sys.argv[2]).is_file():
    for row in json.loads(Path(sys.argv[2]).read_text())["implementations"]:
        if row["variant"] == "mae_minimal":
            bare[row["model"], "yes" if row["compile"] else "no"] = (row["images_per_s"], row["batch_size"])
print((results / "machine.txt").read_text())
print("| model | compile | train.py images/s | peak memory (GB) | bare step images/s (batch) | train.py / bare |")
print("|---|---|---:|---:|---:|---:|")
throughput = {}
for log in sorted(results.glob("mae_vit_*_compile-*.jsonl")):
    records = [json.loads(line) for line in log.read_text().splitlines()]
    rates = [r["images_per_s"] for r in records if "images_per_s" in r][1:]  # the first interval compiles
    model, compile_flag = log.stem.rsplit("_compile-", 1)
    rate = statistics.median(rates) if rates else float("nan")
    throughput[model, compile_flag] = rate
    memory = max((r.get("max_memory_gb", 0) for r in records), default=0)
    step, batch = bare.get((model, compile_flag), (float("nan"), "-"))
    print(f"| {model} | {compile_flag} | {rate:.0f} | {memory:.1f} | {step:.0f} ({batch}) | {rate / step:.2f} |")
for model in sorted({m for m, _ in throughput}):
    if (model, "yes") in throughput and (model, "no") in throughput:
        print(f"\n{model}: --compile gives {throughput[model, 'yes'] / throughput[model, 'no']:.2f}x")
