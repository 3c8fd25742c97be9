"""Tests for gpucost.collector.gpu_rollup: seconds observed, gaps, caps, merges, the spool."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpucost.collector.gpu_rollup import (
    RAW_SAMPLE_SCHEMA,
    SampleSpool,
    conform_samples,
    merge_rollups,
    mig_slice_uuid,
    rollup_hourly,
    slice_uuid_expr,
    workload_of,
)
from gpucost.core.contracts import GPU_USAGE
from gpucost.core.window import Window

T0 = datetime(2024, 9, 24, 10, 0, tzinfo=UTC)
DAY = Window(date(2024, 9, 24), date(2024, 9, 25))


def samples(offsets_s: Sequence[float], **columns: object) -> pl.DataFrame:
    """One series' samples at ``T0 + offset`` seconds."""
    frame = pl.DataFrame({"time": [T0 + timedelta(seconds=s) for s in offsets_s]})
    values = {"host": "node-1", "gpu_uuid": "GPU-1", **columns}
    return conform_samples(
        frame.with_columns(
            [
                pl.Series(name, value) if isinstance(value, list) else pl.lit(value).alias(name)
                for name, value in values.items()
            ]
        )
    )


def test_each_sample_stands_for_its_interval_or_the_time_to_the_next() -> None:
    # Every 5 minutes, but 10:25 and 10:30 missed, and one late pair 100 s apart.
    offsets = [0, 300, 600, 900, 1200, 2100, 2400, 2700, 3000, 3100]
    rows = rollup_hourly(samples(offsets), interval_s=300, source="s")
    # 1200 counts 300 (not the 900 s gap), 3000 counts 100 (the next comes then), 3100 counts 300.
    assert rows.get_column("seconds_observed").to_list() == [8 * 300 + 100 + 300]
    GPU_USAGE.validate(rows, "s")


def test_an_hour_is_capped_and_duplicates_count_once() -> None:
    jittered = [k * 14.9 for k in range(242)]  # 15 s scrapes running fast: 242 in the hour
    assert rollup_hourly(samples(jittered), interval_s=15, source="s").row(0, named=True)[
        "seconds_observed"
    ] == pytest.approx(3600.0)
    doubled = samples([0, 0, 30, 30], util=[0.2, 0.2, 0.4, 0.4])
    row = rollup_hourly(doubled, interval_s=30, source="s").row(0, named=True)
    assert row["seconds_observed"] == 60 and row["util_avg"] == pytest.approx(0.3)


def test_hours_split_at_the_sample_time() -> None:
    rows = rollup_hourly(samples([3300, 3600, 3900]), interval_s=300, source="s")
    assert rows.get_column("hour").to_list() == [T0, T0 + timedelta(hours=1)]
    assert rows.get_column("seconds_observed").to_list() == [300.0, 600.0]


def test_series_are_gpu_times_workload() -> None:
    pod_a = samples([0, 60], pod="a-x2k9p", namespace="ns", util=[0.1, 0.3])
    pod_b = samples([0, 60], pod="b-x2k9p", namespace="ns", util=[0.5, 0.5])
    rows = rollup_hourly(pl.concat([pod_b, pod_a]), interval_s=60, source="s")
    assert rows.select("pod", "workload", "seconds_observed", "util_avg").rows() == [
        ("a-x2k9p", "a", 120.0, pytest.approx(0.2)),
        ("b-x2k9p", "b", 120.0, 0.5),
    ]


def test_measures() -> None:
    frame = samples(
        [0, 10, 20],
        util=[0.2, None, 0.6],
        util_max=[None, None, 0.9],
        mem_used_bytes=[1, 5, 3],
        mem_total_bytes=[10, 10, 10],
        power_w=[100.0, 200.0, 300.0],
        sm_clock_mhz=[1000.0, 1100.0, 1200.0],
        mig_profile="1g.10gb",
        gpu_index=3,
        gpu_model="NVIDIA A100-SXM4-40GB",
    )
    row = rollup_hourly(frame, interval_s=10, source="s").row(0, named=True)
    assert row["util_avg"] == pytest.approx(0.4)  # nulls are not zeros
    assert row["util_max"] == 0.9  # a sample's own peak wins
    assert row["mem_used_max_bytes"] == 5 and row["mem_total_bytes"] == 10
    assert row["power_avg_w"] == 200.0 and row["sm_clock_avg_mhz"] == 1100.0
    assert (row["mig_profile"], row["gpu_index"], row["project"]) == ("1g.10gb", 3, None)


def test_window_and_unplaceable_samples_are_dropped() -> None:
    frame = pl.concat(
        [
            samples([0]),
            samples([-11 * 3600]),  # the day before
            samples([60], gpu_uuid=None),
            samples([120], host=None),
        ]
    )
    rows = rollup_hourly(frame, interval_s=30, source="s", window=DAY)
    assert rows.height == 1 and rows.row(0, named=True)["seconds_observed"] == 30


def test_rollup_is_the_same_for_any_input_order() -> None:
    frame = pl.concat(
        [
            samples([k * 7.0 for k in range(600)], util=[(k % 97) / 97 for k in range(600)]),
            samples([k * 11.0 for k in range(300)], pod="p", power_w=[k / 3 for k in range(300)]),
        ]
    )
    first = rollup_hourly(frame, interval_s=15, source="s")
    for seed in range(3):
        assert rollup_hourly(
            frame.sample(fraction=1, shuffle=True, seed=seed), interval_s=15, source="s"
        ).equals(first)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3 * 3600 - 1), min_size=1, max_size=80),
    st.sampled_from([10, 15, 30, 60, 300]),
)
def test_seconds_observed_property(offsets: list[int], interval: int) -> None:
    times = sorted(set(offsets))
    expected: dict[int, float] = defaultdict(float)
    for index, moment in enumerate(times):
        following = times[index + 1] if index + 1 < len(times) else None
        covered = interval if following is None else min(interval, following - moment)
        expected[moment // 3600] += covered
    rows = rollup_hourly(samples([float(t) for t in offsets]), interval_s=interval, source="s")
    got = {
        int((hour - T0).total_seconds()) // 3600: seconds
        for hour, seconds in rows.select("hour", "seconds_observed").iter_rows()
    }
    assert got == {hour: min(3600.0, seconds) for hour, seconds in expected.items()}
    assert all(seconds <= 3600 for seconds in got.values())


def test_mig_slice_uuid() -> None:
    assert mig_slice_uuid("GPU-1", 9) == "GPU-1/9"
    frame = pl.DataFrame({"u": ["GPU-1", "GPU-2"], "i": ["9", None]})
    assert frame.select(slice_uuid_expr(pl.col("u"), pl.col("i"))).to_series().to_list() == [
        "GPU-1/9",
        "GPU-2",
    ]


@pytest.mark.parametrize(
    ("pod", "workload"),
    [
        ("llama-predictor-7d9f8b6c5d-x2k9p", "llama-predictor"),
        ("t5-base-predictor-zjgw6hbv2m-lxnn7", "t5-base-predictor"),
        ("recsys-train-00042-worker-0", "recsys-train-00042"),
        ("mpi-job-launcher-0", "mpi-job"),
        ("postgres-0", "postgres"),
        ("nightly-backup-28814x", "nightly-backup-28814x"),
        ("dcgm-exporter-x7k2p", "dcgm-exporter"),
        ("jupyter-uma-silva", "jupyter-uma-silva"),
        ("standalone", "standalone"),
        (None, None),
    ],
)
def test_workload_of(pod: str | None, workload: str | None) -> None:
    frame = pl.DataFrame({"pod": [pod]}, schema={"pod": pl.String})
    assert frame.select(workload_of(pl.col("pod"))).item() == workload


def test_merge_rollups_weights_by_seconds() -> None:
    early = rollup_hourly(samples([0, 60, 120], util=0.9, power_w=300.0), interval_s=60, source="s")
    late = rollup_hourly(
        samples([1800], util=0.1, power_w=100.0, mem_used_bytes=7), interval_s=60, source="s"
    )
    (row,) = merge_rollups([early, late], "s").iter_rows(named=True)
    assert row["seconds_observed"] == 240
    assert row["util_avg"] == pytest.approx((0.9 * 180 + 0.1 * 60) / 240)
    assert row["util_max"] == 0.9 and row["mem_used_max_bytes"] == 7
    assert row["power_avg_w"] == pytest.approx((300 * 180 + 100 * 60) / 240)
    assert merge_rollups([], "s").height == 0


def test_conform_samples_refuses_unknown_columns() -> None:
    with pytest.raises(ValueError, match="unknown columns: temperature"):
        conform_samples(pl.DataFrame({"temperature": [40]}))
    assert conform_samples(pl.DataFrame({"host": ["h"]})).schema == RAW_SAMPLE_SCHEMA


def test_spool_keeps_days_and_prunes(tmp_path: Path) -> None:
    spool = SampleSpool(tmp_path / "spool", retention_days=2)
    written = spool.append(samples([0, 15 * 3600]), now=T0)  # 10:00 and 01:00 the next day
    assert [path.parent.name for path in written] == ["day=2024-09-24", "day=2024-09-25"]
    spool.append(samples([60]), now=T0 + timedelta(minutes=1))
    assert spool.read(DAY).height == 2
    assert spool.read(Window(date(2024, 9, 24), date(2024, 9, 26))).height == 3
    assert not list((tmp_path / "spool").rglob(".*"))  # no temporary files left
    assert spool.prune(date(2024, 9, 27)) == ["day=2024-09-24"]
    assert spool.read(DAY).height == 0
    assert spool.append(samples([])[:0], now=T0) == []
    with pytest.raises(ValueError, match="retention_days"):
        SampleSpool(tmp_path, retention_days=0)


def test_shares_follow_the_samples_not_the_hour() -> None:
    # One GPU scraped every minute, counted up to 300 s a sample: pod a holds it from minute 0
    # to 20, pod b from 20 to 60 (its sample at 60:00 opens the next hour); a third pod
    # time-slices it with b from minute 40, the device 60 % busy throughout.
    minutes = range(61)
    holders = [["a"] if m < 20 else ["b"] if m < 40 else ["b", "c"] for m in minutes]
    frames = [
        samples([60.0 * m], namespace="ns", pod=pod, util=0.6)
        for m, pods in zip(minutes, holders, strict=True)
        for pod in pods
    ]
    rows = rollup_hourly(pl.concat(frames), interval_s=300, source="s").filter(pl.col("hour") == T0)
    shares = {
        pod: (held, busy)
        for pod, held, busy in rows.select(
            "pod", "gpu_seconds_held", "gpu_seconds_busy"
        ).iter_rows()
    }
    # a's last sample (minute 19) stands until the device's next one (minute 20), not 300 s.
    assert shares["a"] == pytest.approx((1200.0, 720.0))
    assert shares["b"] == pytest.approx((1200.0 + 1200.0 / 2, (1200.0 + 600.0) * 0.6))
    assert shares["c"] == pytest.approx((600.0, 360.0))
    held = sum(held for held, _ in shares.values())
    assert held == pytest.approx(3600.0)  # the GPU was held the whole hour, never more


def test_a_gpu_without_a_workload_is_busy_once_and_held_by_nobody() -> None:
    idle = samples([0.0, 60.0], util=0.25)
    row = rollup_hourly(idle, interval_s=60, source="s").row(0, named=True)
    assert (row["gpu_seconds_held"], row["gpu_seconds_busy"]) == (0.0, 30.0)
