"""gcp-bigquery against the real google-cloud-bigquery client and a local fake BigQuery REST API.

The fake serves what the collector's aggregation query returns (it does not run SQL): rows
shaped like BigQuery's jobs.getQueryResults pages, TIMESTAMPs as int64 microseconds. GPU usage
comes from Google's own detailed-export sample (tests/data/gcp, CC BY 4.0); costs and credits
are chosen to need every digit.
"""

from __future__ import annotations

import csv
import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from google.auth.credentials import AnonymousCredentials

from gpucost.collector.base import CollectorContext, get_spec
from gpucost.collector.gcp_bigquery import (
    CHARGE_CATEGORIES,
    GcpBigQuery,
    GcpBigQuerySettings,
    TableShape,
    plan_query,
)
from gpucost.collector.gcp_common import frame_from_arrow, gpu_sku
from gpucost.config import validate_config
from gpucost.core.contracts import BILLING
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window
from tests.collector.builders import build_collector
from tests.fakes.gcp_bigquery import FakeBigQuery, billing_export_schema, field_

DATA = Path(__file__).parents[1] / "data" / "gcp"
T4_SAMPLE = DATA / "google_docs_detailed_export_reservation_query_sample_results_T4_GPU.csv"
TABLE = "billing-admin.billing_export.gcp_billing_export_resource_v1_0123AB_4567CD_89EF01"
WINDOW = Window(date(2024, 9, 18), date(2024, 9, 20))
INGESTED = datetime(2024, 9, 21, 4, 0, tzinfo=UTC)
DAY_18 = "1726617600000000"  # 2024-09-18T00:00:00Z in microseconds, as the REST API writes it
DAY_19 = "1726704000000000"
EXPORTED = "1726790400123456"  # 2024-09-20T00:00:00.123456Z

RESULT_FIELDS = [
    field_("charge_day", "TIMESTAMP"),
    *(
        field_(name, "STRING")
        for name in (
            "invoice_month",
            "billing_account_id",
            "cost_type",
            "project_id",
            "project_name",
            "service_id",
            "service_description",
            "sku_id",
            "sku_description",
            "region",
            "zone",
            "resource_name",
            "resource_global_name",
            "currency",
            "currency_conversion_rate",
            "usage_unit",
            "pricing_unit",
            "labels_json",
            "system_labels_json",
            "project_labels_json",
            "cost",
            "credits",
            "cost_at_list",
            "usage_amount",
            "usage_amount_in_pricing_units",
        )
    ),
    field_("export_rows", "INTEGER"),
    field_("last_export_time", "TIMESTAMP"),
]

PROJECT_LABELS = {
    "project1": '[{"key":"cost-center","value":"cc-42"},{"key":"team","value":"platform"}]',
    "project2": '[{"key":"cost-center","value":"cc-77"}]',
}
VM_LABELS = '[{"key":"team","value":"vision"}]'
SYSTEM_LABELS = (
    '[{"key":"compute.googleapis.com/cores","value":"8"},'
    '{"key":"compute.googleapis.com/machine_spec","value":"n1-standard-8"}]'
)
# Costs and credits (synthetic): enough digits that any float on the way would show.
COSTS = {
    ("project1", "Nvidia Tesla T4 GPU running in Americas"): ("102.799957", "-30.839987109"),
    ("project1", "N1 Predefined Instance Core running in Americas"): ("36.810239", "-11.043071"),
    ("project1", "N1 Predefined Instance Ram running in Americas"): ("19.785386", "0"),
    ("project2", "Nvidia Tesla T4 GPU running in Americas"): ("96.637875", "-0.000000001"),
    ("project2", "N1 Predefined Instance Core running in Americas"): ("34.845793", "-10.453737"),
    ("project2", "N1 Predefined Instance Ram running in Americas"): ("18.633754", "0"),
}
SKU_IDS = {
    "Nvidia Tesla T4 GPU running in Americas": "SYN1-T4GP-0001",
    "N1 Predefined Instance Core running in Americas": "SYN1-N1CO-0002",
    "N1 Predefined Instance Ram running in Americas": "SYN1-N1RA-0003",
}


def sample_usage() -> list[dict[str, str]]:
    """Google's sample: per project and SKU, the usage unit and total usage amount."""
    with T4_SAMPLE.open(newline="") as handle:
        return list(csv.DictReader(handle))


def result_row(day: str, usage: dict[str, str]) -> list[Any]:
    """One aggregated row as getQueryResults writes it (every value a string or null)."""
    project, sku = usage["consumer_project_id"], usage["sku_description"]
    cost, credits = COSTS[(project, sku)]
    pricing_unit = {"seconds": "hour", "byte-seconds": "gibibyte hour"}[usage["usage_unit"]]
    amount = Decimal(usage["total_usage_amount"])
    in_pricing_units = amount / (3600 if pricing_unit == "hour" else 3600 * 2**30)
    return [
        day,
        "202409",
        "012345-67890A-BCDEF0",
        "regular",
        project,
        f"{project} name",
        "6F81-5844-456A",
        "Compute Engine",
        SKU_IDS[sku],
        sku,
        "us-central1",
        "us-central1-a",
        f"{project}-trainer-1",
        f"//compute.googleapis.com/projects/{project}/zones/us-central1-a/instances/1234567",
        "USD",
        "1",
        usage["usage_unit"],
        pricing_unit,
        VM_LABELS if project == "project1" else None,
        SYSTEM_LABELS,
        PROJECT_LABELS[project],
        cost,
        credits,
        cost,  # cost_at_list
        usage["total_usage_amount"],
        f"{in_pricing_units.quantize(Decimal('0.000000001'))}",
        "24",
        EXPORTED,
    ]


def tax_row(day: str) -> list[Any]:
    """A tax line: no SKU usage, no credits, no labels."""
    row: list[Any] = [None] * len(RESULT_FIELDS)
    values = {
        "charge_day": day,
        "invoice_month": "202409",
        "billing_account_id": "012345-67890A-BCDEF0",
        "cost_type": "tax",
        "project_id": "project1",
        "service_id": "6F81-5844-456A",
        "service_description": "Compute Engine",
        "currency": "USD",
        "currency_conversion_rate": "1",
        "labels_json": "null",
        "cost": "7.560000",
        "credits": "0",
        "export_rows": "1",
        "last_export_time": EXPORTED,
    }
    names = [field["name"] for field in RESULT_FIELDS]
    for name, value in values.items():
        row[names.index(name)] = value
    return row


def standard_rows() -> list[list[Any]]:
    """Day 18: Google's six sample rows plus a tax line; day 19: an unknown cost type."""
    rows = [result_row(DAY_18, usage) for usage in sample_usage()]
    rows.append(tax_row(DAY_18))
    surcharge = tax_row(DAY_19)
    surcharge[[f["name"] for f in RESULT_FIELDS].index("cost_type")] = "surcharge"
    rows.append(surcharge)
    return rows


@pytest.fixture
def fake() -> FakeBigQuery:
    """A fake with the detailed export table, ingestion-time partitioned, and seven rows."""
    return FakeBigQuery(
        result_fields=RESULT_FIELDS,
        result_rows=standard_rows(),
        page_size=3,
        polls_before_done=2,
    )


@pytest.fixture
def endpoint(fake: FakeBigQuery) -> Iterator[str]:
    """The fake's base URL while it serves."""
    with fake.serve() as url:
        yield url


def make_collector(endpoint: str, **keys: Any) -> GcpBigQuery:
    """The collector, its real BigQuery client pointed at the fake with anonymous credentials."""
    context = CollectorContext(
        clock=lambda: INGESTED, google_credentials_factory=AnonymousCredentials
    )
    return build_collector(
        GcpBigQuery,
        context,
        name="gcp-billing",
        table=TABLE,
        project="finops-jobs",
        api_endpoint=endpoint,
        **keys,
    )


def test_export_with_credits_lands_exactly(fake: FakeBigQuery, endpoint: str) -> None:
    collected = make_collector(endpoint, max_bytes_billed=10 * 2**30).collect(WINDOW)
    billing = collected.frames["billing"]
    BILLING.validate(billing, "gcp-billing")
    assert billing.height == 7  # 6 usage rows + tax; the surcharge row is rejected

    # EffectiveCost = cost + SUM(credits), to the last digit:
    #   102.799957 + (-30.839987109) = 71.959969891
    #   96.637875 + (-0.000000001)  = 96.637874999
    t4 = billing.filter(pl.col("x_GpuModel") == "T4").sort("SubAccountId")
    assert t4["BilledCost"].to_list() == [Decimal("102.799957"), Decimal("96.637875")]
    assert t4["EffectiveCost"].to_list() == [Decimal("71.959969891"), Decimal("96.637874999")]
    for row in billing.iter_rows(named=True):
        key = (row["SubAccountId"], row["ChargeDescription"])
        if key in COSTS:
            cost, credits = COSTS[key]
            assert row["EffectiveCost"] == Decimal(cost) + Decimal(credits)
            assert row["ListCost"] == Decimal(cost)
    total_cost = sum(Decimal(cost) for cost, _ in COSTS.values()) + Decimal("7.56")
    total_credits = sum(Decimal(credits) for _, credits in COSTS.values())
    assert billing["BilledCost"].sum() == total_cost
    assert billing["EffectiveCost"].sum() == total_cost + total_credits

    # GPU-hours: Google's sample usage in seconds / 3600, half-even at 18 decimals
    # (1057391 / 3600 = 293.7197222…, 993985 / 3600 = 276.1069444…).
    expected_hours = [
        (Decimal(seconds) / 3600).quantize(Decimal("1e-18"), rounding=ROUND_HALF_EVEN)
        for seconds in ("1057391", "993985")
    ]
    assert t4["x_GpuHours"].to_list() == expected_hours
    assert expected_hours[0] == Decimal("293.719722222222222222")
    assert billing.filter(pl.col("x_GpuModel").is_null())["x_GpuHours"].null_count() == 5
    # Byte-seconds of RAM are large but exact: 16998309356466500 fits Decimal(38, 18).
    ram = billing.filter(pl.col("ChargeDescription").str.contains("Ram"), SubAccountId="project1")
    assert ram["ConsumedQuantity"].item() == Decimal("16998309356466500")
    assert ram["ConsumedUnit"].item() == "byte-seconds"

    first = t4.row(0, named=True)
    assert first["ChargePeriodStart"] == datetime(2024, 9, 18, tzinfo=UTC)
    assert first["ChargePeriodEnd"] == datetime(2024, 9, 19, tzinfo=UTC)
    # Invoice month 202409 in Pacific time (PDT, UTC-7) as UTC.
    assert first["BillingPeriodStart"] == datetime(2024, 9, 1, 7, tzinfo=UTC)
    assert first["BillingPeriodEnd"] == datetime(2024, 10, 1, 7, tzinfo=UTC)
    assert first["ChargeCategory"] == "Usage"
    assert first["ChargeFrequency"] == "Usage-Based"
    assert first["ProviderName"] == first["ServiceProviderName"] == "Google Cloud"
    assert first["SubAccountId"] == "project1"
    assert first["ResourceName"] == "project1-trainer-1"
    assert first["ResourceId"].startswith("//compute.googleapis.com/projects/project1/")
    assert first["x_InstanceType"] == "n1-standard-8"
    # Project labels, then the VM's own (team=vision beats the project's team=platform),
    # then system labels; canonical JSON with sorted keys.
    assert first["Tags"] == (
        '{"compute.googleapis.com/cores":"8","compute.googleapis.com/machine_spec":'
        '"n1-standard-8","cost-center":"cc-42","team":"vision"}'
    )
    tax = billing.filter(ChargeCategory="Tax").row(0, named=True)
    assert tax["EffectiveCost"] == Decimal("7.56") and tax["Tags"] is None
    assert tax["x_GpuHours"] is None and tax["ChargeFrequency"] is None
    assert billing["x_Source"].unique().to_list() == ["gcp-billing"]
    assert billing["x_IngestedAt"].unique().to_list() == [INGESTED]

    # The unknown cost type is rejected, named by result row and field, not guessed.
    rejects = collected.rejects
    assert rejects.select("file", "row", "field", "raw").rows() == [
        (TABLE, 8, "cost_type", "surcharge")
    ]
    assert collected.notes["bytes_estimated"] == 1_234_567
    assert collected.notes["currency_conversion_rates"] == ["USD 1"]
    assert collected.notes["gpu_skus"] == ["T4"]
    assert collected.notes["latest_export_time"] == "2024-09-20T00:00:00.123456+00:00"
    assert collected.notes["result_rows"] == 8
    # FOCUS ServiceCategory from service.description (the FOCUS converters' GCP table):
    # Google's sample is all Compute Engine, which FOCUS 1.2 files under Virtual Machines.
    assert billing.select("ServiceCategory", "ServiceSubcategory").unique().rows() == [
        ("Compute", "Virtual Machines")
    ]
    assert "service_category_unmapped" not in collected.notes


def test_query_is_dry_run_first_pruned_and_capped(fake: FakeBigQuery, endpoint: str) -> None:
    make_collector(endpoint, max_bytes_billed=10 * 2**30, location="US").collect(WINDOW)
    posts = [r for r in fake.requests if r.method == "POST"]
    assert [bool(r.body["configuration"].get("dryRun")) for r in posts] == [True, False]
    query = fake.query_requests[0].body["configuration"]["query"]
    assert query["useLegacySql"] is False
    assert fake.query_requests[0].body["configuration"]["labels"] == {
        "application": "gpucost",
        "gpucost-source": "gcp-billing",
    }
    assert query["maximumBytesBilled"] == str(10 * 2**30)
    sql = query["query"]
    assert f"FROM `{TABLE}`" in sql
    assert "_PARTITIONTIME >= TIMESTAMP(@partition_start)" in sql
    assert "SUM(CAST(credit.amount AS NUMERIC))" in sql
    assert "resource.name AS resource_name" in sql
    parameters = {p["name"]: p["parameterValue"]["value"] for p in query["queryParameters"]}
    # The window's days, and partitions from the day before to export_lag_days after.
    assert parameters["window_start"] == "2024-09-18 00:00:00+00:00"
    assert parameters["window_end"] == "2024-09-20 00:00:00+00:00"
    assert parameters["partition_start"] == "2024-09-17"
    assert parameters["partition_end"] == "2024-09-25"
    # Results were paged (3 rows a page, 8 rows) with int64 timestamps requested.
    pages = [r for r in fake.requests if "/queries/" in r.path and "pageToken" in r.query]
    assert [r.query["pageToken"] for r in pages] == [["3"], ["6"]]
    result_calls = [r for r in fake.requests if "/queries/" in r.path and "fields" in r.query]
    assert all(r.query["formatOptions.useInt64Timestamp"] == ["True"] for r in result_calls)


def test_dry_run_over_the_byte_limit_runs_nothing(fake: FakeBigQuery, endpoint: str) -> None:
    fake.dry_run_bytes = 75 * 2**30
    collector = make_collector(endpoint, max_bytes_billed=50 * 2**30)
    with pytest.raises(CollectorError) as raised:
        collector.collect(WINDOW)
    message = str(raised.value)
    assert "source 'gcp-billing'" in message
    assert "80,530,636,800 bytes (75.00 GiB)" in message
    assert "max_bytes_billed 53,687,091,200 (50.00 GiB)" in message
    assert "nothing was run" in message
    assert fake.dry_run_requests and not fake.query_requests


def test_failed_query_job_names_job_and_reason(fake: FakeBigQuery, endpoint: str) -> None:
    fake.job_error = {
        "reason": "invalidQuery",
        "location": "query",
        "message": "Unrecognized name: cost_at_list at [25:10]",
    }
    with pytest.raises(CollectorError) as raised:
        make_collector(endpoint).collect(WINDOW)
    message = str(raised.value)
    assert "BigQuery query job gpucost_" in message
    assert "invalidQuery" in message and "Unrecognized name: cost_at_list" in message
    assert len(fake.query_requests) == 1  # an invalid query is not retried


def test_an_empty_window_lands_nothing(fake: FakeBigQuery, endpoint: str) -> None:
    fake.result_rows = []
    collected = make_collector(endpoint).collect(WINDOW)
    assert collected.frames["billing"].is_empty() and collected.rejects.is_empty()
    assert collected.notes["result_rows"] == 0


def test_missing_table_is_named(fake: FakeBigQuery, endpoint: str) -> None:
    fake.table = "gcp_billing_export_v1_OTHER"
    with pytest.raises(CollectorError, match=r"cannot read table .*404.*Not found"):
        make_collector(endpoint).collect(WINDOW)


@pytest.mark.parametrize(
    ("partitioning", "expected_sql", "note"),
    [
        ({"type": "DAY", "field": "usage_start_time"}, None, "usage_start_time (the window"),
        (
            {"type": "DAY", "field": "export_time"},
            "export_time >= TIMESTAMP(@partition_start)",
            "export_time in [2024-09-17, 2024-09-25)",
        ),
        (None, None, "none (the table is not partitioned"),
    ],
)
def test_partition_filter_follows_the_table(
    fake: FakeBigQuery,
    endpoint: str,
    partitioning: dict[str, str] | None,
    expected_sql: str | None,
    note: str,
) -> None:
    fake.time_partitioning = partitioning
    collected = make_collector(endpoint).collect(WINDOW)
    sql = fake.query_requests[0].body["configuration"]["query"]["query"]
    assert "_PARTITIONTIME" not in sql
    if expected_sql:
        assert expected_sql in sql
    assert collected.notes["partition_filter"].startswith(note)


def test_standard_export_table(fake: FakeBigQuery, endpoint: str) -> None:
    fake.table_fields = billing_export_schema(detailed=False)
    collected = make_collector(endpoint).collect(WINDOW)
    sql = fake.query_requests[0].body["configuration"]["query"]["query"]
    assert "CAST(NULL AS STRING) AS resource_name" in sql
    assert collected.notes["export"] == "standard"
    with pytest.raises(CollectorError, match="standard export, not the detailed one"):
        make_collector(endpoint, export="detailed").collect(WINDOW)


def test_a_table_that_is_not_an_export_is_refused(fake: FakeBigQuery, endpoint: str) -> None:
    fake.table_fields = [field_("cost", "FLOAT"), field_("usage_start_time", "TIMESTAMP")]
    with pytest.raises(CollectorError, match="lacks the billing export columns billing_account_id"):
        make_collector(endpoint).collect(WINDOW)
    assert not fake.dry_run_requests


def test_charge_categories_follow_the_focus_converters() -> None:
    """cost_type -> ChargeCategory is the FOCUS converters' rule (MIT, tests/data/gcp)."""
    with (DATA / "focus_converters_rules_gcp_bigquery_to_focus.csv").open(newline="") as handle:
        rule = next(
            row for row in csv.DictReader(handle) if row["FOCUS Dimension"] == "ChargeCategory"
        )
    conditions = dict(
        re.findall(r"WHEN cost_type = '(\w+)' THEN '(\w+)'", rule["Filters/Process/Etc."])
    )
    assert conditions == dict(CHARGE_CATEGORIES)


@pytest.mark.parametrize(
    ("description", "model", "gpu_time"),
    [
        ("Nvidia Tesla T4 GPU running in Americas", "T4", True),
        ("Nvidia Tesla A100 GPU running in Americas", "A100", True),
        ("Nvidia Tesla A100 80GB GPU running in Americas", "A100-80GB", True),
        ("Nvidia L4 GPU running in Netherlands", "L4", True),
        ("Nvidia H100 80GB GPU running in Americas", "H100-80GB", True),
        ("Nvidia H100 80GB Mega GPU running in Americas", "H100-80GB", True),
        ("Spot Preemptible Nvidia Tesla T4 GPU running in Americas", "T4", True),
        ("Commitment v1: Nvidia Tesla T4 GPU in Americas for 1 Year", "T4", False),
        ("N1 Predefined Instance Core running in Americas", None, False),
        (None, None, False),
    ],
)
def test_gpu_model_from_sku_description(
    description: str | None, model: str | None, gpu_time: bool
) -> None:
    sku = gpu_sku(description)
    assert (sku.model, sku.meters_gpu_time) == (model, gpu_time)


def test_extension_columns_are_unwrapped() -> None:
    """google-cloud-bigquery marks DATETIME/JSON columns as Arrow extensions; Polars keeps them."""
    datetime_field = pa.field(
        "dt",
        pa.timestamp("us"),
        metadata={b"ARROW:extension:name": b"google:sqlType:datetime"},
    )
    table = pa.Table.from_arrays(
        [pa.array([datetime(2024, 9, 18, 1, 2, 3)], pa.timestamp("us")), pa.array(["x"])],
        schema=pa.schema([datetime_field, pa.field("s", pa.string())]),
    )
    assert isinstance(pl.from_arrow(table).schema["dt"], pl.Extension)  # type: ignore[union-attr]
    frame = frame_from_arrow(table)
    assert frame.schema["dt"] == pl.Datetime("us")
    assert frame["dt"].item() == datetime(2024, 9, 18, 1, 2, 3)


def test_table_names_cannot_break_out_of_the_sql() -> None:
    shape = TableShape(
        detailed=True,
        has_cost_at_list=True,
        has_system_labels=True,
        partition_column="_PARTITIONTIME",
    )
    with pytest.raises(ValueError, match=r"not project\.dataset\.table"):
        plan_query("p.d.t` WHERE 1=1; --", shape, WINDOW)
    with pytest.raises(ValueError):
        GcpBigQuerySettings(name="gcp", kind="gcp-bigquery", table="p.d.t`x")


def test_docstring_example_is_a_valid_config() -> None:
    spec = get_spec("gcp-bigquery")
    example = re.search(r"```toml\n(.*?)```", spec.doc, re.S)
    assert example is not None
    config = validate_config(tomllib.loads(example.group(1)))
    settings = config.sources[0]
    assert isinstance(settings, GcpBigQuerySettings)
    assert settings.max_bytes_billed == 50 * 2**30
    collector = spec.build(settings, CollectorContext())
    assert isinstance(collector, GcpBigQuery) and collector.table == settings.table
