"""Synthetic fleets read the way the shell reads them, and a stand-in allocation table.

The allocator (issue 6) is written elsewhere; these tests develop against the ``allocation``
contract with :func:`allocation_from_billing`, a deliberately simple "tag decides" split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from gpucost.core.contracts import ALLOCATION
from gpucost.reports.findings import FleetData
from tests.synth_fleet import SynthFleet

METHOD_DETAILS = '{"Elements":[{"AllocatedRatio":1,"UsageUnit":"Charge"}]}'


@dataclass(frozen=True)
class Fleet(SynthFleet):
    """A synth fleet read back (:class:`tests.synth_fleet.SynthFleet`), with the findings' view."""

    def data(self, **changes: Any) -> FleetData:
        """The findings' input for the whole window; keyword arguments replace tables."""
        fields: dict[str, Any] = {
            "gpu_usage": self.usage,
            "inventory": self.inventory,
            "billing": self.billing,
            "host_metrics": self.host_metrics,
            "start": self.window.start_time,
            "end": self.window.end_time,
        }
        fields.update(changes)
        return FleetData(**fields)

    def planted(self, kind: str) -> dict[str, Any]:
        """The first planted anomaly of ``kind`` in truth.json."""
        found: list[dict[str, Any]] = [a for a in self.truth["anomalies"] if a["kind"] == kind]
        assert found, kind
        return found[0]


def allocation_from_billing(fleet: Fleet) -> pl.DataFrame:
    """Every charge to the project its ``project`` tag names (else ``unallocated``), per day.

    Categories: GPU instances ``gpu_used``, other instances ``compute``, then storage,
    network, and ``shared`` for untagged rows. ``fte`` carries the roster's FTE once per project
    and day, on its ``compute``-or-first row; GPU-hours are the rows' ``x_GpuHours``.
    """
    cost_centers = {name: entry["cost_center"] for name, entry in fleet.truth["projects"].items()}
    gpu_resources = fleet.inventory.filter(pl.col("gpu_count") > 0)["resource_id"].unique()
    roster = pl.read_csv(fleet.summary.roster_csv, infer_schema=False)
    fte = (
        roster.group_by("project")
        .agg(pl.col("fraction").cast(pl.Float64).sum().alias("fte"))
        .sort("project")
    )
    project = pl.col("Tags").str.json_path_match("$.project").fill_null("unallocated")
    category = (
        pl.when(pl.col("ResourceId").is_in(gpu_resources.implode()))
        .then(pl.lit("gpu_used"))
        .when(pl.col("ResourceType") == "instance")
        .then(pl.lit("compute"))
        .when(pl.col("ServiceCategory") == "Storage")
        .then(pl.lit("storage"))
        .when(pl.col("ServiceCategory") == "Networking")
        .then(pl.lit("network"))
        .otherwise(pl.lit("shared"))
    )
    rows = (
        fleet.billing.select(
            pl.col("ChargePeriodStart").dt.date().alias("day"),
            project.alias("project"),
            pl.col("ProviderName").alias("provider"),
            category.alias("category"),
            pl.col("EffectiveCost").fill_null(pl.col("BilledCost")).alias("amount"),
            pl.col("BilledCost").alias("billed_amount"),
            pl.col("BillingCurrency").alias("currency"),
            pl.col("x_GpuHours").cast(pl.Float64).alias("gpu_hours_used"),
            pl.col("ResourceId").alias("AllocatedResourceId"),
            pl.col("Tags").alias("AllocatedTags"),
        )
        .group_by(
            "day",
            "project",
            "provider",
            "category",
            "currency",
            "AllocatedResourceId",
            "AllocatedTags",
        )
        .agg(pl.col("amount").sum(), pl.col("billed_amount").sum(), pl.col("gpu_hours_used").sum())
        .with_columns(
            pl.col("project").replace_strict(cost_centers, default=None).alias("cost_center"),
            pl.lit(0.1).alias("gpu_hours_idle"),
            pl.when(pl.col("project") == "unallocated")
            .then(pl.lit("unallocated"))
            .otherwise(pl.lit("tag:project"))
            .alias("AllocatedMethodId"),
            pl.lit(METHOD_DETAILS).alias("AllocatedMethodDetails"),
            pl.lit("test-allocation").alias("source"),
        )
        .sort("day", "project", "category", "AllocatedResourceId", nulls_last=True)
    )
    first_row = pl.int_range(pl.len()).over("day", "project") == 0
    with_fte = rows.join(fte, on="project", how="left").with_columns(
        pl.when(first_row).then(pl.col("fte")).otherwise(None).alias("fte")
    )
    return ALLOCATION.conform(with_fte, "test-allocation")
