"""Per-project figures from an allocation: cost, GPU-hours and headcount, per FTE."""

from __future__ import annotations

import polars as pl

from gpucost.allocator.exact import from_units, to_units


def summarise(allocation: pl.DataFrame) -> pl.DataFrame:
    """Totals per project and currency over the allocation's days, with per-FTE ratios.

    Columns: ``project``, ``currency``, ``amount`` and ``billed_amount`` (exact Decimal sums),
    ``gpu_hours_used``, ``gpu_hours_idle``, ``fte_days`` (sum of the daily FTE), ``days`` (days
    the allocation covers), ``fte`` (average FTE over those days), ``cost_per_fte``
    (``amount / fte``, as a float: a ratio for reading, not money to book) and
    ``gpu_hours_per_fte``. Per-FTE ratios are null for a project without people. FTE counts
    come from the ``headcount`` rows and apply to every currency of the project.
    """
    days = allocation.get_column("day").n_unique()
    people = (
        allocation.filter(pl.col("fte").is_not_null())
        .group_by("project")
        .agg(pl.col("fte").sum().alias("fte_days"))
    )
    money = (
        allocation.filter(pl.col("category") != "headcount")
        .group_by("project", "currency")
        .agg(
            from_units(to_units(pl.col("amount")).sum()).alias("amount"),
            from_units(to_units(pl.col("billed_amount")).sum()).alias("billed_amount"),
            pl.col("gpu_hours_used").sum(),
            pl.col("gpu_hours_idle").sum(),
        )
    )
    fte = (pl.col("fte_days") / days).alias("fte")
    with_people = pl.col("fte") > 0
    return (
        money.join(people, on="project", how="full", coalesce=True)
        .with_columns(
            pl.col("fte_days").fill_null(0.0),
            pl.lit(days, pl.Int64).alias("days"),
        )
        .with_columns(fte)
        .with_columns(
            pl.when(with_people)
            .then(pl.col("amount").cast(pl.Float64) / pl.col("fte"))
            .alias("cost_per_fte"),
            pl.when(with_people)
            .then(pl.col("gpu_hours_used") / pl.col("fte"))
            .alias("gpu_hours_per_fte"),
        )
        .sort("project", "currency", nulls_last=True)
    )
