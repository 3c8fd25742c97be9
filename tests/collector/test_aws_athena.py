"""aws-athena against moto's Athena (results queue), with a proxy for what moto cannot do."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from gpucost.collector.aws_athena import (
    AwsAthena,
    AwsAthenaSettings,
    build_query,
    estimated_cost_usd,
)
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

try:  # pytest --import-mode=importlib with pythonpath "." (pyproject)
    from tests.collector.test_aws_support import aws_context, fault_proxy, moto_api
except ModuleNotFoundError:  # the default prepend mode puts this directory on sys.path
    from test_aws_support import aws_context, fault_proxy, moto_api  # type: ignore[no-redef]

ATHENA_RESULTS = "/moto-api/static/athena/query-results"
WINDOW = Window(date(2024, 9, 29), date(2024, 10, 2))
COLUMNS = [
    "usage_day",
    "account_id",
    "resource_id",
    "usage_type",
    "line_item_type",
    "product_code",
    "instance_type",
    "currency",
    "unit",
    "tag_0",
    "billed_cost",
    "effective_cost",
    "usage_amount",
    "line_items",
]


def settings(**overrides: Any) -> AwsAthenaSettings:
    return AwsAthenaSettings.model_validate(
        {
            "name": "aws-athena",
            "kind": "aws-athena",
            "database": "athenacurcfn_gpucost",
            "table": "gpucost",
            "workgroup": "primary",
            "output_location": "s3://athena-results/gpucost/",
            "tags": {"project": "resource_tags_user_project"},
            "partition_style": "year_month",
            **overrides,
        }
    )


def row(*values: str | None) -> dict[str, Any]:
    """A GetQueryResults row: NULL is an empty Datum, as Athena sends it."""
    return {"Data": [{"VarCharValue": v} if v is not None else {} for v in values]}


def result_rows() -> list[dict[str, Any]]:
    return [
        row(*COLUMNS),  # a SELECT's first row repeats the column names
        row(
            "2024-09-29 00:00:00.000",
            "123456789012",
            "i-0b3b3095474a3772a",
            "USE1-BoxUsage:p5.48xlarge",
            "Usage",
            "AmazonEC2",
            "p5.48xlarge",
            "USD",
            "Hrs",
            "llm",
            "2359.68",
            "1651.776",
            "24",
            "24",
        ),
        row(
            "2024-09-30 00:00:00.000",
            "123456789012",
            "i-0b3b3095474a3772a",
            "USE1-BoxUsage:p5.48xlarge",
            "SavingsPlanCoveredUsage",
            "AmazonEC2",
            "p5.48xlarge",
            "USD",
            "Hrs",
            "llm",
            "2359.68",
            "1651.776",
            "24",
            "24",
        ),
        row(
            "2024-09-30 00:00:00.000",
            "123456789012",
            None,
            None,
            "Tax",
            "AmazonEC2",
            None,
            "USD",
            None,
            None,
            "0.000000018100000000",
            "0.000000018100000000",
            "1",
            "1",
        ),
        row(
            "2024-10-01 00:00:00.000",
            "123456789012",
            None,
            "USE1-Mystery",
            "Mystery",
            "AmazonEC2",
            None,
            "USD",
            None,
            None,
            "1",
            "1",
            "1",
            "1",
        ),
    ]


def column_info() -> list[dict[str, Any]]:
    return [
        {"Name": name, "Label": name, "Type": "varchar", "Nullable": "UNKNOWN"} for name in COLUMNS
    ]


def test_daily_rollup_lands_exactly_with_polling_backoff_and_bytes_scanned(
    moto_endpoint: str,
) -> None:
    moto_api(
        moto_endpoint,
        ATHENA_RESULTS,
        {"results": [{"rows": result_rows(), "column_info": column_info()}]},
    )
    sleeps: list[float] = []

    def running(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {
            "QueryExecution": {
                "QueryExecutionId": request["QueryExecutionId"],
                "Status": {"State": "RUNNING"},
            }
        }

    def scanned(response: dict[str, Any]) -> dict[str, Any]:
        response["QueryExecution"]["Statistics"]["DataScannedInBytes"] = 123_456_789
        return response

    with fault_proxy(moto_endpoint) as proxy:
        proxy.answer("GetQueryExecution", running, running)
        proxy.rewrites["GetQueryExecution"] = scanned
        context = dataclasses.replace(aws_context(proxy.endpoint), sleep=sleeps.append)
        collected = AwsAthena(settings(), context).collect(WINDOW)

    assert sleeps == [1.0, 2.0]  # backoff between polls
    assert proxy.operations() == [
        "StartQueryExecution",
        "GetQueryExecution",
        "GetQueryExecution",
        "GetQueryExecution",
        "GetQueryResults",
    ]
    start = proxy.calls[0][1]
    assert start["WorkGroup"] == "primary"
    assert start["ResultConfiguration"] == {"OutputLocation": "s3://athena-results/gpucost/"}
    assert start["QueryExecutionContext"]["Database"] == "athenacurcfn_gpucost"
    assert "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10" in start["QueryString"]

    billing = collected.frames["billing"].sort("ChargePeriodStart", "BilledCost")
    assert billing.height == 3
    assert billing["BilledCost"].sum() == Decimal("4719.360000018100000000")
    assert billing["ChargeCategory"].to_list() == ["Usage", "Tax", "Usage"]
    assert billing["Tags"].to_list() == ['{"project":"llm"}', "{}", '{"project":"llm"}']
    assert billing["x_InstanceType"].to_list() == ["p5.48xlarge", None, "p5.48xlarge"]
    assert billing["ConsumedQuantity"].to_list() == [Decimal(24), None, Decimal(24)]
    (reject,) = collected.rejects.iter_rows(named=True)
    assert (reject["row"], reject["field"], reject["raw"]) == (4, "line_item_type", "Mystery")
    assert collected.notes["athena_data_scanned_bytes"] == 123_456_789
    # AmazonEC2 -> FOCUS Compute / Virtual Machines, as for aws-cur.
    assert billing.select("ServiceCategory", "ServiceSubcategory").unique().rows() == [
        ("Compute", "Virtual Machines")
    ]
    assert collected.notes["athena_estimated_cost_usd"] == "0.00062"  # 124 MB at $5/TB


def test_a_failed_query_fails_the_source_with_athenas_reason(moto_endpoint: str) -> None:
    reason = "COLUMN_NOT_FOUND: line 11:3: Column 'resource_tags_user_project' cannot be resolved"

    def failed(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {
            "QueryExecution": {
                "QueryExecutionId": request["QueryExecutionId"],
                "Status": {
                    "State": "FAILED",
                    "StateChangeReason": reason,
                    "AthenaError": {"ErrorCategory": 2, "ErrorType": 1006, "Retryable": False},
                },
                "Statistics": {"DataScannedInBytes": 0},
            }
        }

    with fault_proxy(moto_endpoint) as proxy:
        proxy.answer("GetQueryExecution", failed)
        source = AwsAthena(settings(), aws_context(proxy.endpoint))
        with pytest.raises(CollectorError, match=r"FAILED: COLUMN_NOT_FOUND.*cannot be resolved"):
            source.collect(WINDOW)
    assert "GetQueryResults" not in proxy.operations()


def test_results_are_paged_and_only_the_first_page_has_the_header(moto_endpoint: str) -> None:
    rows = result_rows()

    def page(rows: list[dict[str, Any]], token: str | None) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "ResultSet": {"Rows": rows, "ResultSetMetadata": {"ColumnInfo": column_info()}},
            "UpdateCount": 0,
        }
        if token:
            body["NextToken"] = token
        return 200, body

    with fault_proxy(moto_endpoint) as proxy:
        proxy.answer("GetQueryResults", page(rows[:2], "next"), page(rows[2:4], None))
        collected = AwsAthena(settings(), aws_context(proxy.endpoint)).collect(WINDOW)
    second = [body for op, body in proxy.calls if op == "GetQueryResults"][1]
    assert second["NextToken"] == "next"
    assert second["MaxResults"] == 1000
    assert collected.frames["billing"].height == 3
    assert collected.notes["aws_requests"]["get_query_results"] == 2


def test_the_sql_sums_exact_decimals_and_prunes_partitions() -> None:
    sql = build_query(settings(), WINDOW)
    assert "CAST(CAST(line_item_unblended_cost AS VARCHAR) AS DECIMAL(38, 18))" in sql
    assert "line_item_usage_start_date >= TIMESTAMP '2024-09-29 00:00:00'" in sql
    assert "line_item_usage_start_date < TIMESTAMP '2024-10-02 00:00:00'" in sql
    assert "((year = '2024' AND month = '9') OR (year = '2024' AND month = '10'))" in sql
    assert "WHEN line_item_line_item_type = 'SavingsPlanNegation' THEN 0" in sql
    assert "reservation_reservation_a_r_n" in sql
    assert 'FROM "AwsDataCatalog"."athenacurcfn_gpucost"."gpucost"' in sql
    cur2 = build_query(
        settings(
            partition_style="billing_period", tags={"project": "resource_tags['user_project']"}
        ),
        WINDOW,
    )
    assert "billing_period IN ('2024-09', '2024-10')" in cur2
    assert "resource_tags['user_project'] AS tag_0" in cur2


def test_settings_keep_anything_but_identifiers_out_of_the_sql() -> None:
    with pytest.raises(ValidationError, match="is not a column or map element"):
        settings(tags={"project": "x) OR 1=1 --"})
    with pytest.raises(ValidationError, match="table"):
        settings(table='gpucost"; DROP TABLE x; --')


def test_athena_bills_ten_megabytes_at_least() -> None:
    assert estimated_cost_usd(0) == Decimal("0.00005")
    assert estimated_cost_usd(10**12) == Decimal(5)


def test_now_is_only_used_for_ingestion_time(moto_endpoint: str) -> None:
    moto_api(
        moto_endpoint,
        ATHENA_RESULTS,
        {"results": [{"rows": result_rows()[:2], "column_info": column_info()}]},
    )
    now = datetime(2030, 1, 1, tzinfo=UTC)
    collected = AwsAthena(settings(), aws_context(moto_endpoint, now)).collect(WINDOW)
    assert collected.frames["billing"]["x_IngestedAt"].to_list() == [now]
    assert collected.notes["athena_data_scanned_bytes"] == 0
