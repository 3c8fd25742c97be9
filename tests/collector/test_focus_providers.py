"""focus-files across providers: the Microsoft and Oracle rows of the FOCUS 1.0 sample, and
FOCUS 1.2 / 1.3 column sets built from those real rows.

Expected totals are computed here from the CSV text with Python's Decimal, independently of
the collector's Polars parsing.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from gpucost.collector.base import CollectorContext
from gpucost.collector.focus_files import FocusFiles
from gpucost.core.contracts import BILLING
from gpucost.core.window import Window
from tests.collector.builders import build_collector

SAMPLE = Path(__file__).parents[1] / "data" / "focus" / "focus_1.0_sample_1000.csv"
SEPTEMBER = Window(date(2024, 9, 1), date(2024, 10, 1))
INGESTED = datetime(2024, 10, 2, tzinfo=UTC)
MONEY_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
NULLS = ("", "NULL")

# Columns FOCUS 1.1 and 1.2 added to 1.0 (FOCUS specification, "Column" appendices per
# version): 1.1 capacity reservations, commitment quantities, SKU meters and price details;
# 1.2 pricing currency, invoice id and account types.
FOCUS_1_2_ADDED = {
    "CapacityReservationId": "",
    "CapacityReservationStatus": "",
    "CommitmentDiscountQuantity": "",
    "CommitmentDiscountUnit": "",
    "ServiceSubcategory": "Other (Compute)",
    "SkuMeter": "Compute Usage",
    "SkuPriceDetails": '{"CoreCount": 2}',
    "InvoiceId": "INV-2024-09-0001",
    "BillingAccountType": "Billing Account",
    "SubAccountType": "Subscription",
    "PricingCurrency": "USD",
}
# FOCUS 1.3: ServiceProviderName and HostProviderName replace the deprecated ProviderName and
# PublisherName; contract and allocation columns are new.
FOCUS_1_3_ADDED = {
    "ContractApplied": "",
    "AllocatedMethodId": "",
    "AllocatedMethodDetails": "",
    "AllocatedResourceId": "",
    "AllocatedResourceName": "",
    "AllocatedTags": "",
}


def sample_rows(providers: tuple[str, ...]) -> list[dict[str, str]]:
    """The sample's rows of ``providers``, as text."""
    with SAMPLE.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["ProviderName"] in providers]


def expected_totals(
    rows: list[dict[str, str]], provider_column: str = "ProviderName"
) -> dict[tuple[str, str], Decimal]:
    """(provider, money column) -> exact sum of the non-null values."""
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        for column in MONEY_COLUMNS:
            if row.get(column, "") not in NULLS:
                totals[(row[provider_column], column)] += Decimal(row[column])
    return dict(totals)


def landed_totals(billing: pl.DataFrame) -> dict[tuple[str, str], Decimal]:
    """The same sums over the billing rows that landed."""
    totals: dict[tuple[str, str], Decimal] = {}
    for (provider,), group in billing.group_by("ProviderName"):
        for column in MONEY_COLUMNS:
            values = group[column].drop_nulls()
            if values.len():
                total = values.sum()
                assert isinstance(total, Decimal)
                totals[(str(provider), column)] = total
    return totals


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    """Rows as a CSV file, every value quoted the way the sample quotes its text."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), quoting=csv.QUOTE_MINIMAL)
        writer.writeheader()
        writer.writerows(rows)


def collect(path: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, object]]:
    """Run focus-files over one file for September 2024."""
    source = build_collector(
        FocusFiles, CollectorContext(clock=lambda: INGESTED), name="finance-focus", path=str(path)
    )
    collected = source.collect(SEPTEMBER)
    billing = collected.frames["billing"]
    BILLING.validate(billing, "finance-focus")
    return billing, collected.rejects, collected.notes


def test_microsoft_and_oracle_rows_land_with_exact_totals() -> None:
    billing, rejects, notes = collect(SAMPLE)
    assert rejects.is_empty()
    assert notes["rows_outside_window"] == 0
    rows = sample_rows(("Microsoft", "Oracle"))
    counts = billing.group_by("ProviderName").len().sort("ProviderName").rows()
    assert counts == [("AWS", 942), ("Microsoft", 51), ("Oracle", 7)]
    expected = expected_totals(rows)
    landed = {key: value for key, value in landed_totals(billing).items() if key[0] != "AWS"}
    assert landed == expected
    # Spelled out, so a change in the sample or the parser shows as numbers:
    assert expected == {
        ("Microsoft", "BilledCost"): Decimal("1.97651418586"),
        ("Microsoft", "EffectiveCost"): Decimal("1.97651418586"),
        ("Microsoft", "ListCost"): Decimal("1.97651418586"),
        ("Microsoft", "ContractedCost"): Decimal("1.97626039326"),
        ("Oracle", "BilledCost"): Decimal("0.53707392473"),
        ("Oracle", "EffectiveCost"): Decimal("0"),  # 0 on every Oracle row of the sample
        ("Oracle", "ListCost"): Decimal("0.26507392473"),
        # no ("Oracle", "ContractedCost"): Oracle writes NULL there
    }


def test_oracle_spelling_variants_are_canonical() -> None:
    billing, _, _ = collect(SAMPLE)
    oracle = billing.filter(ProviderName="Oracle")
    # The sample writes "Usage-based"; FOCUS spells it "Usage-Based". Empty text is null.
    assert oracle["ChargeFrequency"].unique().to_list() == ["Usage-Based"]
    assert oracle["ChargeCategory"].unique().sort().to_list() == ["Adjustment", "Usage"]
    assert oracle["BillingAccountName"].null_count() == oracle.height
    microsoft = billing.filter(
        ProviderName="Microsoft",
        ChargeDescription=(
            "Tiered Block Blob - LRS - List and Create Container Operations - US East"
        ),
    )
    # Microsoft's Tags repeat "org" as " org" with a stray space; keys are trimmed and sorted.
    assert microsoft["Tags"][0] == (
        '{"CostAllocationTest":"Sameer","CostCenter":"1234","Project":"Foo","env":"prod",'
        '"org":"trey"}'
    )


def test_focus_1_2_columns_with_deprecated_provider_name(tmp_path: Path) -> None:
    rows = [{**row, **FOCUS_1_2_ADDED} for row in sample_rows(("Microsoft", "Oracle"))]
    path = tmp_path / "focus_1.2.csv"
    write_csv(path, rows)
    billing, rejects, notes = collect(path)
    assert rejects.is_empty()
    assert landed_totals(billing) == expected_totals(rows)
    assert billing["ServiceProviderName"].to_list() == billing["ProviderName"].to_list()
    assert billing["PublisherName"].unique().sort().to_list() == ["Microsoft", "Oracle"]
    assert billing["InvoiceId"].unique().to_list() == ["INV-2024-09-0001"]
    assert billing["SkuMeter"].unique().to_list() == ["Compute Usage"]
    assert billing["CapacityReservationId"].null_count() == billing.height
    assert notes["columns_not_kept"] == ["Id"]  # the sample's row number, not FOCUS


def focus_1_3_rows() -> list[dict[str, str]]:
    """Real Microsoft and Oracle rows in the FOCUS 1.3 column set."""
    rows = []
    for row in sample_rows(("Microsoft", "Oracle")):
        provider = row.pop("ProviderName")
        row.pop("PublisherName")
        rows.append(
            {
                **row,
                **FOCUS_1_2_ADDED,
                "ServiceProviderName": provider,
                "HostProviderName": provider,
                **FOCUS_1_3_ADDED,
            }
        )
    return rows


def test_focus_1_3_service_and_host_provider(tmp_path: Path) -> None:
    rows = focus_1_3_rows()
    path = tmp_path / "focus_1.3.csv"
    write_csv(path, rows)
    billing, rejects, notes = collect(path)
    assert rejects.is_empty()
    assert billing.height == 58
    # ProviderName is filled from ServiceProviderName so older readers keep working.
    assert billing["ProviderName"].to_list() == billing["ServiceProviderName"].to_list()
    assert billing["HostProviderName"].to_list() == billing["ServiceProviderName"].to_list()
    assert billing["PublisherName"].null_count() == billing.height
    assert landed_totals(billing) == expected_totals(rows, "ServiceProviderName")
    # The 1.3 allocation and contract columns are kept (empty here: no provider split).
    assert notes["columns_not_kept"] == ["Id"]
    for name in FOCUS_1_3_ADDED:
        assert billing[name].null_count() == billing.height


def test_focus_1_3_parquet_with_decimal_money(tmp_path: Path) -> None:
    """Exports also come as Parquet with typed decimals; they must land exactly too."""
    rows = focus_1_3_rows()
    frame = pl.read_csv(io.StringIO(_csv_text(rows)), infer_schema=False).with_columns(
        pl.col(column).replace("NULL", None).str.to_decimal(scale=11)
        for column in ("BilledCost", "EffectiveCost", "ListCost")
    )
    path = tmp_path / "focus_1.3.parquet"
    frame.write_parquet(path)
    billing, rejects, _ = collect(path)
    assert rejects.is_empty()
    expected = {
        key: value
        for key, value in expected_totals(rows, "ServiceProviderName").items()
        if key[1] != "ContractedCost"
    }
    landed = {
        key: value for key, value in landed_totals(billing).items() if key[1] != "ContractedCost"
    }
    assert landed == expected


@pytest.mark.parametrize("missing", ["ProviderName", "ServiceProviderName"])
def test_either_provider_column_is_enough(tmp_path: Path, missing: str) -> None:
    rows = focus_1_3_rows()
    if missing == "ServiceProviderName":
        rows = [
            {
                **{
                    k: v
                    for k, v in row.items()
                    if k not in ("ServiceProviderName", "HostProviderName")
                },
                "ProviderName": row["ServiceProviderName"],
            }
            for row in rows
        ]
    path = tmp_path / "focus.csv"
    write_csv(path, rows)
    billing, rejects, _ = collect(path)
    assert rejects.is_empty() and billing.height == 58
    assert billing["ProviderName"].null_count() == 0


def _csv_text(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def split_rows() -> list[dict[str, str]]:
    """FOCUS 1.3 rows in which the provider split every fifth real charge between two
    workloads (FOCUS 1.3 "Provider-Calculated Split Cost Allocation"): each such charge becomes
    two rows whose costs add up to it exactly, naming the workload in AllocatedTags and
    AllocatedResourceId, one with a number and a boolean tag value."""
    rows = []
    for index, row in enumerate(focus_1_3_rows()):
        if index % 5 or row["BilledCost"] in NULLS:
            rows.append(row)
            continue
        shares = []
        for part, (workload, extra) in enumerate(
            [("ingestion", ', "FleetSize": 500, "spot": true'), ("serving", "")]
        ):
            share = dict(row)
            for column in MONEY_COLUMNS:
                if row[column] not in NULLS:
                    whole = Decimal(row[column])
                    half = whole / 2
                    share[column] = str(half if part == 0 else whole - half)
            share.update(
                AllocatedMethodId="Proportional-CPU",
                AllocatedMethodDetails='{"Elements":[{"AllocatedRatio":0.5}]}',
                AllocatedResourceId=f"pod/{workload}-{index}",
                AllocatedResourceName=f"{workload}-{index}",
                AllocatedTags=f'{{"workload": "{workload}"{extra}}}',
            )
            shares.append(share)
        rows.extend(shares)
    return rows


def test_focus_1_3_provider_split_rows_keep_their_allocation_columns(tmp_path: Path) -> None:
    rows = split_rows()
    path = tmp_path / "focus_1.3_split.csv"
    write_csv(path, rows)
    billing, rejects, notes = collect(path)
    assert rejects.is_empty()
    assert notes["columns_not_kept"] == ["Id"]
    split = billing.filter(pl.col("AllocatedTags").is_not_null())
    assert (split.height, billing.height) == (24, 70)  # about a fifth of the file
    # Numbers and booleans keep their JSON type; keys sorted, compact (canonical JSON).
    assert sorted(split["AllocatedTags"].unique().to_list()) == [
        '{"FleetSize":500,"spot":true,"workload":"ingestion"}',
        '{"workload":"serving"}',
    ]
    assert split["AllocatedMethodId"].unique().to_list() == ["Proportional-CPU"]
    assert split["AllocatedResourceId"].str.starts_with("pod/").all()
    assert landed_totals(billing) == expected_totals(rows, "ServiceProviderName")


def test_tag_values_keep_their_json_types(tmp_path: Path) -> None:
    """FOCUS Key-Value Format allows number, true, false and null values; a value that is an
    object or array is not a tag value and the row is rejected, naming it."""
    rows = focus_1_3_rows()[:3]
    rows[0]["Tags"] = '{"FleetSize":500, "ratio": 1.10, "spot": false, "owner": null}'
    rows[1]["Tags"] = '{"nested": {"a": 1}}'
    rows[2]["AllocatedTags"] = "{not json"
    path = tmp_path / "focus_1.3_tags.csv"
    write_csv(path, rows)
    billing, rejects, _ = collect(path)
    assert billing["Tags"].to_list() == ['{"FleetSize":500,"owner":null,"ratio":1.10,"spot":false}']
    assert rejects.select("row", "field").rows() == [(2, "Tags"), (3, "AllocatedTags")]
    assert rejects["reason"][0].startswith("tag values must be a string, number, true")
    assert rejects["reason"][1].startswith("tags are not valid JSON")
