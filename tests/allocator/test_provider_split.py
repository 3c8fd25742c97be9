"""A provider's own split of a shared resource (FOCUS 1.3 AllocatedTags / AllocatedResourceId)
reaches the workload's project: rules match the split before the charge's own Tags.

The end-to-end case reads real Microsoft and Oracle rows of the FOCUS 1.0 sample, re-written
in the FOCUS 1.3 column set with every fifth charge split between two workloads
(:func:`tests.collector.test_focus_providers.split_rows`); expected amounts are summed here from
the CSV text with Python's Decimal.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from gpucost.allocator.allocate import AllocationResult, allocate
from gpucost.allocator.matching import billing_match_code, targets
from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.projects import ProjectRule, resolve_billing_projects, tag_text
from gpucost.core.contracts import ALLOCATION
from tests.allocator.builders import billing, charge, headcount, inventory, rule, usage
from tests.collector.test_focus_providers import NULLS, collect, split_rows, write_csv


def _allocate(bill: pl.DataFrame, rules: list[ProjectRule]) -> AllocationResult:
    result = allocate(
        bill.lazy(),
        usage([]).lazy(),
        inventory([]).lazy(),
        headcount([]).lazy(),
        rules,
        AllocationPolicy(shared_service_categories=()),
    )
    ALLOCATION.validate(result.allocation, "allocator")
    assert (result.reconciliation["difference"] == 0).all()
    return result


def _by_project(result: AllocationResult) -> dict[str, Decimal]:
    sums = result.allocation.group_by("project").agg(pl.col("amount").sum()).iter_rows()
    return {str(project): amount for project, amount in sums}


def test_split_rows_of_a_real_focus_1_3_file_reach_the_workloads(tmp_path: Path) -> None:
    rows = split_rows()
    path = tmp_path / "focus_1.3_split.csv"
    write_csv(path, rows)
    bill, rejects, _ = collect(path)
    assert rejects.is_empty()
    rules = [
        # The shared resources' own Tags say org=trey; the first rule would take them whole
        # if the provider's split were not matched first.
        rule("trey", tags={"org": "trey"}),
        # A number tag is matched by its text as written: {"FleetSize":500} matches "5?0".
        rule("fleet-500", tags={"FleetSize": "5?0"}),
        rule("serving", hosts=("pod/serving-*",)),
    ]
    result = _allocate(bill, rules)

    # By hand: a split row goes to its workload's rule; another row to "trey" by its own Tags;
    # an unmatched row follows its resource's other rows matched by their own Tags (a refund
    # follows its charge), never a workload's share; the rest is unallocated.
    def own(row: dict[str, str]) -> str | None:
        tags = json.loads(row["Tags"]) if row["Tags"] not in NULLS else {}
        # Keys are trimmed on the way in (Microsoft's rows carry " org").
        return "trey" if {k.strip(): v for k, v in tags.items()}.get("org") == "trey" else None

    owners = {row["ResourceId"] for row in rows if own(row) and row["AllocatedTags"] in NULLS}
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        cost = row["EffectiveCost"] if row["EffectiveCost"] not in NULLS else row["BilledCost"]
        if row["AllocatedTags"] not in NULLS:
            project = "fleet-500" if "ingestion" in row["AllocatedTags"] else "serving"
        else:
            project = own(row) or ("trey" if row["ResourceId"] in owners else "unallocated")
        expected[project] += Decimal(cost)
    assert _by_project(result) == expected
    assert expected["fleet-500"] > 0 and expected["serving"] > 0


def _row(cost: str, **extra: Any) -> dict[str, Any]:
    row = charge(cost, resource_id="node-pool-1", tags={"team": "platform"})
    return {"AllocatedTags": None, "AllocatedResourceId": None, **row, **extra}


def test_split_shares_before_own_tags_and_the_remainder_does_not_follow_them() -> None:
    bill = billing(
        [
            _row("6.00", AllocatedTags='{"workload":"ingestion"}', AllocatedResourceId="pod/i-1"),
            _row("4.00", AllocatedTags='{"workload":"serving"}', AllocatedResourceId="pod/s-1"),
            _row("2.00"),  # the node pool's unallocated rest: its own Tags decide
            {**_row("1.50"), "Tags": None},  # untagged: follows the resource's owner
            # Another pool whose only owner-like match is a workload's share: its untagged rest
            # stays unallocated rather than following that share.
            _row("3.00", ResourceId="node-pool-2", AllocatedTags='{"workload":"ingestion"}'),
            {**_row("0.75", ResourceId="node-pool-2"), "Tags": None},
        ]
    )
    rules = [
        rule("platform", tags={"team": "platform"}),
        rule("ingestion", tags={"workload": "ingestion"}),
        rule("serving", hosts=("pod/s-*",)),
    ]
    result = _allocate(bill, rules)
    assert _by_project(result) == {
        "ingestion": Decimal("9.00"),
        "serving": Decimal("4.00"),
        "platform": Decimal("3.50"),  # 2.00 by its Tags, 1.50 following the resource's owner
        "unallocated": Decimal("0.75"),
    }
    rule_of = dict(result.allocation.select("project", "AllocatedTags").iter_rows())
    assert '"x_rule":"projects[1].allocated-tags"' in str(rule_of["ingestion"])
    assert '"x_rule":"projects[2].allocated-resource"' in str(rule_of["serving"])


def test_fast_matching_equals_the_row_by_row_rules_on_split_rows(tmp_path: Path) -> None:
    path = tmp_path / "focus_1.3_split.csv"
    write_csv(path, split_rows())
    frame, _, _ = collect(path)
    rules = [
        rule("trey", tags={"org": "trey"}),
        rule("fleet", tags={"spot": "true"}),
        rule("serving", hosts=("pod/serving-*",)),
        rule("oracle", tags={"environment": "dev"}),
    ]
    expected = resolve_billing_projects(frame.lazy(), rules).collect()
    codes = frame.select(billing_match_code(frame, rules).alias("code"))
    names = codes.join(targets(rules, []), on="code", how="left", maintain_order="left")
    assert names["project"].fill_null("unallocated").to_list() == expected["project"].to_list()
    assert set(expected["project"]) == {"trey", "fleet", "serving", "oracle", "unallocated"}


def test_tag_text_is_the_value_as_written() -> None:
    tags = '{"FleetSize":500,"gone":null,"ratio":1.10,"spot":true,"team":"a"}'
    assert [tag_text(tags, key) for key in ("FleetSize", "ratio", "spot", "team")] == [
        "500",
        "1.10",
        "true",
        "a",
    ]
    assert tag_text(tags, "gone") is None and tag_text(tags, "missing") is None
    assert tag_text(None, "team") is None and tag_text("{bad", "team") is None
