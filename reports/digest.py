"""The morning Slack digest, as Block Kit payloads for an incoming webhook (pure).

:func:`build_digest` reads the allocation (cost and FTE per project), the findings and the run
manifest and returns one or more messages, each ``{"text": ..., "blocks": [...]}``:

* a header and a data-completeness line naming every source that failed or returned nothing
  (DESIGN.md: "no silent gaps");
* yesterday and month-to-date cost per project against the previous period (the day before;
  the same days of the previous month), FTE beside the cost;
* the top findings with their money and advice; the cost per 1,000 requests per model server
  when request counts are known; links to the HTML report and exports when given.

Slack's limits (Block Kit reference, "Blocks" and "Section"): at most 50 blocks per message,
a section's text at most 3,000 characters, a header's at most 150. The digest keeps every
section under :data:`SECTION_TEXT_BUDGET` (2,000) and every message's text under
:data:`MESSAGE_TEXT_BUDGET`, and splits into several messages, each saying "part i of n",
rather than cutting content.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

import polars as pl

from gpucost.reports._common import Frame, display_money, eager

MAX_BLOCKS_PER_MESSAGE: Final = 50
"""Slack: "You can include up to 50 blocks in each message" (Block Kit reference)."""
SECTION_TEXT_LIMIT: Final = 3000
"""Slack: a section block's ``text`` is at most 3,000 characters."""
SECTION_TEXT_BUDGET: Final = 2000
"""What the digest puts in one section: well under the limit, room for escaping."""
HEADER_TEXT_LIMIT: Final = 150
"""Slack: a header block's plain text is at most 150 characters."""
MESSAGE_TEXT_BUDGET: Final = 8000
"""Text per message, all blocks together: well under the 10,000 the issue allows."""

KIND_TITLES: Final = {
    "idle_gpu_server": "Idle GPU server",
    "cpu_misplaced_model_server": "Model server on CPUs",
    "model_on_cpu_in_gpu_host": "Model on CPU in a GPU host",
    "oversized_gpu": "Oversized GPU",
}


@dataclass(frozen=True)
class ProjectCost:
    """One line of the cost table."""

    project: str
    cost_center: str | None
    currency: str
    yesterday: Decimal
    day_before: Decimal
    month_to_date: Decimal
    previous_month_to_date: Decimal
    fte_yesterday: float | None
    fte_month_average: float | None
    gpu_hours_idle_yesterday: float | None


def periods(day: date) -> dict[str, tuple[date, date]]:
    """Inclusive date ranges: yesterday, the day before, month to date and the previous MTD.

    The previous month-to-date covers the same days of the previous month, cut at its end
    (31 March compares with 1-29 February in a leap year).
    """
    month_start = day.replace(day=1)
    previous_end_of_month = month_start - timedelta(days=1)
    previous_start = previous_end_of_month.replace(day=1)
    previous_last = min(previous_start + timedelta(days=day.day - 1), previous_end_of_month)
    return {
        "yesterday": (day, day),
        "day_before": (day - timedelta(days=1), day - timedelta(days=1)),
        "month_to_date": (month_start, day),
        "previous_month_to_date": (previous_start, previous_last),
    }


def project_costs(allocation: Frame, day: date) -> list[ProjectCost]:
    """Cost per project and currency for the digest's periods, biggest month-to-date first.

    A project's FTE on a day is the largest ``fte`` on its rows that day (the allocator may
    carry the day's FTE on one row or repeat it on each); the month's is the mean over the
    days that have one.
    """
    spans = periods(day)
    earliest = min(start for start, _ in spans.values())
    frame = eager(allocation).filter(pl.col("day") >= earliest, pl.col("day") <= day)
    sums = [
        pl.col("amount").filter(pl.col("day").is_between(start, end)).sum().alias(name)
        for name, (start, end) in spans.items()
    ]
    money = frame.group_by("project", "currency").agg(
        *sums,
        pl.col("cost_center").drop_nulls().min().alias("cost_center"),
        pl.col("gpu_hours_idle")
        .filter(pl.col("day") == day)
        .sum()
        .alias("gpu_hours_idle_yesterday"),
    )
    month_start, _ = spans["month_to_date"]
    fte = (
        frame.filter(pl.col("day") >= month_start)
        .group_by("project", "day")
        .agg(pl.col("fte").max())
        .group_by("project")
        .agg(
            pl.col("fte").filter(pl.col("day") == day).max().alias("fte_yesterday"),
            pl.col("fte").mean().alias("fte_month_average"),
        )
    )
    joined = money.join(fte, on="project", how="left").sort(
        ["currency", "month_to_date", "project"], descending=[False, True, False]
    )
    return [
        ProjectCost(
            project=row["project"],
            cost_center=row["cost_center"],
            currency=row["currency"],
            yesterday=row["yesterday"] or Decimal(0),
            day_before=row["day_before"] or Decimal(0),
            month_to_date=row["month_to_date"] or Decimal(0),
            previous_month_to_date=row["previous_month_to_date"] or Decimal(0),
            fte_yesterday=row["fte_yesterday"],
            fte_month_average=row["fte_month_average"],
            gpu_hours_idle_yesterday=row["gpu_hours_idle_yesterday"],
        )
        for row in joined.iter_rows(named=True)
    ]


def data_gaps(manifest: Mapping[str, Any] | None) -> list[str] | None:
    """Plain-text gaps of a run (sources failed or empty, stages failed); None when unknown."""
    if manifest is None:
        return None
    gaps: list[str] = []
    for source in manifest.get("sources") or []:
        status, name = source.get("status"), str(source.get("name"))
        if status == "failed":
            reason = _shorten(str(source.get("error") or "no error text"), 200)
            gaps.append(f"source {name} failed ({reason})")
        elif status == "empty":
            gaps.append(f"source {name} returned nothing")
    for stage in manifest.get("stages") or []:
        if stage.get("status") == "failed":
            reason = _shorten(str(stage.get("error") or "no error text"), 200)
            gaps.append(f"stage {stage.get('name')} failed ({reason})")
    return gaps


def completeness_line(manifest: Mapping[str, Any] | None) -> tuple[bool, str]:
    """``(complete, mrkdwn line)`` from a run manifest (``RunManifest.to_dict()``)."""
    gaps = data_gaps(manifest)
    if gaps is None:
        return False, ":warning: *Data completeness unknown*: no run manifest was given."
    if gaps:
        return False, (
            ":warning: *Incomplete data*: "
            + "; ".join(escape(gap) for gap in gaps)
            + ". Costs below can be lower than the real bill."
        )
    assert manifest is not None
    used = [s for s in manifest.get("sources") or [] if s.get("status") == "ok"]
    run = escape(str(manifest.get("run_id", "?")))
    return True, (
        f":white_check_mark: *Data complete*: {len(used)} sources returned rows (run `{run}`)."
    )


def build_digest(
    allocation: Frame,
    findings: Frame,
    manifest: Mapping[str, Any] | None,
    *,
    day: date,
    unit_costs: Frame | None = None,
    top_findings: int = 10,
    title: str = "GPU cost digest",
    links: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The digest of ``day`` (yesterday, as the night sees it) as Slack webhook payloads."""
    heading = _shorten(f"{title} · {day.isoformat()}", HEADER_TEXT_LIMIT)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": heading, "emoji": True}},
        _context(
            "Allocated EffectiveCost (amortised, after discounts and credits); "
            "Δ against the day before and the same days of the previous month."
        ),
        _section(_shorten(completeness_line(manifest)[1], SECTION_TEXT_BUDGET)),
        {"type": "divider"},
    ]
    blocks += _cost_blocks(project_costs(allocation, day), day)
    blocks += _finding_blocks(eager(findings), top_findings)
    if unit_costs is not None:
        blocks += _unit_cost_blocks(eager(unit_costs), day)
    if links:
        elements = [f"<{url}|{escape(label)}>" for label, url in sorted(links.items())]
        blocks.append(_context(" · ".join(elements)))
    return split_messages(blocks, fallback=f"{title} {day.isoformat()}")


def split_messages(blocks: Sequence[Mapping[str, Any]], *, fallback: str) -> list[dict[str, Any]]:
    """Pack blocks into messages within :data:`MAX_BLOCKS_PER_MESSAGE` and the text budget.

    With more than one message, each gets a "part i of n" context block (counted in the
    limit) and the ``text`` fallback names the part.
    """
    capacity = MAX_BLOCKS_PER_MESSAGE - 1
    budget = MESSAGE_TEXT_BUDGET - 100
    messages: list[list[Mapping[str, Any]]] = [[]]
    used = 0
    for block in blocks:
        size = block_text_length(block)
        if messages[-1] and (len(messages[-1]) >= capacity or used + size > budget):
            messages.append([])
            used = 0
        messages[-1].append(block)
        used += size
    total = len(messages)
    payloads: list[dict[str, Any]] = []
    for index, message in enumerate(messages, start=1):
        chunk = [dict(block) for block in message]
        text = fallback
        if total > 1:
            text = f"{fallback} (part {index} of {total})"
            part = _context(f"{escape(fallback)} · part {index} of {total}")
            chunk = [*chunk, part] if index == 1 else [part, *chunk]
        payloads.append({"text": text, "blocks": chunk})
    return payloads


def block_text_length(block: Mapping[str, Any]) -> int:
    """Characters of text a block carries (its text, fields and context elements)."""
    total = 0
    text = block.get("text")
    if isinstance(text, Mapping):
        total += len(str(text.get("text", "")))
    for item in list(block.get("fields") or []) + list(block.get("elements") or []):
        if isinstance(item, Mapping):
            total += len(str(item.get("text", "")))
    return total


def payloads_json(payloads: Sequence[Mapping[str, Any]]) -> str:
    """The payloads as pretty JSON (``--dry-run`` prints this)."""
    return json.dumps(list(payloads), indent=2, ensure_ascii=False) + "\n"


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- sections --------------------------------------------------------------------------------


def _cost_blocks(costs: list[ProjectCost], day: date) -> list[dict[str, Any]]:
    if not costs:
        return [_section("*Cost per project*: no allocated cost for this period.")]
    spans = periods(day)
    previous = spans["previous_month_to_date"]
    blocks: list[dict[str, Any]] = []
    for currency in sorted({cost.currency for cost in costs}):
        rows = [cost for cost in costs if cost.currency == currency]
        yesterday = sum((c.yesterday for c in rows), Decimal(0))
        day_before = sum((c.day_before for c in rows), Decimal(0))
        mtd = sum((c.month_to_date for c in rows), Decimal(0))
        previous_mtd = sum((c.previous_month_to_date for c in rows), Decimal(0))
        head = (
            f"*Cost per project, {escape(currency)}* — total yesterday "
            f"*{display_money(yesterday, currency)}* ({_delta(yesterday, day_before)}), "
            f"month to date *{display_money(mtd, currency)}* ({_delta(mtd, previous_mtd)} vs "
            f"{previous[0]:%d}–{previous[1]:%d %b})"
        )
        lines = [head] + [_cost_line(cost) for cost in rows]
        blocks += [_section(text) for text in _chunks(lines, SECTION_TEXT_BUDGET)]
    return blocks


def _cost_line(cost: ProjectCost) -> str:
    center = f" ({escape(cost.cost_center)})" if cost.cost_center else ""
    fte = f" · {cost.fte_yesterday:.1f} FTE" if cost.fte_yesterday is not None else " · FTE n/a"
    idle = (
        f" · {cost.gpu_hours_idle_yesterday:,.0f} idle GPU-h"
        if cost.gpu_hours_idle_yesterday
        else ""
    )
    return (
        f"• *{escape(cost.project)}*{center}: yesterday "
        f"{display_money(cost.yesterday, cost.currency, suffix=False)} "
        f"({_delta(cost.yesterday, cost.day_before)}) · "
        f"MTD {display_money(cost.month_to_date, cost.currency, suffix=False)} "
        f"({_delta(cost.month_to_date, cost.previous_month_to_date)}){fte}{idle}"
    )


def _finding_blocks(findings: pl.DataFrame, top: int) -> list[dict[str, Any]]:
    if findings.is_empty():
        return [{"type": "divider"}, _section("*Findings*: none today.")]
    ranked = findings.sort(
        ["est_monthly_waste", "kind", "host"], descending=[True, False, False], nulls_last=True
    )
    summary_lines = []
    positive = ranked.filter(pl.col("est_monthly_waste") > 0)
    for currency, group in _by_currency(positive):
        total = sum(group["est_monthly_waste"], Decimal(0))
        summary_lines.append(f"about *{display_money(total, currency)}/month* to save")
    severities = ranked["severity"].value_counts().sort("severity")
    counted = ", ".join(f"{count} {level}" for level, count in severities.iter_rows())
    blocks: list[dict[str, Any]] = [
        {"type": "divider"},
        _section(f"*Findings*: {ranked.height} ({counted}); " + "; ".join(summary_lines) + "."),
    ]
    for row in ranked.head(top).iter_rows(named=True):
        waste = row["est_monthly_waste"]
        money = (
            f"*{display_money(waste, row['currency'])}/month*"
            if waste is not None
            else "money unknown"
        )
        owner = escape(row["project"] or "no owner tag")
        title = KIND_TITLES.get(row["kind"], row["kind"])
        text = (
            f"*{escape(title)}* · `{escape(row['host'] or row['resource_id'] or '?')}` · "
            f"owner *{owner}* · {money} · {escape(row['severity'] or '')}\n"
            f"{escape(row['recommendation'] or '')}"
        )
        blocks.append(_section(_shorten(text, SECTION_TEXT_BUDGET)))
    if ranked.height > top:
        more = ranked.height - top
        blocks.append(_context(f"{more} more finding{'s' if more > 1 else ''} in the HTML report."))
    return blocks


def _unit_cost_blocks(unit_costs: pl.DataFrame, day: date) -> list[dict[str, Any]]:
    rows = unit_costs.filter(pl.col("day") == day).sort(
        "cost_per_1k_requests", descending=True, nulls_last=True
    )
    if rows.is_empty():
        return []
    lines = [f"*Cost per 1,000 requests*, {day.isoformat()}"]
    for row in rows.iter_rows(named=True):
        per_thousand = row["cost_per_1k_requests"]
        price = (
            f"*{display_money(per_thousand, row['currency'])}* per 1k"
            if per_thousand is not None
            else "no price"
        )
        name = escape(row["host"] or row["resource_id"] or "?")
        owner = f" ({escape(row['project'])})" if row["project"] else ""
        lines.append(f"• `{name}`{owner}: {row['requests']:,} requests · {price}")
    return [{"type": "divider"}] + [_section(t) for t in _chunks(lines, SECTION_TEXT_BUDGET)]


# ---- small pieces ----------------------------------------------------------------------------


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _chunks(lines: Iterable[str], budget: int) -> list[str]:
    """Join lines into texts of at most ``budget`` characters (a longer line is shortened)."""
    chunks: list[str] = []
    current = ""
    for raw in lines:
        line = _shorten(raw, budget)
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > budget and current:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _delta(current: Decimal, previous: Decimal) -> str:
    if previous == 0:
        return "new" if current else "±0"
    change = (current - previous) / abs(previous) * 100
    rounded = change.quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
    return f"{'+' if rounded > 0 else ''}{rounded}%"


def _by_currency(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    groups = frame.with_columns(pl.col("currency").fill_null("?"))
    return [
        (str(currency), groups.filter(pl.col("currency") == currency))
        for currency in sorted(groups["currency"].unique().to_list())
    ]
