"""roster and inventory-file: day expansion, names never stored, bad rows named."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from gpucost.collector.inventory_file import read_inventory
from gpucost.collector.roster import read_roster
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

WEEK = Window(date(2024, 9, 1), date(2024, 9, 8))

ROSTER = b"""person_id,name,project,fraction,start,end,cost_center
p1,Ada Lovelace,llm-serving,0.5,2024-01-01,,CC-104
p1,Ada Lovelace,recsys-training,0.5,2024-01-01,2024-09-03,CC-105
p2,Alan Turing,llm-serving,1,2024-09-05,,CC-104
p3,Grace Hopper,llm-serving,1.5,2024-01-01,,CC-104
p4,Edsger Dijkstra,vision,0.7,2024-01-01,,CC-106
p4,Edsger Dijkstra,llm-serving,0.6,2024-09-06,,CC-104
p5,Barbara Liskov,vision,1,2024-09-05,2024-09-01,CC-106
"""


def test_roster_expands_to_daily_fte_without_names() -> None:
    headcount, rejects = read_roster("roster.csv", ROSTER, "roster", WEEK)
    assert "name" not in headcount.columns
    assert not any("Lovelace" in str(v) for v in headcount.rows())
    fte = dict(
        headcount.filter(pl.col("project") == "llm-serving")
        .group_by("day")
        .agg(pl.col("fraction").sum())
        .iter_rows()
    )
    # p1 half time all week, p2 from the 5th, p4 only before the 6th (over-booked after).
    assert fte[date(2024, 9, 1)] == 0.5
    assert fte[date(2024, 9, 5)] == 1.5
    assert fte[date(2024, 9, 7)] == 1.5
    recsys_days = headcount.filter(pl.col("project") == "recsys-training")["day"].to_list()
    assert sorted(recsys_days) == [date(2024, 9, 1), date(2024, 9, 2), date(2024, 9, 3)]
    reasons = {(r["row"], r["field"]): r["reason"] for r in rejects.iter_rows(named=True)}
    assert reasons[(4, "fraction")] == "fraction must be a number with 0 < fraction <= 1"
    assert reasons[(7, "end")] == "end must be a date YYYY-MM-DD on or after start"
    assert reasons[(5, "fraction")].startswith("fractions of this person add up to more than 1")
    # p4's vision time before the over-booking still counts.
    assert headcount.filter((pl.col("person_id") == "p4") & (pl.col("day") == date(2024, 9, 5)))[
        "fraction"
    ].to_list() == [0.7]


def test_roster_missing_columns() -> None:
    with pytest.raises(CollectorError, match="roster columns missing: fraction, start"):
        read_roster("r.csv", b"person_id,project\np,x\n", "roster", WEEK)


HEADER = b"resource_id,provider,host,instance_type,gpu_count,gpu_model,vcpus,role,tags,"
INVENTORY = (
    HEADER
    + b"""hourly_list_price,first_seen
i-0abc,AWS,ip-10-0-0-1,p5.48xlarge,8,H100,192,training,"{"" project"":""llm""}",98.32,2024-09-03
rack1-node7,On-premises,rack1-node7,,8,A100,128,training,,,
i-bad,AWS,ip-10-0-0-2,g6.xlarge,one,L4,4,model-server,,0.805,
i-badtags,AWS,ip-10-0-0-3,g6.xlarge,1,L4,4,model-server,{oops,0.805,
"""
)


def test_inventory_snapshot_per_day() -> None:
    inventory, rejects = read_inventory("hosts.csv", INVENTORY, "racks", WEEK)
    per_host = dict(inventory.group_by("resource_id").len().iter_rows())
    assert per_host == {"i-0abc": 5, "rack1-node7": 7}
    row = inventory.filter(pl.col("resource_id") == "i-0abc").row(0, named=True)
    assert row["hourly_list_price"] == Decimal("98.32")
    assert row["tags"] == '{"project":"llm"}'
    assert row["gpu_count"] == 8
    assert {(r["row"], r["field"]) for r in rejects.iter_rows(named=True)} == {
        (3, "gpu_count"),
        (4, "tags"),
    }


def test_inventory_unknown_columns_are_named() -> None:
    with pytest.raises(CollectorError, match="columns not in the inventory table: colour"):
        read_inventory("h.csv", b"resource_id,provider,colour\nx,AWS,red\n", "racks", WEEK)


def test_host_metrics_file_reads_fractions_and_rejects_percentages() -> None:
    from gpucost.collector.host_metrics_file import read_host_metrics

    data = (
        b"hour,resource_id,host,cpu_util_avg,cpu_util_max,cpu_util_p95,source\n"
        b"2024-09-24T00:00:00Z,i-1,h1,0.5,0.9,0.8,synth\n"
        b"2024-09-24T01:00:00Z,i-1,h1,55,90,80,synth\n"
        b"later,i-1,h1,0.5,0.9,0.8,synth\n"
    )
    metrics, rejects = read_host_metrics("cpu.csv", data, "node-cpu")
    assert metrics.height == 1
    assert metrics.row(0, named=True)["cpu_util_p95"] == 0.8
    assert set(metrics["source"]) == {"node-cpu"}
    assert {(r["row"], r["field"]) for r in rejects.iter_rows(named=True)} == {
        (2, "cpu_util_avg"),
        (2, "cpu_util_max"),
        (2, "cpu_util_p95"),
        (3, "hour"),
    }
