"""Benchmark the day-by-day allocation (``run_allocation``'s path) on a large fleet.

    python benchmarks/bench_allocator_scale.py [--gpus 100000] [--days 2] [--threads 2]

Generates the fleet once, like ``bench_allocator.py`` (same cache), then, in a fresh process
limited to ``--threads`` Polars threads, cuts the window into independent runs of days
(:func:`gpucost.allocator.days.separable_runs`) and calls ``allocate()`` once per run over that
run's rows of the four Parquet inputs (scans filtered by day, as the lake's day partitions
are), as ``gpucost.pipeline.run_allocation`` does. It prints each run's wall time, the
process's peak RSS (``ru_maxrss``) against the 8 GiB goal, and the time extrapolated to 30 days.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

GOAL_RSS_GIB = 8.0


def _worker(folder: Path) -> dict[str, Any]:
    import polars as pl
    from bench_allocator import START

    from gpucost.allocator.allocate import allocate, gpu_resources
    from gpucost.allocator.days import separable_runs
    from gpucost.allocator.policy import AllocationPolicy
    from gpucost.allocator.projects import ProjectMatch, ProjectRule
    from gpucost.core.window import Window

    counts = json.loads((folder / "counts.json").read_text())
    days = int(folder.name.split("-d")[1].split("-")[0])
    window = Window(START, START.fromordinal(START.toordinal() + days))
    projects = json.loads((folder / "projects.json").read_text())
    rules = [
        ProjectRule(name=name, cost_center=cost_center,
                    match=ProjectMatch(tags={"project": name}, namespaces=(f"{name}-*",)))
        for name, cost_center in projects.items()
    ]  # fmt: skip

    def scan(table: str, column: str, part: Window) -> pl.LazyFrame:
        day = pl.col(column) if table == "headcount" else pl.col(column).dt.date()
        return pl.scan_parquet(folder / f"{table}.parquet").filter(part.contains(day))

    started = time.perf_counter()
    inventory = pl.scan_parquet(folder / "inventory.parquet")
    runs = [
        Window(first, stop)
        for first, stop in separable_runs(
            lambda first, stop: scan("billing", "ChargePeriodStart", Window(first, stop)),
            window.start,
            window.end,
            rules,
            gpu_resources(inventory, rules),
        )
    ]
    planned = time.perf_counter() - started
    per_run = []
    rows = 0
    for run in runs:
        begun = time.perf_counter()
        result = allocate(
            scan("billing", "ChargePeriodStart", run),
            scan("gpu_usage", "hour", run),
            inventory,
            scan("headcount", "day", run),
            rules,
            AllocationPolicy(),
        )
        rows += result.allocation.height
        per_run.append((str(run), round(time.perf_counter() - begun, 2)))
        del result
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "counts": counts,
        "days": days,
        "plan_s": round(planned, 2),
        "runs": per_run,
        "wall_s": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_gib": usage.ru_maxrss / 2**20,
        "rows": rows,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--gpus", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/gpucost-bench-allocator"))
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        print(json.dumps(_worker(arguments.worker)))
        return
    from bench_allocator import _dataset

    folder = _dataset(arguments.cache, arguments.gpus, arguments.days)
    environment = {**os.environ, "POLARS_MAX_THREADS": str(arguments.threads)}
    preexec = None
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[: arguments.threads]

        def preexec() -> None:
            os.sched_setaffinity(0, cpus)

    output = subprocess.run(
        [sys.executable, __file__, "--worker", str(folder)],
        env=environment, capture_output=True, text=True, check=True, preexec_fn=preexec,
    )  # fmt: skip
    figures = json.loads(output.stdout.strip().splitlines()[-1])
    counts = figures["counts"]
    seconds = [run_seconds for _, run_seconds in figures["runs"]]
    per_day = sum(seconds) / figures["days"]
    print(
        f"{counts['gpus']:,} GPUs x {figures['days']} days, day by day: "
        f"{counts['gpu_usage_rows']:,} gpu_usage rows, {counts['billing_rows']:,} billing rows, "
        f"{counts['hosts']:,} hosts -> {figures['rows']:,} allocation rows"
    )
    print(f"  plan (separable_runs): {figures['plan_s']:.2f} s; runs: {figures['runs']}")
    print(
        f"  total {figures['wall_s']:.2f} s wall, {figures['cpu_s']:.2f} s CPU; "
        f"{per_day:.2f} s per day -> ~{30 * per_day + 30 * figures['plan_s'] / figures['days']:.0f}"
        f" s for 30 days"
    )
    verdict = "ok" if figures["peak_rss_gib"] <= GOAL_RSS_GIB else "MISSED"
    print(f"  peak RSS {figures['peak_rss_gib']:.2f} GiB <= {GOAL_RSS_GIB:g} GiB {verdict}")
    print(f"  (1-minute load average at the end: {figures['load']:.1f})")


if __name__ == "__main__":
    main()
