"""Small frames in the lake's contracts, for hand-computed and property tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from gpucost.allocator.projects import ProjectMatch, ProjectRule
from gpucost.core.contracts import BILLING, GPU_USAGE, HEADCOUNT, INVENTORY

T0 = datetime(2024, 9, 24, tzinfo=UTC)
DAY0 = T0.date()
INGESTED = datetime(2024, 10, 2, tzinfo=UTC)


def rule(name: str, cost_center: str | None = None, **match: Any) -> ProjectRule:
    """A ``[[projects]]`` rule; ``match`` holds its criteria (tags, namespaces, pods, ...)."""
    return ProjectRule(name=name, cost_center=cost_center, match=ProjectMatch(**match))


def truth_rules(truth: Mapping[str, Any]) -> list[ProjectRule]:
    """The rules of a synth fleet's projects (truth.json): its tag or its namespaces."""
    return [
        rule(name, entry["cost_center"], tags={"project": name}, namespaces=(f"{name}-*",))
        for name, entry in truth["projects"].items()
    ]


def hour(number: int) -> datetime:
    """The start of the window's hour ``number``."""
    return T0 + timedelta(hours=number)


def charge(
    cost: str | Decimal,
    *,
    start: int = 0,
    hours: int = 1,
    resource_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    service: str = "Amazon Elastic Compute Cloud",
    service_category: str = "Compute",
    charge_category: str = "Usage",
    currency: str = "USD",
    billed: str | Decimal | None = None,
    provider: str = "AWS",
    account: str = "111122223333",
) -> dict[str, Any]:
    """One billing row; ``billed`` defaults to the (effective) cost."""
    effective = Decimal(cost)
    return {
        "ChargePeriodStart": hour(start),
        "ChargePeriodEnd": hour(start + hours),
        "BilledCost": Decimal(billed) if billed is not None else effective,
        "EffectiveCost": effective,
        "BillingCurrency": currency,
        "ChargeCategory": charge_category,
        "ServiceName": service,
        "ServiceCategory": service_category,
        "ResourceId": resource_id,
        "SubAccountId": account,
        "ProviderName": provider,
        "ServiceProviderName": provider,
        "Tags": json.dumps(dict(tags), sort_keys=True, separators=(",", ":")) if tags else None,
        "x_Source": "test",
        "x_IngestedAt": INGESTED,
    }


def billing(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Billing rows in the contract."""
    schema = {name: BILLING.schema[name] for name in rows[0]} if rows else {}
    frame = pl.DataFrame(list(rows), schema=schema, orient="row") if rows else BILLING.empty()
    return BILLING.conform(frame, "test")


def usage_row(
    host: str,
    at: int,
    *,
    gpu: int = 0,
    util: float = 0.0,
    namespace: str | None = None,
    pod: str | None = None,
    mig_profile: str | None = None,
    gpu_uuid: str | None = None,
    seconds: float = 3600.0,
    gpu_model: str = "NVIDIA H100 80GB HBM3",
    label: str | None = None,
) -> dict[str, Any]:
    """One gpu_usage row (one GPU, slice or pod for one hour)."""
    return {
        "hour": hour(at),
        "host": host,
        "gpu_uuid": gpu_uuid or f"GPU-{host}-{gpu}",
        "gpu_index": gpu,
        "gpu_model": gpu_model,
        "mig_profile": mig_profile,
        "namespace": namespace,
        "pod": pod,
        "workload": pod,
        "project": label,
        "seconds_observed": seconds,
        "util_avg": util,
        "util_max": util,
        "source": "test",
    }


def usage(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """gpu_usage rows in the contract."""
    if not rows:
        return GPU_USAGE.empty()
    schema = {name: GPU_USAGE.schema[name] for name in rows[0]}
    return GPU_USAGE.conform(pl.DataFrame(list(rows), schema=schema, orient="row"), "test")


def host(
    resource_id: str,
    name: str,
    gpus: int,
    *,
    tags: Mapping[str, str] | None = None,
    provider: str = "AWS",
    days: int = 1,
) -> list[dict[str, Any]]:
    """Inventory snapshot rows of one host, one per day."""
    return [
        {
            "day": DAY0 + timedelta(days=day),
            "resource_id": resource_id,
            "provider": provider,
            "host": name,
            "gpu_count": gpus,
            "tags": json.dumps(dict(tags), sort_keys=True, separators=(",", ":")) if tags else None,
            "source": "test",
        }
        for day in range(days)
    ]


def inventory(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Inventory rows in the contract."""
    if not rows:
        return INVENTORY.empty()
    schema = {name: INVENTORY.schema[name] for name in rows[0]}
    return INVENTORY.conform(pl.DataFrame(list(rows), schema=schema, orient="row"), "test")


def headcount(rows: Sequence[tuple[str, str, float]], days: int = 1) -> pl.DataFrame:
    """Headcount rows from (person_id, project, fraction), repeated on ``days`` days."""
    records = [
        {
            "day": DAY0 + timedelta(days=day),
            "person_id": person,
            "project": project,
            "cost_center": None,
            "fraction": fraction,
            "source": "test",
        }
        for day in range(days)
        for person, project, fraction in rows
    ]
    if not records:
        return HEADCOUNT.empty()
    schema = {name: HEADCOUNT.schema[name] for name in records[0]}
    return HEADCOUNT.conform(pl.DataFrame(records, schema=schema, orient="row"), "test")


def day(offset: int = 0) -> date:
    """The window's day ``offset``."""
    return DAY0 + timedelta(days=offset)
