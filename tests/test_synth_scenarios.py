"""``gpucost synth``'s scenario hosts, read through the collectors and allocated, against their
minute-level truth (``scenarios/truth.json``), under both GPU bases and all three idle policies.

The pages go through the ``dcgm-exporter`` source's reader (pod labels as written, federated
``exported_*``, the exporter's own pod), the bill through ``focus-files`` (per-hour, per-day,
Savings Plan and spot charges), the hosts through ``inventory-file`` (an owner-less one too).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpucost.allocator.allocate import allocate
from gpucost.allocator.policy import AllocationPolicy, GpuBasis, IdlePolicy
from gpucost.collector.dcgm_exporter import DcgmExporter
from gpucost.collector.focus_files import read_focus_file
from gpucost.collector.inventory_file import read_inventory
from gpucost.core.contracts import HEADCOUNT
from gpucost.core.window import Window
from gpucost.synth import generate
from gpucost.synth.fleet import make_projects
from gpucost.synth.scenarios import BASES, IDLE_POLICIES, SCENARIO_INTERVAL_S, write_scenarios
from tests.allocator.builders import rule
from tests.collector.builders import build_collector

WINDOW = Window(date(2024, 9, 24), date(2024, 9, 25))
START = datetime(2024, 9, 24, tzinfo=UTC)
RELATIVE = Decimal("1e-9")
INGESTED_AT = datetime(2024, 10, 2, tzinfo=UTC)


def check_against_truth(folder: Path, project_names: list[str]) -> int:
    """Allocate the scenarios under every basis and idle policy; compare with the truth.
    Returns the number of (project, category) figures compared."""
    truth: dict[str, Any] = json.loads((folder / "truth.json").read_text())
    billing_file = folder / "billing" / "scenarios-focus.csv"
    billing = read_focus_file(str(billing_file), billing_file.read_bytes(), "sx", INGESTED_AT)
    assert billing.rejects.height == 0
    inventory, rejects = read_inventory(
        str(folder / "inventory.csv"), (folder / "inventory.csv").read_bytes(), "sx", WINDOW
    )
    assert rejects.height == 0
    source = build_collector(
        DcgmExporter,
        name="sx-dcgm",
        paths=[str(folder / "dcgm" / "*" / "*.prom")],
        scrape_interval_s=truth["scrape_interval_s"],
    )
    collected = source.collect(WINDOW)
    assert collected.rejects.height == 0
    usage = collected.frames["gpu_usage"]
    # The exporter-only host and the federated MIG host carry the exporter's own pod.
    assert "gpu-operator" not in usage.get_column("namespace").drop_nulls().to_list()
    rules = [
        rule(name, tags={"project": name}, namespaces=(f"{name}-*",)) for name in project_names
    ]
    # A rule on the exporter's namespace, as a platform team would have: it gets nothing.
    rules.append(rule("platform", namespaces=("gpu-operator*",)))
    total = billing.frame.get_column("EffectiveCost").sum()
    assert isinstance(total, Decimal) and total > 0
    compared = 0
    for basis in BASES:
        for idle in IDLE_POLICIES:
            policy = AllocationPolicy(gpu_basis=_basis(basis), idle=_idle(idle))
            result = allocate(
                billing.frame.lazy(),
                usage.lazy(),
                inventory.lazy(),
                HEADCOUNT.empty().lazy(),
                rules,
                policy,
            )
            got = {
                (project, category): amount
                for project, category, amount in result.allocation.group_by("project", "category")
                .agg(pl.col("amount").sum())
                .iter_rows()
            }
            assert sum(got.values()) == total  # conserved exactly
            expected = {
                (project, category): Decimal(value)
                for project, entry in truth["gpu_cost"][basis][idle].items()
                for category, value in entry.items()
            }
            for key in sorted(set(got) | set(expected)):
                difference = abs(got.get(key, Decimal(0)) - expected.get(key, Decimal(0)))
                assert difference <= RELATIVE * total, (basis, idle, key, difference)
                compared += 1
    return compared


def _basis(name: str) -> GpuBasis:
    assert name in ("usage", "allocation")
    return "usage" if name == "usage" else "allocation"


def _idle(name: str) -> IdlePolicy:
    assert name in ("owner", "users", "separate")
    return "owner" if name == "owner" else "users" if name == "users" else "separate"


def test_synth_writes_scenarios_that_match_their_truth(tmp_path: Path) -> None:
    summary = generate(tmp_path, gpus=16, days=1, projects=4, seed=42)
    assert summary.scenarios_dir == tmp_path / "scenarios"
    assert (summary.scenarios_dir / "truth.json") in summary.files
    truth = json.loads((summary.scenarios_dir / "truth.json").read_text())
    assert truth["scrape_interval_s"] == SCENARIO_INTERVAL_S
    names = list(json.loads(summary.truth_json.read_text())["projects"])
    assert check_against_truth(summary.scenarios_dir, names) >= 6 * 5


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32))
def test_any_drawn_schedule_matches_its_truth(seed: int, tmp_path_factory: Any) -> None:
    folder = tmp_path_factory.mktemp("scenarios")
    projects = make_projects(3)
    write_scenarios(folder, projects, START, random.Random(seed))
    check_against_truth(folder, [project.name for project in projects])


@pytest.mark.parametrize("seed", [1, 2])
def test_scenarios_are_reproducible(tmp_path: Path, seed: int) -> None:
    first = write_scenarios(tmp_path / "a", make_projects(4), START, random.Random(seed))
    second = write_scenarios(tmp_path / "b", make_projects(4), START, random.Random(seed))
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
