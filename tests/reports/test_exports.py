"""Finance exports: same bytes on re-run, totals equal to the allocation, FOCUS column names."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from decimal import Decimal
from pathlib import Path

import boto3
import polars as pl
import pytest

from gpucost.core.storage import LocalStorage, S3Storage
from gpucost.reports.exports import (
    CHARGEBACK_COLUMNS,
    UNIT_COST_COLUMNS,
    build_exports,
    chargeback,
    month_bounds,
    write_exports,
)
from gpucost.reports.unit_economics import cost_per_thousand_requests
from tests.reports.fleet import Fleet

MONTH = "2024-09"
# FOCUS 1.3 column ids used by the exports; everything else must carry the x_ prefix FOCUS
# reserves for custom columns.
FOCUS_COLUMNS = {
    "BilledCost",
    "BillingCurrency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "EffectiveCost",
    "ResourceId",
    "ResourceName",
    "ServiceProviderName",
    "AllocatedMethodDetails",
    "AllocatedMethodId",
    "AllocatedResourceId",
    "AllocatedTags",
}


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_exports_are_byte_identical_on_re_run(allocation: pl.DataFrame, tmp_path: Path) -> None:
    first = build_exports(allocation, MONTH)
    shuffled = allocation.sample(fraction=1.0, shuffle=True, seed=3)
    second = build_exports(shuffled, MONTH)
    assert first.files == second.files
    assert first.manifest_bytes == second.manifest_bytes
    write_exports(first, LocalStorage(tmp_path / "a").put_atomic)
    write_exports(second, LocalStorage(tmp_path / "b").put_atomic)
    write_exports(second, LocalStorage(tmp_path / "a").put_atomic)  # a second run over the first
    digests = {
        side: {
            str(path.relative_to(tmp_path / side)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted((tmp_path / side).rglob("*"))
            if path.is_file()
        }
        for side in ("a", "b")
    }
    assert digests["a"] == digests["b"]
    assert sorted(digests["a"]) == [
        f"exports/{MONTH}/{name}"
        for name in (
            "chargeback_daily.csv",
            "chargeback_daily.parquet",
            "chargeback_monthly.csv",
            "chargeback_monthly.parquet",
            "manifest.json",
        )
    ]  # no temporary files left behind


def test_totals_equal_the_allocation(allocation: pl.DataFrame) -> None:
    bundle = build_exports(allocation, MONTH)
    amount = sum(allocation["amount"], Decimal(0))
    billed = sum(allocation["billed_amount"], Decimal(0))
    gpu_hours = sum(Decimal(str(v)) for v in allocation["gpu_hours_idle"])
    fte_days = sum(Decimal(str(v)) for v in allocation["fte"].drop_nulls())
    for name in ("chargeback_daily.csv", "chargeback_monthly.csv"):
        rows = _rows(bundle.files[name])
        assert sum(Decimal(r["EffectiveCost"]) for r in rows) == amount
        assert sum(Decimal(r["BilledCost"]) for r in rows) == billed
        assert sum(Decimal(r["x_GpuHoursIdle"]) for r in rows) == gpu_hours
        assert sum(Decimal(r["x_FteDays"] or "0") for r in rows) == fte_days
        parquet = pl.read_parquet(bundle.files[name.replace(".csv", ".parquet")])
        assert sum(parquet["EffectiveCost"], Decimal(0)) == amount
    per_project = allocation.group_by("project").agg(pl.col("amount").sum()).sort("project").rows()
    monthly = chargeback(allocation, "monthly")
    assert (
        monthly.group_by("x_Project").agg(pl.col("EffectiveCost").sum()).sort("x_Project").rows()
        == per_project
    )
    assert bundle.manifest["totals"] == {
        "USD": {"EffectiveCost": f"{amount:.18f}", "BilledCost": f"{billed:.18f}"}
    }


def test_columns_names_types_and_formatting(allocation: pl.DataFrame) -> None:
    bundle = build_exports(allocation, MONTH)
    names = [column.name for column in CHARGEBACK_COLUMNS]
    assert all(name in FOCUS_COLUMNS or name.startswith("x_") for name in names)
    assert {"x_Project", "x_CostCenter", "AllocatedMethodId", "AllocatedResourceId"} <= set(names)
    for granularity in ("daily", "monthly"):
        data = bundle.files[f"chargeback_{granularity}.csv"]
        assert data.decode().split("\n", 1)[0] == ",".join(names)
        rows = _rows(data)
        assert rows
        for row in rows:
            assert row["ChargePeriodStart"].endswith("T00:00:00Z")
            for money in ("EffectiveCost", "BilledCost"):
                whole, _, places = row[money].lstrip("-").partition(".")
                assert whole.isdigit() and len(places) == 18  # exact decimal text
            assert len(row["x_GpuHoursIdle"].partition(".")[2]) == 6
        parquet = pl.read_parquet(bundle.files[f"chargeback_{granularity}.parquet"])
        assert parquet.schema == pl.Schema({c.name: c.dtype for c in CHARGEBACK_COLUMNS})
        assert parquet.height == len(rows)
    daily, monthly = (_rows(bundle.files[f"chargeback_{g}.csv"]) for g in ("daily", "monthly"))
    assert all(row["AllocatedMethodDetails"].startswith('{"Elements"') for row in daily)
    assert all(row["AllocatedMethodDetails"] == "" for row in monthly)
    assert {row["ChargePeriodStart"] for row in monthly} == {"2024-09-01T00:00:00Z"}
    assert {row["ChargePeriodEnd"] for row in monthly} == {"2024-10-01T00:00:00Z"}
    assert len(daily) > len(monthly)


def test_manifest_lists_rows_and_checksums(allocation: pl.DataFrame) -> None:
    bundle = build_exports(allocation, MONTH)
    manifest = json.loads(bundle.manifest_bytes)
    assert manifest["month"] == MONTH and manifest["through"] == "2024-09-25"
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert set(listed) == set(bundle.files)
    for name, data in bundle.files.items():
        entry = listed[name]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        frame = pl.read_csv(data) if name.endswith(".csv") else pl.read_parquet(data)
        assert entry["rows"] == frame.height
        assert [c["name"] for c in entry["columns"]] == frame.columns


def test_another_month_is_empty_but_complete(allocation: pl.DataFrame) -> None:
    bundle = build_exports(allocation, "2024-08")
    assert all(entry["rows"] == 0 for entry in bundle.manifest["files"])
    assert bundle.manifest["through"] is None
    assert month_bounds("2024-12")[1].isoformat() == "2025-01-01"
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_bounds("2024-13")


def test_unit_costs_are_exported_when_present(fleet: Fleet, allocation: pl.DataFrame) -> None:
    server = fleet.inventory.filter(pl.col("role") == "model-server").row(0, named=True)
    requests = pl.DataFrame(
        {"day": [fleet.window.start], "host": [server["host"]], "requests": [1000]}
    )
    unit_costs = cost_per_thousand_requests(requests, fleet.billing, fleet.inventory)
    bundle = build_exports(allocation, MONTH, unit_costs=unit_costs)
    rows = _rows(bundle.files["unit_costs_daily.csv"])
    assert list(rows[0]) == [column.name for column in UNIT_COST_COLUMNS]
    assert rows[0]["ResourceName"] == server["host"] and rows[0]["x_Requests"] == "1000"
    assert Decimal(rows[0]["x_CostPer1kRequests"]) == Decimal(rows[0]["EffectiveCost"])


def test_a_failed_write_leaves_the_previous_export_readable(
    allocation: pl.DataFrame, tmp_path: Path
) -> None:
    put = LocalStorage(tmp_path).put_atomic
    write_exports(build_exports(allocation, MONTH), put)
    manifest = tmp_path / f"exports/{MONTH}/manifest.json"
    before = manifest.read_bytes()
    calls: list[str] = []

    def failing(relative: str, data: bytes) -> None:
        calls.append(relative)
        if len(calls) == 3:
            raise OSError("disk full")
        put(relative, data)

    changed = allocation.with_columns(pl.col("fte") * 2)
    with pytest.raises(OSError, match="disk full"):
        write_exports(build_exports(changed, MONTH), failing)
    assert manifest.read_bytes() == before  # the manifest is written last, and was not
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_shells_storage_takes_the_exports(
    allocation: pl.DataFrame, tmp_path: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    bundle = build_exports(allocation, MONTH)
    local = LocalStorage(tmp_path)
    written = write_exports(bundle, local.put_atomic)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3 = S3Storage(f"s3://{s3_bucket}/out", client)
    assert write_exports(bundle, s3.put_atomic) == written
    for relative in written:
        assert s3.read_bytes(relative) == local.read_bytes(relative)
