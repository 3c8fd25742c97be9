"""Unit economics: what 1,000 requests cost on each model server, per day.

The request counts come from a ``requests`` frame (a Prometheus counter such as
``sum by (instance) (increase(http_requests_total{job="model-api"}[1d]))``, which the prometheus
collector will land later): one row per day and host or resource with the day's request count.
The day's cost of the server is priced like the findings price hours (``.costs``): its
billed EffectiveCost, else its list price, hour by hour over the 24 hours of the day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final

import polars as pl

from gpucost.core.contracts import MONEY
from gpucost.reports._common import Frame, divide_money, eager
from gpucost.reports.costs import cost_of_hours, hourly_costs, latest_hosts

REQUESTS_SCHEMA: Final = pl.Schema(
    {
        "day": pl.Date(),
        "resource_id": pl.String(),
        "host": pl.String(),
        "requests": pl.Int64(),
    }
)
"""Input: requests per day and model server; either ``resource_id`` or ``host`` may be null
(a host is mapped to its resource through the inventory). Float counts (PromQL ``increase``
extrapolates) are rounded to whole requests."""

UNIT_COSTS_SCHEMA: Final = pl.Schema(
    {
        "day": pl.Date(),
        "project": pl.String(),
        "host": pl.String(),
        "resource_id": pl.String(),
        "requests": pl.Int64(),
        "cost": MONEY,
        "currency": pl.String(),
        "cost_per_1k_requests": MONEY,
        "priced_hours": pl.Int64(),
    }
)
"""Output of :func:`cost_per_thousand_requests`, in this column order."""


def cost_per_thousand_requests(
    requests: Frame,
    billing: Frame,
    inventory: Frame,
    *,
    owner_tag_keys: tuple[str, ...] = ("project", "owner"),
) -> pl.DataFrame:
    """Cost per 1,000 requests per model server and day: ``cost x 1000 / requests``.

    ``cost_per_1k_requests`` is null when the day had no request or no price; ``cost`` is null
    when no hour of the day had a bill row or a list price.
    """
    hosts = latest_hosts(inventory, owner_tag_keys)
    frame = _conform_requests(eager(requests), hosts)
    if frame.is_empty():
        return pl.DataFrame(schema=UNIT_COSTS_SCHEMA)
    days: list[date] = frame["day"].unique().sort().to_list()
    start = datetime.combine(days[0], time(), tzinfo=UTC)
    end = datetime.combine(days[-1], time(), tzinfo=UTC) + timedelta(days=1)
    hours = (
        frame.filter(pl.col("resource_id").is_not_null())
        .select("resource_id", "day")
        .unique()
        .with_columns(
            pl.datetime_ranges(
                pl.col("day").cast(pl.Datetime("us", "UTC")),
                pl.col("day").cast(pl.Datetime("us", "UTC")) + pl.duration(days=1),
                interval="1h",
                closed="left",
            ).alias("hour")
        )
        .explode("hour")
    )
    costs = cost_of_hours(
        hours, hourly_costs(billing, start=start, end=end), hosts, group_by=("resource_id", "day")
    )
    joined = (
        frame.join(costs, on=["resource_id", "day"], how="left")
        .join(
            hosts.select("resource_id", pl.col("owner").alias("project")),
            on="resource_id",
            how="left",
        )
        .sort("day", "resource_id", "host", nulls_last=True)
    )
    rows: list[dict[str, Any]] = []
    for row in joined.iter_rows(named=True):
        cost: Decimal | None = row["cost"]
        per_thousand = (
            divide_money(cost * 1000, row["requests"])
            if cost is not None and row["requests"]
            else None
        )
        rows.append(
            {
                "day": row["day"],
                "project": row["project"],
                "host": row["host"],
                "resource_id": row["resource_id"],
                "requests": row["requests"],
                "cost": cost,
                "currency": row["currency"],
                "cost_per_1k_requests": per_thousand,
                "priced_hours": (row["billed_hours"] or 0) + (row["list_price_hours"] or 0),
            }
        )
    return pl.DataFrame(rows, schema=UNIT_COSTS_SCHEMA)


def _conform_requests(frame: pl.DataFrame, hosts: pl.DataFrame) -> pl.DataFrame:
    """Requests with ``resource_id`` and ``host`` filled from the inventory, summed per server
    and day; a server the inventory does not know keeps its row (priced as unknown)."""
    missing = [name for name in ("day", "requests") if name not in frame.columns]
    if missing or not {"resource_id", "host"} & set(frame.columns):
        raise ValueError(
            "a requests frame needs day, requests and resource_id or host; "
            f"got {', '.join(frame.columns) or 'no columns'}"
        )
    for name in ("resource_id", "host"):
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(name))
    by_host = (
        hosts.filter(pl.col("host").is_not_null())
        .select("host", pl.col("resource_id").alias("_resource"))
        .unique("host", keep="first", maintain_order=True)
    )
    by_resource = hosts.select("resource_id", pl.col("host").alias("_host"))
    return (
        frame.select(
            pl.col("day").cast(pl.Date),
            pl.col("resource_id").cast(pl.String),
            pl.col("host").cast(pl.String),
            pl.col("requests").cast(pl.Float64).round(0).cast(pl.Int64),
        )
        .join(by_host, on="host", how="left")
        .with_columns(pl.coalesce("resource_id", "_resource").alias("resource_id"))
        .join(by_resource, on="resource_id", how="left")
        .with_columns(pl.coalesce("host", "_host").alias("host"))
        .group_by("day", "resource_id", "host")
        .agg(pl.col("requests").sum())
        .sort("day", "resource_id", "host", nulls_last=True)
    )
