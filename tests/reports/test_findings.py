"""Findings on synthetic fleets built to contain them, and not where they are absent.

Waste arithmetic is written out by hand from the prices in gpucost/synth/catalog.toml (AWS
us-east-1 and Google Cloud us-central1 on-demand, September 2024) and the 730-hour month.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from gpucost.core.contracts import BILLING, FINDINGS, GPU_USAGE, INVENTORY, MONEY
from gpucost.reports.catalog import GIB, GpuOffer, build_catalog, cheapest
from gpucost.reports.findings import (
    FleetData,
    find_all,
    find_cpu_misplaced_model_servers,
    find_idle_gpu_servers,
    find_model_on_cpu_in_gpu_hosts,
    find_oversized_gpus,
)
from gpucost.reports.thresholds import FindingThresholds
from tests.reports.fleet import Fleet

Q18 = Decimal("1e-18")


def _evidence(row: dict[str, Any]) -> dict[str, Any]:
    evidence: dict[str, Any] = json.loads(row["evidence"])
    return evidence


def _only(frame: pl.DataFrame, kind: str, host: str | None = None) -> dict[str, Any]:
    rows = frame.filter(pl.col("kind") == kind)
    if host is not None:
        rows = rows.filter(pl.col("host") == host)
    assert rows.height == 1, rows
    return rows.row(0, named=True)


# ---- all rules together --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [42, 1, 3])
def test_every_planted_anomaly_is_found_and_nothing_else(
    fleet_for: Callable[[int], Fleet], seed: int
) -> None:
    fleet = fleet_for(seed)
    findings = find_all(fleet.data())
    FINDINGS.validate(findings, "reports")
    found = {(row["kind"], row["host"]) for row in findings.iter_rows(named=True)}
    planted = {(a["kind"], a["host"]) for a in fleet.truth["anomalies"]}
    assert found == planted
    assert findings["est_monthly_waste"].dtype == MONEY
    assert findings["est_monthly_waste"].is_not_null().all()
    for row in findings.iter_rows(named=True):
        assert _evidence(row)["owner"] == row["project"]
        assert row["window_start"] == fleet.window.start_time
        assert row["window_end"] == fleet.window.end_time
        assert row["day"] == fleet.window.end - timedelta(days=1)


def test_findings_do_not_depend_on_row_order(fleet: Fleet) -> None:
    first = find_all(fleet.data())
    shuffled = fleet.data(
        gpu_usage=fleet.usage.sample(fraction=1.0, shuffle=True, seed=7),
        billing=fleet.billing.sample(fraction=1.0, shuffle=True, seed=8),
        inventory=fleet.inventory.sample(fraction=1.0, shuffle=True, seed=9),
        host_metrics=fleet.host_metrics.sample(fraction=1.0, shuffle=True, seed=10),
    )
    assert find_all(shuffled).equals(first)


def test_lazy_frames_are_accepted(fleet: Fleet) -> None:
    lazy = fleet.data(
        gpu_usage=fleet.usage.lazy(),
        billing=fleet.billing.lazy(),
        inventory=fleet.inventory.lazy(),
        host_metrics=fleet.host_metrics.lazy(),
    )
    assert find_all(lazy).equals(find_all(fleet.data()))


# ---- idle_gpu_server ------------------------------------------------------------------------


def test_idle_gpu_server_names_host_owner_evidence_and_money(fleet: Fleet) -> None:
    planted = fleet.planted("idle_gpu_server")
    row = _only(find_all(fleet.data()), "idle_gpu_server")
    assert (row["host"], row["resource_id"]) == (planted["host"], planted["resource_id"])
    assert row["project"] == planted["project"] == "recsys-training"
    # g4dn.xlarge, 0.526 USD/h, idle all 48 hours: 48 x 0.526 = 25.248 USD in the window,
    # projected: 25.248 x 730 / 48 = 383.98 USD a month (= 0.526 x 730).
    assert row["est_monthly_waste"] == Decimal("383.98")
    assert row["currency"] == "USD"
    evidence = _evidence(row)
    assert evidence["idle_hours"] == evidence["observed_hours"] == 48
    assert evidence["longest_idle_hours"] == 48
    assert evidence["mean_util"] == 0.0
    assert evidence["last_active_hour"] is None
    assert evidence["idle_since"] == "2024-09-24T00:00:00Z"
    assert Decimal(evidence["idle_cost_in_window"]) == Decimal("25.248")
    assert evidence["billed_hours"] == 48 and evidence["unpriced_hours"] == 0
    assert "stop or release" in row["recommendation"]
    assert "383.98 USD/month" in row["recommendation"]


def _busy(usage: pl.DataFrame, host: str, *, every: int = 1) -> pl.DataFrame:
    """Make ``host`` work (50 %, 4 GiB) in every ``every``-th hour of the window."""
    hour_index = (pl.col("hour").dt.epoch("s") // 3600) % every
    working = (pl.col("host") == host) & (hour_index == 0)
    return usage.with_columns(
        pl.when(working).then(0.5).otherwise(pl.col("util_avg")).alias("util_avg"),
        pl.when(working).then(0.6).otherwise(pl.col("util_max")).alias("util_max"),
        pl.when(working)
        .then(4 * GIB)
        .otherwise(pl.col("mem_used_max_bytes"))
        .alias("mem_used_max_bytes"),
    )


def test_no_idle_finding_on_a_fleet_whose_idle_host_works(fleet: Fleet) -> None:
    host = fleet.planted("idle_gpu_server")["host"]
    findings = find_idle_gpu_servers(fleet.data(gpu_usage=_busy(fleet.usage, host)))
    assert host not in findings["host"].to_list()


def test_idle_hours_must_be_consecutive(fleet: Fleet) -> None:
    """Busy one hour in 20: 45 idle hours, but never 24 in a row."""
    host = fleet.planted("idle_gpu_server")["host"]
    usage = _busy(fleet.usage, host, every=20)
    assert host not in find_idle_gpu_servers(fleet.data(gpu_usage=usage))["host"].to_list()
    lower = FindingThresholds(idle_min_hours=19)
    found = find_idle_gpu_servers(fleet.data(gpu_usage=usage), lower)
    row = _only(found, "idle_gpu_server", host)
    evidence = _evidence(row)
    assert evidence["idle_hours"] == 45 and evidence["longest_idle_hours"] == 19
    assert evidence["last_active_hour"] == "2024-09-25T16:00:00Z"  # busy at 00, 20 and 40 h
    assert evidence["idle_since"] is None  # the last stretch, 7 h, is too short
    # 45 idle hours x 0.526 = 23.67 USD; x 730 / 48 observed hours = 359.98125.
    assert row["est_monthly_waste"] == Decimal("23.67") * 730 / 48
    assert "between jobs" in row["recommendation"]


def test_missing_telemetry_is_not_idle(fleet: Fleet) -> None:
    """Half the hours have no rows: 24 observed idle hours, not 48."""
    host = fleet.planted("idle_gpu_server")["host"]
    usage = fleet.usage.filter(
        (pl.col("host") != host) | (pl.col("hour").dt.day() == fleet.window.start.day)
    )
    row = _only(find_idle_gpu_servers(fleet.data(gpu_usage=usage)), "idle_gpu_server", host)
    assert _evidence(row)["observed_hours"] == 24
    # 24 h x 0.526 = 12.624 USD over 24 observed hours: 12.624 x 730 / 24 = 383.98.
    assert row["est_monthly_waste"] == Decimal("383.98")


def test_hours_without_a_bill_use_the_list_price(fleet: Fleet) -> None:
    """The second day's bill has not arrived; the inventory's list price (set to 1.00) fills."""
    planted = fleet.planted("idle_gpu_server")
    second_day = datetime.combine(fleet.window.start + timedelta(days=1), datetime.min.time(), UTC)
    billing = fleet.billing.filter(
        (pl.col("ResourceId") != planted["resource_id"])
        | (pl.col("ChargePeriodStart") < second_day)
    )
    inventory = fleet.inventory.with_columns(
        pl.when(pl.col("resource_id") == planted["resource_id"])
        .then(pl.lit(Decimal("1.00")).cast(MONEY))
        .otherwise(pl.col("hourly_list_price"))
        .alias("hourly_list_price")
    )
    found = find_idle_gpu_servers(fleet.data(billing=billing, inventory=inventory))
    row = _only(found, "idle_gpu_server", planted["host"])
    evidence = _evidence(row)
    assert (evidence["billed_hours"], evidence["list_price_hours"]) == (24, 24)
    # 24 x 0.526 + 24 x 1.00 = 36.624 USD; x 730 / 48 = 556.99 USD a month.
    assert Decimal(evidence["idle_cost_in_window"]) == Decimal("36.624")
    assert row["est_monthly_waste"] == Decimal("556.99")


def test_an_unpriced_idle_host_is_reported_without_money(fleet: Fleet) -> None:
    planted = fleet.planted("idle_gpu_server")
    billing = fleet.billing.filter(pl.col("ResourceId") != planted["resource_id"])
    inventory = fleet.inventory.with_columns(
        pl.when(pl.col("resource_id") == planted["resource_id"])
        .then(None)
        .otherwise(pl.col("hourly_list_price"))
        .alias("hourly_list_price")
    )
    found = find_idle_gpu_servers(fleet.data(billing=billing, inventory=inventory))
    row = _only(found, "idle_gpu_server", planted["host"])
    assert row["est_monthly_waste"] is None
    assert row["severity"] == "medium"
    assert _evidence(row)["unpriced_hours"] == 48
    assert "money is unknown" in row["recommendation"]


# ---- model_on_cpu_in_gpu_host ---------------------------------------------------------------


def test_model_on_cpu_in_gpu_host(fleet: Fleet) -> None:
    planted = fleet.planted("model_on_cpu_in_gpu_host")
    row = _only(find_all(fleet.data()), "model_on_cpu_in_gpu_host")
    assert (row["host"], row["project"]) == (planted["host"], "speech-asr")
    # g2-standard-4 (1 x L4), 0.706832 USD/h, model on the CPU all 48 hours: the whole cost,
    # 48 x 0.706832 = 33.927936 USD, projected 33.927936 x 730 / 48 = 515.98736 USD a month.
    assert row["est_monthly_waste"] == Decimal("0.706832") * 730 == Decimal("515.98736")
    evidence = _evidence(row)
    assert evidence["on_cpu_hours"] == 48
    assert evidence["gpu_util_max"] == 0.0 and evidence["gpu_memory_max_bytes"] == 0
    assert evidence["cpu_p95_median"] > 0.7
    assert evidence["workloads"] and evidence["workloads"][0].endswith("-predictor")
    assert "CUDA" in row["recommendation"]
    # find_all reports it once: as the more specific model-on-CPU, not also as idle.
    assert planted["host"] in find_idle_gpu_servers(fleet.data())["host"].to_list()
    assert planted["host"] not in (
        find_all(fleet.data()).filter(pl.col("kind") == "idle_gpu_server")["host"].to_list()
    )


def test_no_model_on_cpu_when_its_cpu_rests(fleet: Fleet) -> None:
    planted = fleet.planted("model_on_cpu_in_gpu_host")
    calm = fleet.host_metrics.with_columns(
        pl.when(pl.col("resource_id") == planted["resource_id"])
        .then(0.2)
        .otherwise(pl.col("cpu_util_p95"))
        .alias("cpu_util_p95")
    )
    assert find_model_on_cpu_in_gpu_hosts(fleet.data(host_metrics=calm)).is_empty()
    # A GPU host doing nothing at all is then an idle server.
    findings = find_all(fleet.data(host_metrics=calm))
    assert planted["host"] in findings.filter(pl.col("kind") == "idle_gpu_server")["host"]


def test_no_model_on_cpu_when_its_gpu_works(fleet: Fleet) -> None:
    planted = fleet.planted("model_on_cpu_in_gpu_host")
    usage = _busy(fleet.usage, planted["host"])
    assert find_model_on_cpu_in_gpu_hosts(fleet.data(gpu_usage=usage)).is_empty()


# ---- cpu_misplaced_model_server ---------------------------------------------------------------


def test_cpu_misplaced_model_server(fleet: Fleet) -> None:
    planted = fleet.planted("cpu_misplaced_model_server")
    row = _only(find_all(fleet.data()), "cpu_misplaced_model_server")
    assert (row["host"], row["resource_id"]) == (planted["host"], planted["resource_id"])
    evidence = _evidence(row)
    assert evidence["instance_type"] == "c7i.4xlarge" and evidence["gpu_count"] == 0
    assert evidence["busy_hours"] == evidence["observed_hours"] == 48
    # Cheapest AWS us-east-1 GPU with >= 16 GiB: g4dn.xlarge (T4) at 0.526 USD/h against the
    # c7i.4xlarge's 0.714 USD/h: (0.714 - 0.526) x 730 = 137.24 USD a month saved.
    assert evidence["recommended"]["instance_type"] == "g4dn.xlarge"
    assert row["est_monthly_waste"] == (Decimal("0.714") - Decimal("0.526")) * 730
    assert row["est_monthly_waste"] == Decimal("137.24")
    assert Decimal(evidence["monthly_cost_difference"]) == Decimal("-137.24")
    assert "g4dn.xlarge" in row["recommendation"] and "saves 137.24 USD" in row["recommendation"]


def test_a_dearer_gpu_instance_is_reported_as_an_extra_cost(fleet: Fleet) -> None:
    catalog = [
        GpuOffer("AWS", "us-east-1", "g9.test", "NVIDIA L4", 1, 24 * GIB, Decimal("1.00")),
    ]
    row = _only(
        find_cpu_misplaced_model_servers(fleet.data(), catalog=catalog),
        "cpu_misplaced_model_server",
    )
    # (0.714 - 1.00) x 730 = -208.78: the move costs 208.78 USD a month more.
    assert row["est_monthly_waste"] == Decimal("-208.78")
    assert row["severity"] == "low"
    assert "costs 208.78 USD/month more" in row["recommendation"]


def test_no_cpu_misplaced_finding_when_the_cpu_is_not_saturated(fleet: Fleet) -> None:
    calm = fleet.host_metrics.with_columns(pl.col("cpu_util_p95") * 0.5)
    assert find_cpu_misplaced_model_servers(fleet.data(host_metrics=calm)).is_empty()
    assert find_cpu_misplaced_model_servers(fleet.data(host_metrics=None)).is_empty()


# ---- oversized_gpu ----------------------------------------------------------------------------


def test_oversized_a100_gets_the_cheapest_fitting_gpu(fleet: Fleet) -> None:
    planted = fleet.planted("oversized_gpu")
    row = _only(find_all(fleet.data()), "oversized_gpu")
    assert row["host"] == planted["host"]
    evidence = _evidence(row)
    assert evidence["peak_memory_bytes"] < evidence["card_memory_bytes"] / 2
    assert evidence["mean_util"] < 0.3
    assert evidence["required_memory_bytes"] >= evidence["peak_memory_bytes"] * 1.2
    # a2-highgpu-1g (A100 40GB) at 3.673385 USD/h; the 6 GiB peak plus 20 % fits the L4 of
    # g2-standard-4 at 0.706832 USD/h (an A100 2g.10gb slice would cost 2/7 x 3.673385 =
    # 1.0495 USD/h): (3.673385 - 0.706832) x 730 = 2,165.58369 USD a month.
    assert evidence["recommended"]["instance_type"] == "g2-standard-4"
    assert row["est_monthly_waste"] == Decimal("2165.58369")
    assert row["severity"] == "high"


def test_busy_idle_and_mig_gpus_are_not_oversized(fleet: Fleet) -> None:
    hosts = set(find_oversized_gpus(fleet.data())["host"].to_list())
    assert hosts == {fleet.planted("oversized_gpu")["host"]}
    mig = next(s for s in fleet.truth["shared_gpus"] if s["kind"] == "mig")["host"]
    training = [h for h, e in fleet.truth["hosts"].items() if e["pattern"] == "training"]
    assert mig not in hosts and not hosts & set(training)
    assert fleet.planted("idle_gpu_server")["host"] not in hosts


def _one_host_fleet(
    *, provider: str, instance_type: str, gpu_model: str, card_gib: int, price: str | None
) -> FleetData:
    """One host with one GPU at 10 % use and a 6 GiB peak for 24 hours; no bill."""
    start = datetime(2024, 9, 1, tzinfo=UTC)
    hours = [start + timedelta(hours=h) for h in range(24)]
    usage = GPU_USAGE.conform(
        pl.DataFrame(
            {
                "hour": hours,
                "host": ["h1"] * 24,
                "gpu_uuid": ["GPU-1"] * 24,
                "gpu_model": [gpu_model] * 24,
                "workload": ["small-model-predictor"] * 24,
                "seconds_observed": [3600.0] * 24,
                "util_avg": [0.1] * 24,
                "util_max": [0.2] * 24,
                "mem_used_max_bytes": [6 * GIB] * 24,
                "mem_total_bytes": [card_gib * GIB] * 24,
                "source": ["test"] * 24,
            }
        ),
        "test",
    )
    inventory = INVENTORY.conform(
        pl.DataFrame(
            {
                "day": [date(2024, 9, 1)],
                "resource_id": ["r1"],
                "provider": [provider],
                "host": ["h1"],
                "instance_type": [instance_type],
                "gpu_count": pl.Series([1], dtype=pl.Int32),
                "gpu_model": [gpu_model],
                "gpu_mem_bytes": [card_gib * GIB],
                "role": ["model-server"],
                "tags": ['{"project":"p1"}'],
                "region": ["sjc1"],
                "hourly_list_price": pl.Series([Decimal(price) if price else None], dtype=MONEY),
                "currency": ["USD" if price else None],
                "source": ["test"],
            }
        ),
        "test",
    )
    return FleetData(
        gpu_usage=usage,
        inventory=inventory,
        billing=BILLING.empty(),
        start=start,
        end=start + timedelta(days=1),
    )


def test_an_on_prem_h100_is_right_sized_to_a_mig_slice() -> None:
    data = _one_host_fleet(
        provider="On-Prem",
        instance_type="r760xa-h100x1",
        gpu_model="NVIDIA H100 PCIe",
        card_gib=80,
        price="5.00",
    )
    row = _only(find_oversized_gpus(data), "oversized_gpu")
    evidence = _evidence(row)
    assert evidence["recommended"]["mig_profile"] == "1g.10gb"
    assert row["project"] == "p1"
    # 5.00 USD/h for the H100; a 1g.10gb slice is 1/7 of it, 0.714285714285714286 USD/h
    # (rounded to 18 places): (5.00 - 0.714285714285714286) x 730 a month.
    slice_price = (Decimal("5.00") / 7).quantize(Q18)
    assert row["est_monthly_waste"] == (Decimal("5.00") - slice_price) * 730
    assert "MIG-partitioned GPU" in row["recommendation"]


def test_no_oversized_finding_without_a_cheaper_fit_or_a_price() -> None:
    unpriced = _one_host_fleet(
        provider="On-Prem",
        instance_type="r760xa-h100x1",
        gpu_model="NVIDIA H100 PCIe",
        card_gib=80,
        price=None,
    )
    assert find_oversized_gpus(unpriced).is_empty()
    t4 = _one_host_fleet(
        provider="AWS",
        instance_type="g4dn.xlarge",
        gpu_model="Tesla T4",
        card_gib=16,
        price="0.526",
    )
    assert find_oversized_gpus(t4).is_empty()  # 6 GiB of 16: but nothing cheaper fits


# ---- thresholds and catalog -------------------------------------------------------------------


def test_thresholds_from_a_config_table() -> None:
    thresholds = FindingThresholds.model_validate(
        {"idle_min_hours": 12, "severity_high": 500.5, "model_server_roles": ["api"]}
    )
    assert thresholds.idle_min_hours == 12
    assert thresholds.severity_high == Decimal("500.5")  # from the float's text, exactly
    assert thresholds.model_server_roles == ("api",)
    assert thresholds.idle_util == FindingThresholds().idle_util == 0.05  # the rest: defaults


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"idle_hours_min": 3}, "idle_hours_min"),  # unknown key
        ({"idle_min_hours": "12"}, "idle_min_hours"),  # text, not a number
        ({"idle_min_hours": 12.5}, "idle_min_hours"),  # not whole hours
        ({"idle_min_hours": True}, "idle_min_hours"),
        ({"idle_util": 5}, "idle_util"),  # a fraction 0..1, not a percentage
        ({"model_server_roles": "api"}, "model_server_roles"),  # one text, not a list
        ({"severity_high": "lots"}, "severity_high"),
    ],
)
def test_thresholds_refuse_unknown_keys_and_wrong_types(
    values: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        FindingThresholds.model_validate(values)


def test_a_longer_idle_threshold_than_the_window_finds_nothing(fleet: Fleet) -> None:
    findings = find_idle_gpu_servers(fleet.data(), FindingThresholds(idle_min_hours=49))
    assert findings.is_empty()


def test_catalog_prefers_the_region_and_currency_of_the_host(fleet: Fleet) -> None:
    catalog = build_catalog(fleet.inventory)
    offer = cheapest(
        catalog, provider="AWS", region="us-east-1", currency="USD", min_gpu_mem_bytes=20 * GIB
    )
    assert offer is not None and offer.instance_type == "g6.xlarge"
    assert (
        cheapest(catalog, provider="AWS", region="eu-west-1", currency="USD", min_gpu_mem_bytes=GIB)
        is None
    )
    mig = [o for o in catalog if o.mig_profile == "2g.10gb" and o.provider == "Google Cloud"]
    assert mig and mig[0].hourly_price == (Decimal("3.673385") * 2 / 7).quantize(Q18)


def test_an_empty_lake_gives_no_findings() -> None:
    start = datetime(2024, 9, 1, tzinfo=UTC)
    empty = FleetData(
        gpu_usage=GPU_USAGE.empty().lazy(),
        inventory=INVENTORY.empty(),
        billing=BILLING.empty(),
        start=start,
        end=start + timedelta(days=1),
    )
    findings = find_all(empty)
    assert findings.is_empty() and findings.schema == FINDINGS.schema
