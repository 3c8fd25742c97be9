"""focus-files on the real FOCUS 1.0 sample, on broken rows, and from S3 (moto server)."""

from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from gpucost.collector.base import CollectorContext
from gpucost.collector.focus_files import FocusFiles, read_focus_file
from gpucost.core.contracts import BILLING
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window
from tests.collector.builders import build_collector

DATA = Path(__file__).parent.parent / "data" / "focus"
SAMPLE = DATA / "focus_1.0_sample_1000.csv"
NOW = datetime(2026, 11, 26, tzinfo=UTC)
SEPTEMBER = Window(date(2024, 9, 1), date(2024, 10, 1))


def file_totals(path: Path) -> dict[str, Decimal]:
    """BilledCost per ProviderName, summed independently with Python's Decimal."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            totals[row["ProviderName"]] += Decimal(row["BilledCost"])
    return dict(totals)


def focus_files(path: str, context: CollectorContext | None = None) -> FocusFiles:
    """A focus-files source named ``src`` over ``path``, its clock pinned to NOW."""
    return build_collector(
        FocusFiles, context or CollectorContext(clock=lambda: NOW), name="src", path=path
    )


def read(text: str, name: str = "x.csv") -> tuple[pl.DataFrame, pl.DataFrame]:
    result = read_focus_file(name, text.encode(), "src", NOW)
    return result.frame, result.rejects


def test_real_sample_lands_every_row_with_exact_totals() -> None:
    frame, rejects = read(SAMPLE.read_text(), str(SAMPLE))
    assert rejects.height == 0
    assert frame.height == 1000
    BILLING.validate(frame, "src")
    totals = dict(frame.group_by("ProviderName").agg(pl.col("BilledCost").sum()).iter_rows())
    assert totals == file_totals(SAMPLE)
    assert set(totals) == {"AWS", "Microsoft", "Oracle"}


def test_real_sample_quirks_are_normalised() -> None:
    frame, _ = read(SAMPLE.read_text())
    # "Usage-based" (7 rows in the sample) is FOCUS's "Usage-Based".
    assert set(frame["ChargeFrequency"].unique()) == {"Usage-Based", "One-Time"}
    # The literal NULL is null, not the text "NULL".
    assert frame.filter(pl.col("ChargeClass") == "NULL").height == 0
    assert frame["ChargeClass"].null_count() == 1000
    # Credits are negative and kept.
    assert frame.filter(pl.col("ChargeCategory") == "Credit")["BilledCost"].max() < 0
    # Tags are canonical JSON: sorted, trimmed keys.
    tags = frame["Tags"].drop_nulls()
    assert all(t.startswith("{") and ': "' not in t for t in tags)


HEADER = (
    "BilledCost,EffectiveCost,BillingCurrency,ChargeCategory,ChargePeriodStart,ChargePeriodEnd,"
    "ProviderName,Tags"
)


def test_bad_rows_are_named_and_good_rows_land() -> None:
    text = "\n".join(
        [
            HEADER,
            "1.5,1.5,USD,Usage,2024-09-01T00:00:00Z,2024-09-01T01:00:00Z,AWS,"
            '"{"" project"": ""a""}"',
            "abc,1,USD,Usage,2024-09-01 00:00:00,2024-09-01 01:00:00,AWS,NULL",
            "2,2,USD,Usage,yesterday,2024-09-01 01:00:00,AWS,",
            '3,3,USD,Usage,2024-09-01 00:00:00,2024-09-01 01:00:00,AWS,"{broken"',
            "4,4,USD,Bogus,2024-09-01 00:00:00,2024-09-01 01:00:00,AWS,",
            ",5,USD,Usage,2024-09-01 00:00:00,2024-09-01 01:00:00,AWS,",
            "-0.25,-0.25,USD,credit,2024-09-01,2024-09-02,AWS,",
        ]
    )
    frame, rejects = read(text, "bills.csv")
    assert sorted(frame["BilledCost"].to_list()) == [Decimal("-0.25"), Decimal("1.5")]
    assert frame.filter(pl.col("BilledCost") > 0)["Tags"].to_list() == ['{"project":"a"}']
    assert frame.filter(pl.col("BilledCost") < 0)["ChargeCategory"].to_list() == ["Credit"]
    found = {(r["row"], r["field"]) for r in rejects.iter_rows(named=True)}
    assert found == {
        (2, "BilledCost"),
        (3, "ChargePeriodStart"),
        (4, "Tags"),
        (5, "ChargeCategory"),
        (6, "BilledCost"),
    }
    assert set(rejects["file"]) == {"bills.csv"}
    by_row = {r["row"]: r for r in rejects.iter_rows(named=True)}
    assert by_row[2]["reason"] == "not a number" and by_row[2]["raw"] == "abc"
    assert by_row[6]["reason"] == "missing value in a mandatory column"


def test_exactness_beyond_storage_precision_is_a_reject() -> None:
    text = "\n".join(
        [
            HEADER,
            "1.81E-8,1.81E-8,USD,Usage,2024-09-01 00:00:00,2024-09-01 01:00:00,AWS,",
            "0.1234567890123456789,0,USD,Usage,2024-09-01 00:00:00,2024-09-01 01:00:00,AWS,",
        ]
    )
    frame, rejects = read(text)
    assert frame["BilledCost"].to_list() == [Decimal("0.0000000181")]
    assert rejects["reason"].to_list() == ["more than 18 decimal places; cannot be stored exactly"]


def test_missing_mandatory_columns_are_named() -> None:
    with pytest.raises(
        CollectorError,
        match=r"x\.csv: mandatory FOCUS columns missing: BilledCost, ChargePeriodEnd",
    ):
        read("EffectiveCost,BillingCurrency,ChargeCategory,ChargePeriodStart,ProviderName\n")


def test_focus_1_3_provider_columns() -> None:
    text = (
        "BilledCost,EffectiveCost,BillingCurrency,ChargeCategory,ChargePeriodStart,"
        "ChargePeriodEnd,ServiceProviderName,HostProviderName\n"
        "1,1,USD,Usage,2024-09-01 00:00:00,2024-09-01 01:00:00,Acme GPU Cloud,AWS\n"
    )
    frame, rejects = read(text)
    assert rejects.height == 0
    assert frame.select("ProviderName", "ServiceProviderName", "HostProviderName").row(0) == (
        "Acme GPU Cloud",
        "Acme GPU Cloud",
        "AWS",
    )


def test_parquet_and_gzip_inputs(tmp_path: Path) -> None:
    sample = SAMPLE.read_bytes()
    gz = tmp_path / "sample.csv.gz"
    gz.write_bytes(gzip.compress(sample))
    parquet = tmp_path / "sample.parquet"
    frame, _ = read(sample.decode())
    frame.drop("x_Source", "x_IngestedAt").write_parquet(parquet)
    for path in (gz, parquet):
        collected = focus_files(str(path)).collect(SEPTEMBER)
        assert collected.rejects.height == 0
        assert collected.frames["billing"].height == 1000
        assert collected.frames["billing"]["BilledCost"].sum() == frame["BilledCost"].sum()


def test_rows_outside_window_are_counted() -> None:
    one_day = Window.days_inclusive(date(2024, 9, 2), date(2024, 9, 2))
    collected = focus_files(str(SAMPLE)).collect(one_day)
    kept = collected.frames["billing"].height
    assert 0 < kept < 1000
    assert collected.notes["rows_outside_window"] == 1000 - kept
    assert collected.notes["columns_not_kept"] == ["Id"]


def test_reads_from_s3_through_moto(
    moto_endpoint: str, s3_bucket: str, boto3_session_factory: Callable[[], Any]
) -> None:
    client = boto3_session_factory().client("s3", endpoint_url=moto_endpoint)
    client.put_object(Bucket=s3_bucket, Key="focus/2024-09/part-1.csv", Body=SAMPLE.read_bytes())
    client.put_object(Bucket=s3_bucket, Key="focus/2024-09/readme.txt", Body=b"not billing")
    context = CollectorContext(
        storage_options={"aws_endpoint_url": moto_endpoint},
        boto3_session_factory=boto3_session_factory,
        clock=lambda: NOW,
    )
    collected = focus_files(f"s3://{s3_bucket}/focus/*/*.csv", context).collect(SEPTEMBER)
    assert collected.notes["files"] == [f"s3://{s3_bucket}/focus/2024-09/part-1.csv"]
    assert collected.frames["billing"].height == 1000
    missing = focus_files(f"s3://{s3_bucket}/nothing/*.csv", context)
    with pytest.raises(CollectorError, match="matches no file"):
        missing.collect(SEPTEMBER)


def test_empty_file_is_a_clear_error() -> None:
    with pytest.raises(CollectorError, match="mandatory FOCUS columns missing"):
        read_focus_file("empty.csv", io.BytesIO(b"").getvalue(), "src", NOW)


@pytest.mark.parametrize(
    ("header", "named"),
    [
        ("BilledCost,BilledCost,", "BilledCost"),
        (" BilledCost,BilledCost,", "BilledCost"),
    ],
)
def test_repeated_columns_are_named(header: str, named: str) -> None:
    text = (
        header + "EffectiveCost,BillingCurrency,ChargeCategory,ChargePeriodStart,"
        "ChargePeriodEnd,ProviderName\n"
        "1,1,1,USD,Usage,2024-09-01 00:00:00,2024-09-01 01:00:00,AWS\n"
    )
    with pytest.raises(CollectorError, match=f"x.csv: columns appear more than once: {named}"):
        read(text)
