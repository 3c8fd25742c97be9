"""``inventory.csv`` (every host with its type, GPUs, tags and list price) and
``host_metrics.csv`` (hourly CPU use of model servers, in the ``host_metrics`` contract)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from gpucost.core.contracts import HOST_METRICS
from gpucost.synth.common import MIB, SOURCE, iso_utc
from gpucost.synth.fleet import Fleet
from gpucost.synth.simulate import simulate_host_cpu


def write_inventory(path: Path, fleet: Fleet, window_start: datetime, hours: int) -> None:
    """One row per host, by resource id, seen for the whole window."""
    last_seen = iso_utc(window_start + timedelta(hours=hours - 1))
    hosts = sorted(fleet.hosts, key=lambda h: h.resource_id)
    frame = pl.DataFrame(
        {
            "resource_id": [h.resource_id for h in hosts],
            "provider": [h.itype.provider for h in hosts],
            "host": [h.host for h in hosts],
            "instance_type": [h.itype.name for h in hosts],
            "gpu_count": pl.Series([h.itype.gpu_count for h in hosts], dtype=pl.Int32),
            "gpu_model": pl.Series(
                [h.itype.gpu.model_name if h.itype.gpu else None for h in hosts], dtype=pl.String
            ),
            "gpu_mem_bytes": pl.Series(
                [h.itype.gpu_mem_mib * MIB if h.itype.gpu else None for h in hosts],
                dtype=pl.Int64,
            ),
            "vcpus": pl.Series([h.itype.vcpus for h in hosts], dtype=pl.Int32),
            "role": [h.role for h in hosts],
            "tags": pl.Series(
                [
                    json.dumps(h.tags, sort_keys=True, separators=(",", ":")) if h.tags else None
                    for h in hosts
                ],
                dtype=pl.String,
            ),
            "region": [h.itype.region for h in hosts],
            "hourly_list_price": pl.Series(
                [str(h.itype.hourly_price) if h.itype.hourly_price else None for h in hosts],
                dtype=pl.String,
            ),
            "currency": pl.Series(
                ["USD" if h.itype.hourly_price else None for h in hosts], dtype=pl.String
            ),
            "first_seen": [iso_utc(window_start)] * len(hosts),
            "last_seen": [last_seen] * len(hosts),
        }
    )
    frame.write_csv(path)


def write_host_metrics(
    path: Path, fleet: Fleet, window_start: datetime, hours: int, seed: int
) -> None:
    """Hourly CPU use of model servers, in basis points turned into fractions."""
    servers = sorted(
        (h for h in fleet.hosts if h.role == "model-server"), key=lambda h: h.resource_id
    )
    cpu = simulate_host_cpu(servers, hours, seed)
    start_us = int(window_start.timestamp()) * 1_000_000
    count = len(servers)
    frame = pl.DataFrame(
        {
            "hour": pl.Series(
                start_us + np.tile(np.arange(hours, dtype=np.int64), count) * 3_600_000_000
            ).cast(pl.Datetime("us", "UTC")),
            "resource_id": np.repeat([h.resource_id for h in servers], hours).tolist(),
            "host": np.repeat([h.host for h in servers], hours).tolist(),
            "cpu_util_avg": cpu.avg.ravel() / 10000.0,
            "cpu_util_max": cpu.peak.ravel() / 10000.0,
            "cpu_util_p95": cpu.p95.ravel() / 10000.0,
            "source": [SOURCE] * (count * hours),
        }
    )
    HOST_METRICS.conform(frame, SOURCE).write_csv(path, datetime_format="%Y-%m-%dT%H:%M:%SZ")
