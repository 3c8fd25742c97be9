"""Benchmark the hourly GPU rollup (``rollup_hourly``) on a day of minute samples.

    python benchmarks/bench_gpu_rollup.py [--gpus 1000] [--repeat 3] [--repo PATH]

Samples: ``--gpus`` GPUs scraped every 60 s for a day; a fifth of the GPUs are time-sliced by
two pods, and every GPU's pod hands over to another every 37 minutes, so the per-sample share
columns (``gpu_seconds_held``/``gpu_seconds_busy``) have real work to do. ``--repo`` runs the
same samples through another checkout's rollup (e.g. a ``git worktree`` of an older commit) for
a comparison on the same machine. Goal: a day of 1,000 GPUs (1.7 M samples) in at most 10 s on
2 cores. Prints the median wall time, samples per second and output rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

GOAL_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    arguments = parser.parse_args()
    sys.path.insert(0, str(arguments.repo))

    import polars as pl

    from gpucost.collector.gpu_rollup import conform_samples, rollup_hourly

    minutes = 24 * 60
    start = datetime(2024, 9, 24, tzinfo=UTC)
    gpu = pl.int_range(0, arguments.gpus, eager=True).alias("gpu")
    minute = pl.int_range(0, minutes, eager=True).alias("minute")
    grid = pl.DataFrame(gpu).join(pl.DataFrame(minute), how="cross")
    sliced = grid.filter(pl.col("gpu") % 5 == 0).with_columns(pl.lit(1).alias("slot"))
    frame = pl.concat([grid.with_columns(pl.lit(0).alias("slot")), sliced]).with_columns(
        (pl.lit(start) + pl.duration(minutes=pl.col("minute"))).alias("time"),
        pl.format("node-{}", pl.col("gpu") // 8).alias("host"),
        pl.format("GPU-{}", pl.col("gpu")).alias("gpu_uuid"),
        pl.lit("research").alias("namespace"),
        pl.format("train-{}-{}-worker-0", pl.col("minute") // 37, pl.col("slot")).alias("pod"),
        ((pl.col("minute") * 7 + pl.col("gpu")) % 100 / 100).alias("util"),
    )
    samples = conform_samples(frame.drop("gpu", "minute", "slot"))
    timings = []
    rows = 0
    for _ in range(arguments.repeat):
        began = time.perf_counter()
        rows = rollup_hourly(samples, interval_s=60, source="bench").height
        timings.append(time.perf_counter() - began)
    median = statistics.median(timings)
    print(f"repo {arguments.repo}  python {platform.python_version()}  cpus {os.cpu_count()}")
    print(f"samples {samples.height:,}  rows {rows:,}")
    print(f"rollup_hourly  median {median:.2f} s of {arguments.repeat}  (goal <= {GOAL_S:g} s)")
    print(f"throughput     {samples.height / median:,.0f} samples/s")


if __name__ == "__main__":
    main()
