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
    largest_remainder,
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
    totals = bundle.manifest["totals"]["USD"]
    assert (totals["EffectiveCost"], totals["BilledCost"]) == (f"{amount:.18f}", f"{billed:.18f}")
    assert totals["MinorUnitExponent"] == 2
    assert totals["EffectiveCostMinor"] == sum(monthly["x_EffectiveCostMinor"])


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


def _cents(value: Decimal, exponent: int = 2) -> int:
    return int(value.scaleb(exponent).quantize(Decimal(1), rounding="ROUND_HALF_EVEN"))


def test_minor_units_add_up_to_each_projects_rounded_total(allocation: pl.DataFrame) -> None:
    bundle = build_exports(allocation, MONTH)
    exact = {
        project: amount
        for project, amount in allocation.group_by("project").agg(pl.col("amount").sum()).rows()
    }
    for name in ("chargeback_daily.csv", "chargeback_monthly.csv"):
        # Read the way a spreadsheet tool would, inferring types: the minor units are integers.
        frame = pl.read_csv(bundle.files[name])
        assert frame.schema["x_EffectiveCostMinor"] == pl.Int64
        assert set(frame["x_MinorUnitExponent"]) == {2}
        minor = dict(frame.group_by("x_Project").agg(pl.col("x_EffectiveCostMinor").sum()).rows())
        assert minor == {project: _cents(amount) for project, amount in exact.items()}
        # Each row is its exact amount floored or ceiled to the cent, never further off.
        exact_rows = pl.read_csv(bundle.files[name], infer_schema=False)
        for text, units in zip(
            exact_rows["EffectiveCost"], exact_rows["x_EffectiveCostMinor"], strict=True
        ):
            assert abs(Decimal(text).scaleb(2) - int(units)) < 1


def test_largest_remainder_on_yen_credits_and_ties() -> None:
    # JPY has no minor unit (ISO 4217 exponent 0): three thirds of 100 yen.
    third = Decimal("33.333333333333333333")
    assert largest_remainder([third, third, third + Decimal("0.000000000000000001")], 0) == [
        33,
        33,
        34,
    ]
    # A credit: -0.005 and 0.015 add up to 0.01 -> one cent, on the larger remainder.
    assert largest_remainder([Decimal("-0.005"), Decimal("0.015")], 2) == [0, 1]
    # Equal remainders: the earlier row (file order) takes the unit; 1.2 cents round to 1.
    assert largest_remainder([Decimal("0.004"), Decimal("0.004"), Decimal("0.004")], 2) == [
        1,
        0,
        0,
    ]
    assert largest_remainder([], 2) == []


def test_yen_exports_whole_yen(allocation: pl.DataFrame) -> None:
    yen = allocation.with_columns(pl.lit("JPY").alias("currency"))
    bundle = build_exports(yen, MONTH)
    monthly = pl.read_csv(bundle.files["chargeback_monthly.csv"])
    assert set(monthly["x_MinorUnitExponent"]) == {0}
    total = sum(yen["amount"], Decimal(0))
    assert bundle.manifest["totals"]["JPY"]["MinorUnitExponent"] == 0
    per_project = yen.group_by("project").agg(pl.col("amount").sum()).rows()
    yen_total = int(monthly["x_EffectiveCostMinor"].sum())
    assert yen_total == sum(_cents(a, 0) for _, a in per_project)
    assert abs(yen_total - total) < len(per_project)


def test_the_monthly_file_leaves_out_rows_with_neither_money_nor_hours(
    allocation: pl.DataFrame,
) -> None:
    empty = allocation.head(3).with_columns(
        pl.lit(Decimal(0)).cast(allocation.schema["amount"]).alias("amount"),
        pl.lit(Decimal(0)).cast(allocation.schema["billed_amount"]).alias("billed_amount"),
        pl.lit(0.0).alias("gpu_hours_used"),
        pl.lit(0.0).alias("gpu_hours_idle"),
        pl.lit(None, pl.Float64).alias("fte"),
        pl.lit("nothing-here").alias("project"),
        pl.lit("zero-split").alias("AllocatedMethodId"),
    )
    bundle = build_exports(pl.concat([allocation, empty]), MONTH)
    monthly = pl.read_csv(bundle.files["chargeback_monthly.csv"], infer_schema=False)
    daily = pl.read_csv(bundle.files["chargeback_daily.csv"], infer_schema=False)
    assert "nothing-here" not in set(monthly["x_Project"])
    assert "nothing-here" in set(daily["x_Project"]), "the daily file keeps every split"
    kept = monthly.filter(
        (pl.col("EffectiveCost").cast(pl.Decimal(38, 18)) == 0)
        & (pl.col("BilledCost").cast(pl.Decimal(38, 18)).fill_null(0) == 0)
    )
    assert all(
        any(
            float(row[name] or 0) != 0 for name in ("x_GpuHoursUsed", "x_GpuHoursIdle", "x_FteDays")
        )
        for row in kept.iter_rows(named=True)
    ), "a zero-cost monthly row still carries hours or FTE-days"
