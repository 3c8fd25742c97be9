"""Cases small enough to compute by hand, to the last 1e-18."""

from __future__ import annotations

import json
from decimal import Decimal

import polars as pl
import pytest

from gpucost.allocator.allocate import AllocationResult, allocate
from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.projects import ProjectRule
from gpucost.allocator.summary import summarise
from gpucost.core.contracts import ALLOCATION
from tests.allocator.builders import (
    billing,
    charge,
    day,
    headcount,
    host,
    inventory,
    rule,
    usage,
    usage_row,
)

RULES = [
    rule("alpha", "CC-1", tags={"project": "alpha"}, namespaces=("alpha-*",)),
    rule("beta", "CC-2", tags={"project": "beta"}, namespaces=("beta-*",)),
    rule("gamma", "CC-3", tags={"project": "gamma"}, namespaces=("gamma-*",)),
]


def _run(
    bill: list[dict[str, object]],
    gpu_rows: list[dict[str, object]],
    hosts: list[dict[str, object]],
    people: list[tuple[str, str, float]] = (),  # type: ignore[assignment]
    policy: AllocationPolicy | None = None,
    rules: list[ProjectRule] = RULES,
) -> AllocationResult:
    result = allocate(
        billing(bill).lazy(),
        usage(gpu_rows).lazy(),
        inventory(hosts).lazy(),
        headcount(list(people)).lazy(),
        rules,
        policy or AllocationPolicy(),
    )
    ALLOCATION.validate(result.allocation, "allocator")
    assert (result.reconciliation["difference"] == 0).all()
    assert (result.reconciliation["billed_difference"] == 0).all()
    return result


def _amounts(result: AllocationResult, *by: str) -> dict[tuple[object, ...], Decimal]:
    frame = result.allocation.filter(pl.col("category") != "headcount")
    sums = frame.group_by(list(by)).agg(pl.col("amount").sum()).iter_rows()
    return {tuple(row[:-1]): row[-1] for row in sums}


# One 1-GPU host at 3.60 an hour, tagged to alpha, time-sliced between a pod of alpha and a pod
# of beta in hour 0 (busy 50 % and 25 % of the hour), nobody in hour 1.
ONE_HOST = host("i-1", "node-1", 1, tags={"project": "alpha"})
TWO_HOURS = [
    charge("3.60", start=0, resource_id="i-1", tags={"project": "alpha"}),
    charge("3.60", start=1, resource_id="i-1", tags={"project": "alpha"}),
]
SHARED_GPU = [
    usage_row("node-1", 0, util=0.50, namespace="alpha-jobs", pod="a-0"),
    usage_row("node-1", 0, util=0.25, namespace="beta-notebooks", pod="b-0"),
    usage_row("node-1", 1, util=0.0),
]


def test_one_host_two_projects_one_idle_hour_usage_basis_idle_to_owner() -> None:
    result = _run(TWO_HOURS, SHARED_GPU, ONE_HOST)
    assert _amounts(result, "project", "category", "AllocatedMethodId") == {
        ("alpha", "gpu_used", "gpu-usage"): Decimal("1.80"),
        ("beta", "gpu_used", "gpu-usage"): Decimal("0.90"),
        # 0.25 of hour 0 and all of hour 1 nobody used: the host's owner pays.
        ("alpha", "gpu_idle", "gpu-idle-owner"): Decimal("4.50"),
    }
    hours = result.allocation.group_by("project", "category").agg(
        pl.col("gpu_hours_used").sum(), pl.col("gpu_hours_idle").sum()
    )
    as_dict = {(p, c): (u, i) for p, c, u, i in hours.iter_rows()}
    assert as_dict[("alpha", "gpu_used")] == (pytest.approx(0.5), 0)
    assert as_dict[("beta", "gpu_used")] == (pytest.approx(0.25), 0)
    assert as_dict[("alpha", "gpu_idle")] == (0, pytest.approx(1.25))
    row = result.allocation.filter(pl.col("project") == "beta").row(0, named=True)
    assert row["cost_center"] == "CC-2" and row["AllocatedResourceId"] == "i-1"
    assert json.loads(row["AllocatedTags"]) == {
        "project": "beta",
        "x_rule": "projects[1].namespaces",
    }
    # Beta used 0.25 of the host's 2 GPU-hours: its ratio of the day's origin charges.
    details = json.loads(row["AllocatedMethodDetails"])
    assert details["Elements"][0]["AllocatedRatio"] == 0.125
    assert details["Elements"][0]["UsageUnit"] == "GPU-Hours"


def test_a_pods_only_rule_attributes_the_pods_it_names() -> None:
    # Validated from the TOML's shape, as the config does: `match = { pods = ["d-*"] }`.
    delta = ProjectRule.model_validate({"name": "delta", "match": {"pods": ["d-*"]}})
    rows = [
        usage_row("node-1", 0, util=0.50, namespace="alpha-jobs", pod="a-0"),
        usage_row("node-1", 0, util=0.25, namespace="shared-notebooks", pod="d-0"),
    ]
    result = _run(TWO_HOURS[:1], rows, ONE_HOST, rules=[*RULES, delta])
    assert _amounts(result, "project", "category") == {
        ("alpha", "gpu_used"): Decimal("1.80"),
        ("delta", "gpu_used"): Decimal("0.90"),
        ("alpha", "gpu_idle"): Decimal("0.90"),
    }
    row = result.allocation.filter(pl.col("project") == "delta").row(0, named=True)
    assert json.loads(row["AllocatedTags"]) == {"project": "delta", "x_rule": "projects[3].pods"}


def test_idle_policies_users_and_separate() -> None:
    users = _run(TWO_HOURS, SHARED_GPU, ONE_HOST, policy=AllocationPolicy(idle="users"))
    assert _amounts(users, "project", "AllocatedMethodId") == {
        ("alpha", "gpu-usage"): Decimal("1.80"),
        ("beta", "gpu-usage"): Decimal("0.90"),
        # Hour 0's idle 0.90 goes 2:1 to its users; hour 1 had none: the owner pays.
        ("alpha", "gpu-idle-users"): Decimal("0.60"),
        ("beta", "gpu-idle-users"): Decimal("0.30"),
        ("alpha", "gpu-idle-owner"): Decimal("3.60"),
    }
    separate = _run(TWO_HOURS, SHARED_GPU, ONE_HOST, policy=AllocationPolicy(idle="separate"))
    assert _amounts(separate, "project", "category") == {
        ("alpha", "gpu_used"): Decimal("1.80"),
        ("beta", "gpu_used"): Decimal("0.90"),
        ("idle", "gpu_idle"): Decimal("4.50"),
    }


def test_gpu_bases_allocation_and_max() -> None:
    # Both pods hold the time-sliced GPU for the whole hour: half each, nothing idle in hour 0.
    held = _run(TWO_HOURS, SHARED_GPU, ONE_HOST, policy=AllocationPolicy(gpu_basis="allocation"))
    assert _amounts(held, "project", "category") == {
        ("alpha", "gpu_used"): Decimal("1.80"),
        ("beta", "gpu_used"): Decimal("1.80"),
        ("alpha", "gpu_idle"): Decimal("3.60"),
    }
    # max(used, held) = 1800 s each here (alpha's 1800 busy = its 1800 held).
    top = _run(TWO_HOURS, SHARED_GPU, ONE_HOST, policy=AllocationPolicy(gpu_basis="max"))
    assert _amounts(top, "project", "category") == _amounts(held, "project", "category")


def test_max_basis_caps_a_gpu_at_its_seconds() -> None:
    rows = [
        usage_row("node-1", 0, util=0.80, namespace="alpha-jobs", pod="a-0"),
        usage_row("node-1", 0, util=0.10, namespace="beta-notebooks", pod="b-0"),
    ]
    # max: alpha 2880 s, beta 1800 s -> 4680 s > 3600 s, scaled to 3600: 2215.38... : 1384.61...
    result = _run(TWO_HOURS[:1], rows, ONE_HOST, policy=AllocationPolicy(gpu_basis="max"))
    amounts = _amounts(result, "project", "category")
    assert set(amounts) == {("alpha", "gpu_used"), ("beta", "gpu_used")}
    assert amounts[("alpha", "gpu_used")] + amounts[("beta", "gpu_used")] == Decimal("3.60")
    assert float(amounts[("alpha", "gpu_used")]) == pytest.approx(3.60 * 2880 / 4680, abs=1e-9)


def test_a_1g_10gb_mig_slice_weighs_one_seventh() -> None:
    mig_host = host("i-h100", "h100-node", 1, tags={"project": "gamma"})
    bill = [charge("7.00", resource_id="i-h100", tags={"project": "gamma"})]
    rows = [
        usage_row("h100-node", 0, util=1.0, mig_profile="1g.10gb", gpu_uuid="MIG-a",
                  namespace="alpha-prod", pod="small-0"),
        usage_row("h100-node", 0, util=0.5, mig_profile="3g.40gb", gpu_uuid="MIG-b",
                  namespace="beta-prod", pod="big-0"),
        usage_row("h100-node", 0, util=0.0, mig_profile="1g.10gb", gpu_uuid="MIG-c"),
    ]  # fmt: skip
    result = _run(bill, rows, mig_host)
    # 1/7 of the GPU busy all hour = 1/7 of 7.00; 3/7 busy half the hour = 1.50; the rest idle.
    assert _amounts(result, "project", "category") == {
        ("alpha", "gpu_used"): Decimal("1.00"),
        ("beta", "gpu_used"): Decimal("1.50"),
        ("gamma", "gpu_idle"): Decimal("4.50"),
    }
    alpha = result.allocation.filter(pl.col("project") == "alpha")
    assert alpha["gpu_hours_used"].item() == pytest.approx(1 / 7)


def test_credits_follow_their_charge_or_the_shared_policy() -> None:
    bill = [
        *TWO_HOURS,
        # A refund on the GPU host in hour 0 splits like the host's hour 0.
        charge("-1.20", start=0, resource_id="i-1", charge_category="Credit"),
        # A tagged credit goes to its project.
        charge("-5.00", tags={"project": "gamma"}, charge_category="Credit"),
        # An untagged credit follows the shared policy (even: over projects with cost that day).
        charge("-10.00", charge_category="Credit"),
        # A refund on a bucket follows the bucket's tagged charge.
        charge("20.00", resource_id="bucket-1", tags={"project": "beta"}, service="S3",
               service_category="Storage"),
        charge("-2.00", resource_id="bucket-1", charge_category="Credit", service="S3",
               service_category="Storage"),
    ]  # fmt: skip
    result = _run(bill, SHARED_GPU, ONE_HOST, policy=AllocationPolicy(shared="even"))
    amounts = _amounts(result, "project", "category", "AllocatedMethodId")
    assert amounts[("alpha", "gpu_used", "gpu-usage")] == Decimal("1.80") - Decimal("0.60")
    assert amounts[("beta", "gpu_used", "gpu-usage")] == Decimal("0.90") - Decimal("0.30")
    assert amounts[("alpha", "gpu_idle", "gpu-idle-owner")] == Decimal("4.50") - Decimal("0.30")
    assert amounts[("gamma", "compute", "direct-tags")] == Decimal("-5.00")
    assert amounts[("beta", "storage", "direct-tags")] == Decimal("20.00")
    assert amounts[("beta", "storage", "direct-resource")] == Decimal("-2.00")
    # -10 over alpha, beta, gamma: 1e-18 left over goes to the first by name.
    assert amounts[("alpha", "shared", "shared-even")] == Decimal("-3.333333333333333334")
    assert amounts[("beta", "shared", "shared-even")] == Decimal("-3.333333333333333333")
    assert amounts[("gamma", "shared", "shared-even")] == Decimal("-3.333333333333333333")
    # The refund carries no GPU-hours of its own: the hour's are counted once.
    assert result.allocation["gpu_hours_used"].sum() == pytest.approx(0.75)


def test_billed_cost_is_split_beside_effective_cost() -> None:
    # A Savings-Plan-covered hour: BilledCost 0, EffectiveCost the plan's rate.
    bill = [charge("2.592", billed="0", resource_id="i-1", tags={"project": "alpha"})]
    result = _run(bill, SHARED_GPU[:2], ONE_HOST)
    frame = result.allocation.filter(pl.col("category") != "headcount")
    assert frame["amount"].sum() == Decimal("2.592")
    assert (frame["billed_amount"] == 0).all()


def test_a_shared_support_charge_split_by_headcount() -> None:
    bill = [
        charge("100.00", service="AWS Support (Business)", service_category="Other",
               charge_category="Purchase", hours=24),
        charge("40.00", tags={"project": "alpha"}, hours=24),
    ]  # fmt: skip
    people = [("P1", "alpha", 1.0), ("P2", "alpha", 0.5), ("P2", "beta", 0.5), ("P3", "gamma", 1.0)]
    result = _run(bill, [], [], people, AllocationPolicy(shared="headcount"))
    assert _amounts(result, "project", "category", "AllocatedMethodId") == {
        ("alpha", "compute", "direct-tags"): Decimal("40.00"),
        # FTE 1.5 : 0.5 : 1.0 of 3.0; the 1e-18 left over goes to beta's larger remainder.
        ("alpha", "shared", "shared-headcount"): Decimal("50"),
        ("beta", "shared", "shared-headcount"): Decimal("16.666666666666666667"),
        ("gamma", "shared", "shared-headcount"): Decimal("33.333333333333333333"),
    }
    fte = result.allocation.filter(pl.col("category") == "headcount")
    assert dict(fte.select("project", "fte").iter_rows()) == {
        "alpha": 1.5,
        "beta": 0.5,
        "gamma": 1.0,
    }
    assert (fte["amount"] == 0).all() and fte["AllocatedMethodId"].unique().to_list() == [
        "headcount-roster"
    ]
    assert "person_id" not in result.allocation.columns
    assert not result.allocation["AllocatedTags"].str.contains("P1").any()
    shared = result.allocation.filter(pl.col("category") == "shared").sort("project")
    ratios = [
        json.loads(text)["Elements"][0]["AllocatedRatio"]
        for text in shared["AllocatedMethodDetails"]
    ]
    assert ratios == [0.5, pytest.approx(1 / 6), pytest.approx(1 / 3)]
    assert sum(Decimal(text.split('"AllocatedRatio":')[1].split(",")[0])
               for text in shared["AllocatedMethodDetails"]) == 1  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("even", {"alpha": Decimal("30"), "beta": Decimal("30"), "gamma": Decimal("30")}),
        ("proportional", {"alpha": Decimal("60"), "beta": Decimal("20"), "gamma": Decimal("10")}),
        ("weights", {"alpha": Decimal("45"), "beta": Decimal("45")}),
    ],
)
def test_shared_policies(policy: str, expected: dict[str, Decimal]) -> None:
    bill = [
        charge("90", service="NAT Gateway", service_category="Networking", resource_id="nat-1"),
        charge("60", tags={"project": "alpha"}),
        charge("20", tags={"project": "beta"}),
        charge("10", tags={"project": "gamma"}),
    ]
    chosen = AllocationPolicy(shared=policy, shared_weights={"alpha": 1.0, "beta": 1.0})  # type: ignore[arg-type]
    result = _run(bill, [], [], policy=chosen)
    shared = _amounts(result, "project", "category")
    assert {p: a for (p, c), a in shared.items() if c == "shared"} == expected


def test_unmatched_charges_stay_unallocated_visibly() -> None:
    bill = [charge("12.5", service="Amazon S3", service_category="Storage", resource_id="b-1")]
    result = _run(bill, [], [])
    row = result.allocation.row(0, named=True)
    assert row["project"] == "unallocated" and row["category"] == "storage"
    assert row["AllocatedMethodId"] == "unallocated" and row["AllocatedMethodDetails"] is None
    assert row["amount"] == Decimal("12.5") and row["day"] == day(0)


def test_unbilled_gpu_hours_are_reported_without_money() -> None:
    onprem = host("onprem/dc1/gpu-01", "gpu-01", 2, provider="On-Prem")
    rows = [usage_row("gpu-01", 0, gpu=0, util=0.5, namespace="beta-jobs", pod="t-0")]
    result = _run([], rows, onprem)
    frame = result.allocation.sort("category")
    assert frame["amount"].to_list() == [Decimal(0), Decimal(0)]
    assert frame["gpu_hours_used"].to_list() == [0, pytest.approx(0.5)]
    assert frame["gpu_hours_idle"].to_list() == [pytest.approx(1.5), 0]
    assert set(frame["provider"]) == {"On-Prem"}


def test_summary_gives_cost_and_gpu_hours_per_fte() -> None:
    bill = [
        *TWO_HOURS,
        charge("100.00", service="AWS Support (Business)", service_category="Other",
               charge_category="Purchase"),
    ]  # fmt: skip
    people = [("P1", "alpha", 1.0), ("P2", "beta", 0.5), ("P3", "beta", 1.0)]
    result = _run(bill, SHARED_GPU, ONE_HOST, people, AllocationPolicy(shared="headcount"))
    summary = summarise(result.allocation)
    rows = {row["project"]: row for row in summary.iter_rows(named=True)}
    # alpha: 1.80 used + 4.50 idle + 100 x 1/2.5; beta: 0.90 + 100 x 1.5/2.5.
    assert rows["alpha"]["amount"] == Decimal("46.30")
    assert rows["beta"]["amount"] == Decimal("60.90")
    assert rows["alpha"]["fte"] == 1.0 and rows["beta"]["fte"] == 1.5
    assert rows["beta"]["cost_per_fte"] == pytest.approx(60.90 / 1.5)
    assert rows["beta"]["gpu_hours_per_fte"] == pytest.approx(0.25 / 1.5)
    assert rows["alpha"]["gpu_hours_idle"] == pytest.approx(1.25)
