"""Benchmark the allocator on a synthetic fleet: wall time, peak RSS, ratio to a bare scan.

    python benchmarks/bench_allocator.py [--gpus 10000] [--days 30] [--repeat 3] [--threads 2]

The first run generates the fleet with ``gpucost synth`` (gpu_usage as Parquet) and converts the
FOCUS billing CSV, the inventory CSV and the roster to Parquet through the collectors' own
readers, once, into a cache under ``/tmp/gpucost-bench-allocator`` (``--cache`` to move it).
Every measurement then runs in a fresh Python process limited to ``--threads`` Polars threads
(and pinned to as many CPUs where ``os.sched_setaffinity`` exists), so each peak RSS is the
process's own high-water mark (``ru_maxrss``):

* ``scan``: a bare Polars scan that collects every column of the four inputs;
* ``allocate``: ``allocate()`` from those scans to the collected allocation and reconciliation.

It prints the median of ``--repeat`` runs of each, their ratio, and the same for a fleet twice
as large (``2 x --gpus``; ``--no-scaling`` skips it), with the goals next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 11
PROJECTS = 20
START = date(2024, 9, 1)
GOAL_SECONDS = 10.0
GOAL_RSS_GIB = 3.0
GOAL_RATIO = 5.0
GOAL_SCALING = 2.2


def _dataset(cache: Path, gpus: int, days: int) -> Path:
    """Generate (once) a fleet and its Parquet inputs; returns the folder holding them."""
    folder = cache / f"g{gpus}-d{days}-s{SEED}"
    done = folder / "READY"
    if done.exists():
        return folder
    import polars as pl

    from gpucost.collector.focus_files import read_focus_file
    from gpucost.collector.inventory_file import read_inventory
    from gpucost.collector.roster import read_roster
    from gpucost.core.window import Window
    from gpucost.synth import generate

    started = time.perf_counter()
    print(f"generating {gpus} GPUs x {days} days into {folder} (once)...", flush=True)
    summary = generate(
        folder / "synth", gpus=gpus, days=days, projects=PROJECTS, seed=SEED, start=START,
        usage_format="parquet",
    )  # fmt: skip
    window = Window(START, START + timedelta(days=days))
    ingested = datetime(2024, 12, 1, tzinfo=UTC)
    billing = read_focus_file(
        str(summary.billing_csv), summary.billing_csv.read_bytes(), "synth", ingested
    )
    assert billing.rejects.height == 0, billing.rejects.head()
    billing.frame.write_parquet(folder / "billing.parquet", statistics=True)
    inventory, _ = read_inventory(
        str(summary.inventory_csv), summary.inventory_csv.read_bytes(), "inventory", window
    )
    inventory.write_parquet(folder / "inventory.parquet")
    headcount, _ = read_roster(
        str(summary.roster_csv), summary.roster_csv.read_bytes(), "roster", window
    )
    headcount.write_parquet(folder / "headcount.parquet")
    (folder / "gpu_usage.parquet").unlink(missing_ok=True)
    (folder / "gpu_usage.parquet").symlink_to(summary.usage_path)
    truth = json.loads(summary.truth_json.read_text())
    (folder / "projects.json").write_text(
        json.dumps({name: entry["cost_center"] for name, entry in truth["projects"].items()})
    )
    counts = {
        "billing_rows": billing.frame.height,
        "gpu_usage_rows": pl.scan_parquet(summary.usage_path).select(pl.len()).collect().item(),
        "inventory_rows": inventory.height,
        "headcount_rows": headcount.height,
        "gpus": summary.gpus,
        "hosts": summary.hosts,
    }
    (folder / "counts.json").write_text(json.dumps(counts))
    done.write_text("ok\n")
    print(f"  ready in {time.perf_counter() - started:.0f} s: {counts}", flush=True)
    return folder


def _worker(mode: str, folder: Path) -> dict[str, Any]:
    """One measurement in this process (run by the parent in a fresh interpreter)."""
    import polars as pl

    from gpucost.allocator.allocate import allocate
    from gpucost.allocator.policy import AllocationPolicy
    from gpucost.allocator.projects import ProjectMatch, ProjectRule

    scans = {
        name: pl.scan_parquet(folder / f"{name}.parquet")
        for name in ("billing", "gpu_usage", "inventory", "headcount")
    }
    projects = json.loads((folder / "projects.json").read_text())
    rules = [
        ProjectRule(name=name, cost_center=cost_center,
                    match=ProjectMatch(tags={"project": name}, namespaces=(f"{name}-*",)))
        for name, cost_center in projects.items()
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    started = time.perf_counter()
    rows = 0
    if mode == "scan":
        for frame in scans.values():
            rows += frame.collect().height
    else:
        result = allocate(
            scans["billing"],
            scans["gpu_usage"],
            scans["inventory"],
            scans["headcount"],
            rules,
            AllocationPolicy(),
        )
        rows = result.allocation.height
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_gib": usage.ru_maxrss / 2**20,
        "rows": rows,
        "load": os.getloadavg()[0],
    }


def _measure(mode: str, folder: Path, threads: int) -> dict[str, Any]:
    environment = {**os.environ, "POLARS_MAX_THREADS": str(threads)}
    command = [sys.executable, __file__, "--worker", mode, "--data", str(folder)]
    preexec = None
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:threads]

        def preexec() -> None:
            os.sched_setaffinity(0, cpus)

    output = subprocess.run(
        command, env=environment, capture_output=True, text=True, check=True, preexec_fn=preexec
    )
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def _series(mode: str, folder: Path, threads: int, repeat: int) -> dict[str, Any]:
    runs = [_measure(mode, folder, threads) for _ in range(repeat)]
    return {
        "wall_s": statistics.median(run["wall_s"] for run in runs),
        "cpu_s": statistics.median(run["cpu_s"] for run in runs),
        "peak_rss_gib": statistics.median(run["peak_rss_gib"] for run in runs),
        "rows": runs[0]["rows"],
        "runs": [round(run["wall_s"], 2) for run in runs],
        "load": max(run["load"] for run in runs),
    }


def _line(name: str, figures: dict[str, Any]) -> str:
    return (
        f"  {name:9s} {figures['wall_s']:6.2f} s wall  {figures['cpu_s']:6.2f} s CPU  "
        f"peak RSS {figures['peak_rss_gib']:5.2f} GiB  runs {figures['runs']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--gpus", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/gpucost-bench-allocator"))
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--worker", choices=["scan", "allocate"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        print(json.dumps(_worker(arguments.worker, arguments.data)))
        return

    import polars as pl

    sizes = [arguments.gpus] if arguments.no_scaling else [arguments.gpus, 2 * arguments.gpus]
    print(
        f"polars {pl.__version__}, python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs on the machine, {arguments.threads} used; "
        f"median of {arguments.repeat} runs, each in a fresh process"
    )
    allocate_seconds: list[float] = []
    for gpus in sizes:
        folder = _dataset(arguments.cache, gpus, arguments.days)
        counts = json.loads((folder / "counts.json").read_text())
        scan = _series("scan", folder, arguments.threads, arguments.repeat)
        alloc = _series("allocate", folder, arguments.threads, arguments.repeat)
        allocate_seconds.append(alloc["wall_s"])
        ratio = alloc["wall_s"] / scan["wall_s"]
        print(
            f"\n{gpus} GPUs x {arguments.days} days: {counts['gpu_usage_rows']:,} gpu_usage rows, "
            f"{counts['billing_rows']:,} billing rows, {counts['hosts']:,} hosts "
            f"-> {alloc['rows']:,} allocation rows"
        )
        print(_line("bare scan", scan))
        print(_line("allocate", alloc))
        print(
            f"  goals: {alloc['wall_s']:.2f} s <= {GOAL_SECONDS:g} s "
            f"{_verdict(alloc['wall_s'] <= GOAL_SECONDS)}; "
            f"{alloc['peak_rss_gib']:.2f} GiB <= {GOAL_RSS_GIB:g} GiB "
            f"{_verdict(alloc['peak_rss_gib'] <= GOAL_RSS_GIB)}; "
            f"allocate / scan = {ratio:.2f} <= {GOAL_RATIO:g} {_verdict(ratio <= GOAL_RATIO)}"
        )
        print(f"  (highest 1-minute load average seen during the runs: {alloc['load']:.1f})")
    if len(allocate_seconds) == 2:
        growth = allocate_seconds[1] / allocate_seconds[0]
        print(
            f"\nscaling: 2x input -> {growth:.2f}x allocate time (<= {GOAL_SCALING:g}) "
            f"{_verdict(growth <= GOAL_SCALING)}"
        )


def _verdict(met: bool) -> str:
    return "ok" if met else "MISSED"


if __name__ == "__main__":
    main()
