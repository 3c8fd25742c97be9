"""``scenarios/``: GPU hosts whose ground truth is known minute by minute.

The main fleet is simulated hour by hour; these few hosts are planted beside it, in a folder of
their own (so the main fleet's files, truth and findings are untouched), with what real
clusters do within the hour and what real bills do:

* ``sx-handover``: pods start and stop at any minute, one after the other, and two or three at
  a time time-slice a GPU (dcgm-exporter repeats the device's utilisation on each pod's series);
  billed per hour on demand;
* ``sx-mig``: an H100 split into ``3g.40gb`` and ``4g.40gb`` slices that change hands; billed
  per day (one charge for the day); its pages are Prometheus' federation of an exporter scraped
  without ``honor_labels``: every series carries the exporter's own pod, the workloads'
  labels renamed to ``exported_*``;
* ``sx-exporter-only``: no workload ever; every series carries the exporter's own pod
  (``honor_labels``), which must not be taken for a workload;
* ``sx-savings-plan``: covered by a Savings Plan (BilledCost 0, EffectiveCost the plan rate);
* ``sx-spot``: a spot instance with a price per hour, and no owner tag.

Pages are scraped every :data:`SCENARIO_INTERVAL_S` seconds over the first
:data:`SCENARIO_HOURS` hours. ``scenarios/truth.json`` gives, for both GPU bases and all three
idle policies, every project's GPU cost computed per minute with exact fractions:

* a charge of ``A`` over ``h`` hours of a host with ``G`` GPUs is worth ``A / (G x 60 x h)`` a
  GPU-minute, a MIG slice ``Ng.*`` ``N/7`` of that;
* ``allocation``: each of the ``n`` pods on a device in a minute gets ``1/n`` of it; ``usage``:
  ``util/n`` (the device's busy time, split, never repeated);
* the rest of a charge is idle: to the host's owner (``unallocated`` without one), to ``idle``,
  or over the charge's users in proportion to their share.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Final, Literal

import polars as pl

from gpucost.synth.common import iso_utc
from gpucost.synth.fleet import Project
from gpucost.synth.truth import money

SCENARIO_HOURS: Final = 4
"""Hours of pages written (a day charge covers the whole first day: its other hours are idle)."""
SCENARIO_INTERVAL_S: Final = 60
"""One scrape a minute: the truth's grain."""
EXPORTER_NAMESPACE: Final = "gpu-operator"
EXPORTER_CONTAINER: Final = "nvidia-dcgm-exporter"
"""The GPU Operator's names for the exporter's namespace and container."""
H100: Final = "NVIDIA H100 80GB HBM3"
IDLE_PROJECT: Final = "idle"
UNALLOCATED: Final = "unallocated"
BASES: Final = ("usage", "allocation")
IDLE_POLICIES: Final = ("owner", "users", "separate")

Labels = Literal["direct", "renamed", "target"]
"""How a host's pages carry pod labels: as dcgm-exporter writes them (``direct``); federated
from a Prometheus that renamed them (``renamed``: the target's own pod on every series,
workloads in ``exported_*``); kept by ``honor_labels`` (``target``: the target's own pod on
series without a workload)."""
Minute = tuple[tuple[str, ...], int]
"""The pods (``namespace/pod``) on a device in one minute, and its utilisation in percent."""


@dataclass(frozen=True)
class Device:
    """One GPU or MIG slice and its minutes."""

    uuid: str
    index: int
    profile: str | None
    instance_id: int | None
    sevenths: int
    minutes: tuple[Minute, ...]


@dataclass(frozen=True)
class Charge:
    """One billing line of a scenario host."""

    start_hour: int
    hours: int
    billed: Decimal
    effective: Decimal
    pricing: str
    """FOCUS PricingCategory: Standard (on demand), Committed (Savings Plan) or Dynamic (spot)."""


@dataclass(frozen=True)
class ScenarioHost:
    """A planted host: its devices' minutes, its charges, its owner and how it is labelled."""

    host: str
    resource_id: str
    gpus: int
    owner: str | None
    labels: Labels
    devices: tuple[Device, ...]
    charges: tuple[Charge, ...]


def plant(projects: Sequence[Project], rnd: random.Random) -> list[ScenarioHost]:
    """The scenario hosts, drawn from ``rnd`` (see the module docstring)."""
    names = [project.name for project in projects]
    minutes = SCENARIO_HOURS * 60

    def pods(count: int) -> list[str]:
        chosen = [rnd.choice(names) for _ in range(count)]
        return [f"{name}-jobs/{name}-train-{rnd.randrange(10**5):05d}-worker-0" for name in chosen]

    def schedule(pool: Sequence[str], together: int) -> tuple[Minute, ...]:
        out: list[Minute] = []
        while len(out) < minutes:
            length = rnd.randint(1, 50)
            count = rnd.choice([0, *range(1, together + 1), 1])
            present = tuple(sorted(rnd.sample(list(pool), min(count, len(pool)))))
            out.extend([(present, rnd.randint(1, 100) if present else 0)] * length)
        return tuple(out[:minutes])

    def uuid() -> str:
        digits = f"{rnd.getrandbits(128):032x}"
        return f"GPU-{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"

    def hourly(
        prices: Iterable[Decimal], pricing: str, *, plan: bool = False
    ) -> tuple[Charge, ...]:
        return tuple(
            Charge(hour, 1, Decimal(0) if plan else price, price, pricing)
            for hour, price in enumerate(prices)
        )

    def whole(count: int, pool: int, together: int) -> tuple[Device, ...]:
        return tuple(
            Device(uuid(), index, None, None, 7, schedule(pods(pool), together))
            for index in range(count)
        )

    nobody: tuple[Minute, ...] = (((), 0),) * minutes
    mig_uuid = uuid()
    day = Decimal("1411.87")
    return [
        ScenarioHost(
            "sx-handover",
            "i-0sx0handover000001",
            2,
            names[0],
            "direct",
            whole(2, 5, 3),
            hourly([Decimal("24.58")] * SCENARIO_HOURS, "Standard"),
        ),
        ScenarioHost(
            "sx-mig",
            "i-0sx0mig00000000002",
            1,
            names[1 % len(names)],
            "renamed",
            tuple(
                Device(mig_uuid, 0, profile, instance, sevenths, schedule(pods(3), 1))
                for instance, profile, sevenths in ((1, "3g.40gb", 3), (2, "4g.40gb", 4))
            ),
            (Charge(0, 24, day, day, "Standard"),),
        ),
        ScenarioHost(
            "sx-exporter-only",
            "i-0sx0exporteronly03",
            2,
            names[2 % len(names)],
            "target",
            tuple(Device(uuid(), i, None, None, 7, nobody) for i in (0, 1)),
            hourly([Decimal("12.29")] * SCENARIO_HOURS, "Standard"),
        ),
        ScenarioHost(
            "sx-savings-plan",
            "i-0sx0savingsplan004",
            1,
            names[0],
            "target",
            whole(1, 3, 2),
            hourly([Decimal("7.9893")] * SCENARIO_HOURS, "Committed", plan=True),
        ),
        ScenarioHost(
            "sx-spot",
            "i-0sx0spot0000000005",
            1,
            None,
            "direct",
            whole(1, 3, 2),
            hourly(
                (Decimal(rnd.randint(30_000, 45_000)) / 10_000 for _ in range(SCENARIO_HOURS)),
                "Dynamic",
            ),
        ),
    ]


def truth(hosts: Sequence[ScenarioHost]) -> dict[str, dict[str, dict[str, dict[str, str]]]]:
    """Per basis, idle policy and project: GPU cost used and idle, exact, as Decimal strings
    (rounded half-even to 18 places, as ``truth.json``)."""
    result: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for basis in BASES:
        result[basis] = {}
        for idle in IDLE_POLICIES:
            sums = _minute_truth(hosts, basis, idle)
            projects: dict[str, dict[str, str]] = defaultdict(dict)
            for (project, category), value in sorted(sums.items()):
                projects[project][category] = money(value)
            result[basis][idle] = dict(projects)
    return result


def _minute_truth(
    hosts: Sequence[ScenarioHost], basis: str, idle: str
) -> dict[tuple[str, str], Fraction]:
    sums: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for host in hosts:
        for item in host.charges:
            amount = Fraction(item.effective)
            per_gpu_minute = amount / (host.gpus * 60 * item.hours)
            used: dict[str, Fraction] = defaultdict(Fraction)
            for device in host.devices:
                first = item.start_hour * 60
                for present, percent in device.minutes[first : first + item.hours * 60]:
                    for labelled in present:
                        share = Fraction(device.sevenths, 7) / len(present)
                        if basis == "usage":
                            share *= Fraction(percent, 100)
                        used[labelled.split("/")[0].removesuffix("-jobs")] += per_gpu_minute * share
            rest = amount - sum(used.values(), Fraction(0))
            for project, value in used.items():
                sums[(project, "gpu_used")] += value
            users = {project: value for project, value in used.items() if value > 0}
            if idle == "separate":
                sums[(IDLE_PROJECT, "gpu_idle")] += rest
            elif idle == "users" and users:
                total = sum(users.values(), Fraction(0))
                for project, value in users.items():
                    sums[(project, "gpu_idle")] += rest * value / total
            else:
                sums[(host.owner or UNALLOCATED, "gpu_idle")] += rest
    return sums


# ---- files ----


def write_scenarios(
    folder: Path, projects: Sequence[Project], window_start: datetime, rnd: random.Random
) -> list[Path]:
    """``inventory.csv``, ``billing/scenarios-focus.csv``, ``dcgm/{host}/{hour}.prom`` and
    ``truth.json`` under ``folder``; returns the files written."""
    hosts = plant(projects, rnd)
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        _write_inventory(folder / "inventory.csv", hosts, window_start),
        _write_billing(folder / "billing" / "scenarios-focus.csv", hosts, window_start),
    ]
    for host in hosts:
        written.extend(_write_pages(folder / "dcgm" / host.host, host, window_start))
    document = {
        "definitions": (__doc__ or "").split("``scenarios/truth.json``", 1)[1].strip(),
        "hosts": [host.host for host in hosts],
        "scrape_interval_s": SCENARIO_INTERVAL_S,
        "window": {
            "start": iso_utc(window_start),
            "end": iso_utc(window_start + timedelta(hours=24)),
        },
        "gpu_cost": truth(hosts),
    }
    path = folder / "truth.json"
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    written.append(path)
    return sorted(written)


def _write_inventory(path: Path, hosts: Sequence[ScenarioHost], window_start: datetime) -> Path:
    pl.DataFrame(
        {
            "resource_id": [host.resource_id for host in hosts],
            "provider": ["AWS"] * len(hosts),
            "host": [host.host for host in hosts],
            "gpu_count": [host.gpus for host in hosts],
            "gpu_model": [H100] * len(hosts),
            "tags": [
                json.dumps({"project": host.owner}, separators=(",", ":")) if host.owner else None
                for host in hosts
            ],
            "first_seen": [iso_utc(window_start)] * len(hosts),
            "last_seen": [iso_utc(window_start + timedelta(hours=23))] * len(hosts),
        }
    ).write_csv(path)
    return path


def _write_billing(path: Path, hosts: Sequence[ScenarioHost], window_start: datetime) -> Path:
    """FOCUS 1.0 rows (the columns the allocator reads), one per charge."""
    stamp = "%Y-%m-%d %H:%M:%S"
    rows = []
    for host in hosts:
        for item in host.charges:
            start = window_start + timedelta(hours=item.start_hour)
            rows.append(
                {
                    "BilledCost": str(item.billed),
                    "EffectiveCost": str(item.effective),
                    "BillingCurrency": "USD",
                    "ChargeCategory": "Usage",
                    "ChargePeriodStart": start.strftime(stamp),
                    "ChargePeriodEnd": (start + timedelta(hours=item.hours)).strftime(stamp),
                    "PricingCategory": item.pricing,
                    "ProviderName": "AWS",
                    "ResourceId": host.resource_id,
                    "ServiceCategory": "Compute",
                    "ServiceName": "Amazon Elastic Compute Cloud",
                    "SubAccountId": "345678901234",
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(path)
    return path


def _write_pages(folder: Path, host: ScenarioHost, window_start: datetime) -> list[Path]:
    """One exposition file per hour: a scrape a minute, ``DCGM_FI_PROF_GR_ENGINE_ACTIVE``
    (a ratio) and ``DCGM_FI_DEV_FB_USED`` per device and pod, with ms timestamps."""
    exporter_pod = f"nvidia-dcgm-exporter-{host.host[-5:].replace('-', 'x')}"
    own = f'container="{EXPORTER_CONTAINER}",namespace="{EXPORTER_NAMESPACE}",pod="{exporter_pod}"'
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for hour in range(SCENARIO_HOURS):
        lines: list[str] = []
        for minute in range(hour * 60, hour * 60 + 60):
            ms = int((window_start + timedelta(minutes=minute)).timestamp()) * 1000
            for device in host.devices:
                present, percent = device.minutes[minute]
                mig = (
                    f',GPU_I_PROFILE="{device.profile}",GPU_I_ID="{device.instance_id}"'
                    if device.profile
                    else ""
                )
                base = (
                    f'gpu="{device.index}",UUID="{device.uuid}",device="nvidia{device.index}",'
                    f'modelName="{H100}",Hostname="{host.host}"{mig}'
                )
                for labelled in present or (None,):
                    labels = base + _pod_labels(host.labels, labelled, own)
                    ratio = f"{percent / 100:.2f}"
                    lines.append(f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{labels}}} {ratio} {ms}")
                    used = 1024 * len(present) if present else 0
                    lines.append(f"DCGM_FI_DEV_FB_USED{{{labels}}} {used} {ms}")
        stamp = (window_start + timedelta(hours=hour)).strftime("%Y-%m-%dT%H")
        path = folder / f"{stamp}.prom"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _pod_labels(labels: Labels, labelled: str | None, own: str) -> str:
    """A series' pod labels under the host's labelling (see :data:`Labels`)."""
    if labelled is None:
        return "" if labels == "direct" else "," + own
    namespace, pod = labelled.split("/")
    workload = f'container="main",namespace="{namespace}",pod="{pod}"'
    if labels == "renamed":
        return (
            f',exported_container="main",exported_namespace="{namespace}",'
            f'exported_pod="{pod}",{own}'
        )
    return "," + workload
