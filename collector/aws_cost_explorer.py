"""``aws-cost-explorer``: daily AWS cost from the Cost Explorer API (``ce:GetCostAndUsage``).

The quickest way to AWS cost (no export to set up), at the grain Cost Explorer aggregates to:
one row per day and group. Cost Explorer bills every request ($0.01 per paginated API request,
AWS Cost Explorer pricing), so the collector counts the requests it makes, logs them and
records them in the run manifest.

FOCUS mapping (one row per ``ResultsByTime`` entry and group):

==========================  ==============================================================
FOCUS column                Cost Explorer field
==========================  ==============================================================
ChargePeriodStart / End     ``TimePeriod.Start`` / ``TimePeriod.End`` (UTC days; End exclusive)
BilledCost                  ``UnblendedCost.Amount`` (text, parsed to Decimal exactly)
BillingCurrency             ``UnblendedCost.Unit``
EffectiveCost               ``AmortizedCost.Amount`` or ``NetAmortizedCost.Amount``
ConsumedQuantity / Unit     ``UsageQuantity.Amount`` / ``.Unit`` (``N/A`` when units mix)
SubAccountId                group ``DIMENSION LINKED_ACCOUNT``
ServiceName                 group ``DIMENSION SERVICE``
ServiceCategory/Subcategory the SERVICE name's product code (:mod:`.service_category`)
RegionId / AvailabilityZone group ``DIMENSION REGION`` / ``AZ``
x_InstanceType              group ``DIMENSION INSTANCE_TYPE``
x_UsageType                 group ``DIMENSION USAGE_TYPE``
ChargeCategory              group ``DIMENSION RECORD_TYPE`` (mapped; other values: null)
PricingCategory             group ``DIMENSION PURCHASE_TYPE`` (mapped)
ResourceId                  group ``DIMENSION RESOURCE_ID`` (GetCostAndUsageWithResources)
Tags                        group ``TAG <key>``: key ``project$llm`` -> ``{"project":"llm"}``;
                            ``project$`` (untagged) -> the key is absent
ProviderName                ``AWS``
==========================  ==============================================================

Cost Explorer allows at most two ``GroupBy`` entries per request (API reference,
``GetCostAndUsage``), and resource-level data (``GetCostAndUsageWithResources``) only for the
last 14 days, after opting in, with a ``Filter`` and DAILY or HOURLY granularity.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from gpucost.collector.aws_common import AwsClients, AwsSourceSettings
from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.parsing import (
    blank_to_null,
    parse_money,
    parse_timestamp,
    rejects_from,
    tags_to_json,
)
from gpucost.collector.service_category import (
    aws_service_key,
    unmapped_services,
    with_service_category,
)
from gpucost.core.contracts import BILLING, UTC_TIME
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

PRICE_PER_REQUEST_USD = Decimal("0.01")
"""AWS Cost Explorer pricing: $0.01 per paginated API request."""

RESOURCE_LOOKBACK_DAYS = 14
"""GetCostAndUsageWithResources: "data is available for the last 14 days only"."""

MAX_GROUP_BY = 2
"""GetCostAndUsage: "You can group AWS costs using up to two different groups"."""

DIMENSION_COLUMNS: Mapping[str, str] = {
    "LINKED_ACCOUNT": "SubAccountId",
    "SERVICE": "ServiceName",
    "REGION": "RegionId",
    "AZ": "AvailabilityZone",
    "INSTANCE_TYPE": "x_InstanceType",
    "USAGE_TYPE": "x_UsageType",
    "RECORD_TYPE": "ChargeCategory",
    "PURCHASE_TYPE": "PricingCategory",
    "RESOURCE_ID": "ResourceId",
}
"""Group-by dimensions with a billing column; others would give rows no column tells apart."""

RECORD_TYPE_CATEGORY: Mapping[str, str] = {
    "Usage": "Usage",
    "DiscountedUsage": "Usage",
    "SavingsPlanCoveredUsage": "Usage",
    "SavingsPlanNegation": "Usage",
    "Tax": "Tax",
    "Credit": "Credit",
    "Refund": "Adjustment",
    "Recurring reservation fee": "Purchase",
    "Upfront reservation fee": "Purchase",
    "SavingsPlanRecurringFee": "Purchase",
    "SavingsPlanUpfrontFee": "Purchase",
    "Support fee": "Purchase",
    "Enterprise Discount Program Discount": "Usage",
    "Bundled Discount": "Usage",
    "Private Rate Card Discount": "Usage",
    "Distributor Discount": "Usage",
}
"""Cost Explorer RECORD_TYPE values -> FOCUS ChargeCategory (unknown values: null)."""

PURCHASE_TYPE_CATEGORY: Mapping[str, str] = {
    "On Demand Instances": "Standard",
    "Spot Instances": "Dynamic",
    "Standard Reserved Instances": "Committed",
    "Convertible Reserved Instances": "Committed",
    "Reserved Instances": "Committed",
    "Savings Plans": "Committed",
    "Dedicated Reserved Instances": "Committed",
}
"""Cost Explorer PURCHASE_TYPE values -> FOCUS PricingCategory (unknown values: null)."""

EffectiveMetric = Literal["AmortizedCost", "NetAmortizedCost"]


class CostExplorerSettings(AwsSourceSettings):
    """Settings of an ``aws-cost-explorer`` source."""

    group_by: list[str] = Field(
        default_factory=lambda: ["LINKED_ACCOUNT", "TAG:project"],
        description=(
            "Up to two groupings: dimensions (LINKED_ACCOUNT, SERVICE, REGION, AZ, INSTANCE_TYPE, "
            "USAGE_TYPE, RECORD_TYPE, PURCHASE_TYPE, RESOURCE_ID) or TAG:<key>."
        ),
    )
    effective_cost_metric: EffectiveMetric = Field(
        default="AmortizedCost", description="Metric that becomes EffectiveCost."
    )
    with_resources: bool = Field(
        default=False,
        description="Use GetCostAndUsageWithResources (opt-in; last 14 days only).",
    )
    resource_services: list[str] = Field(
        default_factory=lambda: ["Amazon Elastic Compute Cloud - Compute"],
        description="SERVICE filter that GetCostAndUsageWithResources requires.",
    )

    @field_validator("group_by")
    @classmethod
    def _known_groups(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry.startswith("TAG:"):
                if not entry[4:]:
                    raise ValueError("TAG: needs a tag key, e.g. TAG:project")
            elif entry not in DIMENSION_COLUMNS:
                known = ", ".join(DIMENSION_COLUMNS)
                raise ValueError(f"group_by {entry!r}: use TAG:<key> or one of {known}")
        if len(set(value)) != len(value):
            raise ValueError("group_by lists a grouping twice")
        return value

    @model_validator(mode="after")
    def _fits_the_api(self) -> CostExplorerSettings:
        groups = resource_group_by(self.group_by) if self.with_resources else self.group_by
        if len(groups) > MAX_GROUP_BY:
            extra = " (with_resources adds RESOURCE_ID)" if self.with_resources else ""
            raise ValueError(f"Cost Explorer groups by at most {MAX_GROUP_BY} keys{extra}")
        if "RESOURCE_ID" in self.group_by and not self.with_resources:
            raise ValueError("RESOURCE_ID grouping needs with_resources = true")
        if self.with_resources and not self.resource_services:
            raise ValueError("with_resources needs resource_services (AWS requires a Filter)")
        return self


def resource_group_by(group_by: list[str]) -> list[str]:
    """Group-bys for GetCostAndUsageWithResources: RESOURCE_ID is always one of them."""
    return group_by if "RESOURCE_ID" in group_by else [*group_by, "RESOURCE_ID"]


@register("aws-cost-explorer")
class AwsCostExplorer:
    """Reads daily AWS cost per account, tag and more from Cost Explorer into the billing table.

    One ``GetCostAndUsage`` call per page (``NextPageToken``) for the whole window at DAILY
    granularity; amounts are text in the API and parsed to Decimal exactly. The number of
    requests (billed by AWS at $0.01 each) lands in the run manifest and the log.

    ```toml
    [[sources]]
    name = "aws-ce"
    kind = "aws-cost-explorer"
    group_by = ["LINKED_ACCOUNT", "TAG:project"]   # at most two: dimensions or TAG:<key>
    effective_cost_metric = "AmortizedCost"        # or NetAmortizedCost
    with_resources = false                         # true: per-resource rows, last 14 days only
    role_arn = "arn:aws:iam::123456789012:role/gpucost-ce-read"   # optional
    schedule = "0 6 * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("billing",)
    Settings: ClassVar[type[SourceSettings]] = CostExplorerSettings

    def __init__(self, settings: CostExplorerSettings, context: CollectorContext) -> None:
        self.settings, self.context, self.name = settings, context, settings.name
        self.clients = AwsClients.for_source(settings, context)
        self.group_by = (
            resource_group_by(settings.group_by) if settings.with_resources else settings.group_by
        )
        """What results are grouped by (RESOURCE_ID added when ``with_resources``)."""

    @property
    def operation(self) -> str:
        """The boto3 operation this source calls."""
        return (
            "get_cost_and_usage_with_resources"
            if self.settings.with_resources
            else "get_cost_and_usage"
        )

    def collect(self, window: Window) -> Collected:
        """Every day of ``window``, one row per day and group."""
        now = self.context.clock()
        if self.settings.with_resources:
            earliest = now.date() - timedelta(days=RESOURCE_LOOKBACK_DAYS)
            if window.start < earliest:
                raise CollectorError(
                    self.name,
                    f"with_resources: AWS keeps resource-level Cost Explorer data for the last "
                    f"{RESOURCE_LOOKBACK_DAYS} days only; the window starts {window.start}, the "
                    f"earliest day available is {earliest}. Collect older days without "
                    "with_resources, or from the CUR (aws-cur, aws-athena)",
                )
        results = list(self._results(window))
        rows = [row for result in results for row in self._rows(result)]
        origin = f"ce:{self.operation} {window}"
        billing, rejects = to_billing(rows, self.name, now, origin=origin)
        requests = self.clients.counter.total(self.operation)
        cost = PRICE_PER_REQUEST_USD * requests
        logger.info(
            "source %s: %d Cost Explorer %s requests (about $%s at $%s each)",
            self.name,
            requests,
            self.operation,
            cost,
            PRICE_PER_REQUEST_USD,
        )
        notes: dict[str, Any] = {
            "ce_requests": requests,
            "ce_estimated_cost_usd": str(cost),
            "group_by": self.group_by,
            "estimated_days": sorted(
                {r["TimePeriod"]["Start"] for r in results if r.get("Estimated")}
            ),
            "rows_read": len(rows),
        }
        missing = _missing_metric(results, self.settings.effective_cost_metric)
        if missing:
            # Cost Explorer answered without the metric asked for EffectiveCost: those rows
            # keep a null EffectiveCost (the allocator then uses BilledCost); say so.
            warning = (
                f"{missing} of {len(rows)} Cost Explorer rows came without the requested "
                f"{self.settings.effective_cost_metric}; their EffectiveCost is empty"
            )
            notes["warnings"] = [warning]
            logger.warning("source %s: %s", self.name, warning)
        unmapped = unmapped_services(billing)
        if unmapped:
            # Rows whose service the FOCUS ServiceCategory tables do not know (left null).
            notes["service_category_unmapped"] = unmapped
        notes.update(self.clients.counter.as_notes())
        return Collected({"billing": billing}, rejects, notes)

    def _request(self, window: Window) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TimePeriod": {"Start": window.start.isoformat(), "End": window.end.isoformat()},
            "Granularity": "DAILY",
            "Metrics": ["UnblendedCost", self.settings.effective_cost_metric, "UsageQuantity"],
        }
        if self.group_by:
            request["GroupBy"] = [
                {"Type": "TAG", "Key": entry[4:]}
                if entry.startswith("TAG:")
                else {"Type": "DIMENSION", "Key": entry}
                for entry in self.group_by
            ]
        if self.settings.with_resources:
            request["Filter"] = {
                "Dimensions": {"Key": "SERVICE", "Values": self.settings.resource_services}
            }
        return request

    def _results(self, window: Window) -> Iterator[dict[str, Any]]:
        """Every ``ResultsByTime`` entry, following ``NextPageToken``."""
        # Cost Explorer lives in us-east-1 only (endpoint ce.us-east-1.amazonaws.com).
        client = self.clients.client("ce", region="us-east-1")
        request = self._request(window)
        token: str | None = None
        while True:
            arguments = {**request, "NextPageToken": token} if token else request
            page = self.clients.call(client, self.operation, **arguments)
            yield from page.get("ResultsByTime", [])
            token = page.get("NextPageToken")
            if not token:
                return

    def _rows(self, result: Mapping[str, Any]) -> Iterator[dict[str, str | None]]:
        period = result.get("TimePeriod", {})
        base = {"ChargePeriodStart": period.get("Start"), "ChargePeriodEnd": period.get("End")}
        groups = result.get("Groups") or []
        if not groups:
            if self.group_by or not result.get("Total"):
                return  # a day with no cost for any group
            yield {**base, **self._metrics(result["Total"])}
            return
        for group in groups:
            row: dict[str, str | None] = {**base, **self._metrics(group.get("Metrics", {}))}
            tags: dict[str, str] = {}
            for entry, key in zip(self.group_by, group.get("Keys", []), strict=False):
                if entry.startswith("TAG:"):
                    name, _, value = str(key).partition("$")
                    if value:  # "project$" is the group of resources without the tag
                        tags[name or entry[4:]] = value
                else:
                    row[DIMENSION_COLUMNS[entry]] = _dimension_value(entry, str(key))
            if any(entry.startswith("TAG:") for entry in self.group_by):
                row["Tags"] = tags_to_json(tags)
            yield row

    def _metrics(self, metrics: Mapping[str, Any]) -> dict[str, str | None]:
        billed = metrics.get("UnblendedCost", {})
        effective = metrics.get(self.settings.effective_cost_metric, {})
        usage = metrics.get("UsageQuantity", {})
        unit = usage.get("Unit")
        return {
            "BilledCost": billed.get("Amount"),
            "BillingCurrency": billed.get("Unit"),
            "EffectiveCost": effective.get("Amount"),
            "ConsumedQuantity": usage.get("Amount"),
            # "N/A": the group mixes units (hours and GB), so the sum has none.
            "ConsumedUnit": None if unit in (None, "N/A") else unit,
        }


def _missing_metric(results: list[dict[str, Any]], metric: str) -> int:
    """Rows (groups, or a day's total) of the answer that lack ``metric``."""
    missing = 0
    for result in results:
        groups = result.get("Groups") or []
        entries = [g.get("Metrics", {}) for g in groups] or (
            [result["Total"]] if result.get("Total") else []
        )
        missing += sum(1 for metrics in entries if "Amount" not in metrics.get(metric, {}))
    return missing


def _dimension_value(dimension: str, value: str) -> str | None:
    if dimension == "RECORD_TYPE":
        return RECORD_TYPE_CATEGORY.get(value)
    if dimension == "PURCHASE_TYPE":
        return PURCHASE_TYPE_CATEGORY.get(value)
    # Cost Explorer names the group of costs without the dimension "NoResourceId", "No ...".
    if value == "" or (dimension == "RESOURCE_ID" and value.startswith("NoResourceId")):
        return None
    return value


TEXT_FIELDS = (
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BilledCost",
    "BillingCurrency",
    "EffectiveCost",
    "ConsumedQuantity",
    "ConsumedUnit",
    *DIMENSION_COLUMNS.values(),
    "Tags",
)


def to_billing(
    rows: list[dict[str, str | None]],
    source: str,
    ingested_at: datetime,
    *,
    origin: str = "ce:GetCostAndUsage",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Billing rows and rejects from Cost Explorer's text fields (pure)."""
    frame = pl.DataFrame(
        [{name: row.get(name) for name in TEXT_FIELDS} for row in rows],
        schema=dict.fromkeys(TEXT_FIELDS, pl.String),
        orient="row",
    )
    frame = frame.with_columns(blank_to_null(name) for name in frame.columns).with_row_index(
        "__row", offset=1
    )
    conversions: list[pl.Expr] = []
    reason_columns: dict[str, str] = {}
    for name in ("BilledCost", "EffectiveCost", "ConsumedQuantity"):
        value, reason = parse_money(name)
        conversions += [value.alias(f"__value_{name}"), reason.alias(f"__reason_{name}")]
        reason_columns[name] = f"__reason_{name}"
    for name in ("ChargePeriodStart", "ChargePeriodEnd"):
        value, reason = parse_timestamp(name)
        conversions += [value.alias(f"__value_{name}"), reason.alias(f"__reason_{name}")]
        reason_columns[name] = f"__reason_{name}"
    converted = frame.with_columns(conversions)
    checks = []
    for name in ("BilledCost", "BillingCurrency", "ChargePeriodStart", "ChargePeriodEnd"):
        missing = pl.when(pl.col(name).is_null()).then(pl.lit("missing in the API response"))
        parsed = reason_columns.get(name)
        checks.append(
            (pl.coalesce(missing, pl.col(parsed)) if parsed else missing).alias(f"__check_{name}")
        )
        reason_columns[name] = f"__check_{name}"
    converted = converted.with_columns(checks)
    rejects = rejects_from(converted, reason_columns, file=origin, row_column="__row")
    good = converted.filter(~pl.col("__row").is_in(rejects["row"].unique().implode()))
    billing = good.select(
        *(
            pl.col(f"__value_{name}").alias(name)
            if f"__value_{name}" in good.columns
            else pl.col(name)
            for name in TEXT_FIELDS
        ),
        pl.lit("AWS").alias("ProviderName"),
        pl.lit("AWS").alias("ServiceProviderName"),
        pl.lit(source).alias("x_Source"),
        pl.lit(ingested_at).cast(UTC_TIME).alias("x_IngestedAt"),
    )
    # FOCUS ServiceCategory from the SERVICE group's name (null without that grouping).
    billing, _ = with_service_category(
        billing, aws_service_key(pl.lit(None, pl.String), pl.col("ServiceName")), "aws"
    )
    return BILLING.conform(billing, source), rejects
