"""``gcp-bigquery``: the Cloud Billing export in BigQuery, aggregated per day, into ``billing``.

The heavy lifting stays in BigQuery: one query, pruned to the window's partitions, sums the
export's rows per UTC day x project x service x SKU x resource (detailed export) x labels, and
only those daily rollups come down, through Arrow. A dry run estimates the bytes first and the
collector refuses to run a query above ``max_bytes_billed``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import polars as pl
from pydantic import Field

from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.gcp_common import (
    PROVIDER_NAME,
    SECONDS_PER_HOUR,
    client_options,
    describe_google_error,
    frame_from_arrow,
    gpu_sku,
    labels_to_tags,
    parse_label_json,
)
from gpucost.collector.parsing import parse_money, rejects_from
from gpucost.collector.service_category import with_service_category
from gpucost.core.contracts import BILLING, MONEY, UTC_TIME
from gpucost.core.errors import CollectorError, MissingDependencyError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

ExportKind = Literal["auto", "standard", "detailed"]
PartitionFilter = Literal["auto", "_PARTITIONTIME", "usage_start_time", "export_time", "none"]

_PROJECT = r"[a-z0-9][a-z0-9.:-]*[a-z0-9]"
_NAME = r"[A-Za-z0-9_]+"
TABLE_PATTERN = rf"^{_PROJECT}\.{_NAME}\.{_NAME}$"
"""``project.dataset.table``. Dataset and table names are letters, digits and underscores (the
export's own names are ``gcp_billing_export_v1_…`` and ``gcp_billing_export_resource_v1_…``),
which also keeps the name safe to paste between backticks in SQL: it cannot close them."""

# Column names of the standard export the query reads (Google, "Structure of Standard data
# export"); the detailed export adds ``resource`` (and ``price``), newer tables ``cost_at_list``.
REQUIRED_FIELDS = (
    "billing_account_id",
    "service",
    "sku",
    "usage_start_time",
    "project",
    "labels",
    "location",
    "export_time",
    "cost",
    "currency",
    "currency_conversion_rate",
    "usage",
    "credits",
    "invoice",
    "cost_type",
)

# cost_type -> FOCUS ChargeCategory, as the FOCUS converters map it (finopsfoundation/
# focus_converters, conversion_rules gcp.csv, ChargeCategory: tax -> Tax, regular -> Usage,
# adjustment / credit / rounding_error -> Adjustment).
CHARGE_CATEGORIES: Mapping[str, str] = {
    "regular": "Usage",
    "tax": "Tax",
    "adjustment": "Adjustment",
    "credit": "Adjustment",
    "rounding_error": "Adjustment",
}
INVOICE_TIME_ZONE = ZoneInfo("America/Los_Angeles")
"""Google invoices months in Pacific time (focus_converters' BillingPeriodStart rule parses
``invoice.month`` as %Y%m in America/Los_Angeles, then converts to UTC)."""
MACHINE_SPEC_LABEL = "compute.googleapis.com/machine_spec"
"""System label carrying the VM's machine type (``a2-highgpu-1g``), per the export schema."""
CONVERSION_RATE_COLUMN = "x_CurrencyConversionRate"
"""Kept in billing once the contract declares it; until then it goes to the run notes."""

RESULT_MONEY_COLUMNS = (
    "cost",
    "credits",
    "cost_at_list",
    "usage_amount",
    "usage_amount_in_pricing_units",
    "currency_conversion_rate",
)
"""Query result columns holding NUMERIC sums written as text, parsed exactly here."""


class GcpBigQuerySettings(SourceSettings):
    """Settings of a ``gcp-bigquery`` source."""

    table: str = Field(
        pattern=TABLE_PATTERN,
        description="The export table, project.dataset.table "
        "(gcp_billing_export_v1_… standard, gcp_billing_export_resource_v1_… detailed).",
    )
    project: str | None = Field(
        default=None,
        pattern=rf"^{_PROJECT}$",
        description="Project that runs (and pays for) the query jobs; the table's by default.",
    )
    location: str | None = Field(
        default=None, description="Location of the export dataset (US, EU, us-central1...)."
    )
    export: ExportKind = Field(
        default="auto",
        description="standard or detailed; auto reads it from the table (detailed has resource).",
    )
    partition_filter: PartitionFilter = Field(
        default="auto",
        description="How the query prunes partitions; auto reads the table's partitioning.",
    )
    export_lag_days: int = Field(
        default=5,
        ge=0,
        le=62,
        description="Days after the window whose export partitions are scanned for late rows.",
    )
    max_bytes_billed: int = Field(
        default=50 * 2**30,
        gt=0,
        description="Refuse a query whose dry run estimates more bytes (also set on the job).",
    )
    job_timeout_s: float = Field(default=900.0, gt=0, description="Wait at most this long.")
    api_endpoint: str | None = Field(
        default=None, description="BigQuery API endpoint override (Private Service Connect)."
    )


@dataclass(frozen=True)
class TableShape:
    """What the export table offers, read from its metadata (tables.get)."""

    detailed: bool
    has_cost_at_list: bool
    has_system_labels: bool
    partition_column: str | None
    """``_PARTITIONTIME`` for ingestion-time partitioning, a column name, or None."""

    @classmethod
    def from_table(cls, table: Any) -> TableShape:
        """From a ``google.cloud.bigquery.Table``; raises ValueError for a non-export table."""
        names = {field.name for field in table.schema}
        missing = [name for name in REQUIRED_FIELDS if name not in names]
        if missing:
            raise ValueError(
                f"lacks the billing export columns {', '.join(missing)}; "
                "is it a Cloud Billing export table?"
            )
        partitioning = table.time_partitioning
        # No field: ingestion-time partitioning, pruned through the _PARTITIONTIME pseudo column.
        column = None if partitioning is None else partitioning.field or "_PARTITIONTIME"
        return cls(
            detailed="resource" in names,
            has_cost_at_list="cost_at_list" in names,
            has_system_labels="system_labels" in names,
            partition_column=column,
        )


@dataclass(frozen=True)
class QueryPlan:
    """The SQL, its parameters and how it prunes partitions."""

    sql: str
    parameters: Mapping[str, tuple[str, Any]]
    """name -> (BigQuery type, value)."""
    partition_note: str


@register("gcp-bigquery")
class GcpBigQuery:
    """Reads the Cloud Billing export (standard or detailed) from BigQuery into billing rows.

    One query per run sums the window's export rows per UTC day, project, service, SKU,
    resource (detailed export), cost type, currency, location and label set; costs and credits
    are summed as NUMERIC in BigQuery and parsed exactly (never as floats). EffectiveCost is
    cost + credits; labels, system labels and project labels become Tags. GPU SKUs ("Nvidia
    Tesla T4 GPU running in Americas") get x_GpuModel and x_GpuHours (usage seconds / 3600).
    A dry run estimates the bytes first: above ``max_bytes_billed`` nothing runs.

    Credentials are Google's Application Default Credentials (a service account key through
    GOOGLE_APPLICATION_CREDENTIALS, workload identity, or ``gcloud auth application-default``).

    ```toml
    [[sources]]
    name = "gcp-billing"
    kind = "gcp-bigquery"
    table = "billing-admin.billing_export.gcp_billing_export_resource_v1_0123AB_4567CD_89EF01"
    project = "finops-jobs"        # runs the query jobs; default: the table's project
    location = "US"                # the export dataset's location
    export = "auto"                # auto | standard | detailed
    partition_filter = "auto"      # auto | _PARTITIONTIME | usage_start_time | export_time | none
    export_lag_days = 5            # scan partitions this many days past the window (late rows)
    max_bytes_billed = 53687091200 # 50 GiB: refuse bigger queries
    schedule = "0 4 * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("billing",)
    Settings: ClassVar[type[SourceSettings]] = GcpBigQuerySettings

    def __init__(self, settings: GcpBigQuerySettings, context: CollectorContext) -> None:
        """The client is created at each collection, from the context's credentials."""
        self.settings, self.context, self.name = settings, context, settings.name
        self.table = settings.table

    def collect(self, window: Window) -> Collected:
        """Dry-run, then run the window's aggregation query and map its rows to billing."""
        try:
            from google.api_core import exceptions as google_exceptions
            from google.cloud import bigquery
        except ImportError as error:
            raise MissingDependencyError(
                "google-cloud-bigquery", "the gcp-bigquery collector"
            ) from error
        client = bigquery.Client(
            project=self.settings.project or self.table.rsplit(".", 2)[0],
            location=self.settings.location,
            credentials=self.context.google_credentials(),
            client_options=client_options(self.settings.api_endpoint),
        )
        shape = self._table_shape(client, google_exceptions)
        plan = plan_query(
            self.table,
            shape,
            window,
            partition_filter=self.settings.partition_filter,
            export_lag_days=self.settings.export_lag_days,
        )
        parameters = [
            bigquery.ScalarQueryParameter(name, kind, value)
            for name, (kind, value) in plan.parameters.items()
        ]
        estimate = self._dry_run(client, bigquery, google_exceptions, plan, parameters)
        limit = self.settings.max_bytes_billed
        if estimate > limit:
            raise CollectorError(
                self.name,
                f"dry run of the query on {self.table} for {window} estimates {estimate:,} "
                f"bytes ({_gib(estimate)}), above max_bytes_billed {limit:,} "
                f"({_gib(limit)}); nothing was run. Collect a shorter window, "
                f"check that partitions are pruned ({plan.partition_note}) or raise the limit.",
            )
        job_config = bigquery.QueryJobConfig(
            query_parameters=parameters,
            maximum_bytes_billed=limit,  # BigQuery enforces it too
            labels={"application": "gpucost", "gpucost-source": self.name},
        )
        try:
            job = client.query(
                plan.sql,
                job_config=job_config,
                location=self.settings.location,
                job_id_prefix="gpucost_",
                api_method="INSERT",  # jobs.insert + jobs.getQueryResults
            )
            rows = job.result(timeout=self.settings.job_timeout_s)
            # Daily rollups are small (days x projects x SKUs), so the REST pages suffice; the
            # BigQuery Storage API would add a dependency and a permission for no gain.
            arrow = rows.to_arrow(create_bqstorage_client=False)
        except google_exceptions.GoogleAPIError as error:
            job_id = getattr(getattr(error, "query_job", None), "job_id", None)
            what = f"BigQuery query job {job_id}" if job_id else "BigQuery query"
            raise CollectorError(
                self.name, f"{what} on {self.table} failed: {describe_google_error(error)}"
            ) from error
        except TimeoutError as error:  # concurrent.futures.TimeoutError is TimeoutError
            raise CollectorError(
                self.name,
                f"BigQuery query on {self.table} ran past {self.settings.job_timeout_s} s",
            ) from error
        result = frame_from_arrow(arrow)
        billing, rejects, facts = export_rows_to_billing(
            result, self.name, self.context.clock(), source_label=self.table
        )
        notes: dict[str, Any] = {
            "table": self.table,
            "export": "detailed" if shape.detailed else "standard",
            "partition_filter": plan.partition_note,
            "bytes_estimated": estimate,
            "bytes_billed": getattr(job, "total_bytes_billed", None),
            "job_id": getattr(job, "job_id", None),
            "result_rows": result.height,
            **facts,
        }
        return Collected({"billing": billing}, rejects, notes)

    def _table_shape(self, client: Any, google_exceptions: Any) -> TableShape:
        try:
            table = client.get_table(self.table)
        except google_exceptions.GoogleAPIError as error:
            raise CollectorError(
                self.name, f"cannot read table {self.table}: {describe_google_error(error)}"
            ) from error
        try:
            shape = TableShape.from_table(table)
        except ValueError as error:
            raise CollectorError(self.name, f"table {self.table} {error}") from None
        if self.settings.export == "detailed" and not shape.detailed:
            raise CollectorError(
                self.name,
                f"table {self.table} has no `resource` column: it is a standard export, "
                "not the detailed one the settings name",
            )
        if self.settings.export == "standard" and shape.detailed:
            shape = TableShape(
                False, shape.has_cost_at_list, shape.has_system_labels, shape.partition_column
            )
        return shape

    def _dry_run(
        self,
        client: Any,
        bigquery: Any,
        google_exceptions: Any,
        plan: QueryPlan,
        parameters: Sequence[Any],
    ) -> int:
        config = bigquery.QueryJobConfig(
            dry_run=True, use_query_cache=False, query_parameters=list(parameters)
        )
        try:
            job = client.query(
                plan.sql, job_config=config, location=self.settings.location, api_method="INSERT"
            )
        except google_exceptions.GoogleAPIError as error:
            raise CollectorError(
                self.name,
                f"dry run of the query on {self.table} failed: {describe_google_error(error)}",
            ) from error
        return int(job.total_bytes_processed or 0)


def _gib(count: int) -> str:
    return f"{Decimal(count) / Decimal(2**30):.2f} GiB"


def _labels_json(path: str) -> str:
    # Sorted, so the same label set always serialises to the same text and groups together.
    return (
        "(SELECT TO_JSON_STRING(ARRAY_AGG(STRUCT(label.key AS key, label.value AS value) "  # noqa: S608
        f"ORDER BY label.key, label.value)) FROM UNNEST({path}) AS label)"
    )


def plan_query(
    table: str,
    shape: TableShape,
    window: Window,
    *,
    partition_filter: PartitionFilter = "auto",
    export_lag_days: int = 5,
) -> QueryPlan:
    """The aggregation query for ``window`` (pure; the table name is validated by pattern).

    Costs, credits and usage are FLOAT64 in the export. Each value is cast to NUMERIC (rounded
    to 9 decimal places, which gives back the decimal the export wrote for any amount with at
    most 9 decimals) before summing, so sums are exact; Google's own "total_exact" examples
    sum micros for the same reason (Cloud Billing, "Example queries for Cloud Billing data
    export"). Sums travel as text and are parsed into Decimal(38, 18) by the collector.
    """
    if not re.match(TABLE_PATTERN, table):
        raise ValueError(f"table {table!r} is not project.dataset.table")
    column = shape.partition_column if partition_filter == "auto" else partition_filter
    if column == "none":
        column = None
    parameters: dict[str, tuple[str, Any]] = {
        "window_start": ("TIMESTAMP", window.start_time),
        "window_end": ("TIMESTAMP", window.end_time),
    }
    # Rows reach the export hours to days after the usage they bill, so the partitions of a
    # window's usage are the window's days and the following export_lag_days; one day before
    # covers partitions cut on a non-UTC day.
    partition_start = window.start - timedelta(days=1)
    partition_end = window.end + timedelta(days=export_lag_days)
    if column is None:
        partition_where = ""
        partition_note = "none (the table is not partitioned: the query scans all of it)"
    elif column == "usage_start_time":
        partition_where = ""
        partition_note = "usage_start_time (the window's own days)"
    elif column == "_PARTITIONTIME":
        partition_where = (
            "\n    AND _PARTITIONTIME >= TIMESTAMP(@partition_start)"
            "\n    AND _PARTITIONTIME < TIMESTAMP(@partition_end)"
        )
        parameters["partition_start"] = ("DATE", partition_start)
        parameters["partition_end"] = ("DATE", partition_end)
        partition_note = f"_PARTITIONTIME in [{partition_start}, {partition_end})"
    elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", column):
        partition_where = (
            f"\n    AND {column} >= TIMESTAMP(@partition_start)"
            f"\n    AND {column} < TIMESTAMP(@partition_end)"
        )
        parameters["partition_start"] = ("DATE", partition_start)
        parameters["partition_end"] = ("DATE", partition_end)
        partition_note = f"{column} in [{partition_start}, {partition_end})"
    else:
        raise ValueError(f"partition column {column!r} is not a column name")

    resource_name = "resource.name" if shape.detailed else "CAST(NULL AS STRING)"
    resource_global = "resource.global_name" if shape.detailed else "CAST(NULL AS STRING)"
    list_cost = "CAST(cost_at_list AS NUMERIC)" if shape.has_cost_at_list else "NULL"
    system_labels = _labels_json("system_labels") if shape.has_system_labels else "NULL"
    dimensions = (
        "charge_day",
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
    )
    dimension_list = ",\n  ".join(dimensions)
    # Only validated names are pasted in (TABLE_PATTERN, fixed column paths); every value is a
    # query parameter.
    sql = f"""WITH charges AS (
  SELECT
    TIMESTAMP_TRUNC(usage_start_time, DAY) AS charge_day,
    invoice.month AS invoice_month,
    billing_account_id,
    cost_type,
    project.id AS project_id,
    project.name AS project_name,
    service.id AS service_id,
    service.description AS service_description,
    sku.id AS sku_id,
    sku.description AS sku_description,
    COALESCE(location.region, location.location) AS region,
    location.zone AS zone,
    {resource_name} AS resource_name,
    {resource_global} AS resource_global_name,
    currency,
    CAST(CAST(currency_conversion_rate AS NUMERIC) AS STRING) AS currency_conversion_rate,
    usage.unit AS usage_unit,
    usage.pricing_unit AS pricing_unit,
    {_labels_json("labels")} AS labels_json,
    {system_labels} AS system_labels_json,
    {_labels_json("project.labels")} AS project_labels_json,
    CAST(cost AS NUMERIC) AS cost,
    (SELECT SUM(CAST(credit.amount AS NUMERIC)) FROM UNNEST(credits) AS credit) AS credits,
    {list_cost} AS cost_at_list,
    CAST(usage.amount AS NUMERIC) AS usage_amount,
    CAST(usage.amount_in_pricing_units AS NUMERIC) AS usage_amount_in_pricing_units,
    export_time
  FROM `{table}`
  WHERE usage_start_time >= @window_start
    AND usage_start_time < @window_end{partition_where}
)
SELECT
  {dimension_list},
  CAST(SUM(cost) AS STRING) AS cost,
  CAST(IFNULL(SUM(credits), 0) AS STRING) AS credits,
  CAST(SUM(cost_at_list) AS STRING) AS cost_at_list,
  CAST(SUM(usage_amount) AS STRING) AS usage_amount,
  CAST(SUM(usage_amount_in_pricing_units) AS STRING) AS usage_amount_in_pricing_units,
  COUNT(*) AS export_rows,
  MAX(export_time) AS last_export_time
FROM charges
GROUP BY
  {dimension_list}
ORDER BY
  {dimension_list}
"""  # noqa: S608
    return QueryPlan(sql, parameters, partition_note)


def _billing_period(invoice_month: str) -> tuple[datetime, datetime]:
    """``YYYYMM`` -> the invoice month's [start, end) in UTC (months are Pacific time)."""
    if not re.fullmatch(r"\d{6}", invoice_month):
        raise ValueError("invoice month is not YYYYMM")
    year, month = int(invoice_month[:4]), int(invoice_month[4:])
    if not 1 <= month <= 12:
        raise ValueError("invoice month is not YYYYMM")
    start = datetime(year, month, 1, tzinfo=INVOICE_TIME_ZONE)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=INVOICE_TIME_ZONE)
    return start.astimezone(UTC), end.astimezone(UTC)


def export_rows_to_billing(
    result: pl.DataFrame, source: str, ingested_at: datetime, *, source_label: str
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Map the aggregation query's rows to billing rows (pure).

    Returns (billing rows, rejects, facts for the run notes). A row whose sums do not parse
    exactly, whose cost type is unknown or whose labels are not JSON is rejected whole, naming
    the result row (1-based, in the query's ORDER BY order) and the field.
    """
    if result.height == 0:  # also covers a result without columns (an empty iterator)
        return BILLING.empty(), rejects_from(result, {}, file=source_label, row_column=""), {}
    frame = result.with_row_index("__row", offset=1)
    for name in RESULT_MONEY_COLUMNS:
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(name))
    conversions: list[pl.Expr] = []
    reasons: dict[str, str] = {}
    for name in RESULT_MONEY_COLUMNS:
        value, reason = parse_money(name)
        conversions += [value.alias(f"__value_{name}"), reason.alias(f"__reason_{name}")]
        reasons[name] = f"__reason_{name}"
    known = list(CHARGE_CATEGORIES)
    conversions.append(
        pl.when(pl.col("cost_type").is_null() | ~pl.col("cost_type").is_in(known))
        .then(pl.lit(f"unknown cost_type (known: {', '.join(known)})"))
        .alias("__reason_cost_type")
    )
    reasons["cost_type"] = "__reason_cost_type"
    conversions.append(
        pl.when(pl.col("cost").is_null() | pl.col("currency").is_null())
        .then(pl.lit("no cost or currency"))
        .alias("__reason_currency")
    )
    reasons["currency"] = "__reason_currency"
    frame = frame.with_columns(conversions)

    # Distinct values are few (label sets, invoice months, SKUs): decide each once in Python.
    frame = frame.with_columns(_LABEL_KEY.alias("__label_key"))
    tags, tag_reasons, machine_types = _tags_by_label_sets(frame["__label_key"])
    frame = frame.with_columns(
        pl.col("__label_key")
        .replace_strict(tags, default=None, return_dtype=pl.String)
        .alias("__tags"),
        pl.col("__label_key")
        .replace_strict(tag_reasons, default=None, return_dtype=pl.String)
        .alias("__reason_labels_json"),
        pl.col("__label_key")
        .replace_strict(machine_types, default=None, return_dtype=pl.String)
        .alias("__machine_type"),
    )
    reasons["labels_json"] = "__reason_labels_json"
    periods, period_reasons = {}, {}
    for month in frame["invoice_month"].drop_nulls().unique().to_list():
        try:
            periods[month] = _billing_period(month)
        except ValueError as error:
            period_reasons[month] = str(error)
    frame = frame.with_columns(
        pl.col("invoice_month")
        .replace_strict(period_reasons, default=None, return_dtype=pl.String)
        .alias("__reason_invoice_month"),
        pl.col("invoice_month")
        .replace_strict(
            {month: start for month, (start, _) in periods.items()},
            default=None,
            return_dtype=UTC_TIME,
        )
        .alias("__period_start"),
        pl.col("invoice_month")
        .replace_strict(
            {month: end for month, (_, end) in periods.items()},
            default=None,
            return_dtype=UTC_TIME,
        )
        .alias("__period_end"),
    )
    reasons["invoice_month"] = "__reason_invoice_month"
    descriptions = frame["sku_description"].drop_nulls().unique().to_list()
    skus = {description: gpu_sku(description) for description in descriptions}
    frame = frame.with_columns(
        pl.col("sku_description")
        .replace_strict({d: s.model for d, s in skus.items()}, default=None, return_dtype=pl.String)
        .alias("__gpu_model"),
        pl.col("sku_description")
        .replace_strict(
            {d: s.meters_gpu_time for d, s in skus.items()}, default=False, return_dtype=pl.Boolean
        )
        .alias("__gpu_time"),
    )

    rejects = rejects_from(frame, reasons, file=source_label, row_column="__row")
    good = frame.filter(~pl.col("__row").is_in(rejects["row"].unique().implode()))
    cost = pl.col("__value_cost")
    credits = pl.col("__value_credits").fill_null(Decimal(0))
    usage = pl.col("__value_usage_amount")
    charge_day = pl.col("charge_day").cast(UTC_TIME)
    columns: list[pl.Expr] = [
        charge_day.alias("ChargePeriodStart"),
        charge_day.dt.offset_by("1d").alias("ChargePeriodEnd"),
        pl.col("__period_start").alias("BillingPeriodStart"),
        pl.col("__period_end").alias("BillingPeriodEnd"),
        pl.col("billing_account_id").alias("BillingAccountId"),
        pl.col("project_id").alias("SubAccountId"),
        pl.col("project_name").alias("SubAccountName"),
        pl.col("service_description").alias("ServiceName"),
        pl.col("sku_id").alias("SkuId"),
        pl.col("sku_description").alias("ChargeDescription"),
        pl.col("region").alias("RegionId"),
        pl.col("zone").alias("AvailabilityZone"),
        pl.col("resource_global_name").alias("ResourceId"),
        pl.col("resource_name").alias("ResourceName"),
        pl.col("currency").alias("BillingCurrency"),
        cost.alias("BilledCost"),
        (cost + credits).cast(MONEY).alias("EffectiveCost"),
        pl.col("__value_cost_at_list").alias("ListCost"),
        usage.alias("ConsumedQuantity"),
        pl.col("usage_unit").alias("ConsumedUnit"),
        pl.col("__value_usage_amount_in_pricing_units").alias("PricingQuantity"),
        pl.col("pricing_unit").alias("PricingUnit"),
        pl.col("cost_type")
        .replace_strict(CHARGE_CATEGORIES, default=None, return_dtype=pl.String)
        .alias("ChargeCategory"),
        pl.when(pl.col("cost_type") == "regular")
        .then(pl.lit("Usage-Based"))
        .otherwise(None)
        .alias("ChargeFrequency"),
        pl.lit(PROVIDER_NAME).alias("ProviderName"),
        pl.lit(PROVIDER_NAME).alias("ServiceProviderName"),
        pl.lit(PROVIDER_NAME).alias("HostProviderName"),
        pl.col("__tags").alias("Tags"),
        pl.col("__machine_type").alias("x_InstanceType"),
        pl.col("__gpu_model").alias("x_GpuModel"),
        # usage.unit is "seconds" for GPU SKUs (Google's T4 sample: "Nvidia Tesla T4 GPU
        # running in Americas", usage_unit seconds); / 3600 rounds half-even at 18 decimals.
        pl.when(pl.col("__gpu_time") & (pl.col("usage_unit") == "seconds"))
        .then((usage / pl.lit(SECONDS_PER_HOUR)).cast(MONEY))
        .otherwise(None)
        .alias("x_GpuHours"),
        pl.lit(source).alias("x_Source"),
        pl.lit(ingested_at).cast(UTC_TIME).alias("x_IngestedAt"),
    ]
    if CONVERSION_RATE_COLUMN in BILLING.schema:  # pragma: no cover - once the contract has it
        columns.append(pl.col("__value_currency_conversion_rate").alias(CONVERSION_RATE_COLUMN))
    # FOCUS ServiceCategory from service.description (the FOCUS converters' GCP mapping).
    categorized, unmapped = with_service_category(
        good.select(columns), pl.col("ServiceName"), "gcp"
    )
    billing = BILLING.conform(categorized, source)
    rates = (
        good.select("currency", "currency_conversion_rate")
        .unique()
        .drop_nulls()
        .sort("currency", "currency_conversion_rate")
    )
    facts: dict[str, Any] = {
        "export_rows": int(good["export_rows"].sum()) if "export_rows" in good.columns else None,
        "currency_conversion_rates": [
            f"{row['currency']} {row['currency_conversion_rate']}"
            for row in rates.iter_rows(named=True)
        ],
        "gpu_skus": sorted({s.model for s in skus.values() if s.model}),
    }
    if unmapped:
        facts["service_category_unmapped"] = unmapped
    if "last_export_time" in good.columns and good.height:
        latest = good["last_export_time"].max()
        facts["latest_export_time"] = latest.isoformat() if isinstance(latest, datetime) else None
    return billing, rejects, facts


# One text key per (project labels, labels, system labels) triple. The unit separator cannot
# occur raw in JSON text (RFC 8259 section 7: control characters are escaped in strings).
_LABEL_SEPARATOR = "\x1f"
_LABEL_KEY = pl.concat_str(
    [
        pl.col(name).fill_null("")
        for name in ("project_labels_json", "labels_json", "system_labels_json")
    ],
    separator=_LABEL_SEPARATOR,
)


def _tags_by_label_sets(
    keys: pl.Series,
) -> tuple[dict[str, str | None], dict[str, str | None], dict[str, str | None]]:
    """Tags, reason and machine type for every distinct (project, resource, system) label set.

    Project labels come first so that a resource label with the same key wins; system labels
    (``compute.googleapis.com/machine_spec``, ``goog-…``) have namespaced keys and collide with
    neither.
    """
    tags: dict[str, str | None] = {}
    reasons: dict[str, str | None] = {}
    machine_types: dict[str, str | None] = {}
    for key in keys.unique().to_list():
        try:
            project_labels, labels, system_labels = (
                parse_label_json(text) for text in key.split(_LABEL_SEPARATOR)
            )
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            tags[key], reasons[key], machine_types[key] = None, f"labels: {error}", None
            continue
        tags[key] = labels_to_tags(project_labels, labels, system_labels)
        reasons[key] = None
        machine_types[key] = next(
            (
                str(label.get("value"))
                for label in system_labels
                if label.get("key") == MACHINE_SPEC_LABEL
            ),
            None,
        )
    return tags, reasons, machine_types
