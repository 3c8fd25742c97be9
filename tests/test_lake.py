"""The lake: per-source day replacement, canonical bytes, contract checks, local and S3."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from gpucost.core.contracts import BILLING, GPU_USAGE, MONEY
from gpucost.core.errors import ContractError, LakeError
from gpucost.core.lake import Lake
from gpucost.core.storage import LocalStorage, S3Storage, open_storage
from gpucost.core.window import Window

INGESTED = datetime(2026, 11, 26, tzinfo=UTC)


def billing_rows(source: str, days: list[date], cost: str = "1.25") -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "ChargePeriodStart": [datetime(d.year, d.month, d.day, 5, tzinfo=UTC) for d in days],
            "ChargePeriodEnd": [datetime(d.year, d.month, d.day, 6, tzinfo=UTC) for d in days],
            "BilledCost": [Decimal(cost)] * len(days),
            "BillingCurrency": ["USD"] * len(days),
            "x_Source": [source] * len(days),
            "x_IngestedAt": [INGESTED] * len(days),
        },
        schema_overrides={"BilledCost": MONEY},
    )
    return BILLING.conform(frame, source)


SEPT = Window(date(2024, 9, 1), date(2024, 9, 4))
DAYS = [date(2024, 9, 1), date(2024, 9, 2), date(2024, 9, 3)]


def test_write_and_read_back(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    writes = lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS))
    assert [w.action for w in writes] == ["written"] * 3
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")) == [
        f"billing/day=2024-09-0{n}/part-a.parquet" for n in (1, 2, 3)
    ]
    back = lake.read(BILLING)
    assert back.height == 3
    assert back["BilledCost"].sum() == Decimal("3.75")


def test_replacing_one_source_day_leaves_other_sources(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS))
    lake.write_window(BILLING, "b", SEPT, billing_rows("b", DAYS, "10"))
    one_day = Window.days_inclusive(date(2024, 9, 2), date(2024, 9, 2))
    lake.write_window(BILLING, "a", one_day, billing_rows("a", [date(2024, 9, 2)], "2"))
    totals = dict(
        lake.read(BILLING).group_by("x_Source").agg(pl.col("BilledCost").sum()).iter_rows()
    )
    assert totals == {"a": Decimal("1.25") * 2 + Decimal("2"), "b": Decimal("30")}


def test_a_day_without_rows_loses_its_old_part(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS))
    writes = lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS[:1]))
    assert [w.action for w in writes] == ["unchanged", "deleted", "deleted"]
    assert lake.read(BILLING).height == 1


def test_unchanged_rewrite_keeps_bytes(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    later = billing_rows("a", DAYS).with_columns(
        pl.lit(datetime(2027, 1, 1, tzinfo=UTC))
        .cast(pl.Datetime("us", "UTC"))
        .alias("x_IngestedAt")
    )
    writes = lake.write_window(BILLING, "a", SEPT, later)
    assert {w.action for w in writes} == {"unchanged"}
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == before


def test_row_order_does_not_change_bytes(tmp_path: Path) -> None:
    rows = pl.concat([billing_rows("a", DAYS, "1"), billing_rows("a", DAYS, "2")])
    first, second = Lake(LocalStorage(tmp_path / "1")), Lake(LocalStorage(tmp_path / "2"))
    first.write_window(BILLING, "a", SEPT, rows)
    second.write_window(BILLING, "a", SEPT, rows.reverse())
    for part in (tmp_path / "1").rglob("*.parquet"):
        twin = tmp_path / "2" / part.relative_to(tmp_path / "1")
        assert part.read_bytes() == twin.read_bytes()


def test_rows_outside_window_and_foreign_sources_are_refused(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    with pytest.raises(LakeError, match=r"1 rows fall outside 2024-09-01\.\.2024-09-03"):
        lake.write_window(BILLING, "a", SEPT, billing_rows("a", [date(2024, 9, 9)]))
    with pytest.raises(ContractError, match="name another source"):
        lake.write_window(BILLING, "a", SEPT, billing_rows("b", DAYS))


def test_reads_validate_the_contract(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    bad = tmp_path / "billing" / "day=2024-09-01" / "part-x.parquet"
    bad.parent.mkdir(parents=True)
    pl.DataFrame({"BilledCost": [1.5]}).write_parquet(bad)
    with pytest.raises(ContractError, match="table 'billing' from source 'lake:billing'"):
        lake.scan(BILLING)


def test_empty_table_scans_as_empty_contract(tmp_path: Path) -> None:
    frame = Lake(LocalStorage(tmp_path)).read(GPU_USAGE)
    assert frame.height == 0
    assert frame.schema == GPU_USAGE.schema


def test_window_selects_files(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS))
    second = Window.days_inclusive(date(2024, 9, 2), date(2024, 9, 2))
    assert lake.files("billing", second) == ["billing/day=2024-09-02/part-a.parquet"]
    assert lake.read(BILLING, second).height == 1
    assert lake.files("billing", sources=["zzz"]) == []


def test_s3_lake_against_moto(
    moto_endpoint: str, s3_bucket: str, boto3_session_factory: Callable[[], Any]
) -> None:
    options = {
        "aws_endpoint_url": moto_endpoint,
        "aws_allow_http": "true",
        "aws_region": "us-east-1",
    }
    client = boto3_session_factory().client("s3", endpoint_url=moto_endpoint)
    storage = open_storage(f"s3://{s3_bucket}/lake", storage_options=options, s3_client=client)
    assert isinstance(storage, S3Storage)
    lake = Lake(storage, options)
    lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS))
    lake.write_window(BILLING, "b", SEPT, billing_rows("b", DAYS, "10"))
    again = lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS))
    assert {w.action for w in again} == {"unchanged"}
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert "lake/billing/day=2024-09-01/part-a.parquet" in keys
    # Read back through Polars' own object-store reader, not boto3.
    back = lake.read(BILLING)
    assert back.height == 6
    assert back["BilledCost"].sum() == Decimal("33.75")
    lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS[:1]))
    assert lake.read(BILLING, sources=["a"]).height == 1
    lake.write_json("_runs/r1.json", {"status": "complete"})
    assert lake.read_json("_runs/r1.json") == {"status": "complete"}


def test_unsupported_scheme_is_named() -> None:
    with pytest.raises(LakeError, match="the gs:// scheme is not supported"):
        open_storage("gs://bucket/x", storage_options={})


def test_a_crash_before_the_rename_never_leaves_a_trusted_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checksum sidecar must never describe rows that did not land."""
    lake = Lake(LocalStorage(tmp_path))
    lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS, "1"))
    original = Path.replace

    def failing_replace(self: Path, target: Path | str) -> Path:
        if str(target).endswith(".parquet"):
            raise OSError("disk gone")
        return original(self, target)

    monkeypatch.setattr(Path, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS, "2"))
    monkeypatch.setattr(Path, "replace", original)
    writes = lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS, "2"))
    assert writes[0].action == "written"
    assert set(lake.read(BILLING)["BilledCost"]) == {Decimal("2")}


def test_stale_temporaries_of_other_sources_are_left_alone(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    day = tmp_path / "billing" / "day=2024-09-01"
    day.mkdir(parents=True)
    mine = day / ".part-a.parquet.dead.tmp"
    theirs = day / ".part-b.parquet.inprogress.tmp"
    mine.write_bytes(b"x")
    theirs.write_bytes(b"y")
    lake.write_window(BILLING, "a", SEPT, billing_rows("a", DAYS))
    assert not mine.exists() and theirs.exists()
