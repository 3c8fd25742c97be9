"""The Slack digest's payloads: shape, content, completeness line, splitting at Slack's limits."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from gpucost.core.contracts import ALLOCATION, FINDINGS
from gpucost.reports.digest import (
    HEADER_TEXT_LIMIT,
    MAX_BLOCKS_PER_MESSAGE,
    SECTION_TEXT_BUDGET,
    SECTION_TEXT_LIMIT,
    block_text_length,
    build_digest,
    completeness_line,
    payloads_json,
    periods,
    project_costs,
)
from gpucost.reports.findings import find_all
from tests.reports.fleet import Fleet

MANIFEST_GAPS = {
    "run_id": "20241001T030000Z-abc123",
    "sources": [
        {"name": "finance-focus", "kind": "focus-files", "status": "ok"},
        {"name": "dcgm-prod", "kind": "dcgm-exporter", "status": "empty", "error": None},
        {
            "name": "aws-cur",
            "kind": "aws-cur",
            "status": "failed",
            "error": "AccessDenied on s3://cur-bucket/<report>",
        },
    ],
    "stages": [{"name": "allocate", "status": "ok"}],
}
MANIFEST_OK = {"run_id": "r-1", "sources": [{"name": "finance-focus", "status": "ok"}]}


def _allocation(rows: list[tuple[date, str, str, str, float | None]]) -> pl.DataFrame:
    """(day, project, category, amount, fte) rows as an allocation table."""
    return ALLOCATION.conform(
        pl.DataFrame(
            {
                "day": [r[0] for r in rows],
                "project": [r[1] for r in rows],
                "cost_center": [f"CC-{r[1]}" for r in rows],
                "category": [r[2] for r in rows],
                "amount": pl.Series(
                    [Decimal(r[3]) for r in rows], dtype=ALLOCATION.schema["amount"]
                ),
                "currency": ["USD"] * len(rows),
                "fte": [r[4] for r in rows],
                "source": ["test"] * len(rows),
            },
            strict=False,
        ),
        "test",
    )


def _texts(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


def test_periods_compare_with_the_same_days_of_the_previous_month() -> None:
    spans = periods(date(2024, 3, 31))
    assert spans["yesterday"] == (date(2024, 3, 31), date(2024, 3, 31))
    assert spans["day_before"] == (date(2024, 3, 30), date(2024, 3, 30))
    assert spans["month_to_date"] == (date(2024, 3, 1), date(2024, 3, 31))
    assert spans["previous_month_to_date"] == (date(2024, 2, 1), date(2024, 2, 29))
    assert periods(date(2024, 1, 15))["previous_month_to_date"] == (
        date(2023, 12, 1),
        date(2023, 12, 15),
    )


def test_project_costs_by_hand() -> None:
    day = date(2024, 9, 3)
    allocation = _allocation(
        [
            (date(2024, 8, 1), "a", "gpu_used", "10", 1.0),
            (date(2024, 8, 3), "a", "gpu_used", "20", 1.0),
            (date(2024, 8, 4), "a", "gpu_used", "999", 1.0),  # after the compared days
            (date(2024, 9, 1), "a", "gpu_used", "5", 2.0),
            (date(2024, 9, 2), "a", "gpu_used", "8", 2.0),
            (date(2024, 9, 3), "a", "gpu_used", "12", 3.0),
            (date(2024, 9, 3), "a", "storage", "0.5", 3.0),  # FTE repeated: counted once
            (date(2024, 9, 3), "b", "compute", "1", None),
        ]
    )
    costs = {cost.project: cost for cost in project_costs(allocation, day)}
    a = costs["a"]
    assert a.yesterday == Decimal("12.5") and a.day_before == Decimal("8")
    assert a.month_to_date == Decimal("25.5") and a.previous_month_to_date == Decimal("30")
    assert a.fte_yesterday == 3.0
    assert a.fte_month_average == (2.0 + 2.0 + 3.0) / 3
    assert costs["b"].fte_yesterday is None
    assert [cost.project for cost in project_costs(allocation, day)] == ["a", "b"]


def test_digest_shape_and_content(fleet: Fleet, allocation: pl.DataFrame) -> None:
    day = fleet.window.end - timedelta(days=1)
    findings = find_all(fleet.data())
    payloads = build_digest(
        allocation,
        findings,
        MANIFEST_GAPS,
        day=day,
        links={"HTML report": "https://reports.example.com/2024-09-25.html"},
    )
    json.loads(payloads_json(payloads))  # serialisable as sent
    assert len(payloads) == 1
    payload = payloads[0]
    assert set(payload) == {"text", "blocks"} and payload["text"] == f"GPU cost digest {day}"
    blocks = payload["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"] == {
        "type": "plain_text",
        "text": f"GPU cost digest · {day}",
        "emoji": True,
    }
    assert {block["type"] for block in blocks} <= {"header", "section", "context", "divider"}
    text = _texts(payload)
    # Completeness: every source that failed or returned nothing is named; mrkdwn is escaped.
    assert "Incomplete data" in text
    assert "source dcgm-prod returned nothing" in text
    assert "source aws-cur failed (AccessDenied on s3://cur-bucket/&lt;report&gt;)" in text
    # Yesterday and month to date per project, with FTE beside the cost.
    for project in ("llm-serving", "recsys-training", "vision-research", "speech-asr"):
        assert f"*{project}*" in text
    assert "FTE" in text and "MTD" in text and "yesterday" in text
    # Top findings with their money.
    assert "383.98 USD/month" in text and "2,165.58 USD/month" in text
    assert "Idle GPU server" in text and "Model on CPU in a GPU host" in text
    assert "<https://reports.example.com/2024-09-25.html|HTML report>" in text


def test_completeness_line() -> None:
    complete, line = completeness_line(MANIFEST_OK)
    assert complete and "Data complete" in line and "r-1" in line
    unknown, line = completeness_line(None)
    assert not unknown and "unknown" in line
    failed_stage = {**MANIFEST_OK, "stages": [{"name": "export", "status": "failed", "error": "x"}]}
    assert "stage export failed" in completeness_line(failed_stage)[1]


def test_large_digests_are_split_within_slack_limits() -> None:
    day = date(2024, 9, 30)
    rows = [
        (day - timedelta(days=offset), f"project-{number:03d}-{'x' * 40}", "gpu_used", "12.34", 1.5)
        for number in range(300)
        for offset in (0, 1)
    ]
    findings = FINDINGS.conform(
        pl.DataFrame(
            {
                "day": [day] * 120,
                "kind": ["idle_gpu_server"] * 120,
                "host": [f"host-{n:03d}" for n in range(120)],
                "project": ["p"] * 120,
                "evidence": ["{}"] * 120,
                "est_monthly_waste": pl.Series(
                    [Decimal(n) for n in range(120)], dtype=FINDINGS.schema["est_monthly_waste"]
                ),
                "currency": ["USD"] * 120,
                "recommendation": ["Stop it. " * 200] * 120,  # 1,800 characters each
                "severity": ["low"] * 120,
                "source": ["test"] * 120,
            }
        ),
        "test",
    )
    payloads = build_digest(_allocation(rows), findings, MANIFEST_OK, day=day, top_findings=100)
    assert len(payloads) > 2
    for index, payload in enumerate(payloads, start=1):
        blocks = payload["blocks"]
        assert len(blocks) <= MAX_BLOCKS_PER_MESSAGE
        assert sum(block_text_length(b) for b in blocks) <= 10_000
        for block in blocks:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= SECTION_TEXT_BUDGET < SECTION_TEXT_LIMIT
            if block["type"] == "header":
                assert len(block["text"]["text"]) <= HEADER_TEXT_LIMIT
        assert f"part {index} of {len(payloads)}" in payload["text"]
        assert f"part {index} of {len(payloads)}" in _texts(payload)
    everything = "".join(_texts(p) for p in payloads)
    assert all(f"project-{n:03d}" in everything for n in range(300))  # nothing dropped
    assert everything.count("*Idle GPU server*") == 100
    assert "20 more findings" in everything
    assert "host-119" in everything and "host-019" not in everything  # biggest money first


def test_unit_costs_appear_when_given(fleet: Fleet, allocation: pl.DataFrame) -> None:
    day = fleet.window.end - timedelta(days=1)
    unit_costs = pl.DataFrame(
        {
            "day": [day],
            "project": ["llm-serving"],
            "host": ["gpu-server-1"],
            "resource_id": ["i-1"],
            "requests": [2_000_000],
            "cost": pl.Series([Decimal("20")], dtype=pl.Decimal(38, 18)),
            "currency": ["USD"],
            "cost_per_1k_requests": pl.Series([Decimal("0.01")], dtype=pl.Decimal(38, 18)),
            "priced_hours": [24],
        }
    )
    payloads = build_digest(allocation, FINDINGS.empty(), None, day=day, unit_costs=unit_costs)
    text = _texts(payloads[0])
    assert "Cost per 1,000 requests" in text and "2,000,000 requests" in text
    assert "0.01 USD" in text and "Findings*: none" in text
