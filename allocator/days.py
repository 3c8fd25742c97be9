"""Which days of a window can be allocated on their own, one ``allocate()`` call each.

An allocation is day-separable: shared charges split over the recipients of their own day
(direct cost, FTE) or fixed weights, FTE is per day, idle and GPU splits are per hour, and
every output row carries its charge's day. Two things alone tie days together:

* a charge whose period runs past the end of its day (``ChargePeriodStart``'s day picks its
  lake partition): a GPU host's charge splits over every hour it covers, with those hours'
  ``gpu_usage``, and those hours are then not "unbilled";
* ``direct-resource``: an unmatched line of a resource takes the project of the resource's
  matched lines on any day of the window (a refund arriving days after its charge), so a
  resource with unmatched lines on one day and matched lines on another ties those days
  (GPU hosts excepted: their charges split by use, whatever their tags).

:func:`separable_runs` reads the window's billing one day at a time (narrow columns) and
returns the shortest runs of consecutive days that no such link crosses: each allocated with
the whole window's inventory (the latest snapshot, as a single run sees it), they give the
same rows as one run over the window, with one run's ``gpu_usage`` in memory at
a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta

import polars as pl

from gpucost.allocator.matching import BILLING_MATCH_COLUMNS, billing_match_code
from gpucost.allocator.projects import ProjectRule


def separable_runs(
    billing_of: Callable[[date, date], pl.LazyFrame],
    start: date,
    end: date,
    rules: Sequence[ProjectRule],
    gpu_resources: pl.Series,
) -> list[tuple[date, date]]:
    """The days ``[start, end)`` cut into the shortest runs ``[first, stop)`` of consecutive
    days that no charge period or followed resource crosses.

    ``billing_of(first, stop)`` scans the billing rows of the days ``[first, stop)``;
    ``gpu_resources`` holds the resource ids and host names of the GPU hosts (whose charges
    never follow a resource: :func:`gpucost.allocator.allocate.gpu_resources`).
    """
    rules = list(rules)
    one = timedelta(days=1)
    days = [start + one * offset for offset in range((end - start).days)]
    reach = {day: day for day in days}
    lines: list[pl.DataFrame] = []
    for day in days:
        billing = billing_of(day, day + one)
        schema = billing.collect_schema()
        columns = [
            pl.col(name) if name in schema else pl.lit(None, pl.String).alias(name)
            for name in BILLING_MATCH_COLUMNS
        ]
        frame = billing.select("ChargePeriodStart", "ChargePeriodEnd", *columns).collect()
        if frame.height == 0:
            continue
        last = (pl.col("ChargePeriodEnd") - pl.duration(microseconds=1)).dt.date()
        latest = frame.select(last.max()).item()
        if latest is not None and latest > day:
            reach[day] = min(latest, end - one)
        coded = frame.select(
            pl.col("ResourceId").alias("resource_id"),
            billing_match_code(frame, rules).is_not_null().alias("matched"),
        ).filter(
            pl.col("resource_id").is_not_null()
            & ~pl.col("resource_id").is_in(gpu_resources.implode())
        )
        lines.append(
            coded.group_by("resource_id")
            .agg(pl.col("matched").any(), (~pl.col("matched")).any().alias("unmatched"))
            .with_columns(pl.lit(day).alias("day"))
        )
    if lines:
        followed = (
            pl.concat(lines)
            .group_by("resource_id")
            .agg(
                pl.col("matched").any(),
                pl.col("unmatched").any(),
                pl.col("day").min().alias("first"),
                pl.col("day").max().alias("last"),
            )
            .filter(pl.col("matched") & pl.col("unmatched") & (pl.col("first") < pl.col("last")))
            .group_by("first")
            .agg(pl.col("last").max())
        )
        for first, last in followed.iter_rows():
            reach[first] = max(reach[first], last)
    return _runs(days, reach)


def _runs(days: list[date], reach: dict[date, date]) -> list[tuple[date, date]]:
    """Merge each day with the days it reaches into runs of consecutive days."""
    runs: list[tuple[date, date]] = []
    first: date | None = None
    until = days[0] if days else None
    for day in days:
        if first is None:
            first, until = day, day
        assert until is not None
        until = max(until, reach[day])
        if day >= until:
            runs.append((first, day + timedelta(days=1)))
            first = None
    return runs
