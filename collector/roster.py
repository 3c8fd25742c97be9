"""``roster``: who works on which project, from a CSV the team keeps, into ``headcount``."""

from __future__ import annotations

import io
from typing import ClassVar

import polars as pl

from gpucost.collector.base import (
    REJECT_SCHEMA,
    Collected,
    CollectorContext,
    SourceSettings,
    register,
)
from gpucost.collector.local_files import (
    LocalFileSettings,
    glob_files,
    read_file,
)
from gpucost.collector.parsing import blank_to_null, rejects_from
from gpucost.core.contracts import HEADCOUNT
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

ROSTER_COLUMNS = ("person_id", "project", "fraction", "start", "end", "cost_center")
REQUIRED = ("person_id", "project", "fraction", "start")


class RosterSettings(LocalFileSettings):
    """Settings of a ``roster`` source: ``path`` names the roster CSV (a glob must match one)."""


@register("roster")
class Roster:
    """Reads a team roster into the ``headcount`` table: FTE per person, project and day.

    Columns: ``person_id`` (any stable id), ``project``, ``fraction`` (of a full-time person,
    0 < f <= 1), ``start`` and ``end`` (inclusive dates; empty ``end`` means still there),
    ``cost_center`` (optional). Other columns, such as ``name``, are read by nobody and never
    stored: the lake keeps ids and fractions only. A person's fractions over all projects may
    not exceed 1 on any day; rows that break that or cannot be parsed are rejected.

    ```toml
    [[sources]]
    name = "roster"
    kind = "roster"
    path = "people/roster.csv"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("headcount",)
    Settings: ClassVar[type[SourceSettings]] = RosterSettings

    def __init__(self, settings: RosterSettings, context: CollectorContext) -> None:
        self.settings, self.name = settings, settings.name
        self.path = context.resolve(settings.path)

    def probe(self) -> str | None:
        """What would fail the source now: ``path`` matches no file, or several."""
        return _not_one_file(self.path, glob_files(self.path))

    def collect(self, window: Window) -> Collected:
        """Expand the roster to one row per person, project and day of the window."""
        files = glob_files(self.path)
        problem = _not_one_file(self.path, files)
        if problem:
            raise CollectorError(self.name, problem)
        (file,) = files
        headcount, rejects = read_roster(file, read_file(self.name, file), self.name, window)
        return Collected({"headcount": headcount}, rejects, {"file": file})


def _not_one_file(pattern: str, files: list[str]) -> str | None:
    """Why ``files`` are not one roster file, or None. A roster is one file because a person's
    fractions must add up to at most 1 over all of it."""
    if not files:
        return f"{pattern} matches no file"
    if len(files) > 1:
        return f"{pattern} matches {len(files)} files; a roster is one file: {', '.join(files)}"
    return None


def read_roster(
    file: str, data: bytes, source: str, window: Window
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse roster CSV bytes into headcount rows for ``window`` and rejects (pure)."""
    raw = pl.read_csv(io.BytesIO(data), infer_schema=False)
    raw = raw.rename({name: name.strip() for name in raw.columns})
    missing = [name for name in REQUIRED if name not in raw.columns]
    if missing:
        raise CollectorError(source, f"{file}: roster columns missing: {', '.join(missing)}")
    for optional in ("end", "cost_center"):
        if optional not in raw.columns:
            raw = raw.with_columns(pl.lit(None, pl.String).alias(optional))
    rows = raw.select([blank_to_null(name) for name in ROSTER_COLUMNS]).with_row_index(
        "__row", offset=1
    )
    fraction = pl.col("fraction").cast(pl.Float64, strict=False)
    start = pl.col("start").str.to_date("%Y-%m-%d", strict=False)
    end = pl.col("end").str.to_date("%Y-%m-%d", strict=False)
    checked = rows.with_columns(
        fraction.alias("__fraction"),
        start.alias("__start"),
        end.alias("__end"),
        pl.when(pl.col("person_id").is_null()).then(pl.lit("missing person_id")).alias("__r_p"),
        pl.when(pl.col("project").is_null()).then(pl.lit("missing project")).alias("__r_j"),
        pl.when(fraction.is_null() | (fraction <= 0) | (fraction > 1))
        .then(pl.lit("fraction must be a number with 0 < fraction <= 1"))
        .alias("__r_f"),
        pl.when(start.is_null()).then(pl.lit("start must be a date YYYY-MM-DD")).alias("__r_s"),
        pl.when(pl.col("end").is_not_null() & (end.is_null() | (end < start)))
        .then(pl.lit("end must be a date YYYY-MM-DD on or after start"))
        .alias("__r_e"),
    )
    reasons = {
        "person_id": "__r_p",
        "project": "__r_j",
        "fraction": "__r_f",
        "start": "__r_s",
        "end": "__r_e",
    }
    rejects = rejects_from(checked, reasons, file=file, row_column="__row")
    good = checked.filter(~pl.col("__row").is_in(rejects["row"].implode()))
    days = pl.DataFrame(
        {"day": pl.date_range(window.start, window.end, "1d", closed="left", eager=True)}
    )
    expanded = good.join(days, how="cross").filter(
        (pl.col("day") >= pl.col("__start"))
        & (pl.col("__end").is_null() | (pl.col("day") <= pl.col("__end")))
    )
    # A person cannot work more than full time: over-committed person-days are rejected whole.
    totals = expanded.group_by("person_id", "day").agg(pl.col("__fraction").sum().alias("__t"))
    over = totals.filter(pl.col("__t") > 1 + 1e-9)
    if over.height:
        overbooked = expanded.join(over, on=["person_id", "day"], how="semi")
        rows_over = (
            overbooked.group_by("__row", maintain_order=True)
            .agg(pl.col("day").min().alias("first_day"), pl.col("person_id").first())
            .sort("__row")
        )
        extra = rows_over.select(
            pl.lit(file).alias("file"),
            pl.col("__row").cast(pl.Int64).alias("row"),
            pl.lit("fraction").alias("field"),
            pl.format(
                "fractions of this person add up to more than 1 from {}", pl.col("first_day")
            ).alias("reason"),
            pl.col("person_id").alias("raw"),
        )
        rejects = pl.concat([rejects, extra.cast(REJECT_SCHEMA)]).sort("row", "field")
        expanded = expanded.join(over, on=["person_id", "day"], how="anti")
    headcount = expanded.select(
        "day",
        "person_id",
        "project",
        "cost_center",
        pl.col("__fraction").alias("fraction"),
        pl.lit(source).alias("source"),
    )
    return HEADCOUNT.conform(headcount, source), rejects
