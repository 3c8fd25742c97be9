"""``aws-athena``: the CUR aggregated inside Athena, so billions of line items never leave AWS.

One SQL statement per window groups the CUR table (the AWS CUR Athena integration's table, or a
CUR 2.0 / Data Exports table) by day x account x resource x usage type x line item type x
chosen tags, and only those daily rollups come down. The collector starts the query in the
configured workgroup and output location, polls ``GetQueryExecution`` with capped exponential
backoff, pages ``GetQueryResults`` (1,000 rows a page, the API's maximum) and records the bytes
Athena scanned, which is what Athena bills ($5 per TB scanned, 10 MB minimum per query, in
us-east-1; Amazon Athena pricing).

Money stays exact: CUR tables type costs as ``double``. Each value is cast to text first, which
prints the shortest decimal that round-trips to the double (the figure AWS wrote), then to
``DECIMAL(38, 18)``, and summed as decimals; the sum comes back as text and is parsed exactly.
Casting a double straight to DECIMAL would keep binary noise (0.1 -> 0.100000000000000006).

FOCUS mapping of the result columns: ``usage_day`` -> ChargePeriodStart (End = next day),
``billed_cost`` (sum of ``line_item_unblended_cost``) -> BilledCost, ``effective_cost``
(amortized, :data:`gpucost.collector.aws_common.EFFECTIVE_COST_RULES`) -> EffectiveCost,
``usage_amount``/``unit`` -> ConsumedQuantity/ConsumedUnit (usage rows), ``account_id`` ->
SubAccountId, ``resource_id`` -> ResourceId, ``usage_type`` -> x_UsageType, ``instance_type``
-> x_InstanceType, ``product_code`` -> ServiceName and (:mod:`.service_category`)
ServiceCategory/ServiceSubcategory, ``line_item_type`` -> ChargeCategory,
``currency`` -> BillingCurrency, the tag columns -> Tags.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import Field, field_validator

from gpucost.collector.aws_common import (
    EFFECTIVE_COST_RULES,
    LINE_ITEM_CHARGE_CATEGORY,
    AwsClients,
    AwsSourceSettings,
)
from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.parsing import (
    blank_to_null,
    parse_money,
    parse_timestamp,
    rejects_from,
    tags_to_json,
)
from gpucost.collector.service_category import unmapped_services, with_service_category
from gpucost.core.contracts import BILLING, UTC_TIME
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

IDENTIFIER = r"^[A-Za-z0-9_]+$"
TAG_EXPRESSION = r"^[A-Za-z_][A-Za-z0-9_]*(\['[A-Za-z0-9_:.@/+=-]+'\])?$"
"""A column (``resource_tags_user_project``) or a map element (``resource_tags['user_project']``);
nothing else reaches the SQL text."""

RESULT_PAGE_SIZE = 1000
"""GetQueryResults MaxResults: at most 1,000 rows per page."""

PRICE_PER_TB_USD = Decimal("5")
MIN_BYTES_BILLED = 10 * 1000 * 1000
"""Amazon Athena pricing (SQL queries): $5.00 per TB scanned, rounded up to the MB, 10 MB
minimum per query."""

GROUP_COLUMNS: Sequence[tuple[str, str]] = (
    ("usage_day", "CAST(date_trunc('day', line_item_usage_start_date) AS VARCHAR)"),
    ("account_id", "line_item_usage_account_id"),
    ("resource_id", "line_item_resource_id"),
    ("usage_type", "line_item_usage_type"),
    ("line_item_type", "line_item_line_item_type"),
    ("product_code", "line_item_product_code"),
    ("instance_type", "product_instance_type"),
    ("currency", "line_item_currency_code"),
    ("unit", "pricing_unit"),
)
SUM_COLUMNS = ("billed_cost", "effective_cost", "usage_amount")

PartitionStyle = Literal["none", "year_month", "billing_period"]


class AwsAthenaSettings(AwsSourceSettings):
    """Settings of an ``aws-athena`` source."""

    database: str = Field(pattern=IDENTIFIER, description="Glue database of the CUR table.")
    table: str = Field(pattern=IDENTIFIER, description="The CUR table.")
    catalog: str = Field(default="AwsDataCatalog", pattern=IDENTIFIER)
    workgroup: str = Field(default="primary", pattern=r"^[A-Za-z0-9._-]+$")
    output_location: str | None = Field(
        default=None,
        pattern=r"^s3://[^/]+(/.*)?$",
        description="s3:// prefix for query results; the workgroup's when unset.",
    )
    region: str = Field(default="us-east-1", description="Region of the workgroup and table.")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Tag key -> column: resource_tags_user_project (CUR integration) or "
            "resource_tags['user_project'] (CUR 2.0)."
        ),
    )
    partition_style: PartitionStyle = Field(
        default="none",
        description=(
            "Prune partitions: year_month (CUR Athena integration: year='2024', month='9'), "
            "billing_period (billing_period='2024-09'), none."
        ),
    )
    effective_cost: Literal["amortized", "unblended"] = Field(
        default="amortized",
        description="amortized needs the reservation_* and savings_plan_* columns (CUR 2.0 has).",
    )
    poll_initial_s: float = Field(default=1.0, gt=0, le=60)
    poll_max_s: float = Field(default=15.0, gt=0, le=300)
    max_wait_s: float = Field(default=1800.0, gt=0, le=6 * 3600)

    @field_validator("tags")
    @classmethod
    def _safe_tags(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for key, expression in value.items():
            if not key.strip():
                raise ValueError("tag keys must not be empty")
            if not re.match(TAG_EXPRESSION, expression):
                raise ValueError(
                    f"tags.{key}: {expression!r} is not a column or map element such as "
                    "resource_tags_user_project or resource_tags['user_project']"
                )
        return value


@register("aws-athena")
class AwsAthena:
    """Aggregates the CUR in Amazon Athena per day and lands the rollup in the billing table.

    The scale path for organisations whose CUR is too big to download: one query per window,
    grouped by day, account, resource, usage type, line item type and the chosen tags. Bytes
    scanned (what Athena bills) are logged and kept in the run manifest. A FAILED query fails
    the source with Athena's reason.

    ```toml
    [[sources]]
    name = "aws-athena"
    kind = "aws-athena"
    database = "athenacurcfn_gpucost"
    table = "gpucost"
    workgroup = "primary"
    output_location = "s3://athena-results-bucket/gpucost/"
    region = "us-east-1"
    partition_style = "year_month"        # CUR Athena integration: year/month partitions
    tags = { project = "resource_tags_user_project" }
    schedule = "0 7 * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("billing",)
    Settings: ClassVar[type[SourceSettings]] = AwsAthenaSettings

    def __init__(self, settings: AwsAthenaSettings, context: CollectorContext) -> None:
        self.settings, self.context, self.name = settings, context, settings.name
        self.clients = AwsClients.for_source(settings, context)

    def collect(self, window: Window) -> Collected:
        """Run the window's query and return its rows as billing rows."""
        settings = self.settings
        client = self.clients.client("athena", region=settings.region)
        sql = build_query(settings, window)
        start: dict[str, Any] = {
            "QueryString": sql,
            "QueryExecutionContext": {"Database": settings.database, "Catalog": settings.catalog},
            "WorkGroup": settings.workgroup,
        }
        if settings.output_location:
            start["ResultConfiguration"] = {"OutputLocation": settings.output_location}
        execution_id = self.clients.call(client, "start_query_execution", **start)[
            "QueryExecutionId"
        ]
        execution = self._wait(client, execution_id)
        statistics = execution.get("Statistics", {})
        scanned = int(statistics.get("DataScannedInBytes", 0) or 0)
        cost = estimated_cost_usd(scanned)
        logger.info(
            "source %s: Athena query %s scanned %d bytes (about $%s)",
            self.name,
            execution_id,
            scanned,
            cost,
        )
        rows, columns = self._results(client, execution_id)
        billing, rejects = to_billing(
            rows,
            columns,
            settings,
            self.name,
            self.context.clock(),
            origin=f"athena:{execution_id}",
        )
        notes: dict[str, Any] = {
            "athena_query_execution_id": execution_id,
            "athena_data_scanned_bytes": scanned,
            "athena_estimated_cost_usd": str(cost),
            "athena_engine_execution_ms": statistics.get("EngineExecutionTimeInMillis"),
            "athena_query": sql,
            "rows_read": len(rows),
        }
        unmapped = unmapped_services(billing)
        if unmapped:
            # Rows whose service the FOCUS ServiceCategory tables do not know (left null).
            notes["service_category_unmapped"] = unmapped
        notes.update(self.clients.counter.as_notes())
        return Collected({"billing": billing}, rejects, notes)

    def _wait(self, client: Any, execution_id: str) -> dict[str, Any]:
        """Poll until the query ends; back off from poll_initial_s to poll_max_s."""
        delay, waited = self.settings.poll_initial_s, 0.0
        while True:
            response = self.clients.call(
                client, "get_query_execution", QueryExecutionId=execution_id
            )
            execution: dict[str, Any] = response["QueryExecution"]
            status = execution.get("Status", {})
            state = status.get("State")
            if state == "SUCCEEDED":
                return execution
            if state in ("FAILED", "CANCELLED"):
                reason = status.get("StateChangeReason") or status.get("AthenaError", {}).get(
                    "ErrorMessage", "no reason given"
                )
                raise CollectorError(self.name, f"Athena query {execution_id} {state}: {reason}")
            if waited >= self.settings.max_wait_s:
                self.clients.call(client, "stop_query_execution", QueryExecutionId=execution_id)
                raise CollectorError(
                    self.name,
                    f"Athena query {execution_id} still {state} after {waited:.0f} s; stopped it "
                    "(raise max_wait_s, or prune partitions with partition_style)",
                )
            self.context.sleep(delay)
            waited += delay
            delay = min(delay * 2, self.settings.poll_max_s)

    def _results(self, client: Any, execution_id: str) -> tuple[list[list[str | None]], list[str]]:
        rows: list[list[str | None]] = []
        columns: list[str] = []
        for page in self.clients.pages(
            client,
            "get_query_results",
            QueryExecutionId=execution_id,
            PaginationConfig={"PageSize": RESULT_PAGE_SIZE},
        ):
            result_set = page.get("ResultSet", {})
            if not columns:
                info = result_set.get("ResultSetMetadata", {}).get("ColumnInfo", [])
                columns = [column["Name"] for column in info]
            page_rows = [
                [datum.get("VarCharValue") for datum in row.get("Data", [])]
                for row in result_set.get("Rows", [])
            ]
            # A SELECT's first page starts with the column names (Athena API reference,
            # GetQueryResults); later pages do not.
            if not rows and page_rows and page_rows[0] == columns:
                page_rows = page_rows[1:]
            rows.extend(page_rows)
        return rows, columns


def estimated_cost_usd(scanned_bytes: int) -> Decimal:
    """Athena's charge for one query: MB rounded up, 10 MB minimum, $5 per TB (10^12 bytes)."""
    billed = max(math.ceil(scanned_bytes / 1_000_000) * 1_000_000, MIN_BYTES_BILLED)
    return (PRICE_PER_TB_USD * billed / Decimal(10**12)).normalize()


def _exact(column: str) -> str:
    """A CUR double as an exact decimal: its shortest text, then DECIMAL (see module doc)."""
    return f"CAST(CAST({column} AS VARCHAR) AS DECIMAL(38, 18))"


def _athena_column(column: str) -> str:
    # Athena's CUR tables spell ARN columns with underscores between the letters.
    return column.removesuffix("_arn") + "_a_r_n" if column.endswith("_arn") else column


def effective_cost_sql(effective_cost: Literal["amortized", "unblended"]) -> str:
    """The amortized-cost CASE of :data:`EFFECTIVE_COST_RULES`, in Athena SQL."""
    unblended = _exact("line_item_unblended_cost")
    if effective_cost == "unblended":
        return unblended
    lines = [
        "CASE",
        "      WHEN line_item_line_item_type = 'Fee' "
        f"AND COALESCE({_athena_column('reservation_reservation_arn')}, '') <> '' THEN 0",
    ]
    for line_item_type, terms in EFFECTIVE_COST_RULES.items():
        expression = " ".join(
            f"{'+' if sign > 0 else '-'} {_exact(column)}" for sign, column in terms
        ).removeprefix("+ ")
        lines.append(
            f"      WHEN line_item_line_item_type = '{line_item_type}' THEN {expression or '0'}"
        )
    lines.append(f"      ELSE {unblended}")
    lines.append("    END")
    return "\n".join(lines)


def partition_filter(style: PartitionStyle, window: Window) -> str | None:
    """Partition predicate for the months the window touches (prunes what Athena scans)."""
    months: list[date] = []
    day = window.start.replace(day=1)
    while day < window.end:
        months.append(day)
        day = (day + timedelta(days=32)).replace(day=1)
    if style == "year_month":
        # The CUR Athena integration partitions by year and month, month without a zero pad.
        return (
            "(" + " OR ".join(f"(year = '{m.year}' AND month = '{m.month}')" for m in months) + ")"
        )
    if style == "billing_period":
        return "billing_period IN (" + ", ".join(f"'{m:%Y-%m}'" for m in months) + ")"
    return None


def build_query(settings: AwsAthenaSettings, window: Window) -> str:
    """The window's aggregation SQL (pure; identifiers are validated by the settings)."""
    tag_columns = [(f"tag_{i}", expression) for i, expression in enumerate(settings.tags.values())]
    selected = [*GROUP_COLUMNS, *tag_columns]
    select = [f"  {expression} AS {alias}" for alias, expression in selected]
    select += [
        f"  CAST(SUM({_exact('line_item_unblended_cost')}) AS VARCHAR) AS billed_cost",
        f"  CAST(SUM({effective_cost_sql(settings.effective_cost)}) AS VARCHAR) AS effective_cost",
        f"  CAST(SUM({_exact('line_item_usage_amount')}) AS VARCHAR) AS usage_amount",
        "  COUNT(*) AS line_items",
    ]
    where = [
        f"line_item_usage_start_date >= TIMESTAMP '{window.start} 00:00:00'",
        f"line_item_usage_start_date < TIMESTAMP '{window.end} 00:00:00'",
    ]
    partitions = partition_filter(settings.partition_style, window)
    if partitions:
        where.append(partitions)
    group_by = ", ".join(str(i) for i in range(1, len(selected) + 1))
    return "\n".join(
        [
            f"-- gpucost aws-athena {settings.name}: daily CUR rollup for {window}",
            "SELECT",
            ",\n".join(select),
            f'FROM "{settings.catalog}"."{settings.database}"."{settings.table}"',
            "WHERE " + "\n  AND ".join(where),
            f"GROUP BY {group_by}",
        ]
    )


def to_billing(
    rows: list[list[str | None]],
    columns: list[str],
    settings: AwsAthenaSettings,
    source: str,
    ingested_at: datetime,
    *,
    origin: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Billing rows and rejects from the query's text result (pure)."""
    expected = [alias for alias, _ in GROUP_COLUMNS] + [
        f"tag_{i}" for i in range(len(settings.tags))
    ]
    expected += [*SUM_COLUMNS, "line_items"]
    if rows and columns != expected:
        raise CollectorError(
            source, f"{origin}: result columns {columns} differ from the query's {expected}"
        )
    frame = pl.DataFrame(rows, schema=dict.fromkeys(expected, pl.String), orient="row")
    frame = frame.with_columns(blank_to_null(name) for name in expected).with_row_index(
        "__row", offset=1
    )
    conversions: list[pl.Expr] = []
    reasons: dict[str, str] = {}
    for name in SUM_COLUMNS:
        value, reason = parse_money(name)
        conversions += [value.alias(f"__value_{name}"), reason.alias(f"__reason_{name}")]
        reasons[name] = f"__reason_{name}"
    day, day_reason = parse_timestamp("usage_day")
    conversions += [day.alias("__value_usage_day"), day_reason.alias("__reason_usage_day")]
    reasons["usage_day"] = "__reason_usage_day"
    known = sorted(LINE_ITEM_CHARGE_CATEGORY)
    conversions.append(
        pl.when(pl.col("line_item_type").is_null() | ~pl.col("line_item_type").is_in(known))
        .then(pl.lit(f"not a known CUR line item type ({', '.join(known)})"))
        .alias("__reason_line_item_type")
    )
    reasons["line_item_type"] = "__reason_line_item_type"
    for name in ("billed_cost", "usage_day", "currency"):
        conversions.append(
            pl.when(pl.col(name).is_null())
            .then(pl.lit("missing value in a mandatory column"))
            .alias(f"__missing_{name}")
        )
    converted = frame.with_columns(conversions).with_columns(
        pl.coalesce(f"__missing_{name}", reasons.get(name, f"__missing_{name}")).alias(
            f"__check_{name}"
        )
        for name in ("billed_cost", "usage_day", "currency")
    )
    reasons.update({name: f"__check_{name}" for name in ("billed_cost", "usage_day", "currency")})
    rejects = rejects_from(converted, reasons, file=origin, row_column="__row")
    good = converted.filter(~pl.col("__row").is_in(rejects["row"].unique().implode()))
    tag_keys = list(settings.tags)
    tags: list[str | None] = [None] * good.height
    if tag_keys:
        tag_values = good.select(f"tag_{i}" for i in range(len(tag_keys))).iter_rows()
        tags = [
            tags_to_json({key: value for key, value in zip(tag_keys, values, strict=True) if value})
            for values in tag_values
        ]
    category = pl.col("line_item_type").replace_strict(LINE_ITEM_CHARGE_CATEGORY, default=None)
    is_usage = category == "Usage"
    billing = good.select(
        pl.col("__value_usage_day").alias("ChargePeriodStart"),
        (pl.col("__value_usage_day") + pl.duration(days=1)).alias("ChargePeriodEnd"),
        pl.col("__value_billed_cost").alias("BilledCost"),
        pl.col("__value_effective_cost").alias("EffectiveCost"),
        pl.when(is_usage).then(pl.col("__value_usage_amount")).alias("ConsumedQuantity"),
        pl.when(is_usage).then(pl.col("unit")).alias("ConsumedUnit"),
        pl.col("__value_usage_amount").alias("PricingQuantity"),
        pl.col("unit").alias("PricingUnit"),
        pl.col("currency").alias("BillingCurrency"),
        pl.col("account_id").alias("SubAccountId"),
        pl.col("resource_id").alias("ResourceId"),
        pl.col("usage_type").alias("x_UsageType"),
        pl.col("instance_type").alias("x_InstanceType"),
        pl.col("product_code").alias("ServiceName"),
        category.alias("ChargeCategory"),
        pl.lit("AWS").alias("ProviderName"),
        pl.lit("AWS").alias("ServiceProviderName"),
        pl.Series("Tags", tags, dtype=pl.String),
        pl.lit(source).alias("x_Source"),
        pl.lit(ingested_at).cast(UTC_TIME).alias("x_IngestedAt"),
    )
    # FOCUS ServiceCategory from the product code, as for aws-cur (unmapped ones stay null).
    billing, _ = with_service_category(billing, pl.col("ServiceName"), "aws")
    return BILLING.conform(billing, source), rejects
