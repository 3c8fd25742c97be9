"""The CLI's human-readable tables: a run's sources, the month's overview, findings.

Kept apart from :mod:`gpucost.cli` so that module stays a list of thin commands; each function
prints to the console it is handed (sized for a terminal, unlimited under cron).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gpucost.core.manifest import RunManifest
from gpucost.core.window import Window


def print_sources(console: Console, manifest: RunManifest) -> None:
    table = Table(
        title=f"Sources, {manifest.window_start} to {manifest.window_end_exclusive} (end exclusive)"
    )
    for column in ("source", "kind", "status", "rows", "rejected", "seconds"):
        table.add_column(
            column, justify="right" if column in {"rows", "rejected", "seconds"} else "left"
        )
    for source in manifest.sources:
        rows = ", ".join(f"{table_name}={count}" for table_name, count in source.rows.items())
        table.add_row(
            source.name,
            source.kind,
            source.status,
            rows or "0",
            str(source.rejected_rows),
            f"{source.duration_s:.2f}",
        )
    console.print(table)


def print_month_overview(console: Console, overview: pl.DataFrame, day: date) -> None:
    """The night's table: allocated cost of ``day`` and of its month to date, per project."""
    title = (
        f"Allocated cost per project, month to date {day.replace(day=1)}..{day} "
        "([allocation] policy; docs/allocation.md)"
    )
    table = Table(title=escape(title))
    columns = (
        "project",
        "cur",
        str(day),
        "month to date",
        "billed",
        "GPU used",
        "GPU idle",
        "GPU-h used",
        "GPU-h idle",
        "FTE",
        "cost/FTE",
    )
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in {"project", "cur"} else "right",
            no_wrap=True,
        )
    for row in overview.iter_rows(named=True):
        table.add_row(
            row["project"],
            row["currency"] or "-",
            _money(row["day_amount"] or Decimal(0)),
            _money(row["amount"]),
            _money(row["billed_amount"]),
            _money(row["gpu_used"]),
            _money(row["gpu_idle"]),
            _number(row["gpu_hours_used"]),
            _number(row["gpu_hours_idle"]),
            _number(row["fte"], 1),
            _number(row["cost_per_fte"]),
        )
    console.print(table)


def print_overview(console: Console, overview: pl.DataFrame, window: Window) -> None:
    title = f"Allocated cost per project, {window} ([allocation] policy; docs/allocation.md)"
    table = Table(title=escape(title))
    columns = (
        "project",
        "cur",
        "allocated",
        "billed",
        "GPU used",
        "GPU idle",
        "GPU-h used",
        "GPU-h idle",
        "FTE",
        "cost/FTE",
    )
    for column in columns:
        # Project names are never cut; the numbers give way on a narrow terminal.
        table.add_column(
            column,
            justify="left" if column in {"project", "cur"} else "right",
            no_wrap=column == "project",
        )
    for row in overview.iter_rows(named=True):
        table.add_row(
            row["project"],
            row["currency"] or "-",
            _money(row["amount"]),
            _money(row["billed_amount"]),
            _money(row["gpu_used"]),
            _money(row["gpu_idle"]),
            _number(row["gpu_hours_used"]),
            _number(row["gpu_hours_idle"]),
            _number(row["fte"], 1),
            _number(row["cost_per_fte"]),
        )
    console.print(table)


def print_findings(console: Console, findings: pl.DataFrame) -> None:
    """One line per finding; the evidence and advice are in the HTML report and the digest."""
    table = Table(title="Findings (estimated monthly waste; docs/reports.md)")
    for column in ("kind", "host", "project", "waste / month"):
        table.add_column(
            column, justify="right" if column == "waste / month" else "left", no_wrap=True
        )
    ranked = findings.sort("est_monthly_waste", descending=True, nulls_last=True)
    for row in ranked.iter_rows(named=True):
        table.add_row(
            row["kind"],
            row["host"] or row["resource_id"] or "-",
            row["project"] or "-",
            f"{_money(row['est_monthly_waste'])} {row['currency'] or ''}".strip(),
        )
    if findings.height == 0:
        table.add_row("none: no idle, misplaced or oversized GPU servers", "-", "-", "-")
    console.print(table)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _money(value: Decimal | None) -> str:
    """Rounded for display only; stored values keep every digit."""
    return "-" if value is None else f"{value:,.2f}"
