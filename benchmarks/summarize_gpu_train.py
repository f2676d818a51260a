"""Summarise the logs of benchmarks/gpu_train.sh as a markdown table (images/s after warm-up)."""

import json
import statistics
import sys
from pathlib import Path

results = Path(sys.argv[1])
print((results / "machine.txt").read_text())
print("| model | compile | images/s (median of logged intervals after the first) | peak memory (GB) |")
print("|---|---|---|---|")
throughput = {}
for log in sorted(results.glob("mae_vit_*_compile-*.jsonl")):
    records = [json.loads(line) for line in log.read_text().splitlines()]
    model, compile_flag = log.stem.rsplit("_compile-", 1)
    rate = statistics.median(r["images_per_s"] for r in records[1:]) if len(records) > 1 else float("nan")
    throughput[model, compile_flag] = rate
    print(
        f"| {model} | {compile_flag} | {rate:.0f} | {max(r.get('max_memory_gb', 0) for r in records):.1f} |"
    )
for model in sorted({m for m, _ in throughput}):
    if (model, "yes") in throughput and (model, "no") in throughput:
        print(f"\n{model}: --compile gives {throughput[model, 'yes'] / throughput[model, 'no']:.2f}x")
probes = results / "linprobe.txt"
print("\n" + (probes.read_text() if probes.exists() else "linear probes: did not run"))
