"""``dcgm/{host}/{YYYY-MM-DDTHH}.prom``: dcgm-exporter text, one file per host and hour.

Each file holds the hour's 12 scrapes with millisecond timestamps, family by family in the
order of dcgm-exporter's default-counters.csv. ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` carries the
utilisation as a ratio. MIG GPUs report no ``DCGM_FI_DEV_GPU_UTIL`` (NVML does not support it in
MIG mode), only per-instance series. On a time-sliced GPU each pod's series carries the device's
values, as the real exporter writes them (it cannot tell the pods apart); the truth splits the
device's busy time equally among the pods present.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from gpucost.synth.fleet import Fleet
from gpucost.synth.simulate import (
    SAMPLES_PER_HOUR,
    SCRAPE_INTERVAL_S,
    Simulation,
    clock_coefficients,
    power_coefficients,
)

DRIVER_VERSION: Final = "550.90.07"
"""An R550 production driver of mid-2024; dcgm-exporter puts it in DCGM_FI_DRIVER_VERSION."""

# dcgm-exporter metric families written, in the order of its default-counters.csv, with the
# HELP texts of dcgm-exporter 3.x/4.x.
DCGM_FAMILIES: Final = (
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)."),
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active."),
)
_GPU_UTIL_RANK: Final = 2


def write_dcgm(
    dcgm_dir: Path, fleet: Fleet, sim: Simulation, window_start: datetime, hours: int
) -> list[Path]:
    """One exposition file per host and hour holding its 12 scrapes with ms timestamps."""
    assert sim.samples is not None
    frame = _sample_frame(fleet, sim, window_start, hours)
    written = []
    for file_id, text in _file_texts(frame).iter_rows():
        host = fleet.hosts[file_id // hours]
        stamp = (window_start + timedelta(hours=file_id % hours)).strftime("%Y-%m-%dT%H")
        path = dcgm_dir / host.host / f"{stamp}.prom"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() + b"\n")
        written.append(path)
    return written


def _label_prefixes(fleet: Fleet) -> list[str]:
    """Each GPU row's device labels, as dcgm-exporter writes them before the pod's."""
    prefixes = []
    for unit in fleet.units:
        host = fleet.hosts[unit.host_index]
        assert host.itype.gpu is not None
        mig = (
            f'GPU_I_PROFILE="{unit.mig_profile}",GPU_I_ID="{unit.gpu_instance_id}",'
            if unit.mig_profile
            else ""
        )
        prefixes.append(
            f'gpu="{unit.gpu_index}",UUID="{unit.gpu_uuid}",'
            f'pci_bus_id="{host.itype.pci_bus_ids[unit.gpu_index]}",'
            f'device="nvidia{unit.gpu_index}",modelName="{host.itype.gpu.model_name}",{mig}'
            f'Hostname="{host.host}",DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}"'
        )
    return prefixes


def _unit_table(fleet: Fleet) -> pl.DataFrame:
    """Per GPU row: labels, host, MIG flag, framebuffer and power and clock coefficients."""
    units = fleet.units
    gpus = [fleet.hosts[u.host_index].itype.gpu for u in units]
    idle_mw, step_mw = power_coefficients(gpus)
    idle_mhz, top_mhz, step_mhz = clock_coefficients(gpus)
    return pl.DataFrame(
        {
            "prefix": _label_prefixes(fleet),
            "host_index": [u.host_index for u in units],
            "mig": [u.mig_profile is not None for u in units],
            "fb_total": [u.fb_total_mib for u in units],
            "idle_mw": idle_mw,
            "step_mw": step_mw,
            "idle_mhz": idle_mhz,
            "top_mhz": top_mhz,
            "step_mhz": step_mhz,
        }
    )


def _sample_frame(
    fleet: Fleet, sim: Simulation, window_start: datetime, hours: int
) -> pl.DataFrame:
    """One row per GPU row and scrape: its file, timestamp, labels, utilisation and power."""
    assert sim.samples is not None
    count = len(fleet.units)
    samples = count * hours * SAMPLES_PER_HOUR
    unit_index = np.repeat(np.arange(count, dtype=np.int64), hours * SAMPLES_PER_HOUR)
    hour_index = np.tile(np.repeat(np.arange(hours, dtype=np.int64), SAMPLES_PER_HOUR), count)
    sample_index = np.tile(np.arange(SAMPLES_PER_HOUR, dtype=np.int64), count * hours)
    workload_index = np.repeat(sim.workload.reshape(count * hours), SAMPLES_PER_HOUR)
    suffixes = [
        f',container="{w.container}",namespace="{w.namespace}",pod="{w.pod}",pod_uid=""'
        if w
        else ""
        for w in fleet.workloads
    ]
    start_ms = int(window_start.timestamp()) * 1000
    return pl.concat(
        [
            _unit_table(fleet).select(pl.all().gather(pl.Series(unit_index))),
            pl.DataFrame(
                {
                    "unit": unit_index,
                    "hour": hour_index,
                    "sample": sample_index,
                    "pct": sim.samples.reshape(samples).astype(np.int64),
                    "mem": np.repeat(sim.mem_mib.reshape(count * hours), SAMPLES_PER_HOUR),
                    "suffix": pl.Series(suffixes).gather(
                        pl.Series(workload_index.astype(np.int64))
                    ),
                }
            ),
        ],
        how="horizontal",
    ).with_columns(
        (pl.col("host_index") * hours + pl.col("hour")).alias("file"),
        (start_ms + pl.col("hour") * 3_600_000 + pl.col("sample") * SCRAPE_INTERVAL_S * 1000)
        .cast(pl.String)
        .alias("ts"),
        pl.concat_str([pl.col("prefix"), pl.col("suffix")]).alias("labels"),
        (pl.col("idle_mw") + pl.col("step_mw") * pl.col("pct")).alias("mw"),
    )


def _decimal(whole: pl.Expr, fraction: pl.Expr, digits: int, zeros: str) -> pl.Expr:
    """``whole.fraction`` with ``fraction`` zero-padded to ``digits``, then ``zeros``."""
    return pl.concat_str(
        [
            whole.cast(pl.String),
            pl.lit("."),
            fraction.cast(pl.String).str.zfill(digits),
            pl.lit(zeros),
        ]
    )


def _value_expressions() -> list[pl.Expr]:
    """Each family's sample value as text, in the order of :data:`DCGM_FAMILIES`."""
    pct, mw = pl.col("pct"), pl.col("mw")
    return [
        pl.when(pct > 0)
        .then(pl.col("top_mhz") - (100 - pct) * pl.col("step_mhz"))
        .otherwise(pl.col("idle_mhz"))
        .cast(pl.String),
        _decimal(mw // 1000, mw % 1000, 3, "000"),  # watts with 6 places, as the exporter
        pct.cast(pl.String),
        (pl.col("fb_total") - pl.col("mem")).cast(pl.String),
        pl.col("mem").cast(pl.String),
        _decimal(pct // 100, pct % 100, 2, "0000"),  # the ratio with 6 places
    ]


def _file_texts(frame: pl.DataFrame) -> pl.DataFrame:
    """(file, text): every family's HELP, TYPE and sample lines, per file."""
    pieces = []
    for rank, ((name, _help), value) in enumerate(
        zip(DCGM_FAMILIES, _value_expressions(), strict=True)
    ):
        piece = frame
        if rank == _GPU_UTIL_RANK:  # NVML reports no device utilisation in MIG mode
            piece = frame.filter(~pl.col("mig"))
        line = [
            pl.lit(name + "{"),
            pl.col("labels"),
            pl.lit("} "),
            value,
            pl.lit(" "),
            pl.col("ts"),
        ]
        pieces.append(
            piece.select(
                "file",
                pl.lit(rank).alias("rank"),
                "sample",
                "unit",
                pl.concat_str(line).alias("line"),
            )
        )
    headers = pl.DataFrame(
        {
            "rank": list(range(len(DCGM_FAMILIES))),
            "header": [
                f"# HELP {name} {text}\n# TYPE {name} gauge" for name, text in DCGM_FAMILIES
            ],
        },
        schema={"rank": pl.Int32, "header": pl.String},
    )
    return (
        pl.concat(pieces)
        .sort("file", "rank", "sample", "unit")
        .group_by("file", "rank", maintain_order=True)
        .agg(pl.col("line").str.join("\n"))
        .join(headers, on="rank", how="left", maintain_order="left")
        .select("file", pl.concat_str(["header", "line"], separator="\n").alias("block"))
        .group_by("file", maintain_order=True)
        .agg(pl.col("block").str.join("\n"))
    )
