"""CUR line items as FOCUS billing rows: the ``aws-cur`` collector's column mapping (pure).

Legacy CUR headers (``lineItem/UnblendedCost``) and CUR 2.0 or Athena names
(``line_item_unblended_cost``) are read alike through
:func:`gpucost.collector.aws_common.cur_column_name`. FOCUS columns come from these CUR
columns (snake_case names), after the FinOps Foundation's focus_converters ``aws-cur`` rules:

============================  ======================================================
FOCUS column                  CUR column
============================  ======================================================
BilledCost                    line_item_unblended_cost
EffectiveCost                 amortized: SP/RI effective cost by line item type
                              (:data:`gpucost.collector.aws_common.EFFECTIVE_COST_RULES`)
ListCost / ListUnitPrice      pricing_public_on_demand_cost / _rate
ConsumedQuantity / Unit       line_item_usage_amount / pricing_unit (usage rows only)
PricingQuantity / Unit        line_item_usage_amount / pricing_unit
ChargePeriodStart / End       line_item_usage_start_date / _end_date
BillingPeriodStart / End      bill_billing_period_start_date / _end_date
ChargeCategory                line_item_line_item_type (mapped; unknown -> rejected)
BillingAccountId / Name       bill_payer_account_id / _name
SubAccountId / Name           line_item_usage_account_id / _name
ResourceId                    line_item_resource_id
ServiceName                   product_product_name, else product_servicename
ServiceCategory / Subcategory line_item_product_code (:mod:`.service_category`)
RegionId / RegionName         product_region_code (or product_region) / product_location
SkuId / SkuPriceId            product_sku / pricing_rate_code (or pricing_rate_id)
CommitmentDiscountId          savings_plan_savings_plan_arn, else reservation ARN
Tags                          resourceTags/user:* columns or the resource_tags map
x_UsageType / x_InstanceType  line_item_usage_type / product_instance_type
============================  ======================================================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from gpucost.collector.aws_common import (
    EFFECTIVE_COST_RULES,
    LINE_ITEM_CHARGE_CATEGORY,
    LINE_ITEM_CHARGE_FREQUENCY,
    RESERVATION_ARN_COLUMN,
    cur_column_name,
    cur_tag_key,
)
from gpucost.collector.parsing import (
    blank_to_null,
    parse_money,
    parse_timestamp,
    rejects_from,
    tags_to_json,
)
from gpucost.collector.service_category import aws_service_key, with_service_category
from gpucost.core.contracts import BILLING, MONEY, UTC_TIME
from gpucost.core.errors import CollectorError

logger = logging.getLogger(__name__)

REQUIRED = (
    "line_item_unblended_cost",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_currency_code",
    "line_item_line_item_type",
)
"""CUR columns without which a line cannot become a billing row."""

NOT_NULL = (
    "line_item_unblended_cost",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_currency_code",
)
"""Values a billing row cannot do without (BilledCost, ChargePeriodStart/End, BillingCurrency)."""

LEGACY_NAMES = {
    "line_item_unblended_cost": "lineItem/UnblendedCost",
    "line_item_usage_start_date": "lineItem/UsageStartDate",
    "line_item_usage_end_date": "lineItem/UsageEndDate",
    "line_item_currency_code": "lineItem/CurrencyCode",
    "line_item_line_item_type": "lineItem/LineItemType",
}

TEXT_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "BillingAccountId": ("bill_payer_account_id",),
    "BillingAccountName": ("bill_payer_account_name",),
    "InvoiceId": ("bill_invoice_id",),
    "InvoiceIssuerName": ("bill_invoicing_entity",),
    "SubAccountId": ("line_item_usage_account_id",),
    "SubAccountName": ("line_item_usage_account_name",),
    "ChargeDescription": ("line_item_line_item_description",),
    "BillingCurrency": ("line_item_currency_code",),
    "ResourceId": ("line_item_resource_id",),
    "AvailabilityZone": ("line_item_availability_zone",),
    "PublisherName": ("line_item_legal_entity",),
    "ServiceName": ("product_product_name", "product_servicename", "line_item_product_code"),
    "RegionId": ("product_region_code", "product_region"),
    "RegionName": ("product_location",),
    "SkuId": ("product_sku",),
    "SkuPriceId": ("pricing_rate_code", "pricing_rate_id"),
    "PricingUnit": ("pricing_unit",),
    "x_UsageType": ("line_item_usage_type",),
    "x_InstanceType": ("product_instance_type",),
}
"""FOCUS text column <- the first non-null of these CUR columns."""

MONEY_COLUMNS: Mapping[str, str] = {
    "BilledCost": "line_item_unblended_cost",
    "ListCost": "pricing_public_on_demand_cost",
    "ListUnitPrice": "pricing_public_on_demand_rate",
    "PricingQuantity": "line_item_usage_amount",
}
TIME_COLUMNS: Mapping[str, str] = {
    "ChargePeriodStart": "line_item_usage_start_date",
    "ChargePeriodEnd": "line_item_usage_end_date",
    "BillingPeriodStart": "bill_billing_period_start_date",
    "BillingPeriodEnd": "bill_billing_period_end_date",
}
PRODUCT_MAP_KEYS: Mapping[str, str] = {
    "product_name": "product_product_name",
    "servicename": "product_servicename",
    "instance_type": "product_instance_type",
    "region_code": "product_region_code",
    "region": "product_region",
    "location": "product_location",
    "sku": "product_sku",
}
"""CUR 2.0 nests most ``product/*`` columns in the ``product`` map; these keys are lifted out
when the file does not carry the flattened column."""

SPLIT_PREFIX = "split_line_item_"
SPLIT_TO_CONTRACT: Mapping[str, str] = {
    "x_SplitParentResourceId": "split_line_item_parent_resource_id",
    "x_SplitCost": "split_line_item_split_cost",
    "x_SplitUnusedCost": "split_line_item_unused_cost",
    "x_SplitNetCost": "split_line_item_net_split_cost",
    "x_SplitNetUnusedCost": "split_line_item_net_unused_cost",
    "x_SplitUsageRatio": "split_line_item_split_usage_ratio",
}
"""Split cost allocation data (ECS tasks, EKS pods on shared EC2 instances; CUR user guide,
"Split line item details"), kept in these billing columns once the contract declares them
(proposed; until then their presence is recorded in the notes)."""

OTHER_COLUMNS = (
    "line_item_line_item_type",
    "line_item_usage_amount",
    "pricing_term",
    "savings_plan_savings_plan_arn",
    RESERVATION_ARN_COLUMN,
)


@dataclass(frozen=True)
class CurReadResult:
    """Billing rows, rejects and facts of one file."""

    frame: pl.DataFrame
    rejects: pl.DataFrame
    notes: dict[str, Any] = field(default_factory=dict)


def read_cur_frame(
    file: str, raw: pl.DataFrame, source: str, ingested_at: datetime
) -> CurReadResult:
    """Map one CUR file's columns (legacy or 2.0 names, text or typed) to billing rows (pure)."""
    names = {original: cur_column_name(original) for original in raw.columns}
    spelled = {snake: original for original, snake in names.items()}
    legacy = any("/" in original for original in raw.columns)
    missing = [snake for snake in REQUIRED if snake not in spelled]
    if missing:
        shown = [LEGACY_NAMES.get(name, name) if legacy else name for name in missing]
        raise CollectorError(source, f"{file}: required CUR column(s) missing: {', '.join(shown)}")
    tags, tag_reasons = _tags(raw, names)
    text = _as_text(raw, names)
    text = _lift_product_map(raw, names, text)
    present = set(text.columns)
    text = text.with_columns(blank_to_null(name) for name in text.columns).with_row_index(
        "__row", offset=1
    )
    text = text.with_columns(
        pl.Series("__tags", tags, dtype=pl.String),
        pl.Series("__reason_tags", tag_reasons, dtype=pl.String),
    )

    money_sources = set(MONEY_COLUMNS.values()) | {
        column for terms in EFFECTIVE_COST_RULES.values() for _, column in terms
    }
    split_kept = {
        target: column
        for target, column in SPLIT_TO_CONTRACT.items()
        if target in BILLING.schema and column in present
    }
    money_sources |= {
        column
        for target, column in split_kept.items()
        if isinstance(BILLING.schema[target], pl.Decimal)
    }
    conversions: list[pl.Expr] = []
    reason_columns: dict[str, str] = {}
    for column in sorted(money_sources & present):
        value, reason = parse_money(column)
        conversions += [value.alias(f"__value_{column}"), reason.alias(f"__reason_{column}")]
        reason_columns[column] = f"__reason_{column}"
    for column in sorted(set(TIME_COLUMNS.values()) & present):
        value, reason = parse_timestamp(column)
        conversions += [value.alias(f"__value_{column}"), reason.alias(f"__reason_{column}")]
        reason_columns[column] = f"__reason_{column}"
    converted = text.with_columns(conversions)

    checks: list[pl.Expr] = []
    for column in NOT_NULL:
        missing_value = pl.when(pl.col(column).is_null()).then(
            pl.lit("missing value in a mandatory column")
        )
        parse_reason = reason_columns.get(column)
        checks.append(
            (
                pl.coalesce(missing_value, pl.col(parse_reason)) if parse_reason else missing_value
            ).alias(f"__check_{column}")
        )
        reason_columns[column] = f"__check_{column}"
    known_types = sorted(LINE_ITEM_CHARGE_CATEGORY)
    checks.append(
        pl.when(
            pl.col("line_item_line_item_type").is_null()
            | ~pl.col("line_item_line_item_type").is_in(known_types)
        )
        .then(pl.lit(f"not a known CUR line item type ({', '.join(known_types)})"))
        .alias("__check_line_item_line_item_type")
    )
    reason_columns["line_item_line_item_type"] = "__check_line_item_line_item_type"
    converted = converted.with_columns(checks)
    map_column = next((o for o, s in names.items() if s == "resource_tags"), None)
    if map_column is not None and raw.schema[map_column] == pl.String:
        # CUR 2.0 as CSV writes the resource_tags map as JSON text, which can be malformed.
        converted = converted.with_columns(pl.Series(map_column, raw[map_column]))
        reason_columns[map_column] = "__reason_tags"

    rejects = rejects_from(converted, reason_columns, file=file, row_column="__row")
    if rejects.height:
        rejects = rejects.with_columns(pl.col("field").replace(spelled))
    good = converted.filter(~pl.col("__row").is_in(rejects["row"].unique().implode()))
    product_code = (
        pl.col("line_item_product_code")
        if "line_item_product_code" in present
        else pl.lit(None, pl.String)
    )
    billing = good.select(
        *_billing_expressions(present, split_kept), product_code.alias("__product_code")
    ).with_columns(
        pl.lit(source).alias("x_Source"),
        pl.lit(ingested_at).cast(UTC_TIME).alias("x_IngestedAt"),
    )
    # FOCUS ServiceCategory from the line item's product code, as the FOCUS converters do.
    billing, unmapped = with_service_category(
        billing, aws_service_key(pl.col("__product_code"), pl.col("ServiceName")), "aws"
    )
    billing = billing.drop("__product_code")
    notes: dict[str, Any] = {
        "format": "cur-legacy" if legacy else "cur2",
        "rows": raw.height,
        "rejected_rows": rejects["row"].n_unique() if rejects.height else 0,
    }
    if unmapped:
        notes["service_category_unmapped"] = unmapped
    split_present = sorted(spelled[s] for s in spelled if s.startswith(SPLIT_PREFIX))
    if split_present:
        notes["split_cost_allocation_columns"] = split_present
        notes["split_cost_allocation_kept"] = sorted(split_kept)
        if set(SPLIT_TO_CONTRACT.values()) & set(spelled) - set(split_kept.values()):
            logger.info(
                "%s: split cost allocation columns present; the billing contract does not "
                "declare x_Split* columns yet, so they are only noted",
                file,
            )
    # A reservation or Savings Plans line whose amortization columns the file lacks gets a null
    # EffectiveCost; say which columns were missing rather than guess.
    types_present = set(good["line_item_line_item_type"].unique().to_list())
    missing_rule_columns = {
        column
        for line_item_type in set(EFFECTIVE_COST_RULES) & types_present
        for _, column in EFFECTIVE_COST_RULES[line_item_type]
    } - present
    if missing_rule_columns:
        notes["effective_cost_columns_missing"] = sorted(missing_rule_columns)
    return CurReadResult(BILLING.conform(billing, source), rejects, notes)


def _billing_expressions(present: set[str], split_kept: Mapping[str, str]) -> list[pl.Expr]:
    def text(*candidates: str) -> pl.Expr:
        found = [pl.col(c) for c in candidates if c in present]
        return pl.coalesce(found) if found else pl.lit(None, pl.String)

    def money(column: str) -> pl.Expr:
        return pl.col(f"__value_{column}") if column in present else pl.lit(None, MONEY)

    line_type = pl.col("line_item_line_item_type")
    category = line_type.replace_strict(LINE_ITEM_CHARGE_CATEGORY, default=None)
    is_usage = category == "Usage"
    usage_type = text("line_item_usage_type")
    sp_arn, ri_arn = text("savings_plan_savings_plan_arn"), text(RESERVATION_ARN_COLUMN)
    expressions = [
        *(text(*candidates).alias(name) for name, candidates in TEXT_COLUMNS.items()),
        *(money(column).alias(name) for name, column in MONEY_COLUMNS.items()),
        *(
            (pl.col(f"__value_{column}") if column in present else pl.lit(None, UTC_TIME)).alias(
                name
            )
            for name, column in TIME_COLUMNS.items()
        ),
        category.alias("ChargeCategory"),
        line_type.replace_strict(LINE_ITEM_CHARGE_FREQUENCY, default=None)
        .fill_null(pl.when(is_usage).then(pl.lit("Usage-Based")))
        .alias("ChargeFrequency"),
        pl.when(is_usage).then(money("line_item_usage_amount")).alias("ConsumedQuantity"),
        pl.when(is_usage).then(text("pricing_unit")).alias("ConsumedUnit"),
        _effective_cost(present).alias("EffectiveCost"),
        pl.coalesce(sp_arn, ri_arn).alias("CommitmentDiscountId"),
        pl.when(sp_arn.is_not_null())
        .then(pl.lit("Spend"))
        .when(ri_arn.is_not_null())
        .then(pl.lit("Usage"))
        .alias("CommitmentDiscountCategory"),
        pl.when(sp_arn.is_not_null())
        .then(pl.lit("Savings Plan"))
        .when(ri_arn.is_not_null())
        .then(pl.lit("Reserved Instance"))
        .alias("CommitmentDiscountType"),
        # FOCUS PricingCategory from CUR pricing/term; Spot usage types say "SpotUsage".
        pl.when(usage_type.str.contains("SpotUsage"))
        .then(pl.lit("Dynamic"))
        .when((line_type == "SavingsPlanCoveredUsage") | (text("pricing_term") == "Reserved"))
        .then(pl.lit("Committed"))
        .when(text("pricing_term") == "OnDemand")
        .then(pl.lit("Standard"))
        .otherwise(pl.lit(None, pl.String))
        .alias("PricingCategory"),
        pl.lit("AWS").alias("ProviderName"),
        pl.lit("AWS").alias("ServiceProviderName"),
        pl.col("__tags").alias("Tags"),
    ]
    for target, column in split_kept.items():
        if isinstance(BILLING.schema[target], pl.Decimal):
            expressions.append(money(column).alias(target))
        else:
            expressions.append(text(column).alias(target))
    return expressions


def _effective_cost(present: set[str]) -> pl.Expr:
    """EffectiveCost per :data:`EFFECTIVE_COST_RULES`; a rule whose column is absent gives null."""
    line_type = pl.col("line_item_line_item_type")
    unblended = pl.col("__value_line_item_unblended_cost")
    zero = pl.lit(0).cast(MONEY)
    expression: Any = pl.when(
        (line_type == "Fee")
        & (
            pl.col(RESERVATION_ARN_COLUMN).is_not_null()
            if RESERVATION_ARN_COLUMN in present
            else pl.lit(value=False)
        )
    ).then(zero)
    for line_item_type, terms in EFFECTIVE_COST_RULES.items():
        total: pl.Expr = zero
        for sign, column in terms:
            if column not in present:
                total = pl.lit(None, MONEY)
                break
            value = pl.col(f"__value_{column}")
            total = total + value if sign > 0 else total - value
        expression = expression.when(line_type == line_item_type).then(total.cast(MONEY))
    result: pl.Expr = expression.otherwise(unblended).cast(MONEY)
    return result


def _as_text(raw: pl.DataFrame, names: Mapping[str, str]) -> pl.DataFrame:
    """The needed scalar columns as text under snake_case names (parsing stays ours)."""
    expressions: list[pl.Expr] = []
    seen: set[str] = set()
    for original, snake in names.items():
        dtype = raw.schema[original]
        if snake in seen or snake == "product" or _is_tag_column(original, snake):
            continue
        if isinstance(dtype, pl.Datetime):
            zoned = (
                pl.col(original).dt.replace_time_zone("UTC")
                if dtype.time_zone is None
                else pl.col(original).dt.convert_time_zone("UTC")
            )
            expressions.append(zoned.dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ").alias(snake))
        elif dtype.is_nested():
            continue
        else:
            # Floats print as their shortest round-trip decimal (CUR 2.0 Parquet types costs as
            # double), which is the decimal AWS wrote; parse_money then reads it exactly.
            expressions.append(pl.col(original).cast(pl.String).alias(snake))
        seen.add(snake)
    return raw.select(expressions)


def _lift_product_map(
    raw: pl.DataFrame, names: Mapping[str, str], text: pl.DataFrame
) -> pl.DataFrame:
    product = next((o for o, s in names.items() if s == "product"), None)
    wanted = {k: c for k, c in PRODUCT_MAP_KEYS.items() if c not in text.columns}
    if product is None or not wanted:
        return text
    maps, _ = map_values(raw[product])
    lifted = [
        pl.Series(column, [m.get(key) if m else None for m in maps], dtype=pl.String)
        for key, column in wanted.items()
    ]
    return text.with_columns(lifted)


def _is_tag_column(original: str, snake: str) -> bool:
    return original.startswith("resourceTags/") or snake.startswith("resource_tags")


def _tags(raw: pl.DataFrame, names: Mapping[str, str]) -> tuple[list[str | None], list[str | None]]:
    """Canonical tag JSON per row, and a reason per row whose tags cannot be read."""
    height = raw.height
    map_column = next((o for o, s in names.items() if s == "resource_tags"), None)
    if map_column is not None:
        maps, reasons = map_values(raw[map_column])
        renamed = [
            {cur_tag_key(str(k)): v for k, v in m.items() if v not in (None, "")} if m else None
            for m in maps
        ]
        return [tags_to_json(m) if m else None for m in renamed], reasons
    wide = {
        original: cur_tag_key(
            original.removeprefix("resourceTags/")
            if original.startswith("resourceTags/")
            else snake.removeprefix("resource_tags_")
        )
        for original, snake in names.items()
        if _is_tag_column(original, snake)
    }
    if not wide:
        return [None] * height, [None] * height
    keys = list(dict.fromkeys(wide.values()))
    first = {key: next(o for o, k in wide.items() if k == key) for key in keys}
    columns = [f"__tag{i}" for i in range(len(keys))]
    frame = raw.select(
        blank_to_null(first[key]).cast(pl.String).alias(column)
        for key, column in zip(keys, columns, strict=True)
    )
    # Bills repeat the same tag set on many rows: build each distinct set's JSON once.
    distinct = frame.unique(maintain_order=True)
    documents = [
        tags_to_json({keys[i]: value for i, value in enumerate(row) if value is not None}) or None
        for row in distinct.iter_rows()
    ]
    lookup = distinct.with_columns(pl.Series("__json", documents, dtype=pl.String))
    joined = frame.join(lookup, on=columns, how="left", nulls_equal=True, maintain_order="left")
    values = [None if v == "{}" else v for v in joined["__json"].to_list()]
    return values, [None] * height


def map_values(series: pl.Series) -> tuple[list[dict[str, Any] | None], list[str | None]]:
    """A map column (Parquet MAP, a list of key/value structs, or JSON text) as dicts."""
    values = series.to_list()
    maps: list[dict[str, Any] | None] = []
    reasons: list[str | None] = []
    parsed: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    for value in values:
        if value is None or value == "":
            maps.append(None)
            reasons.append(None)
        elif isinstance(value, dict):
            maps.append(value)
            reasons.append(None)
        elif isinstance(value, list):
            maps.append({item["key"]: item["value"] for item in value})
            reasons.append(None)
        else:
            if value not in parsed:
                try:
                    document = json.loads(value)
                    parsed[value] = (
                        (document, None)
                        if isinstance(document, dict)
                        else (None, "tags must be a JSON object")
                    )
                except json.JSONDecodeError as error:
                    parsed[value] = (None, f"tags are not valid JSON: {error.msg}")
            document, reason = parsed[value]
            maps.append(document)
            reasons.append(reason)
    return maps, reasons


def needed_columns(columns: Iterable[str]) -> list[str]:
    """The columns of a file that the mapping reads (CUR files carry 100+ columns)."""
    wanted = set(REQUIRED) | set(OTHER_COLUMNS) | set(MONEY_COLUMNS.values())
    wanted |= set(TIME_COLUMNS.values()) | {c for cs in TEXT_COLUMNS.values() for c in cs}
    wanted |= {c for terms in EFFECTIVE_COST_RULES.values() for _, c in terms}
    wanted |= {"product", "resource_tags"}
    selected = []
    for original in columns:
        snake = cur_column_name(original)
        if snake in wanted or snake.startswith(SPLIT_PREFIX) or _is_tag_column(original, snake):
            selected.append(original)
    return selected
