"""``gpu_usage.parquet``: the hourly GPU rollup in the ``gpu_usage`` contract, for large fleets."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from gpucost.core.contracts import GPU_USAGE
from gpucost.synth.common import MIB, SECONDS_PER_HOUR, SOURCE
from gpucost.synth.fleet import Fleet
from gpucost.synth.simulate import SAMPLES_PER_HOUR, SCRAPE_INTERVAL_S, Simulation


def write_gpu_usage(
    path: Path, fleet: Fleet, sim: Simulation, window_start: datetime, hours: int
) -> None:
    """Write the rollup as zstd Parquet with statistics (what the collectors land)."""
    usage = usage_frame(fleet, sim, window_start, hours)
    usage.write_parquet(path, compression="zstd", statistics=True)


def usage_frame(fleet: Fleet, sim: Simulation, window_start: datetime, hours: int) -> pl.DataFrame:
    """The gpu_usage rollup, hour-major, GPU rows in host order; conformed to the contract."""
    count = len(fleet.units)
    unit_index = pl.Series(np.tile(np.arange(count, dtype=np.int64), hours))
    hour_index = np.repeat(np.arange(hours, dtype=np.int64), count)
    start_us = int(window_start.timestamp()) * 1_000_000
    per_unit = _unit_frame(fleet).select(pl.all().gather(unit_index))
    per_workload = _workload_frame(fleet).select(
        pl.all().gather(pl.Series(sim.workload.T.ravel().astype(np.int64)))
    )
    # The rollup's share columns: a time-sliced GPU's pods each hold half of it and get half
    # of the device's busy time (collector.gpu_rollup); a row without a pod holds nothing.
    share = fleet.unit_array("share_divisor")[:, None].astype(np.float64)
    held = np.where(sim.workload > 0, SECONDS_PER_HOUR / share, 0.0)
    busy = sim.util_sum * (SCRAPE_INTERVAL_S / 100.0) / share
    measures = pl.DataFrame(
        {
            "hour": pl.Series(start_us + hour_index * 3_600_000_000).cast(pl.Datetime("us", "UTC")),
            "seconds_observed": np.full(count * hours, float(SECONDS_PER_HOUR)),
            "gpu_seconds_held": held.T.ravel(),
            "gpu_seconds_busy": busy.T.ravel(),
            "util_avg": sim.util_sum.T.ravel() / (100.0 * SAMPLES_PER_HOUR),
            "util_max": sim.util_max.T.ravel() / 100.0,
            "mem_used_max_bytes": sim.mem_mib.T.ravel().astype(np.int64) * MIB,
            "power_avg_w": sim.power_sum_mw.T.ravel() / (1000.0 * SAMPLES_PER_HOUR),
            "sm_clock_avg_mhz": sim.clock_sum_mhz.T.ravel() / float(SAMPLES_PER_HOUR),
        }
    )
    frame = pl.concat([measures, per_unit, per_workload], how="horizontal").with_columns(
        pl.lit(SOURCE).alias("source")
    )
    return GPU_USAGE.conform(frame, SOURCE)


def _unit_frame(fleet: Fleet) -> pl.DataFrame:
    units, hosts = fleet.units, fleet.hosts
    return pl.DataFrame(
        {
            "host": [hosts[u.host_index].host for u in units],
            "gpu_uuid": [u.usage_uuid for u in units],
            "gpu_index": pl.Series([u.gpu_index for u in units], dtype=pl.Int32),
            "gpu_model": [
                hosts[u.host_index].itype.gpu.model_name  # type: ignore[union-attr]
                for u in units
            ],
            "mig_profile": pl.Series([u.mig_profile for u in units], dtype=pl.String),
            "mem_total_bytes": pl.Series([u.fb_total_mib * MIB for u in units], dtype=pl.Int64),
        }
    )


def _workload_frame(fleet: Fleet) -> pl.DataFrame:
    workloads = fleet.workloads

    def column(name: str) -> pl.Series:
        return pl.Series(
            name, [getattr(w, name) if w else None for w in workloads], dtype=pl.String
        )

    return pl.DataFrame(
        [column("namespace"), column("pod"), column("container"), column("workload")]
    )
