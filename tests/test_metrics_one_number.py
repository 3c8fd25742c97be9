"""One number everywhere: every surface shows the allocation table's per-project figures.

The demo night (the FOCUS sample and a synthetic 16-GPU fleet, 30 days looked back), then
nights with ``lookback_days = 3`` on the same lake (one at the month's end, one mid-month): for
each, the figures of the CLI (table and ``--output json``), the summary CSV, the HTML report,
the Slack digest, the finance exports and ``/metrics`` are read back as each surface shows them,
and compared with the figures this test computes itself from the lake's allocation parquet:
per project and currency, the night's last day and the month to date. Grafana's cost panels
query the gauge and period that ``/metrics`` is checked for here (their expressions run against
a real Prometheus in ``tests/infra/test_scrape.py``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from gpucost.cli import app
from gpucost.config import load_config
from gpucost.metrics import ServeMetrics, business_figures
from gpucost.pipeline import Runtime
from gpucost.synth import generate
from tests.helpers import DATA_PLATFORM, FOCUS_SAMPLE

if TYPE_CHECKING:
    from tests.helpers import ConfigWriter

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "infra" / "grafana" / "gpucost-dashboard.json"

Figures = dict[tuple[str, str], tuple[Decimal, Decimal]]
"""(project, currency) -> (the day's allocated cost, the month to date's)."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo fleet of ``make run`` (README): 16 GPUs, 7 days, 4 projects, seed 42."""
    root = tmp_path_factory.mktemp("demo-fleet")
    generate(root, gpus=16, days=7, projects=4, seed=42, start=date(2024, 9, 24))
    return root


def demo_config(write_config: ConfigWriter, fleet: Path, *, as_of: str, lookback: int) -> Path:
    """examples/demo.toml's sources and rules, writing into the test's folder."""
    projects = json.loads((fleet / "truth.json").read_text())["projects"]
    return write_config(
        name=f"night-{as_of}-{lookback}.toml",
        nightly={"as_of": as_of, "lookback_days": lookback},
        sources=[
            {"name": "fleet-billing", "kind": "focus-files", "path": fleet / "billing" / "*.csv"},
            {"name": "finance-focus", "kind": "focus-files", "path": FOCUS_SAMPLE},
            {"name": "fleet-inventory", "kind": "inventory-file", "path": fleet / "inventory.csv"},
            {"name": "roster", "kind": "roster", "path": fleet / "roster.csv"},
            {
                "name": "fleet-dcgm",
                "kind": "dcgm-exporter",
                "paths": [fleet / "dcgm" / "*" / "*.prom"],
                "scrape_interval_s": 300,
            },
            {"name": "fleet-cpu", "kind": "host-metrics-file", "path": fleet / "host_metrics.csv"},
        ],
        projects=[
            *(
                {"name": name, "match": {"tags": {"project": name}, "namespaces": [f"{name}*"]}}
                for name in projects
            ),
            DATA_PLATFORM,
        ],
    )


def expected_figures(lake: Path, day: date) -> Figures:
    """The truth, straight from the allocation table's parquet files (no gpucost code)."""
    frame = pl.read_parquet(lake / "allocation" / "**" / "*.parquet", hive_partitioning=False)
    month = frame.filter(pl.col("day") >= day.replace(day=1), pl.col("day") <= day)
    sums = month.group_by("project", "currency").agg(
        pl.col("amount").filter(pl.col("day") == day).sum().alias("day"),
        pl.col("amount").sum().alias("month"),
    )
    return {
        (project, currency): (day_amount or Decimal(0), month_amount or Decimal(0))
        for project, currency, day_amount, month_amount in sums.iter_rows()
        if currency is not None and (day_amount or month_amount)
    }


def cents(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):,}"


def as_cents(figures: Figures) -> dict[tuple[str, str], tuple[str, str]]:
    return {key: (cents(day), cents(month)) for key, (day, month) in figures.items()}


def without_zeros(figures: Figures) -> Figures:
    return {key: value for key, value in figures.items() if any(value)}


# --- each surface, read as a person or a program reads it ------------------------------------


def cli_json(stdout: str) -> Figures:
    document = json.loads(stdout)
    return without_zeros(
        {
            (row["project"], row["currency"]): (
                Decimal(row["cost_day"]),
                Decimal(row["cost_month_to_date"]),
            )
            for row in document["projects"]
        }
    )


def cli_table(stdout: str, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    """The text table's day and month-to-date cells (the two columns after the currency)."""
    shown = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) >= 4 and (cells[0], cells[1]) in keys:
            shown[(cells[0], cells[1])] = (cells[2], cells[3])
    return shown


def summary_csv(out: Path, day: date) -> Figures:
    path = out / "summary" / f"cost_by_project_{day.replace(day=1)}_{day + timedelta(days=1)}.csv"
    rows = csv.DictReader(io.StringIO(path.read_text()))
    return without_zeros(
        {
            (row["project"], row["currency"]): (
                Decimal(row["cost_day"]),
                Decimal(row["cost_month_to_date"]),
            )
            for row in rows
        }
    )


class ProjectRows(HTMLParser):
    """The report's cost-per-project table: ``<tr data-project data-currency>`` cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str], dict[str, str]] = {}
        self._row: tuple[str, str] | None = None
        self._period: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and "data-project" in found:
            self._row = (found["data-project"] or "", found["data-currency"] or "")
            self.rows[self._row] = {}
        elif tag == "td" and self._row is not None and found.get("data-period"):
            self._period = found["data-period"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._period = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._period is not None:
            self.rows[self._row][self._period] = data.strip()


def html_report(out: Path, day: date) -> dict[tuple[str, str], tuple[str, str]]:
    parser = ProjectRows()
    parser.feed((out / "reports" / f"{day}.html").read_text())
    return {
        key: (cells["day"].removesuffix(f" {key[1]}"), cells["month_to_date"].split(" ")[0])
        for key, cells in parser.rows.items()
    }


def digest(out: Path, day: date) -> dict[str, tuple[str, str]]:
    """``• *project* (center): yesterday 1.00 (Δ) · MTD 2.00 (Δ)`` lines of the kept digest."""
    payloads = json.loads((out / "digest" / f"{day}.json").read_text())
    texts = [
        block["text"]["text"]
        for payload in payloads
        for block in payload["blocks"]
        if block.get("type") == "section"
    ]
    line = re.compile(
        r"• \*(?P<project>[^*]+)\*[^:]*: yesterday (?P<day>[-\d,.]+) .*?· MTD (?P<month>[-\d,.]+) "
    )
    return {
        found["project"]: (found["day"], found["month"])
        for text in texts
        for found in line.finditer(text)
    }


def exports(out: Path, day: date) -> tuple[Figures, dict[tuple[str, str], int]]:
    """Per project: the day's EffectiveCost (daily file) and the month's (monthly file), and
    the monthly file's minor units."""
    folder = out / "exports" / f"{day:%Y-%m}"
    daily = pl.read_csv(folder / "chargeback_daily.csv", infer_schema=False)
    monthly = pl.read_csv(folder / "chargeback_monthly.csv", infer_schema=False)
    exact = pl.Decimal(38, 18)
    day_sums = (
        daily.filter(pl.col("ChargePeriodStart") == f"{day}T00:00:00Z")
        .group_by("x_Project", "BillingCurrency")
        .agg(pl.col("EffectiveCost").cast(exact).sum())
    )
    month_sums = monthly.group_by("x_Project", "BillingCurrency").agg(
        pl.col("EffectiveCost").cast(exact).sum(),
        pl.col("x_EffectiveCostMinor").cast(pl.Int64).sum(),
    )
    on_day = {(p, c): amount for p, c, amount in day_sums.iter_rows()}
    figures = {
        (p, c): (on_day.get((p, c), Decimal(0)), amount)
        for p, c, amount, _ in month_sums.iter_rows()
    }
    minor = {(p, c): units for p, c, _, units in month_sums.iter_rows()}
    return without_zeros(figures), minor


def metrics(config: Path, night: date) -> dict[tuple[str, str], tuple[float, float]]:
    """``gpucost_project_effective_cost`` per project, as a scrape of ``/metrics`` reads it."""
    serve_metrics = ServeMetrics()
    serve_metrics.set_business(business_figures(Runtime.from_config(load_config(config)), night))
    values: dict[tuple[str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(generate_latest(serve_metrics.registry).decode()):
        for sample in family.samples:
            if sample.name == "gpucost_project_effective_cost":
                key = (sample.labels["project"], sample.labels["currency"])
                values.setdefault(key, {})[sample.labels["period"]] = sample.value
    return {
        key: (periods.get("yesterday", 0.0), periods.get("month_to_date", 0.0))
        for key, periods in values.items()
        if any(periods.values())
    }


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str


def cost_panels() -> list[Panel]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        Panel(panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "cost" in panel["title"].lower() and "gpucost_project" in target.get("expr", "")
    ]


# --- the test ------------------------------------------------------------------------------


NIGHTS = [
    # (night, lookback_days): the demo night; the README's 3 days at the month's end (the
    # report used to show 3 days as the month); 3 days mid-month.
    ("2024-10-01", 30),
    ("2024-10-01", 3),
    ("2024-09-28", 3),
]


def test_every_surface_shows_the_allocation(
    tmp_path: Path, write_config: ConfigWriter, fleet: Path
) -> None:
    lake, out = tmp_path / "lake", tmp_path / "out"
    for as_of, lookback in NIGHTS:
        config = demo_config(write_config, fleet, as_of=as_of, lookback=lookback)
        night = date.fromisoformat(as_of)
        day = night - timedelta(days=1)
        text = runner.invoke(app, ["nightly", "--config", str(config)])
        assert text.exit_code == 0, text.output
        as_json = runner.invoke(app, ["nightly", "--config", str(config), "--output", "json"])
        assert as_json.exit_code == 0, as_json.output

        truth = expected_figures(lake, day)
        assert ("vision-research", "USD") in truth, "the demo's biggest project has cost"
        shown = as_cents(truth)
        context = f"night {as_of}, lookback_days = {lookback}"

        assert cli_json(as_json.stdout) == truth, context
        assert cli_table(text.stdout, set(truth)) == shown, context
        assert summary_csv(out, day) == truth, context
        assert html_report(out, day) == shown, context
        assert digest(out, day) == {project: cells for (project, _), cells in shown.items()}, (
            context
        )
        exported, minor = exports(out, day)
        assert exported == truth, context
        assert minor == {
            key: int(month.scaleb(2).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
            for key, (_, month) in truth.items()
        }, context
        assert metrics(config, night) == {
            key: (float(day_cost), float(month_cost))
            for key, (day_cost, month_cost) in truth.items()
        }, context

    # Grafana's cost panels plot that gauge, summed per project (and currency), for a period.
    panels = cost_panels()
    assert panels, "the dashboard has cost panels"
    for panel in panels:
        assert "gpucost_project_effective_cost{" in panel.expr, panel
        assert re.search(r'period="(yesterday|month_to_date)"', panel.expr), panel
        assert "gpucost_project_billed_cost" not in panel.expr, panel
