"""The nightly HTML report: one self-contained file (inline CSS and SVG, no script, no fetch).

:func:`render_html_report` is pure (frames in, text out) and deterministic: no clock is read,
so the same night renders the same bytes. It shows

* a data-completeness banner from the run manifest;
* cost per project for the night's last day and its month to date (the figures the digest,
  the exports, the CLI and ``/metrics`` show: :func:`~gpucost.reports.digest.project_costs`);
  the shell hands in the allocation from the first of the month, whatever window the night
  collected;
* cost per project over time (stacked daily bars);
* GPU utilisation per host as a heatmap (hosts x hours, mean over the host's GPUs);
* idle waste: idle GPU cost per project (allocation category ``gpu_idle``) and the monthly
  waste of the idle-type findings per host;
* the findings table, evidence included (``<details>`` opens without script);
* cost per 1,000 requests per model server, when request counts are known.

Money is drawn from floats (pixel geometry only); every number printed comes from Decimal.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import polars as pl

from gpucost.reports._common import Frame, display_money, eager
from gpucost.reports.digest import KIND_TITLES, data_gaps, project_costs

PALETTE: Final = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip
"""Tableau 10: distinct, colour-blind-aware series colours."""
OTHER_COLOUR: Final = "#cfcfcf"
VIRIDIS: Final = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
"""Viridis stops at 0, 25, 50, 75, 100 % utilisation: perceptually even, colour-blind safe."""
NO_DATA_COLOUR: Final = "#e6e6e6"
MAX_SERIES: Final = 9
MAX_HEATMAP_COLUMNS: Final = 168

CSS: Final = """
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;
color:#1f2933;background:#f5f7fa;margin:0;padding:24px}
main{max-width:1200px;margin:0 auto}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
.sub{color:#52606d;margin:0 0 16px}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.ok{background:#e3f9e5;color:#0e5814;border:1px solid #8ede99}
.warn{background:#fff3c4;color:#8d2b0b;border:1px solid #f7c948}
.tiles{display:flex;gap:12px;flex-wrap:wrap}
.tile{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:12px 16px;min-width:200px}
.tile b{display:block;font-size:22px}
.card{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:16px;overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#f0f4f8;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.sev-high{color:#b91c1c;font-weight:700}.sev-medium{color:#b45309}.sev-low{color:#52606d}
details pre{white-space:pre-wrap;font-size:12px;background:#f5f7fa;padding:8px;margin:4px 0}
.legend{display:flex;flex-wrap:wrap;gap:10px;margin-top:8px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
svg text{font:11px -apple-system,'Segoe UI',Roboto,Arial,sans-serif;fill:#3e4c59}
"""


def render_html_report(
    *,
    day: date,
    allocation: Frame,
    gpu_usage: Frame,
    findings: Frame,
    manifest: Mapping[str, Any] | None = None,
    unit_costs: Frame | None = None,
    title: str = "GPU cost report",
    days_shown: int = 31,
    max_heatmap_hosts: int = 60,
) -> str:
    """The report of the night that ends ``day`` as one HTML document."""
    read = eager(allocation)
    month = read.filter(pl.col("day") >= day.replace(day=1), pl.col("day") <= day)
    alloc = read.filter(pl.col("day") > day - timedelta(days=days_shown), pl.col("day") <= day)
    found = eager(findings)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)} · {day.isoformat()}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">Night of {day.isoformat()} · allocated EffectiveCost (amortised) · '
        f"last {days_shown} days</p>",
        _banner(manifest),
        _tiles(month, alloc, found, day),
        "<h2>Cost per project</h2>",
        _project_table(month, day),
        "<h2>Cost per project over time</h2>",
        f'<div class="card">{_cost_chart(alloc)}</div>',
        "<h2>GPU utilisation per host</h2>",
        f'<div class="card">{_heatmap(eager(gpu_usage), max_heatmap_hosts)}</div>',
        "<h2>Idle waste</h2>",
        f'<div class="card">{_idle_waste(alloc, found)}</div>',
        "<h2>Findings</h2>",
        _findings_table(found),
    ]
    if unit_costs is not None:
        parts += ["<h2>Cost per 1,000 requests</h2>", _unit_cost_table(eager(unit_costs))]
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def write_html_report(
    html_text: str, put_atomic: Callable[[str, bytes], None], relative: str
) -> str:
    """Hand the report to ``put_atomic`` (the lake's storage); returns ``relative``."""
    put_atomic(relative, html_text.encode("utf-8"))
    return relative


# ---- parts -----------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _banner(manifest: Mapping[str, Any] | None) -> str:
    gaps = data_gaps(manifest)
    if gaps is None:
        return '<div class="banner warn">Data completeness unknown: no run manifest.</div>'
    if gaps:
        items = "; ".join(_e(gap) for gap in gaps)
        return (
            f'<div class="banner warn">Incomplete data: {items}. Costs shown can be lower '
            "than the real bill.</div>"
        )
    return '<div class="banner ok">Data complete: every source returned rows.</div>'


def _project_table(month: pl.DataFrame, day: date) -> str:
    """Allocated cost per project: the night's last day and the month to date."""
    costs = project_costs(month, day)
    if not costs:
        return "<p>No allocated cost this month.</p>"
    rows = "".join(
        f'<tr data-project="{_e(cost.project)}" data-currency="{_e(cost.currency)}">'
        f"<td>{_e(cost.project)}</td><td>{_e(cost.cost_center or '')}</td>"
        f'<td class="num" data-period="day">{_e(display_money(cost.yesterday, cost.currency))}</td>'
        f'<td class="num" data-period="month_to_date">'
        f"{_e(display_money(cost.month_to_date, cost.currency))}</td></tr>"
        for cost in costs
    )
    return (
        '<div class="card"><table class="projects"><tr><th>Project</th><th>Cost center</th>'
        f"<th>{day.isoformat()}</th><th>Month to date ({day:%Y-%m-01} to {day.isoformat()})"
        f"</th></tr>{rows}</table></div>"
    )


def _tiles(month: pl.DataFrame, alloc: pl.DataFrame, findings: pl.DataFrame, day: date) -> str:
    tiles: list[tuple[str, str]] = []
    for currency, amount in (
        month.group_by("currency").agg(pl.col("amount").sum()).sort("currency").iter_rows()
    ):
        tiles.append((f"Month to date ({currency})", display_money(amount, currency)))
    for currency, amount in (
        alloc.filter(pl.col("day") == day)
        .group_by("currency")
        .agg(pl.col("amount").sum())
        .sort("currency")
        .iter_rows()
    ):
        tiles.append((f"{day.isoformat()} ({currency})", display_money(amount, currency)))
    idle_hours = alloc.filter(pl.col("day") == day)["gpu_hours_idle"].sum()
    tiles.append(("Idle GPU-hours, last day", f"{idle_hours or 0:,.0f}"))
    wastes = findings.filter(pl.col("est_monthly_waste") > 0)
    for currency, waste in (
        wastes.group_by("currency")
        .agg(pl.col("est_monthly_waste").sum())
        .sort("currency", nulls_last=True)
        .iter_rows()
    ):
        tiles.append(("Findings: to save per month", display_money(waste, currency)))
    tiles.append(("Findings", str(findings.height)))
    body = "".join(f'<div class="tile">{_e(name)}<b>{_e(value)}</b></div>' for name, value in tiles)
    return f'<div class="tiles">{body}</div>'


def _cost_chart(alloc: pl.DataFrame) -> str:
    if alloc.is_empty():
        return "<p>No allocated cost in this period.</p>"
    currency = (
        alloc.group_by("currency")
        .agg(pl.col("amount").sum())
        .sort(["amount", "currency"], descending=[True, False])
    )["currency"][0]
    rows = alloc.filter(pl.col("currency") == currency)
    totals = (
        rows.group_by("project")
        .agg(pl.col("amount").sum())
        .sort(["amount", "project"], descending=[True, False])
    )
    top = totals["project"].head(MAX_SERIES).to_list()
    series = [*top, "other"] if totals.height > MAX_SERIES else top
    daily = (
        rows.with_columns(
            pl.when(pl.col("project").is_in(top))
            .then(pl.col("project"))
            .otherwise(pl.lit("other"))
            .alias("series")
        )
        .group_by("day", "series")
        .agg(pl.col("amount").sum())
    )
    days: list[date] = sorted(set(daily["day"].to_list()))
    values: dict[tuple[date, str], Decimal] = {
        (d, s): a for d, s, a in daily.iter_rows() if a is not None
    }
    day_totals = [sum((values.get((d, s), Decimal(0)) for s in series), Decimal(0)) for d in days]
    peak = float(max(max(day_totals), Decimal(0))) or 1.0
    width, height, left, bottom, top_pad = 1100, 330, 70, 40, 26
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    step = plot_w / len(days)
    bar = max(1.0, step * 0.8)
    shapes: list[str] = []
    for tick in range(5):
        value = peak * tick / 4
        y = top_pad + plot_h - plot_h * tick / 4
        shapes.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#e4e7eb"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:,.0f}</text>'
        )
    colours = _colours(series)
    for index, current in enumerate(days):
        x = left + index * step + (step - bar) / 2
        y = top_pad + plot_h
        for name in series:
            amount = values.get((current, name))
            if not amount or amount <= 0:
                continue
            h = plot_h * float(amount) / peak
            y -= h
            label = f"{current.isoformat()} {name}: {display_money(amount, currency)}"
            shapes.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colours[name]}"><title>{_e(label)}</title></rect>'
            )
        if len(days) <= 16 or index % math.ceil(len(days) / 16) == 0:
            shapes.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{current:%m-%d}</text>'
            )
    svg = (
        f'<svg role="img" aria-label="Cost per project per day, {_e(currency)}" '
        f'viewBox="0 0 {width} {height}" width="100%">{"".join(shapes)}'
        f'<text x="{left}" y="12" text-anchor="end">{_e(currency)}/day</text></svg>'
    )
    return svg + _legend((name, colours[name]) for name in series)


def _heatmap(usage: pl.DataFrame, max_hosts: int) -> str:
    if usage.is_empty():
        return "<p>No GPU telemetry in this period.</p>"
    per_gpu = usage.group_by("host", "hour", "gpu_uuid").agg(pl.col("util_avg").sum())
    cells = per_gpu.group_by("host", "hour").agg(pl.col("util_avg").mean().alias("util"))
    moments: list[datetime] = cells["hour"].unique().sort().to_list()
    first, last = moments[0], moments[-1]
    hours = int((last - first).total_seconds() // 3600) + 1
    bucket = max(1, math.ceil(hours / MAX_HEATMAP_COLUMNS))
    columns = math.ceil(hours / bucket)
    binned = (
        cells.with_columns(
            ((pl.col("hour") - pl.lit(first)).dt.total_hours() // bucket).alias("column")
        )
        .group_by("host", "column")
        .agg(pl.col("util").mean())
        .sort("host", "column")
    )
    by_host = binned.group_by("host").agg(pl.col("util").mean().alias("mean")).sort("host")
    hosts = by_host["host"].to_list()
    omitted = max(0, len(hosts) - max_hosts)
    if omitted:  # keep the least used hosts: those are the ones to look at
        hosts = by_host.sort(["mean", "host"]).head(max_hosts).sort("host")["host"].to_list()
    mean_of = dict(by_host.iter_rows())
    label_w, row_h, top_pad, width = 250, 16, 22, 1100
    cell_w = (width - label_w - 10) / columns
    index = {host: position for position, host in enumerate(hosts)}
    shapes: list[str] = []
    for position, host in enumerate(hosts):
        y = top_pad + position * row_h
        shapes.append(
            f'<rect x="{label_w}" y="{y}" width="{cell_w * columns:.1f}" height="{row_h - 2}" '
            f'fill="{NO_DATA_COLOUR}"/>'
            f'<text x="{label_w - 6}" y="{y + row_h - 5}" text-anchor="end">'
            f"{_e(_short(host, 38))}<title>{_e(host)}: mean {mean_of[host]:.0%}</title></text>"
        )
    for host, column, util in binned.iter_rows():
        if host not in index or util is None:
            continue
        x = label_w + column * cell_w
        y = top_pad + index[host] * row_h
        shapes.append(
            f'<rect x="{x:.2f}" y="{y}" width="{cell_w + 0.05:.2f}" height="{row_h - 2}" '
            f'fill="{_viridis(util)}"/>'
        )
    for column in range(0, columns, max(1, math.ceil(24 / bucket))):
        moment = first + timedelta(hours=column * bucket)
        shapes.append(
            f'<text x="{label_w + column * cell_w:.1f}" y="14">{moment:%m-%d %H:00}</text>'
        )
    height = top_pad + len(hosts) * row_h + 6
    note = f"{bucket} h per cell" if bucket > 1 else "1 h per cell"
    if omitted:
        note += f"; {omitted} busier hosts not shown"
    svg = (
        f'<svg role="img" aria-label="GPU utilisation per host and hour" '
        f'viewBox="0 0 {width} {height}" width="100%">{"".join(shapes)}</svg>'
    )
    scale = [(f"{p}%", colour) for p, colour in zip((0, 25, 50, 75, 100), VIRIDIS, strict=True)]
    return svg + _legend([*scale, ("no data", NO_DATA_COLOUR)], suffix=f"UTC hours, {note}")


def _idle_waste(alloc: pl.DataFrame, findings: pl.DataFrame) -> str:
    idle = (
        alloc.filter(pl.col("category") == "gpu_idle")
        .group_by("project", "currency")
        .agg(pl.col("amount").sum(), pl.col("gpu_hours_idle").sum())
        .sort(["amount", "project"], descending=[True, False])
    )
    kinds = ["idle_gpu_server", "model_on_cpu_in_gpu_host"]
    hosts = findings.filter(
        pl.col("kind").is_in(kinds), pl.col("est_monthly_waste").is_not_null()
    ).sort(["est_monthly_waste", "host"], descending=[True, False])
    bars: list[tuple[str, Decimal, str]] = [
        (f"project {p}", a, c) for p, c, a, _ in idle.iter_rows() if a
    ] + [
        (f"{KIND_TITLES.get(k, k)}: {h} (per month)", w, c or "")
        for k, h, w, c in hosts.select("kind", "host", "est_monthly_waste", "currency").iter_rows()
    ]
    if not bars:
        return "<p>No idle GPU cost in this period.</p>"
    peak = float(max(amount for _, amount, _ in bars)) or 1.0
    label_w, row_h, width = 420, 22, 1100
    shapes = []
    for position, (label, amount, currency) in enumerate(bars):
        y = position * row_h + 4
        w = max(1.0, (width - label_w - 170) * float(amount) / peak)
        colour = PALETTE[2] if label.startswith("project") else PALETTE[1]
        shapes.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{_e(_short(label, 64))}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row_h - 6}" fill="{colour}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 14}">'
            f"{_e(display_money(amount, currency))}</text>"
        )
    height = len(bars) * row_h + 8
    return (
        f'<svg role="img" aria-label="Idle GPU cost" viewBox="0 0 {width} {height}" '
        f'width="100%">{"".join(shapes)}</svg>'
        + _legend(
            [
                ("idle GPU cost in the period (allocation)", PALETTE[2]),
                ("idle hosts: projected monthly waste (findings)", PALETTE[1]),
            ]
        )
    )


def _findings_table(findings: pl.DataFrame) -> str:
    if findings.is_empty():
        return '<div class="card"><p>No findings.</p></div>'
    ranked = findings.sort(
        ["est_monthly_waste", "kind", "host"], descending=[True, False, False], nulls_last=True
    )
    rows = []
    for row in ranked.iter_rows(named=True):
        evidence = json.dumps(json.loads(row["evidence"] or "{}"), indent=1, sort_keys=True)
        waste = row["est_monthly_waste"]
        rows.append(
            "<tr>"
            f"<td>{_e(KIND_TITLES.get(row['kind'], row['kind']))}</td>"
            f"<td>{_e(row['host'] or row['resource_id'] or '')}</td>"
            f"<td>{_e(row['project'] or 'no owner tag')}</td>"
            f'<td class="sev-{_e(row["severity"] or "")}">{_e(row["severity"] or "")}</td>'
            f'<td class="num">{_e(display_money(waste, row["currency"]))}</td>'
            f"<td>{_e(row['recommendation'] or '')}"
            f"<details><summary>evidence</summary><pre>{_e(evidence)}</pre></details></td>"
            "</tr>"
        )
    head = (
        "<tr><th>Finding</th><th>Host</th><th>Owner</th><th>Severity</th>"
        "<th>Per month</th><th>Recommendation</th></tr>"
    )
    return f'<div class="card"><table>{head}{"".join(rows)}</table></div>'


def _unit_cost_table(unit_costs: pl.DataFrame) -> str:
    if unit_costs.is_empty():
        return '<div class="card"><p>No request counts.</p></div>'
    rows = [
        "<tr>"
        f"<td>{_e(r['day'])}</td><td>{_e(r['host'] or r['resource_id'] or '')}</td>"
        f'<td>{_e(r["project"] or "")}</td><td class="num">{r["requests"]:,}</td>'
        f'<td class="num">{_e(display_money(r["cost"], r["currency"]))}</td>'
        f'<td class="num">{_e(display_money(r["cost_per_1k_requests"], r["currency"]))}</td>'
        "</tr>"
        for r in unit_costs.sort("day", "host", nulls_last=True).iter_rows(named=True)
    ]
    head = (
        "<tr><th>Day</th><th>Model server</th><th>Owner</th><th>Requests</th><th>Cost</th>"
        "<th>Per 1,000 requests</th></tr>"
    )
    return f'<div class="card"><table>{head}{"".join(rows)}</table></div>'


# ---- drawing helpers -------------------------------------------------------------------------


def _colours(series: Sequence[str]) -> dict[str, str]:
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    if "other" in colours:
        colours["other"] = OTHER_COLOUR
    return colours


def _legend(items: Any, suffix: str = "") -> str:
    body = "".join(f'<span><i style="background:{c}"></i>{_e(name)}</span>' for name, c in items)
    tail = f"<span>{_e(suffix)}</span>" if suffix else ""
    return f'<div class="legend">{body}{tail}</div>'


def _viridis(value: float) -> str:
    """Colour of a utilisation 0..1 on the viridis stops, linearly interpolated."""
    clamped = min(1.0, max(0.0, value)) * (len(VIRIDIS) - 1)
    low = min(int(clamped), len(VIRIDIS) - 2)
    fraction = clamped - low
    a, b = _rgb(VIRIDIS[low]), _rgb(VIRIDIS[low + 1])
    mixed = (round(x + (y - x) * fraction) for x, y in zip(a, b, strict=True))
    return "#" + "".join(f"{channel:02x}" for channel in mixed)


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
