"""GPU cost against minute-level ground truth, on fleets generated here, not by ``gpucost synth``.

Each GPU (or MIG slice) gets a schedule per minute: which pods hold it (none, one, or two or
three time-slicing it) and how busy the device is. Pods start and stop at any minute, so pods
follow one another within an hour; MIG slices change hands; one host only ever shows the
exporter's series (no workload). Hosts are billed per hour, per day, through a Savings Plan
(BilledCost 0, EffectiveCost the plan rate) or as spot with a price per hour; one has no owner.

The truth is computed per minute with exact fractions, from the schedule alone:

* a charge of ``A`` covering ``h`` hours of a host with ``G`` GPUs is worth ``A / (G x 60 x h)``
  per GPU-minute, and a MIG slice ``Ng.*`` is ``N/7`` of a GPU;
* ``allocation`` basis: each of the ``n`` pods present in a device-minute gets ``1/n`` of it;
* ``usage`` basis: each gets ``util/n`` of it (the device's busy time, split, never repeated);
* the rest of the charge is idle, which goes to the host's owner (``unallocated`` without
  one), to an ``idle`` line, or over the charge's users in proportion to their share.

The samples a dcgm-exporter would give (one series per device and pod, the device's
utilisation repeated on each, a pod-less series where nobody runs) go through the collectors'
rollup and the allocator; every project's cost and the idle total must agree with the truth to
1e-6, and the allocation must reconcile to the bill exactly.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpucost.allocator.allocate import allocate
from gpucost.allocator.matching import IDLE_PROJECT
from gpucost.allocator.policy import AllocationPolicy, GpuBasis, IdlePolicy
from gpucost.collector.gpu_rollup import conform_samples, rollup_hourly
from gpucost.core.contracts import ALLOCATION
from tests.allocator.builders import (
    T0,
    billing,
    charge,
    headcount,
    host,
    inventory,
    rule,
)

TOLERANCE = Decimal("1e-6")
PROJECTS = ("alpha", "beta", "gamma")
UNALLOCATED = "unallocated"
BASES: tuple[GpuBasis, ...] = ("usage", "allocation")
IDLE_POLICIES: tuple[IdlePolicy, ...] = ("owner", "users", "separate")

Minute = tuple[tuple[str, ...], int]
"""Pods holding a device in one minute (namespaced ``<project>-ns/<pod>``), and the device's
utilisation in percent."""


@dataclass(frozen=True)
class Device:
    """One GPU, or one MIG slice, and what ran on it minute by minute."""

    uuid: str
    index: int
    profile: str | None
    sevenths: int
    """The device's share of its GPU in sevenths (7 for a whole GPU)."""
    minutes: tuple[Minute, ...]


@dataclass(frozen=True)
class Charge:
    """One billing line of a host: its hours, EffectiveCost and BilledCost."""

    start: int
    hours: int
    effective: Decimal
    billed: Decimal


@dataclass(frozen=True)
class Host:
    """A GPU host, its devices, its charges and its owner."""

    name: str
    gpus: int
    owner: str | None
    devices: tuple[Device, ...]
    charges: tuple[Charge, ...]


@dataclass
class Fleet:
    """Hosts over ``hours`` hours from the window's start."""

    hours: int
    hosts: list[Host] = field(default_factory=list)


# ---- the samples an exporter would show ----


def samples(fleet: Fleet) -> pl.DataFrame:
    """One raw sample per device, pod and minute (a pod-less one where nobody runs), taken at
    the start of the minute, the device's utilisation repeated on every pod's series."""
    columns: dict[str, list[Any]] = defaultdict(list)
    for plan in fleet.hosts:
        for device in plan.devices:
            for minute, (pods, percent) in enumerate(device.minutes):
                at = T0 + timedelta(minutes=minute)
                for labelled in pods or (None,):
                    namespace, pod = labelled.split("/") if labelled else (None, None)
                    columns["time"].append(at)
                    columns["host"].append(plan.name)
                    columns["gpu_uuid"].append(device.uuid)
                    columns["gpu_index"].append(device.index)
                    columns["mig_profile"].append(device.profile)
                    columns["namespace"].append(namespace)
                    columns["pod"].append(pod)
                    columns["util"].append(percent / 100)
    return conform_samples(pl.DataFrame(columns))


def lake_inputs(fleet: Fleet) -> dict[str, pl.DataFrame]:
    """Billing, gpu_usage (through the rollup) and inventory of a fleet."""
    rows: list[dict[str, Any]] = []
    hosts: list[dict[str, Any]] = []
    for plan in fleet.hosts:
        tags = {"project": plan.owner} if plan.owner else None
        hosts.extend(host(f"i-{plan.name}", plan.name, plan.gpus, tags=tags))
        rows.extend(
            charge(
                item.effective,
                start=item.start,
                hours=item.hours,
                resource_id=f"i-{plan.name}",
                billed=item.billed,
            )
            for item in plan.charges
        )
    return {
        "billing": billing(rows),
        "gpu_usage": rollup_hourly(samples(fleet), interval_s=60, source="dcgm"),
        "inventory": inventory(hosts),
    }


def run(fleet: Fleet, inputs: dict[str, pl.DataFrame], policy: AllocationPolicy) -> pl.DataFrame:
    """The allocation of a fleet under a policy (checked against its contract)."""
    rules = [rule(name, tags={"project": name}, namespaces=(f"{name}-*",)) for name in PROJECTS]
    result = allocate(
        inputs["billing"].lazy(),
        inputs["gpu_usage"].lazy(),
        inputs["inventory"].lazy(),
        headcount([]).lazy(),
        rules,
        policy,
    )
    ALLOCATION.validate(result.allocation, "allocator")
    differences = [name for name in result.reconciliation.columns if "difference" in name]
    assert differences
    for name in differences:
        assert set(result.reconciliation.get_column(name).to_list()) == {0}, name
    return result.allocation


# ---- the truth, per minute ----


def truth(fleet: Fleet, basis: GpuBasis, idle: IdlePolicy) -> dict[tuple[str, str], Fraction]:
    """Exact money per (project, category), from the schedule and the charges alone."""
    result: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for plan in fleet.hosts:
        owner = plan.owner or UNALLOCATED
        for item in plan.charges:
            amount = Fraction(item.effective)
            per_gpu_minute = amount / (plan.gpus * 60 * item.hours)
            used: dict[str, Fraction] = defaultdict(Fraction)
            for device in plan.devices:
                fraction = Fraction(device.sevenths, 7)
                first = item.start * 60
                for pods, percent in device.minutes[first : first + item.hours * 60]:
                    for labelled in pods:
                        share = Fraction(1, len(pods))
                        if basis == "usage":
                            share *= Fraction(percent, 100)
                        project = labelled.split("/")[0].removesuffix("-ns")
                        used[project] += per_gpu_minute * fraction * share
            idle_amount = amount - sum(used.values(), Fraction(0))
            for project, value in used.items():
                result[(project, "gpu_used")] += value
            users = {project: value for project, value in used.items() if value > 0}
            if idle == "separate":
                result[(IDLE_PROJECT, "gpu_idle")] += idle_amount
            elif idle == "users" and users:
                total = sum(users.values(), Fraction(0))
                for project, value in users.items():
                    result[(project, "gpu_idle")] += idle_amount * value / total
            else:
                result[(owner, "gpu_idle")] += idle_amount
    return result


def assert_matches_truth(fleet: Fleet, inputs: dict[str, pl.DataFrame]) -> None:
    """Every basis and idle policy: per project and category, and the idle total."""
    billed_total = sum(
        (Fraction(item.effective) for p in fleet.hosts for item in p.charges), Fraction(0)
    )
    for basis in BASES:
        for idle in IDLE_POLICIES:
            allocation = run(fleet, inputs, AllocationPolicy(gpu_basis=basis, idle=idle))
            got = {
                (project, category): Fraction(amount)
                for project, category, amount in allocation.group_by("project", "category")
                .agg(pl.col("amount").sum())
                .iter_rows()
            }
            expected = truth(fleet, basis, idle)
            assert sum(got.values(), Fraction(0)) == billed_total, (basis, idle)
            for key in sorted(set(got) | set(expected)):
                difference = abs(got.get(key, Fraction(0)) - expected.get(key, Fraction(0)))
                assert difference <= TOLERANCE, (basis, idle, key, float(difference))
            idle_got = sum((v for (_, c), v in got.items() if c == "gpu_idle"), Fraction(0))
            idle_expected = sum(
                (v for (_, c), v in expected.items() if c == "gpu_idle"), Fraction(0)
            )
            assert abs(idle_got - idle_expected) <= TOLERANCE, (basis, idle, "idle total")


# ---- fleets ----


def schedule(
    rng: random.Random, minutes: int, pods: Sequence[str], *, max_together: int = 3
) -> tuple[Minute, ...]:
    """Pods coming and going at arbitrary minutes: runs of 1-95 minutes, each with 0 to
    ``max_together`` pods and a utilisation; idle runs have utilisation 0."""
    out: list[Minute] = []
    while len(out) < minutes:
        length = rng.randint(1, 95)
        together = rng.choice([0, 1, 1, 1, 2, 2, 3][: 1 + 2 * max_together])
        present = tuple(sorted(rng.sample(list(pods), min(together, len(pods)))))
        percent = rng.randint(1, 100) if present else 0
        out.extend([(present, percent)] * length)
    return tuple(out[:minutes])


def pods_of(rng: random.Random, count: int) -> list[str]:
    """Pod names (``<project>-ns/<name>``) of a few projects."""
    return [f"{rng.choice(PROJECTS)}-ns/job-{rng.randrange(10**6):06d}-{k}" for k in range(count)]


def generated_fleet(seed: int, hours: int = 24) -> Fleet:
    """A fleet of every kind the issue names, from ``random.Random(seed)``."""
    rng = random.Random(seed)
    minutes = hours * 60
    fleet = Fleet(hours)

    def gpus(name: str, count: int, *, mig_gpus: int = 0, busy: bool = True) -> list[Device]:
        devices = []
        for index in range(count):
            uuid = f"GPU-{name}-{index}"
            if index < mig_gpus:
                for instance, (profile, sevenths) in enumerate((("3g.40gb", 3), ("4g.40gb", 4))):
                    devices.append(
                        Device(
                            f"{uuid}/{instance + 1}",
                            index,
                            profile,
                            sevenths,
                            schedule(rng, minutes, pods_of(rng, 3), max_together=1),
                        )
                    )
                continue
            nobody: tuple[Minute, ...] = (((), 0),) * minutes
            plan = schedule(rng, minutes, pods_of(rng, 4)) if busy else nobody
            devices.append(Device(uuid, index, None, 7, plan))
        return devices

    def hourly(prices: Iterable[Decimal], *, plan: bool = False) -> tuple[Charge, ...]:
        return tuple(
            Charge(hour, 1, price, Decimal(0) if plan else price)
            for hour, price in enumerate(prices)
        )

    on_demand = Decimal("98.32")
    fleet.hosts = [
        Host("ondemand", 4, "alpha", tuple(gpus("ondemand", 4)), hourly([on_demand] * hours)),
        Host(
            "daily-mig",
            2,
            "beta",
            tuple(gpus("daily-mig", 2, mig_gpus=1)),
            (Charge(0, hours, Decimal("1011.123456789"), Decimal("1011.123456789")),),
        ),
        Host(
            "savings-plan",
            2,
            "gamma",
            tuple(gpus("savings-plan", 2)),
            hourly([Decimal("31.4159")] * hours, plan=True),
        ),
        Host(
            "spot",
            1,
            None,
            tuple(gpus("spot", 1)),
            hourly(Decimal(rng.randint(80_000, 130_000)) / 10_000 for _ in range(hours)),
        ),
        Host(
            "exporter-only",
            2,
            "gamma",
            tuple(gpus("exporter-only", 2, busy=False)),
            hourly([Decimal("12.0000001")] * hours),
        ),
    ]
    return fleet


# ---- tests ----


@pytest.mark.parametrize("seed", [7, 16])
def test_generated_fleet_matches_minute_truth(seed: int) -> None:
    fleet = generated_fleet(seed)
    assert_matches_truth(fleet, lake_inputs(fleet))


def test_handover_within_the_hour_is_not_idle() -> None:
    # The example: A holds the GPU minutes 0-20, B minutes 20-60; the hour is held.
    minutes = (((("alpha-ns/a",), 50),) * 20) + (((("beta-ns/b",), 50),) * 40)
    fleet = Fleet(
        1,
        [
            Host(
                "h",
                1,
                None,
                (Device("GPU-h-0", 0, None, 7, minutes),),
                (Charge(0, 1, Decimal("60"), Decimal("60")),),
            )
        ],
    )
    allocation = run(fleet, lake_inputs(fleet), AllocationPolicy(gpu_basis="allocation"))
    amounts = dict(allocation.group_by("project").agg(pl.col("amount").sum()).iter_rows())
    assert amounts == {"alpha": Decimal(20), "beta": Decimal(40)}


def test_time_sliced_pods_split_the_busy_time_once() -> None:
    # Two pods on one GPU at 40 % all hour: 0.2 + 0.2 of the hour is used, 0.6 is idle.
    minutes = ((("alpha-ns/a", "beta-ns/b"), 40),) * 60
    fleet = Fleet(
        1,
        [
            Host(
                "h",
                1,
                None,
                (Device("GPU-h-0", 0, None, 7, minutes),),
                (Charge(0, 1, Decimal("100"), Decimal("100")),),
            )
        ],
    )
    allocation = run(fleet, lake_inputs(fleet), AllocationPolicy(gpu_basis="usage"))
    amounts = dict(allocation.group_by("project").agg(pl.col("amount").sum()).iter_rows())
    assert amounts == {"alpha": Decimal(20), "beta": Decimal(20), UNALLOCATED: Decimal(60)}


_minute_runs = st.lists(
    st.tuples(
        st.integers(1, 70),
        st.lists(
            st.sampled_from(["alpha-ns/a", "alpha-ns/b", "beta-ns/c", "gamma-ns/d"]),
            max_size=3,
            unique=True,
        ),
        st.integers(0, 100),
    ),
    min_size=1,
    max_size=8,
)


@st.composite
def small_fleets(draw: st.DrawFn) -> Fleet:
    """Two hours of one or two hosts, each GPU's schedule drawn run by run."""
    hours = 2
    hosts: list[Host] = []
    for number in range(draw(st.integers(1, 2))):
        name = f"h{number}"
        devices = []
        gpus = draw(st.integers(1, 2))
        for index in range(gpus):
            minutes: list[Minute] = []
            for length, pods, percent in draw(_minute_runs):
                minutes.extend([(tuple(sorted(pods)), percent if pods else 0)] * length)
            minutes.extend([((), 0)] * max(0, hours * 60 - len(minutes)))
            devices.append(
                Device(f"GPU-{name}-{index}", index, None, 7, tuple(minutes[: hours * 60]))
            )
        daily = draw(st.booleans())
        cost = Decimal(draw(st.integers(1, 10**7))) / 1000
        charges = (
            (Charge(0, hours, cost, cost),)
            if daily
            else tuple(Charge(hour, 1, cost, cost) for hour in range(hours))
        )
        owner = draw(st.sampled_from([None, *PROJECTS]))
        hosts.append(Host(name, gpus, owner, tuple(devices), charges))
    return Fleet(hours, hosts)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=small_fleets())
def test_any_schedule_matches_minute_truth(fleet: Fleet) -> None:
    assert_matches_truth(fleet, lake_inputs(fleet))
