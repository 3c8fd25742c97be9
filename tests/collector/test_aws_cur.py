"""aws-cur on the real legacy CUR sample and FOCUS rows: local, from moto S3, restated, broken."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import textwrap
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gpucost.cli import app
from gpucost.collector.aws_cur import AwsCur
from gpucost.collector.aws_cur_mapping import read_cur_frame
from gpucost.config import validate_config
from gpucost.core.contracts import BILLING
from gpucost.core.errors import CollectorError
from gpucost.core.lake import Lake
from gpucost.core.storage import LocalStorage
from gpucost.core.window import Window
from gpucost.pipeline import Runtime, collect
from tests.collector.builders import build_collector

try:  # pytest --import-mode=importlib with pythonpath "." (pyproject)
    from tests.collector.test_aws_support import (
        FOCUS_GPU,
        LEGACY_CUR,
        aws_context,
        decimal_sum,
        session_factory,
    )
except ModuleNotFoundError:  # the default prepend mode puts this directory on sys.path
    from test_aws_support import (  # type: ignore[no-redef]
        FOCUS_GPU,
        LEGACY_CUR,
        aws_context,
        decimal_sum,
        session_factory,
    )

runner = CliRunner()
NOVEMBER = Window(date(2023, 11, 1), date(2023, 12, 1))
NOW = datetime(2026, 11, 26, tzinfo=UTC)
COST = "lineItem/UnblendedCost"


def legacy_rows() -> tuple[list[str], list[dict[str, str]]]:
    with LEGACY_CUR.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def csv_bytes(header: list[str], rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def total(rows: list[dict[str, str]]) -> Decimal:
    return sum((Decimal(row[COST]) for row in rows), Decimal(0))


def config_toml(tmp_path: Path, path: str, endpoint: str | None = None) -> Path:
    store = f's3_endpoint_url = "{endpoint}"\n' if endpoint else ""
    config = tmp_path / "gpucost.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [store]
            data_dir = "{tmp_path / "lake"}"
            out_dir = "{tmp_path / "out"}"
            """
        )
        + store
        + textwrap.dedent(
            f"""
            [[sources]]
            name = "aws-cur"
            kind = "aws-cur"
            path = "{path}"
            """
        )
    )
    return config


def collect_november(
    config: Path, since: str = "2023-11-01", until: str = "2023-11-30"
) -> pl.DataFrame:
    result = runner.invoke(
        app, ["collect", "--config", str(config), "--since", since, "--until", until]
    )
    assert result.exit_code == 0, result.output
    return Lake(LocalStorage(config.parent / "lake")).read(BILLING)


def test_collecting_one_day_replaces_the_whole_billing_period(tmp_path: Path) -> None:
    """A restatement can touch any day of its period, so one night replaces all of it."""
    config = config_toml(tmp_path, str(LEGACY_CUR))
    billing = collect_november(config, since="2023-11-15", until="2023-11-15")
    assert billing.height == 1281
    assert billing["BilledCost"].sum() == decimal_sum(LEGACY_CUR, COST)
    manifest = next((tmp_path / "lake" / "_runs").glob("*.json")).read_text()
    assert '"billing_replaced_window": "2023-11-01..2023-11-30"' in manifest


def test_cli_lands_every_row_of_the_legacy_sample_exactly_and_only_once(tmp_path: Path) -> None:
    config = config_toml(tmp_path, str(LEGACY_CUR))
    expected = decimal_sum(LEGACY_CUR, COST)

    for _ in range(2):  # the same run twice: replaced, never duplicated
        billing = collect_november(config)
        assert billing.height == 1281
        assert billing["BilledCost"].sum() == expected == Decimal("1.6823086974")
        counts = dict(billing.group_by("ChargeCategory").len().iter_rows())
        assert counts == {"Usage": 1269, "Tax": 12}
    assert set(billing["x_Source"]) == {"aws-cur"}
    assert billing["x_UsageType"].null_count() == 12  # Tax lines carry no usage type
    assert billing["BillingCurrency"].unique().to_list() == ["USD"]


def s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def deliver_legacy(
    client: Any, bucket: str, assembly: str, data: bytes, *, report: str = "gpucost"
) -> str:
    """Deliver a legacy CUR assembly the way AWS does when it keeps report versions:
    data under the assembly folder, the manifest there and at the period's top level."""
    period = f"cur/{report}/20231101-20231201"
    key = f"{period}/{assembly}/{report}-1.csv.gz"
    client.put_object(Bucket=bucket, Key=key, Body=gzip.compress(data))
    manifest = {
        "assemblyId": assembly,
        "account": "123412340534",
        "bucket": bucket,
        "reportName": report,
        "compression": "GZIP",
        "contentType": "text/csv",
        "billingPeriod": {"start": "20231101T000000.000Z", "end": "20231201T000000.000Z"},
        "reportKeys": [key],
    }
    body = json.dumps(manifest).encode()
    client.put_object(Bucket=bucket, Key=f"{period}/{assembly}/{report}-Manifest.json", Body=body)
    client.put_object(Bucket=bucket, Key=f"{period}/{report}-Manifest.json", Body=body)
    return key


def test_cli_reads_the_report_from_s3_and_a_restated_month_replaces_it(
    moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    client = s3(moto_endpoint)
    header, rows = legacy_rows()
    deliver_legacy(client, s3_bucket, "assembly-1", LEGACY_CUR.read_bytes())
    config = config_toml(tmp_path, f"s3://{s3_bucket}/cur/gpucost", moto_endpoint)

    for _ in range(2):
        billing = collect_november(config)
        assert billing.height == 1281
        assert billing["BilledCost"].sum() == decimal_sum(LEGACY_CUR, COST)

    # AWS restates the month: a new assembly without November 14th's lines and one cost changed.
    restated = [dict(r) for r in rows if not r["lineItem/UsageStartDate"].startswith("2023-11-14")]
    restated[100][COST] = "1.81E-8"
    deliver_legacy(client, s3_bucket, "assembly-2", csv_bytes(header, restated))

    for earlier in (tmp_path / "lake" / "_runs").glob("*.json"):
        earlier.unlink()  # run ids sort by second only; keep just this run's manifest
    billing = collect_november(config)
    assert billing.height == len(restated) == 1281 - 18
    assert billing["BilledCost"].sum() == total(restated)
    assert date(2023, 11, 14) not in set(billing["ChargePeriodStart"].dt.date())
    assert not (tmp_path / "lake" / "billing" / "day=2023-11-14" / "part-aws-cur.parquet").exists()
    (run,) = (tmp_path / "lake" / "_runs").glob("*.json")
    manifest = json.loads(run.read_text())
    (files,) = [source["notes"]["files"] for source in manifest["sources"]]
    assert list(files) == [
        f"s3://{s3_bucket}/cur/gpucost/20231101-20231201/assembly-2/gpucost-1.csv.gz"
    ]


def athena_name(column: str) -> str:
    """How Athena and CUR 2.0 spell a legacy CUR column (independent of the collector)."""
    category, name = column.split("/", 1)
    snake = lambda text: re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text).lower()  # noqa: E731
    return f"{snake(category)}_{snake(name)}"


def cur2_parquet_from_sample() -> tuple[bytes, pl.DataFrame]:
    """The legacy sample rebuilt as CUR 2.0 Parquet: snake_case columns, doubles for money,
    timestamps, ``resource_tags`` and ``product`` maps, split-cost columns (a test construction)."""
    raw = pl.read_csv(LEGACY_CUR, infer_schema=False)
    frame = raw.rename({c: athena_name(c) for c in raw.columns}).drop("product_product_name")
    money = [
        "line_item_unblended_cost",
        "line_item_usage_amount",
        "pricing_public_on_demand_cost",
        "pricing_public_on_demand_rate",
    ]
    times = [
        "line_item_usage_start_date",
        "line_item_usage_end_date",
        "bill_billing_period_start_date",
        "bill_billing_period_end_date",
    ]
    frame = frame.with_columns(
        *(pl.col(c).cast(pl.Float64) for c in money),
        *(
            pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC", time_unit="ms")
            for c in times
        ),
        pl.lit(None, pl.Float64).alias("split_line_item_split_cost"),
        pl.lit(None, pl.String).alias("split_line_item_parent_resource_id"),
    )
    glue = (raw["lineItem/ProductCode"] == "AWSGlue").to_list()
    table = frame.to_arrow()
    tags = pa.array(
        [[("user_project", "llm"), ("user_team", "")] if g else [] for g in glue],
        type=pa.map_(pa.string(), pa.string()),
    )
    product = pa.array(
        [
            [("product_name", name)] + ([("instance_type", "p5.48xlarge")] if g else [])
            for name, g in zip(raw["product/ProductName"].to_list(), glue, strict=True)
        ],
        type=pa.map_(pa.string(), pa.string()),
    )
    table = table.append_column("resource_tags", tags).append_column("product", product)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue(), raw


def deliver_export(
    client: Any, bucket: str, export: str, period: str, key: str, data: bytes
) -> None:
    """A Data Exports delivery: data files and ``metadata/BILLING_PERIOD=.../*-Manifest.json``."""
    data_key = f"exports/{export}/data/BILLING_PERIOD={period}/{key}"
    client.put_object(Bucket=bucket, Key=data_key, Body=data)
    year, month = (int(part) for part in period.split("-"))
    end = f"{year + month // 12}-{month % 12 + 1:02d}"
    manifest = {
        "executionId": "00000000-0000-0000-0000-000000000001",
        "billingPeriod": {"start": f"{period}-01T00:00:00.000Z", "end": f"{end}-01T00:00:00.000Z"},
        "dataFiles": [f"s3://{bucket}/{data_key}"],
    }
    client.put_object(
        Bucket=bucket,
        Key=f"exports/{export}/metadata/BILLING_PERIOD={period}/{export}-Manifest.json",
        Body=json.dumps(manifest).encode(),
    )


def test_cur2_parquet_export_returns_whole_billing_periods_exactly(
    moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    data, raw = cur2_parquet_from_sample()
    deliver_export(
        s3(moto_endpoint),
        s3_bucket,
        "gpucost-cur2",
        "2023-11",
        "gpucost-cur2-00001.snappy.parquet",
        data,
    )
    source = AwsCur(
        AwsCur.Settings.model_validate(
            {"name": "cur2", "kind": "aws-cur", "path": f"s3://{s3_bucket}/exports/gpucost-cur2"}
        ),
        aws_context(moto_endpoint, NOW),
    )
    narrow = Window(date(2023, 11, 4), date(2023, 11, 7))

    collected = source.collect(narrow)

    billing = collected.frames["billing"]
    assert billing.height == 1281  # the whole period, not only the three days asked for
    assert collected.notes["replace_window"] == {
        "start": "2023-11-01",
        "end_exclusive": "2023-12-01",
    }
    assert billing["BilledCost"].sum() == decimal_sum(LEGACY_CUR, COST)  # exact through doubles
    glue = billing.filter(pl.col("SubAccountId").is_not_null() & (pl.col("Tags").is_not_null()))
    assert glue.height == (raw["lineItem/ProductCode"] == "AWSGlue").sum() > 0
    assert set(glue["Tags"]) == {'{"project":"llm"}'}  # user_ prefix dropped, empty tag skipped
    assert set(glue["x_InstanceType"]) == {"p5.48xlarge"}  # lifted from the product map
    assert set(glue["ServiceName"]) == {"AWS Glue"}
    notes = next(iter(collected.notes["files"].values()))
    assert notes["format"] == "cur2"
    assert notes["split_cost_allocation_columns"] == [
        "split_line_item_parent_resource_id",
        "split_line_item_split_cost",
    ]

    # With the proposed Collected.windows, the shell replaces the widened window like this.
    lake = Lake(LocalStorage(tmp_path))
    widened = Window(date(2023, 11, 1), date(2023, 12, 1))
    lake.write_window(BILLING, "cur2", widened, BILLING.conform(billing, "cur2"))
    assert lake.read(BILLING)["BilledCost"].sum() == decimal_sum(LEGACY_CUR, COST)


def test_focus_export_gpu_rows_from_s3_keep_their_totals(
    moto_endpoint: str, s3_bucket: str
) -> None:
    deliver_export(
        s3(moto_endpoint),
        s3_bucket,
        "gpucost-focus",
        "2024-09",
        "gpucost-focus-00001.csv.gz",
        gzip.compress(FOCUS_GPU.read_bytes()),
    )
    source = AwsCur(
        AwsCur.Settings.model_validate(
            {"name": "focus", "kind": "aws-cur", "path": f"s3://{s3_bucket}/exports/gpucost-focus"}
        ),
        aws_context(moto_endpoint, NOW),
    )

    collected = source.collect(Window(date(2024, 9, 1), date(2024, 10, 1)))

    billing = collected.frames["billing"]
    assert billing.height == 10
    assert billing["BilledCost"].sum() == decimal_sum(FOCUS_GPU, "BilledCost")
    assert set(billing["ResourceId"].str.slice(0, 2)) == {"i-"}
    assert next(iter(collected.notes["files"].values()))["format"] == "focus"
    assert collected.notes["billing_periods"] == ["2024-09-01..2024-10-01"]


def test_a_file_the_manifest_lists_but_s3_lacks_is_named(
    moto_endpoint: str, s3_bucket: str
) -> None:
    client = s3(moto_endpoint)
    key = deliver_legacy(client, s3_bucket, "assembly-1", LEGACY_CUR.read_bytes())
    client.delete_object(Bucket=s3_bucket, Key=key)
    source = AwsCur(
        AwsCur.Settings.model_validate(
            {"name": "cur", "kind": "aws-cur", "path": f"s3://{s3_bucket}/cur/gpucost"}
        ),
        aws_context(moto_endpoint, NOW),
    )
    with pytest.raises(CollectorError) as caught:
        source.collect(NOVEMBER)
    message = str(caught.value)
    assert f"s3://{s3_bucket}/{key}" in message
    assert "does not exist" in message
    assert "gpucost-Manifest.json" in message


def test_a_prefix_without_manifests_is_explained(moto_endpoint: str, s3_bucket: str) -> None:
    s3(moto_endpoint).put_object(Bucket=s3_bucket, Key="cur/x/part-1.csv", Body=b"a\n1\n")
    source = AwsCur(
        AwsCur.Settings.model_validate(
            {"name": "cur", "kind": "aws-cur", "path": f"s3://{s3_bucket}/cur"}
        ),
        aws_context(moto_endpoint, NOW),
    )
    with pytest.raises(CollectorError, match=r"no \*-Manifest.json below it \(1 data files"):
        source.collect(NOVEMBER)


@pytest.mark.parametrize("column", ["lineItem/UnblendedCost", "lineItem/LineItemType"])
def test_a_missing_required_column_is_named_with_the_file(tmp_path: Path, column: str) -> None:
    header, rows = legacy_rows()
    broken = tmp_path / "cur-without-column.csv"
    broken.write_bytes(
        csv_bytes(
            [h for h in header if h != column],
            [{k: v for k, v in r.items() if k != column} for r in rows],
        )
    )
    with pytest.raises(CollectorError) as caught:
        build_collector(AwsCur, name="cur", path=str(broken)).collect(NOVEMBER)
    assert f"{broken}: required CUR column(s) missing: {column}" in str(caught.value)


def test_bad_rows_are_quarantined_and_good_rows_land(tmp_path: Path) -> None:
    header, rows = legacy_rows()
    rows[4][COST] = "12,5"
    rows[8]["lineItem/LineItemType"] = "Mystery"
    rows[19]["lineItem/UsageStartDate"] = "yesterday"
    path = tmp_path / "cur.csv.gz"
    path.write_bytes(gzip.compress(csv_bytes(header, rows)))
    config = validate_config(
        {
            "store": {"data_dir": str(tmp_path / "lake"), "out_dir": str(tmp_path / "out")},
            "sources": [{"name": "aws-cur", "kind": "aws-cur", "path": str(path)}],
        }
    )
    manifest = collect(Runtime.from_config(config, boto3_session_factory=session_factory), NOVEMBER)

    (run,) = manifest.sources
    assert run.status == "ok"
    assert run.rows == {"billing": 1278}
    assert run.rejected_rows == 3
    quarantine = pl.read_csv(run.quarantine or "")
    assert quarantine.select("row", "field", "raw").rows() == [
        (5, "lineItem/UnblendedCost", "12,5"),
        (9, "lineItem/LineItemType", "Mystery"),
        (20, "lineItem/UsageStartDate", "yesterday"),
    ]
    good = [r for i, r in enumerate(rows) if i not in (4, 8, 19)]
    assert Lake(LocalStorage(tmp_path / "lake")).read(BILLING)["BilledCost"].sum() == total(good)


def test_effective_cost_follows_reservations_and_savings_plans() -> None:
    sp = "arn:aws:savingsplans::123456789012:savingsplan/abc"
    ri = "arn:aws:ec2:us-east-1:123456789012:reserved-instances/def"
    # (CUR columns of the line, expected EffectiveCost, expected PricingCategory)
    cases: list[tuple[dict[str, str], str, str | None]] = [
        ({"type": "Usage", "cost": "3.0", "term": "OnDemand"}, "3.0", "Standard"),
        (
            {"type": "SavingsPlanCoveredUsage", "cost": "98.32", "sp_cost": "68.83", "sp": sp},
            "68.83",
            "Committed",
        ),
        ({"type": "SavingsPlanNegation", "cost": "-98.32", "sp": sp}, "0", None),
        (
            {
                "type": "SavingsPlanRecurringFee",
                "cost": "100",
                "sp_total": "100",
                "sp_used": "68.83",
                "sp": sp,
            },
            "31.17",
            None,
        ),
        (
            {
                "type": "DiscountedUsage",
                "cost": "0",
                "ri_cost": "1.2",
                "ri": ri,
                "term": "Reserved",
            },
            "1.2",
            "Committed",
        ),
        (
            {
                "type": "RIFee",
                "cost": "50",
                "ri_upfront": "2.5",
                "ri_recurring": "1.25",
                "ri": ri,
                "term": "Reserved",
            },
            "3.75",
            "Committed",
        ),
        ({"type": "Fee", "cost": "1000", "ri": ri}, "0", None),
        ({"type": "Fee", "cost": "20"}, "20", None),
    ]
    columns = {
        "type": "line_item_line_item_type",
        "cost": "line_item_unblended_cost",
        "sp_cost": "savings_plan_savings_plan_effective_cost",
        "sp_total": "savings_plan_total_commitment_to_date",
        "sp_used": "savings_plan_used_commitment",
        "ri_cost": "reservation_effective_cost",
        "ri_upfront": "reservation_unused_amortized_upfront_fee_for_billing_period",
        "ri_recurring": "reservation_unused_recurring_fee",
        "sp": "savings_plan_savings_plan_a_r_n",
        "ri": "reservation_reservation_a_r_n",
        "term": "pricing_term",
    }
    raw = pl.DataFrame(
        [{column: line.get(key) for key, column in columns.items()} for line, _, _ in cases],
        schema=dict.fromkeys(columns.values(), pl.String),
    ).with_columns(
        pl.lit("2024-09-01T00:00:00Z").alias("line_item_usage_start_date"),
        pl.lit("2024-09-01T01:00:00Z").alias("line_item_usage_end_date"),
        pl.lit("USD").alias("line_item_currency_code"),
    )

    result = read_cur_frame("constructed.parquet", raw, "cur", NOW)

    billing = result.frame
    assert billing["EffectiveCost"].to_list() == [Decimal(e) for _, e, _ in cases]
    assert billing["BilledCost"].sum() == Decimal("1173")
    assert billing["PricingCategory"].to_list() == [p for _, _, p in cases]
    assert billing["ChargeCategory"].to_list() == [
        "Usage", "Usage", "Usage", "Purchase", "Usage", "Purchase", "Purchase", "Purchase"
    ]  # fmt: skip
    assert billing["CommitmentDiscountCategory"].to_list() == [
        None, "Spend", "Spend", "Spend", "Usage", "Usage", "Usage", None
    ]  # fmt: skip
    assert billing["ChargeFrequency"].to_list() == [
        "Usage-Based", "Usage-Based", "Usage-Based", "Recurring", "Usage-Based", "Recurring",
        "One-Time", "One-Time",
    ]  # fmt: skip


def test_local_report_folder_uses_its_manifest(tmp_path: Path) -> None:
    period = tmp_path / "cur" / "gpucost" / "20231101-20231201"
    (period / "assembly-1").mkdir(parents=True)
    (period / "assembly-1" / "gpucost-1.csv.gz").write_bytes(gzip.compress(LEGACY_CUR.read_bytes()))
    (period / "old-assembly").mkdir()
    (period / "old-assembly" / "gpucost-1.csv.gz").write_bytes(
        gzip.compress(LEGACY_CUR.read_bytes())
    )
    (period / "gpucost-Manifest.json").write_text(
        json.dumps(
            {
                "bucket": "billing-bucket",
                "billingPeriod": {"start": "20231101T000000.000Z", "end": "20231201T000000.000Z"},
                "reportKeys": ["cur/gpucost/20231101-20231201/assembly-1/gpucost-1.csv.gz"],
            }
        )
    )
    collected = build_collector(AwsCur, name="cur", path=str(tmp_path / "cur")).collect(NOVEMBER)
    assert collected.frames["billing"].height == 1281  # the old assembly is not read
    assert list(collected.notes["files"]) == [str(period / "assembly-1" / "gpucost-1.csv.gz")]


# The FOCUS converters' AWS table (conversion_configs/aws/mapping_files/aws_category_mapping.csv)
# for the product codes of the real legacy sample, written out by hand.
SAMPLE_CATEGORIES = {
    "AmazonS3": "Storage",
    "AWSGlue": "Analytics",
    "AWSQueueService": "Integration",
    "AmazonSNS": "Integration",
    "AmazonCloudWatch": "Management and Governance",
    "awskms": "Security",
    "AmazonEFS": "Storage",
    "AWSSecretsManager": "Security",
    "AWSCloudTrail": "Management and Governance",
    "AWSIoT": "Internet of Things",
    "AmazonStates": "Integration",
    "AWSDataTransfer": "Networking",
}


def test_one_file_gets_focus_service_categories_and_names_its_billing_period() -> None:
    _, rows = legacy_rows()
    collected = build_collector(AwsCur, name="cur", path=str(LEGACY_CUR)).collect(NOVEMBER)
    billing = collected.frames["billing"]
    # 0 of 1,269 usage rows had a ServiceCategory before; now every known product code does.
    expected: dict[str | None, int] = {}
    unmapped: dict[str, int] = {}
    for row in rows:
        code = row["lineItem/ProductCode"]
        if code in SAMPLE_CATEGORIES:
            expected[SAMPLE_CATEGORIES[code]] = expected.get(SAMPLE_CATEGORIES[code], 0) + 1
        else:
            expected[None] = expected.get(None, 0) + 1
            unmapped[code] = unmapped.get(code, 0) + 1
    landed = dict(billing.group_by("ServiceCategory").len().iter_rows())
    assert landed == expected
    # Product codes the tables do not know stay empty and are counted for the manifest.
    assert unmapped == {"AWSCloudShell": 16, "AWSMigrationHubRefactorSpaces": 46}
    assert collected.notes["service_category_unmapped"] == unmapped
    assert collected.notes["files"][str(LEGACY_CUR)]["service_category_unmapped"] == unmapped
    s3 = billing.filter(pl.col("ServiceName") == "Amazon Simple Storage Service")
    assert s3["ServiceSubcategory"].unique().to_list() == ["Object Storage"]
    # A file read without a manifest names the billing period its rows carry (2023-11).
    assert collected.notes["billing_periods"] == ["2023-11-01..2023-12-01"]
