"""What a host costs per hour: billed EffectiveCost where the bill has it, list price otherwise.

Findings price the hours they flag. For each ``(resource_id, hour)``:

* the bill's ``EffectiveCost`` (FOCUS: the amortised cost after discounts, savings plans and
  credits; ``BilledCost`` when a row has none) of the rows with that ``ResourceId``; a charge
  that spans several hours (a daily row from Athena or BigQuery rollups) is spread evenly over
  its hours, rounded to 18 places;
* else the inventory's ``hourly_list_price`` (on-prem hosts priced by config, or a bill that has
  not arrived yet: cloud bills lag a day or two);
* else nothing: the hour is counted as unpriced and the finding says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

from gpucost.core.contracts import MONEY
from gpucost.reports._common import Frame, eager, tag_value


def hourly_costs(billing: Frame, *, start: datetime, end: datetime) -> pl.DataFrame:
    """EffectiveCost per ``resource_id``, ``hour`` and ``currency`` for hours in [start, end)."""
    lazy = billing.lazy() if isinstance(billing, pl.DataFrame) else billing
    return (
        lazy.filter(
            pl.col("ResourceId").is_not_null(),
            pl.col("ChargePeriodStart") < pl.lit(end),
            pl.col("ChargePeriodEnd") > pl.lit(start),
        )
        .select(
            pl.col("ResourceId").alias("resource_id"),
            pl.col("BillingCurrency").alias("currency"),
            pl.coalesce("EffectiveCost", "BilledCost").alias("cost"),
            pl.datetime_ranges(
                pl.col("ChargePeriodStart").dt.truncate("1h"),
                pl.max_horizontal(
                    pl.col("ChargePeriodEnd"), pl.col("ChargePeriodStart") + pl.duration(hours=1)
                ),
                interval="1h",
                closed="left",
            ).alias("hour"),
        )
        .with_columns((pl.col("cost") / pl.col("hour").list.len()).cast(MONEY).alias("cost"))
        .explode("hour")
        .filter(pl.col("hour") >= pl.lit(start), pl.col("hour") < pl.lit(end))
        .group_by("resource_id", "hour", "currency")
        .agg(pl.col("cost").sum())
        .sort("resource_id", "hour", "currency")
        .collect()
    )


def latest_hosts(inventory: Frame, owner_tag_keys: tuple[str, ...]) -> pl.DataFrame:
    """The latest inventory row of each resource, with its ``owner`` from the first tag found."""
    frame = eager(inventory)
    latest = frame.sort("day", "resource_id").group_by("resource_id", maintain_order=True).last()
    owner = pl.coalesce([tag_value("tags", key) for key in owner_tag_keys] or [pl.lit(None)])
    return latest.with_columns(owner.cast(pl.String).alias("owner")).sort("resource_id")


def cost_of_hours(
    hours: pl.DataFrame,
    hourly: pl.DataFrame,
    hosts: pl.DataFrame,
    group_by: Sequence[str] = ("resource_id",),
) -> pl.DataFrame:
    """Price each ``(resource_id, hour)`` of ``hours``, summed per ``group_by``.

    Returns the ``group_by`` columns, ``cost`` (MONEY, null when no hour had a price),
    ``currency``, ``billed_hours``, ``list_price_hours`` and ``unpriced_hours``.
    """
    keys = list(dict.fromkeys(["resource_id", "hour", *group_by]))
    billed = hourly.group_by("resource_id", "hour").agg(
        pl.col("cost").sum().alias("billed_cost"), pl.col("currency").min().alias("bill_currency")
    )
    priced = (
        hours.select(keys)
        .unique()
        .join(billed, on=["resource_id", "hour"], how="left")
        .join(
            hosts.select(
                "resource_id",
                pl.col("hourly_list_price").alias("list_price"),
                pl.col("currency").alias("list_currency"),
            ),
            on="resource_id",
            how="left",
        )
        .with_columns(
            pl.coalesce("billed_cost", "list_price").alias("cost"),
            pl.coalesce("bill_currency", "list_currency").alias("currency"),
        )
    )
    return (
        priced.group_by(list(group_by))
        .agg(
            pl.when(pl.col("cost").is_not_null().any())
            .then(pl.col("cost").sum())
            .otherwise(None)
            .cast(MONEY)
            .alias("cost"),
            pl.col("currency").drop_nulls().min().alias("currency"),
            pl.col("billed_cost").is_not_null().sum().cast(pl.Int64).alias("billed_hours"),
            (pl.col("billed_cost").is_null() & pl.col("list_price").is_not_null())
            .sum()
            .cast(pl.Int64)
            .alias("list_price_hours"),
            pl.col("cost").is_null().sum().cast(pl.Int64).alias("unpriced_hours"),
        )
        .sort(list(group_by))
    )
