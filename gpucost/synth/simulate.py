"""The workload simulation: hourly activity per GPU row, then 12 scrapes per hour, vectorised.

One dcgm-exporter scrape every ``SCRAPE_INTERVAL_S`` seconds (12 per hour), GPU utilisation in
whole percent as ``DCGM_FI_DEV_GPU_UTIL`` reports it, so a GPU-hour's busy seconds are exactly
``3 x`` the sum of its 12 samples. Power and SM clock are linear in a sample's utilisation, so
their hourly sums follow from the utilisation sum exactly. The CPU use of model servers (for
``host_metrics.csv``) is drawn here too, from a stream of its own.

Random draws come from ``numpy.random.Generator`` streams seeded with ``[seed, n]``, in a fixed
order; GPU rows are scraped in fixed chunks so the streams never depend on the fleet's size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import numpy as np
import numpy.typing as npt

from gpucost.synth.catalog import GpuModel
from gpucost.synth.common import SECONDS_PER_HOUR
from gpucost.synth.fleet import P_DIURNAL, P_NOTEBOOK, P_ON_CPU, P_TRAINING, Fleet, Host

SCRAPE_INTERVAL_S: Final = 300
"""One scrape every 5 minutes keeps the demo's files small (exporters are scraped every 15-30 s
in production; the hourly rollup is the same)."""
SAMPLES_PER_HOUR: Final = SECONDS_PER_HOUR // SCRAPE_INTERVAL_S
CHUNK_UNITS: Final = 512
"""GPU rows simulated per vectorised chunk; fixed so the random streams never depend on it."""

# Office-hours request curve (fraction of peak per local hour 0-23), a typical shape of
# interactive inference traffic; literals, not cos(), so the output is identical on every CPU.
# fmt: off
DIURNAL_CURVE: Final = (
    0.10, 0.06, 0.04, 0.03, 0.04, 0.08, 0.18, 0.35, 0.55, 0.72, 0.84, 0.92,
    0.97, 1.00, 0.99, 0.96, 0.90, 0.82, 0.72, 0.60, 0.45, 0.32, 0.22, 0.15,
)
# fmt: on
WEEKEND_FACTOR: Final = 0.6

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Simulation:
    """Per GPU row and hour (rows x hours): the activity and the sums of its 12 scrapes."""

    level_pct: npt.NDArray[np.int16]
    mem_mib: npt.NDArray[np.int32]
    workload: npt.NDArray[np.int32]
    util_sum: npt.NDArray[np.int32]
    util_max: npt.NDArray[np.uint8]
    power_sum_mw: npt.NDArray[np.int64]
    clock_sum_mhz: npt.NDArray[np.int32]
    samples: npt.NDArray[np.uint8] | None
    """Every scrape's utilisation (rows x hours x 12), kept only for dcgm text output."""


@dataclass(frozen=True)
class _Hourly:
    """Hourly activity being filled in (rows x hours): level %, memory MiB, workload index."""

    level: npt.NDArray[np.int16]
    mem: npt.NDArray[np.int32]
    workload: npt.NDArray[np.int32]


@dataclass(frozen=True)
class _Calendar:
    """Each GPU row's local hour of day, weekend flag and day-curve value, per window hour."""

    local_hour: Int64Array
    weekend: npt.NDArray[np.bool_]
    curve: npt.NDArray[np.float64]


def simulate(
    fleet: Fleet, window_start: datetime, hours: int, seed: int, *, keep_samples: bool
) -> Simulation:
    """Every GPU row's hourly activity by its pattern and its jobs, then its scrapes."""
    count = len(fleet.units)
    rng = np.random.default_rng([seed, 1])
    hourly = _Hourly(
        level=np.zeros((count, hours), dtype=np.int16),
        mem=np.zeros((count, hours), dtype=np.int32),
        workload=np.zeros((count, hours), dtype=np.int32),
    )
    calendar = _calendar(fleet, window_start, hours)
    # The order of these steps is the order of the draws from rng: do not reorder.
    _diurnal(fleet, calendar, hourly, rng)
    _notebooks(fleet, calendar, hourly, rng)
    rows = fleet.unit_array("pattern") == P_ON_CPU
    hourly.workload[rows] = fleet.unit_array("workload")[rows, None]
    _training(fleet, hourly, rng)
    return _scrape(fleet, hourly, seed, keep_samples=keep_samples)


def _calendar(fleet: Fleet, window_start: datetime, hours: int) -> _Calendar:
    tz = np.array(
        [fleet.hosts[u.host_index].itype.tz_offset_h for u in fleet.units], dtype=np.int64
    )
    hour = np.arange(hours, dtype=np.int64)[None, :] + tz[:, None]
    local_hour = hour % 24
    weekday = (window_start.weekday() + hour // 24) % 7
    curve = np.array(DIURNAL_CURVE, dtype=np.float64)[local_hour]
    return _Calendar(local_hour, weekday >= 5, curve)


def _diurnal(fleet: Fleet, calendar: _Calendar, hourly: _Hourly, rng: np.random.Generator) -> None:
    """Model servers: base + amplitude x day curve (less at weekends), memory near a fixed level."""
    rows = fleet.unit_array("pattern") == P_DIURNAL
    if not rows.any():
        return
    base, amp = fleet.unit_array("base_pct"), fleet.unit_array("amp_pct")
    mem_permille, fb_total = fleet.unit_array("mem_permille"), fleet.unit_array("fb_total_mib")
    scale = np.where(calendar.weekend[rows], WEEKEND_FACTOR, 1.0)
    raw = np.rint(base[rows, None] + amp[rows, None] * calendar.curve[rows] * scale).astype(
        np.int64
    )
    raw += rng.integers(-3, 4, size=raw.shape)
    hourly.level[rows] = np.clip(raw, 2, 97)
    jitter = rng.integers(-5, 6, size=raw.shape)  # KV-cache growth, in permille
    hourly.mem[rows] = (fb_total[rows, None] * (mem_permille[rows, None] + jitter)) // 1000
    hourly.workload[rows] = fleet.unit_array("workload")[rows, None]


def _notebooks(
    fleet: Fleet, calendar: _Calendar, hourly: _Hourly, rng: np.random.Generator
) -> None:
    """Notebooks: busy in 40 % of weekday office hours (9-19 local), their memory held always."""
    rows = fleet.unit_array("pattern") == P_NOTEBOOK
    if not rows.any():
        return
    base, amp = fleet.unit_array("base_pct"), fleet.unit_array("amp_pct")
    mem_permille, fb_total = fleet.unit_array("mem_permille"), fleet.unit_array("fb_total_mib")
    local_hour = calendar.local_hour[rows]
    office = ~calendar.weekend[rows] & (local_hour >= 9) & (local_hour < 19)
    active = office & (rng.random(size=office.shape) < 0.4)
    draw = base[rows, None] + (rng.random(size=office.shape) * amp[rows, None]).astype(np.int64)
    hourly.level[rows] = np.where(active, draw, 0)
    hourly.mem[rows] = np.broadcast_to(
        (fb_total[rows] * mem_permille[rows] // 1000)[:, None], office.shape
    )
    hourly.workload[rows] = fleet.unit_array("workload")[rows, None]


def _training(fleet: Fleet, hourly: _Hourly, rng: np.random.Generator) -> None:
    """Training jobs hold every GPU of their host at a level that wobbles by +-2 points."""
    fb_total = fleet.unit_array("fb_total_mib")
    units_of_host: dict[int, list[int]] = defaultdict(list)
    for index, unit in enumerate(fleet.units):
        units_of_host[unit.host_index].append(index)
    for job in fleet.jobs:
        members = np.array(units_of_host[job.host_index], dtype=np.int64)
        span = slice(job.start_h, job.end_h)
        hourly.level[members, span] = job.level_pct
        hourly.mem[members, span] = fb_total[members, None] * job.mem_permille // 1000
        hourly.workload[members, span] = job.workload
    rows = fleet.unit_array("pattern") == P_TRAINING
    if rows.any():
        wobble = rng.integers(-2, 3, size=(int(rows.sum()), hourly.level.shape[1]))
        hourly.level[rows] = np.where(hourly.level[rows] > 0, hourly.level[rows] + wobble, 0)


def _scrape(fleet: Fleet, hourly: _Hourly, seed: int, *, keep_samples: bool) -> Simulation:
    """Twelve scrapes per GPU row and hour: hourly level + uniform noise, in whole percent.

    Power and SM clock are linear in a sample's utilisation (:func:`power_coefficients`,
    :func:`clock_coefficients`), so their hourly sums follow from the utilisation sum exactly.
    """
    level = hourly.level
    count, hours = level.shape
    util_sum = np.zeros((count, hours), dtype=np.int32)
    util_max = np.zeros((count, hours), dtype=np.uint8)
    samples = np.zeros((count, hours, SAMPLES_PER_HOUR), dtype=np.uint8) if keep_samples else None
    devices = _time_sliced_devices(fleet)
    kept: dict[int, npt.NDArray[np.int16]] = {}
    _sample_chunks(fleet, level, seed, util_sum, util_max, samples, kept, devices)
    for members in devices:
        # dcgm-exporter reports the device's utilisation on every sharing pod's series: the
        # pods' own activity adds up on the device (their caps keep the sum within 100 %).
        device = np.clip(sum(kept[member] for member in members), 0, 100)
        rows = np.array(members, dtype=np.int64)
        util_sum[rows] = device.sum(axis=1, dtype=np.int32)
        util_max[rows] = device.max(axis=1)
        if samples is not None:
            samples[rows] = device.astype(np.uint8)
        level[rows] = level[rows].max(axis=0)
    gpus = [fleet.hosts[u.host_index].itype.gpu for u in fleet.units]
    idle_mw, step_mw = power_coefficients(gpus)
    idle_mhz, top_mhz, step_mhz = clock_coefficients(gpus)
    power_sum = idle_mw[:, None] * SAMPLES_PER_HOUR + step_mw[:, None] * util_sum
    clock_sum = np.where(
        level > 0,
        (top_mhz - 100 * step_mhz)[:, None] * SAMPLES_PER_HOUR + step_mhz[:, None] * util_sum,
        idle_mhz[:, None] * SAMPLES_PER_HOUR,
    ).astype(np.int32)
    return Simulation(
        level, hourly.mem, hourly.workload, util_sum, util_max, power_sum, clock_sum, samples
    )


def _time_sliced_devices(fleet: Fleet) -> list[list[int]]:
    """The GPU rows of each time-sliced GPU (rows sharing one GPU by pods)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, unit in enumerate(fleet.units):
        if unit.share_divisor > 1:
            groups[(unit.host_index, unit.gpu_index)].append(index)
    return [members for _, members in sorted(groups.items())]


def _sample_chunks(
    fleet: Fleet,
    level: npt.NDArray[np.int16],
    seed: int,
    util_sum: npt.NDArray[np.int32],
    util_max: npt.NDArray[np.uint8],
    samples: npt.NDArray[np.uint8] | None,
    kept: dict[int, npt.NDArray[np.int16]],
    devices: Sequence[Sequence[int]],
) -> None:
    """Fill the hourly sums and maxima (and the samples) chunk by chunk, a stream per chunk;
    the samples of time-sliced GPU rows (``devices``) are kept in ``kept`` by row."""
    wanted = {member for members in devices for member in members}
    count, hours = level.shape
    noise_pct = fleet.unit_array("noise_pct").astype(np.int16)
    max_pct = fleet.unit_array("max_pct").astype(np.int16)
    for chunk, first in enumerate(range(0, count, CHUNK_UNITS)):
        part = slice(first, min(count, first + CHUNK_UNITS))
        rng = np.random.default_rng([seed, 2, chunk])
        lvl = level[part][:, :, None]
        noise = rng.integers(-10, 11, size=(lvl.shape[0], hours, SAMPLES_PER_HOUR), dtype=np.int16)
        noise *= noise_pct[part, None, None]
        noise //= 10
        noise += lvl
        np.clip(noise, 1, max_pct[part, None, None], out=noise)
        pct = np.where(lvl > 0, noise, np.int16(0))
        util_sum[part] = pct.sum(axis=2, dtype=np.int32)
        util_max[part] = pct.max(axis=2)
        if samples is not None:
            samples[part] = pct
        for member in wanted:
            if first <= member < part.stop:
                kept[member] = pct[member - first].copy()


def power_coefficients(gpus: Sequence[GpuModel | None]) -> tuple[Int64Array, Int64Array]:
    """Board power = idle + step x utilisation %, rising linearly to the TDP (milliwatts)."""
    idle = np.array([g.idle_power_w * 1000 if g else 0 for g in gpus], dtype=np.int64)
    top = np.array([g.max_power_w * 1000 if g else 0 for g in gpus], dtype=np.int64)
    return idle, (top - idle) // 100


def clock_coefficients(
    gpus: Sequence[GpuModel | None],
) -> tuple[Int64Array, Int64Array, Int64Array]:
    """SM clock: idle without work, else top - step x (100 - utilisation %), near boost."""
    idle = np.array([g.idle_sm_clock_mhz if g else 0 for g in gpus], dtype=np.int64)
    top = np.array([g.max_sm_clock_mhz if g else 0 for g in gpus], dtype=np.int64)
    return idle, top, (top - idle) // 400


@dataclass(frozen=True)
class HostCpu:
    """Hourly CPU use of hosts (hosts x hours), in basis points of the host's CPUs."""

    avg: Int64Array
    p95: Int64Array
    peak: Int64Array


def simulate_host_cpu(servers: Sequence[Host], hours: int, seed: int) -> HostCpu:
    """CPU use of model servers along the day curve; CPU-bound ones run hot."""
    rng = np.random.default_rng([seed, 3])
    busy = np.array([h.pattern in ("cpu-model-server", "model-on-cpu") for h in servers])
    tz = np.array([h.itype.tz_offset_h for h in servers], dtype=np.int64)
    curve = np.array(DIURNAL_CURVE, dtype=np.float64)[
        (np.arange(hours, dtype=np.int64)[None, :] + tz[:, None]) % 24
    ]
    noise = rng.integers(-300, 301, size=curve.shape)
    # A saturated CPU model server sits at 72-98 %; a GPU model server's CPU at 8-26 %.
    avg = np.where(
        busy[:, None],
        np.clip(np.rint(7200 + 2200 * curve).astype(np.int64) + noise, 7000, 9800),
        np.clip(np.rint(800 + 1800 * curve).astype(np.int64) + noise, 300, 4000),
    )
    p95 = np.minimum(10000, avg + rng.integers(300, 900, size=curve.shape))
    peak = np.minimum(10000, p95 + rng.integers(100, 500, size=curve.shape))
    return HostCpu(avg, p95, peak)
