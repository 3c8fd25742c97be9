"""``truth.json``: the ground truth an allocator and the findings are tested against.

All money is written as Decimal strings rounded half-even to 18 places, from exact fractions;
GPU-seconds as numbers. Per GPU row (one GPU, MIG slice or time-sliced pod, per hour):

* *used* GPU-seconds = mean utilisation x seconds observed x slice fraction / pods sharing the
  GPU, where a MIG slice ``Ng.*`` is N/7 of the GPU and a full GPU is 1; a time-sliced GPU's
  utilisation is the device's (dcgm-exporter repeats it on each pod's series and cannot tell
  the pods apart), so its busy time is split equally among its pods, never counted twice;
* *held* GPU-seconds = seconds observed x slice fraction / pods sharing the GPU, for rows with a
  pod; rows without a pod hold nothing;
* a host's *idle* GPU-seconds = GPUs x seconds in the window - used GPU-seconds on it;
* the ``usage`` basis gives each project, for every cloud GPU host and hour, the host's
  EffectiveCost for that hour x (project's used GPU-seconds / (GPUs x 3600)); the rest of the
  host's cost is idle cost, reported per host and under the host's ``project`` tag (owner).

Sums are kept in fourteenth-seconds (a MIG slice is a whole number of sevenths of a GPU, a pod
of a GPU time-sliced by two a half) so that they stay integers until they are written.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from typing import Final

import numpy as np
import numpy.typing as npt

from gpucost.core.contracts import MONEY_SCALE
from gpucost.synth.billing import Billing
from gpucost.synth.common import SECONDS_PER_HOUR, iso_utc
from gpucost.synth.fleet import MIG_COMPUTE_SLICES, Fleet, Host, Project
from gpucost.synth.roster import RosterRow
from gpucost.synth.simulate import SCRAPE_INTERVAL_S, Simulation

UNITS_PER_GPU: Final = 2 * MIG_COMPUTE_SLICES
"""Ledger units per GPU-second: fourteenths keep MIG sevenths and time-sliced halves whole."""

TRUTH_DEFINITIONS: Final = {
    "gpu_seconds_used": "per GPU row (GPU, MIG slice or time-sliced pod) and hour: util_avg x "
    "seconds_observed x slice fraction (MIG Ng.* = N/7, otherwise 1) / pods sharing the GPU "
    "(util_avg of a time-sliced GPU is the device's), summed by the project whose namespace "
    "prefix the row's pod carries",
    "gpu_seconds_held": "seconds_observed x slice fraction / pods sharing the GPU, for rows "
    "with a pod",
    "idle_gpu_seconds": "per host: GPUs x seconds in the window - GPU-seconds used on it",
    "gpu_cost_used": "usage basis: for every cloud GPU host and hour, the host's EffectiveCost "
    "x project's GPU-seconds used / (GPUs x 3600)",
    "gpu_cost_idle": "the host's EffectiveCost not given to a project by use; "
    "gpu_cost_idle_owned sums it by the host's project tag (owner), untagged hosts apart",
    "money": "Decimal strings rounded half-even to 18 places from exact fractions",
    "fte_days": "sum over the window's days of roster fractions of people active that day "
    "(start <= day <= end, end inclusive, empty end = still there)",
}

Int64Array = npt.NDArray[np.int64]


@dataclass
class _Ledger:
    """Per project and overall sums, in fourteenth-seconds and exact fractions of USD."""

    used: Counter[str] = field(default_factory=Counter)
    held: Counter[str] = field(default_factory=Counter)
    cost: dict[str, Fraction] = field(default_factory=lambda: defaultdict(Fraction))
    idle_cost_owned: dict[str, Fraction] = field(default_factory=lambda: defaultdict(Fraction))
    total_cost: Fraction = Fraction(0)
    total_idle: Fraction = Fraction(0)
    unowned_idle: Fraction = Fraction(0)


def money(value: Fraction | Decimal) -> str:
    """A Decimal string rounded half-even to the lake's money scale (18 places)."""
    with localcontext() as context:
        context.prec = 80
        if isinstance(value, Fraction):
            value = Decimal(value.numerator) / Decimal(value.denominator)
        return f"{value.quantize(Decimal(1).scaleb(-MONEY_SCALE), ROUND_HALF_EVEN):f}"


def truth(
    fleet: Fleet,
    sim: Simulation,
    billing: Billing,
    roster: Sequence[RosterRow],
    window_start: datetime,
    hours: int,
    arguments: Mapping[str, object],
) -> dict[str, object]:
    """The whole ``truth.json`` document (keys are sorted when it is written)."""
    used_by, held_by = _ledger_seconds(fleet, sim)
    ledger = _Ledger()
    hosts = _host_truths(fleet, billing, used_by, held_by, hours, ledger)
    total_used = sum(ledger.cost.values(), Fraction(0))
    if total_used + ledger.total_idle != ledger.total_cost:
        raise AssertionError("usage-basis split does not add up")
    return {
        "arguments": dict(arguments),
        "definitions": TRUTH_DEFINITIONS,
        "window": {
            "start": iso_utc(window_start),
            "end": iso_utc(window_start + timedelta(hours=hours)),
            "hours": hours,
        },
        "currency": "USD",
        "billing": _billing_truth(billing),
        "fleet": _fleet_truth(fleet, hours),
        "gpu_cost": {
            "basis": "usage",
            "cost_column": "EffectiveCost",
            "total": money(ledger.total_cost),
            "used": money(total_used),
            "idle": money(ledger.total_idle),
            "idle_untagged_hosts": money(ledger.unowned_idle),
        },
        "projects": _project_truths(fleet.projects, ledger, roster, window_start, hours // 24),
        "hosts": hosts,
        "anomalies": sorted(fleet.anomalies, key=lambda a: (str(a["kind"]), str(a["host"]))),
        "shared_gpus": sorted(fleet.shared_gpus, key=lambda s: (str(s["kind"]), str(s["host"]))),
    }


def _ledger_seconds(fleet: Fleet, sim: Simulation) -> tuple[Int64Array, Int64Array]:
    """GPU-seconds used and held, x 14, per host (rows) and project (columns; 0: no pod)."""
    projects, hosts = fleet.projects, fleet.hosts
    project_index = {p.name: i + 1 for i, p in enumerate(projects)}
    workload_project = np.array(
        [project_index[w.project.name] if w else 0 for w in fleet.workloads], dtype=np.int64
    )
    sevenths = fleet.unit_array("sevenths")
    share = fleet.unit_array("share_divisor")
    host_of = fleet.unit_array("host_index")
    # Fourteenth-seconds keep MIG fractions and time-sliced halves integral: a sample of p % for
    # 300 s is 3 p GPU-seconds; a time-sliced GPU's is split among its pods.
    units = 2 * sevenths // share
    busy_units = sim.util_sum.astype(np.int64) * (SCRAPE_INTERVAL_S // 100) * units[:, None]
    held_units = np.where(sim.workload > 0, (SECONDS_PER_HOUR * units)[:, None], 0).astype(np.int64)
    owner = workload_project[sim.workload]
    keys = (host_of[:, None] * (len(projects) + 1) + owner).ravel()
    size = len(hosts) * (len(projects) + 1)
    limit = float(2**53)
    used = np.bincount(keys, weights=busy_units.ravel().astype(np.float64), minlength=size)
    held = np.bincount(keys, weights=held_units.ravel().astype(np.float64), minlength=size)
    if used.max(initial=0) >= limit or held.max(initial=0) >= limit:
        raise AssertionError("GPU-second sums exceed exact float range")
    used_by = used.astype(np.int64).reshape(len(hosts), len(projects) + 1)
    held_by = held.astype(np.int64).reshape(len(hosts), len(projects) + 1)
    if used_by[:, 0].any():
        raise AssertionError("GPU activity without a workload")
    return used_by, held_by


def _host_truths(
    fleet: Fleet,
    billing: Billing,
    used_by: Int64Array,
    held_by: Int64Array,
    hours: int,
    ledger: _Ledger,
) -> dict[str, object]:
    """Per GPU host: capacity, used, idle and its cost split; the ledger gathers the sums."""
    host_truth: dict[str, object] = {}
    for index, host in enumerate(fleet.hosts):
        gpu_count = host.itype.gpu_count
        if not gpu_count:
            continue
        capacity = gpu_count * UNITS_PER_GPU * SECONDS_PER_HOUR * hours
        hourly = billing.host_hourly_effective.get(host.resource_id)
        per_unit = (
            Fraction(hourly) / (gpu_count * UNITS_PER_GPU * SECONDS_PER_HOUR)
            if hourly is not None
            else None
        )
        host_used = 0
        for position, project in enumerate(fleet.projects, start=1):
            busy, holding = int(used_by[index, position]), int(held_by[index, position])
            host_used += busy
            ledger.used[project.name] += busy
            ledger.held[project.name] += holding
            if per_unit is not None:
                ledger.cost[project.name] += per_unit * busy
        entry = _host_entry(host, capacity, host_used)
        if per_unit is not None and hourly is not None:
            cost, idle_cost = Fraction(hourly) * hours, per_unit * (capacity - host_used)
            ledger.total_cost += cost
            ledger.total_idle += idle_cost
            if host.tagged:
                ledger.idle_cost_owned[host.owner.name] += idle_cost
            else:
                ledger.unowned_idle += idle_cost
            entry["gpu_cost"], entry["gpu_cost_idle"] = money(cost), money(idle_cost)
        host_truth[host.host] = entry
    return host_truth


def _host_entry(host: Host, capacity: int, host_used: int) -> dict[str, object]:
    """A host's entry, its cost left None (on-prem hosts are not billed)."""
    return {
        "resource_id": host.resource_id,
        "provider": host.itype.provider,
        "instance_type": host.itype.name,
        "role": host.role,
        "pattern": host.pattern,
        "owner_project": host.owner.name if host.tagged else None,
        "gpu_count": host.itype.gpu_count,
        "capacity_gpu_seconds": capacity / UNITS_PER_GPU,
        "used_gpu_seconds": host_used / UNITS_PER_GPU,
        "idle_gpu_seconds": (capacity - host_used) / UNITS_PER_GPU,
        "gpu_cost": None,
        "gpu_cost_idle": None,
    }


def _project_truths(
    projects: Sequence[Project],
    ledger: _Ledger,
    roster: Sequence[RosterRow],
    window_start: datetime,
    days: int,
) -> dict[str, object]:
    """Per project: its names, GPU-seconds, cost by use, idle cost it owns and its people."""
    fte_days: Counter[str] = Counter()
    for row in roster:
        for day in range(days):
            moment = window_start.date() + timedelta(days=day)
            if row.start <= moment and (row.end is None or moment <= row.end):
                fte_days[row.project.name] += row.fraction  # type: ignore[assignment]
    people = {p.name: len({r.person_id for r in roster if r.project == p}) for p in projects}
    return {
        p.name: {
            "cost_center": p.cost_center,
            "team": p.team,
            "namespace_prefix": p.name,
            "gpu_seconds_used": ledger.used[p.name] / UNITS_PER_GPU,
            "gpu_seconds_held": ledger.held[p.name] / UNITS_PER_GPU,
            "gpu_cost_used": money(ledger.cost[p.name]),
            "gpu_cost_idle_owned": money(ledger.idle_cost_owned[p.name]),
            "people": people[p.name],
            "fte_days": str(Decimal(fte_days[p.name])),
        }
        for p in projects
    }


def _billing_truth(billing: Billing) -> dict[str, object]:
    return {
        "rows": billing.rows,
        "billed_cost_total": money(billing.billed_total),
        "effective_cost_total": money(billing.effective_total),
        "by_charge_category": {
            category: {name: money(value) for name, value in sums.items()}
            for category, sums in billing.by_category.items()
        },
    }


def _fleet_truth(fleet: Fleet, hours: int) -> dict[str, object]:
    hosts = fleet.hosts
    return {
        "hosts": len(hosts),
        "gpu_hosts": sum(1 for h in hosts if h.itype.gpu_count),
        "gpus": fleet.gpu_count,
        "gpus_by_provider": dict(sorted(_gpu_counter(hosts, "provider").items())),
        "gpus_by_model": dict(sorted(_gpu_counter(hosts, "model").items())),
        "usage_rows": len(fleet.units) * hours,
    }


def _gpu_counter(hosts: Sequence[Host], by: str) -> Counter[str]:
    counter: Counter[str] = Counter()
    for host in hosts:
        if host.itype.gpu is None:
            continue
        key = host.itype.provider if by == "provider" else host.itype.gpu.family
        counter[key] += host.itype.gpu_count
    return counter
