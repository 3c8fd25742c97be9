"""Property tests: conservation, signs, order independence and determinism, for any input."""

from __future__ import annotations

import io
from decimal import Context, Decimal
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from gpucost.allocator.allocate import AllocationResult, allocate
from gpucost.allocator.exact import split_exact, to_units
from gpucost.allocator.policy import AllocationPolicy
from tests.allocator.builders import (
    billing,
    charge,
    headcount,
    host,
    inventory,
    rule,
    usage,
    usage_row,
)

PROJECTS = ("alpha", "beta", "gamma")
RULES = [
    rule("alpha", "CC-1", tags={"project": "alpha"}, namespaces=("alpha-*",)),
    rule("beta", "CC-2", tags={"project": "beta"}, pods=("beta-*",)),
    rule("gamma", None, accounts=("9999*",), namespaces=("gamma",)),
]
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

money = st.decimals(min_value=Decimal("-500"), max_value=Decimal("500"), places=18, allow_nan=False)
positive_money = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("1e6"), places=18, allow_nan=False
)
policies = st.builds(
    AllocationPolicy,
    gpu_basis=st.sampled_from(["usage", "allocation", "max"]),
    idle=st.sampled_from(["owner", "users", "separate"]),
    shared=st.sampled_from(["even", "proportional", "headcount", "weights"]),
    shared_weights=st.just({"alpha": 2.0, "gamma": 0.5}),
)


@st.composite
def scenarios(draw: st.DrawFn, positive: bool = False) -> dict[str, Any]:
    """A small random world: GPU hosts with MIG, time-sliced and idle GPUs, and a bill
    (with credits, unless ``positive``)."""
    amounts = positive_money if positive else money
    hosts: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    bill: list[dict[str, Any]] = []
    namespaces = st.sampled_from(["alpha-jobs", "gamma", "zeta-x", None])
    pods = st.sampled_from(["beta-0", "p-1", "p-2", None])
    for index in range(draw(st.integers(0, 3))):
        name, resource = f"node-{index}", f"i-{index}"
        gpus = draw(st.integers(1, 3))
        owner = draw(st.sampled_from([*PROJECTS, None]))
        hosts += host(resource, name, gpus, tags={"project": owner} if owner else None, days=2)
        for at in draw(st.sets(st.integers(0, 30), max_size=4)):
            for gpu in range(gpus):
                layout = draw(st.sampled_from(["plain", "mig", "sliced", "idle"]))
                if layout == "mig":
                    for slot, profile in enumerate(["3g.40gb", "1g.10gb"]):
                        rows.append(usage_row(
                            name, at, gpu=gpu, mig_profile=profile,
                            gpu_uuid=f"MIG-{name}-{gpu}-{slot}",
                            util=draw(st.floats(0, 1)), namespace=draw(namespaces),
                            pod=draw(pods)))  # fmt: skip
                elif layout == "sliced":
                    for _ in range(2):
                        rows.append(usage_row(
                            name, at, gpu=gpu, util=draw(st.floats(0, 0.6)),
                            namespace=draw(namespaces), pod=draw(pods),
                            seconds=draw(st.sampled_from([3600.0, 1800.5]))))  # fmt: skip
                else:
                    rows.append(usage_row(
                        name, at, gpu=gpu, util=0.0 if layout == "idle" else draw(st.floats(0, 1)),
                        namespace=draw(namespaces), pod=draw(pods)))  # fmt: skip
        for at in draw(st.sets(st.integers(0, 30), max_size=4)):
            bill.append(charge(draw(amounts), start=at, resource_id=resource,
                               hours=draw(st.sampled_from([1, 1, 3])),
                               billed=draw(amounts)))  # fmt: skip
    kinds = st.sampled_from(["tagged", "support", "network", "credit", "other", "account"])
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(kinds)
        amount = draw(amounts)
        common: dict[str, Any] = {
            "start": draw(st.integers(0, 40)),
            "currency": draw(st.sampled_from(["USD", "USD", "EUR"])),
        }
        if kind == "tagged":
            bill.append(charge(amount, tags={"project": draw(st.sampled_from(PROJECTS))}, **common))
        elif kind == "support":
            bill.append(charge(amount, service="AWS Support (Business)", service_category="Other",
                               charge_category="Purchase", **common))  # fmt: skip
        elif kind == "network":
            bill.append(charge(amount, service_category="Networking", resource_id="nat-1",
                               **common))  # fmt: skip
        elif kind == "credit":
            credit = amount if positive else -abs(amount)
            bill.append(charge(credit, charge_category="Credit", **common))
        elif kind == "account":
            bill.append(charge(amount, account="99990000", **common))
        else:
            bill.append(charge(amount, service="Amazon S3", service_category="Storage", **common))
    people = draw(
        st.lists(
            st.tuples(st.sampled_from(["P1", "P2", "P3"]), st.sampled_from([*PROJECTS, "delta"]),
                      st.sampled_from([0.25, 0.5, 1.0])),
            max_size=4, unique_by=lambda person: person[0],
        )
    )  # fmt: skip
    return {
        "billing": billing(bill) if bill else billing([charge("0")]).clear(),
        "usage": usage(rows),
        "inventory": inventory(hosts),
        "headcount": headcount(people, days=2),
        "policy": draw(policies),
    }


def _allocate(world: dict[str, Any], **frames: pl.DataFrame) -> AllocationResult:
    inputs = {name: frames.get(name, world[name]) for name in ("billing", "usage", "inventory")}
    return allocate(
        inputs["billing"].lazy(),
        inputs["usage"].lazy(),
        inputs["inventory"].lazy(),
        frames.get("headcount", world["headcount"]).lazy(),
        RULES,
        world["policy"],
    )


@SETTINGS
@given(scenarios())
def test_conservation_for_any_input(world: dict[str, Any]) -> None:
    result = _allocate(world)
    bill: pl.DataFrame = world["billing"]
    expected = (
        bill.group_by(pl.col("ChargePeriodStart").dt.date().alias("day"), "BillingCurrency")
        .agg(pl.col("EffectiveCost").sum(), pl.col("BilledCost").sum())
        .rename({"BillingCurrency": "currency"})
    )
    got = result.allocation.group_by("day", "currency").agg(
        pl.col("amount").sum(), pl.col("billed_amount").sum()
    )
    joined = expected.join(got, on=["day", "currency"], how="full", coalesce=True).fill_null(0)
    assert (joined["EffectiveCost"] == joined["amount"]).all()
    assert (joined["BilledCost"] == joined["billed_amount"]).all()
    assert (result.reconciliation["difference"] == 0).all()
    assert result.allocation["project"].null_count() == 0


@SETTINGS
@given(scenarios(positive=True))
def test_positive_charges_never_give_negative_pieces(world: dict[str, Any]) -> None:
    result = _allocate(world)
    assert (result.allocation["amount"] >= 0).all()
    assert (result.allocation["billed_amount"] >= 0).all()


@SETTINGS
@given(scenarios(), st.integers(0, 2**16))
def test_shuffling_input_rows_changes_nothing(world: dict[str, Any], seed: int) -> None:
    original = _allocate(world)
    shuffled = _allocate(
        world,
        **{
            name: world[name].sample(fraction=1.0, shuffle=True, seed=seed)
            for name in ("billing", "usage", "inventory", "headcount")
        },
    )
    assert_frame_equal(original.allocation, shuffled.allocation, check_exact=True)
    assert_frame_equal(original.reconciliation, shuffled.reconciliation, check_exact=True)


@SETTINGS
@given(scenarios())
def test_running_twice_gives_identical_frames_and_bytes(world: dict[str, Any]) -> None:
    first, second = _allocate(world), _allocate(world)
    assert first.allocation.equals(second.allocation)
    assert first.reconciliation.equals(second.reconciliation)
    buffers = [io.BytesIO(), io.BytesIO()]
    for result, buffer in zip((first, second), buffers, strict=True):
        result.allocation.write_parquet(buffer)
    assert buffers[0].getvalue() == buffers[1].getvalue()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.decimals(
                min_value=Decimal("-99999999999999999999.999999999999999999"),
                max_value=Decimal("99999999999999999999.999999999999999999"),
                places=18,
                allow_nan=False,
            ),
            st.lists(
                st.one_of(st.integers(0, 2**58), st.integers(0, 3)), min_size=1, max_size=12
            ).filter(lambda w: sum(w) > 0),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_exact_split_is_the_largest_remainder_method(
    charges: list[tuple[Decimal, list[int]]],
) -> None:
    rows = [
        (number, amount, weight, position)
        for number, (amount, weights) in enumerate(charges)
        for position, weight in enumerate(weights)
    ]
    frame = pl.DataFrame(
        rows,
        schema={"charge": pl.Int64, "amount": pl.Decimal(38, 18), "w": pl.Int64, "key": pl.Int64},
        orient="row",
    )
    split = split_exact(
        frame.with_columns(to_units(pl.col("amount")).alias("units")).sample(
            fraction=1.0, shuffle=True, seed=len(rows)
        ),
        charge="charge",
        amounts=["units"],
        weight="w",
        tiebreak="key",
    )
    for number, (amount, weights) in enumerate(charges):
        pieces = split.filter(pl.col("charge") == number).sort("key")
        assert pieces["units"].to_list() == _largest_remainder(amount, weights)


def _largest_remainder(amount: Decimal, weights: list[int]) -> list[int]:
    """The textbook method in Python integers: floors, then one unit each to the largest
    remainders, ties to the lower position; the sign put back at the end."""
    units = int(amount.copy_abs().scaleb(18, context=Context(prec=100)))
    total = sum(weights)
    floors = [units * weight // total for weight in weights]
    remainders = [units * weight % total for weight in weights]
    order = sorted(range(len(weights)), key=lambda index: (-remainders[index], index))
    for index in order[: units - sum(floors)]:
        floors[index] += 1
    return [-value if amount < 0 else value for value in floors]
