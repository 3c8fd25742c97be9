"""The time window a run collects: whole UTC days, start inclusive, end exclusive."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import polars as pl


@dataclass(frozen=True, order=True)
class Window:
    """Whole UTC days ``[start, end)``; ``Window.days(d, d)`` is the single day ``d``."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after its start {self.start}")

    @classmethod
    def days_inclusive(cls, first: date, last: date) -> Window:
        """The window covering ``first`` through ``last``, both included."""
        if last < first:
            raise ValueError(f"--until {last} is before --since {first}")
        return cls(first, last + timedelta(days=1))

    @classmethod
    def trailing(cls, as_of: date, lookback_days: int) -> Window:
        """The ``lookback_days`` whole days before ``as_of`` (``as_of`` itself excluded)."""
        return cls(as_of - timedelta(days=lookback_days), as_of)

    @property
    def start_time(self) -> datetime:
        """Start as an aware UTC datetime."""
        return datetime.combine(self.start, time(), tzinfo=UTC)

    @property
    def end_time(self) -> datetime:
        """End (exclusive) as an aware UTC datetime."""
        return datetime.combine(self.end, time(), tzinfo=UTC)

    def each_day(self) -> Iterator[date]:
        """Every day of the window, in order."""
        day = self.start
        while day < self.end:
            yield day
            day += timedelta(days=1)

    def contains(self, day_expression: pl.Expr) -> pl.Expr:
        """A Polars predicate: the UTC date of ``day_expression`` lies in the window."""
        return day_expression.is_between(pl.lit(self.start), pl.lit(self.end), closed="left")

    def __str__(self) -> str:
        last = self.end - timedelta(days=1)
        return f"{self.start.isoformat()}..{last.isoformat()}"
