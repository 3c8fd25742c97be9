"""The ``allocation`` table: summed rows in the contract with FOCUS's allocation columns, and
the reconciliation that proves every charge was allocated to the last 1e-18.

:func:`gpucost.allocator.allocate.allocate` sums its pieces to the output grain and hands them
here (:func:`allocation_rows`); :func:`reconcile` compares what came in with what went out.

**FOCUS 1.3 allocation columns** (FOCUS 1.3, "Allocated Method ID", "Allocated Method Details",
"Allocated Resource ID", "Allocated Tags"):

* ``AllocatedMethodId``: ``gpu-usage`` / ``gpu-allocation`` / ``gpu-max`` (a project's share of
  a GPU host), ``gpu-idle-owner`` / ``gpu-idle-users`` / ``gpu-idle-separate``,
  ``shared-even`` / ``shared-proportional`` / ``shared-headcount`` / ``shared-weights`` /
  ``shared-unallocated``, ``direct-tags`` / ``direct-accounts`` / ``direct-hosts`` /
  ``direct-resource`` (an unmatched line of a resource whose other lines a rule matched),
  ``unallocated`` and ``headcount-roster`` (rows that carry FTE only).
* ``AllocatedMethodDetails``: for split rows, ``{"Elements": [{"AllocatedRatio": r,
  "UsageQuantity": q, "UsageUnit": u}], "x_Charges": n}``: ``r`` is the row's share of the
  weights of the origin charges it came from (same day, currency, provider, resource and kind
  of split), printed with 12 decimals that add up to exactly 1 over those rows; ``q`` is the
  row's GPU-hours, FTE, direct cost or weight; ``n`` the number of origin charges. Null for
  rows that are not split (direct, unallocated, headcount), as FOCUS requires.
* ``AllocatedResourceId``: the origin charge's ``ResourceId`` (gpucost's allocation table has no
  ``ResourceId`` column of its own, so this column carries the origin resource for tracing);
  for the unbilled hours of a GPU host, the host's inventory ``resource_id``.
* ``AllocatedTags``: canonical JSON ``{"<owner tag key>": project, "x_rule": rule}`` where the
  rule is ``projects[i].<criterion>`` (criterion: tags, accounts, hosts, resource, namespaces,
  pods, labels, host-tags, host-names), omitted when no rule chose the project.
"""

from __future__ import annotations

import json
from typing import Final

import polars as pl

from gpucost.allocator import gpu
from gpucost.allocator.exact import from_units, to_units
from gpucost.allocator.matching import PROJECT_CODE_BASE
from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.shared import WEIGHT_UNITS
from gpucost.core.contracts import ALLOCATION, MONEY
from gpucost.core.errors import GpucostError

SOURCE: Final = "allocator"
"""The ``source`` of every allocation row (the lake's partition of the allocator's output)."""
RATIO_PLACES: Final = 12
"""Decimal places of ``AllocatedRatio``; the printed ratios of one origin add up to exactly 1."""
_RATIO_ONE: Final = 10**RATIO_PLACES
_UNITS_PER_GPU_HOUR: Final = float(gpu.WEIGHT_UNITS_PER_SECOND * gpu.SECONDS_PER_HOUR)


class ConservationError(GpucostError):
    """Allocated amounts do not add up to the billed amounts (a bug: never expected)."""

    def __init__(self, differences: pl.DataFrame) -> None:
        self.differences = differences
        super().__init__(f"allocation does not reconcile with billing:\n{differences}")


def allocation_rows(
    summed: pl.DataFrame,
    target: pl.DataFrame,
    fte: pl.DataFrame,
    policy: AllocationPolicy,
) -> pl.DataFrame:
    """Add the FOCUS allocation columns to summed rows, and the FTE rows."""
    family = (
        pl.when(pl.col("category").is_in(["gpu_used", "gpu_idle"]))
        .then(pl.lit("gpu"))
        .when(pl.col("category") == "shared")
        .then(pl.lit("shared"))
        .otherwise(None)
    )
    origin = ["day", "currency", "provider", "resource_id", "__family"]
    summed = summed.with_columns(family.alias("__family"))
    ratio = _exact_ratios(summed, origin)
    quantity = (
        pl.when(pl.col("__family") == "gpu")
        .then((pl.col("used_units") + pl.col("idle_units")).cast(pl.Float64) / _UNITS_PER_GPU_HOUR)
        .otherwise(pl.col("usage_quantity"))
        .round(6)
    )
    details = (
        pl.when(pl.col("__family").is_not_null())
        .then(
            pl.concat_str(
                [
                    pl.lit('{"Elements":[{"AllocatedRatio":'),
                    pl.col("__ratio_text"),
                    pl.lit(',"UsageQuantity":'),
                    quantity.cast(pl.String),
                    pl.lit(',"UsageUnit":"'),
                    pl.col("usage_unit"),
                    pl.lit('"}],"x_Charges":'),
                    pl.col("charges").cast(pl.String),
                    pl.lit("}"),
                ]
            )
        )
        .otherwise(None)
    )
    tags = [
        _tags_json(project, rule, policy.owner_tag_key)
        for project, rule in target.select("project", "rule").iter_rows()
    ]
    target = target.with_columns(pl.Series("tags", tags, dtype=pl.String))
    costed = ratio.join(target, on="code", how="left").select(
        "day",
        "project",
        "cost_center",
        "provider",
        "category",
        from_units(pl.col("amount")).alias("amount"),
        from_units(pl.col("billed")).alias("billed_amount"),
        "currency",
        (pl.col("used_units").cast(pl.Float64) / _UNITS_PER_GPU_HOUR).alias("gpu_hours_used"),
        (pl.col("idle_units").cast(pl.Float64) / _UNITS_PER_GPU_HOUR).alias("gpu_hours_idle"),
        pl.lit(None, pl.Float64).alias("fte"),
        pl.col("method").alias("AllocatedMethodId"),
        details.alias("AllocatedMethodDetails"),
        pl.col("resource_id").alias("AllocatedResourceId"),
        pl.col("tags").alias("AllocatedTags"),
        pl.lit(SOURCE).alias("source"),
    )
    fte_tags = {
        name: _tags_json(name, None, policy.owner_tag_key)
        for name in fte.get_column("project").unique().to_list()
    }
    people = fte.join(
        target.filter(pl.col("code") >= PROJECT_CODE_BASE).select("project", "cost_center"),
        on="project",
        how="left",
        suffix="_rule",
    ).select(
        "day",
        "project",
        pl.coalesce("cost_center_rule", "cost_center").alias("cost_center"),
        pl.lit(None, pl.String).alias("provider"),
        pl.lit("headcount").alias("category"),
        pl.lit(0, MONEY).alias("amount"),
        pl.lit(0, MONEY).alias("billed_amount"),
        pl.lit(policy.reporting_currency).alias("currency"),
        pl.lit(0.0).alias("gpu_hours_used"),
        pl.lit(0.0).alias("gpu_hours_idle"),
        (pl.col("fte_units").cast(pl.Float64) / WEIGHT_UNITS).alias("fte"),
        pl.lit("headcount-roster").alias("AllocatedMethodId"),
        pl.lit(None, pl.String).alias("AllocatedMethodDetails"),
        pl.lit(None, pl.String).alias("AllocatedResourceId"),
        pl.col("project").replace_strict(fte_tags, return_dtype=pl.String).alias("AllocatedTags"),
        pl.lit(SOURCE).alias("source"),
    )
    rows = pl.concat([costed, people.cast(costed.schema)], how="vertical")
    rows = rows.sort(
        [
            "day",
            "project",
            "category",
            "AllocatedMethodId",
            "provider",
            "currency",
            "AllocatedResourceId",
            "AllocatedTags",
            "cost_center",
        ],
        nulls_last=True,
    )
    return ALLOCATION.conform(rows, SOURCE)


def _tags_json(project: str, rule: str | None, owner_tag_key: str) -> str:
    """Canonical JSON (sorted keys, compact) of the project and the rule that chose it."""
    tags = {owner_tag_key: project} if rule is None else {owner_tag_key: project, "x_rule": rule}
    return json.dumps(tags, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _exact_ratios(summed: pl.DataFrame, origin: list[str]) -> pl.DataFrame:
    """``__ratio_text``: each split row's share of its origin's weights, with 12 decimals that
    add up to exactly 1 over the origin (largest share absorbs the rounding, ties by key)."""
    numbered = (
        summed.select(origin)
        .unique()
        .sort(origin, nulls_last=True)
        .with_row_index("__origin")
        .with_columns(pl.col("__origin").cast(pl.Int64))
    )
    frame = summed.join(numbered, on=origin, how="left", nulls_equal=True)
    total = pl.col("ratio_weight").sum().over("__origin")
    scaled = (
        pl.when(total > 0)
        .then(
            (pl.col("ratio_weight").cast(pl.Float64) / total.cast(pl.Float64) * _RATIO_ONE).round()
        )
        .otherwise(None)
        .cast(pl.Int64)
    )
    frame = frame.with_columns(scaled.alias("__ratio")).sort(
        ["__origin", "__ratio", "code", "category", "method"],
        descending=[False, True, False, False, False],
        nulls_last=True,
    )
    first = pl.col("__origin").ne_missing(pl.col("__origin").shift(1))
    adjusted = pl.col("__ratio") + pl.when(first).then(
        _RATIO_ONE - pl.col("__ratio").sum().over("__origin")
    ).otherwise(0)
    frame = frame.with_columns(adjusted.alias("__ratio"))
    text = pl.concat_str(
        [
            (pl.col("__ratio") // _RATIO_ONE).cast(pl.String),
            pl.lit("."),
            (pl.col("__ratio") % _RATIO_ONE).cast(pl.String).str.zfill(RATIO_PLACES),
        ]
    )
    return frame.with_columns(text.alias("__ratio_text"))


def billed(charges: pl.DataFrame) -> pl.DataFrame:
    """What came in, per day and currency: charges, EffectiveCost and BilledCost units."""
    return charges.group_by("day", "currency").agg(
        pl.len().alias("charges"),
        pl.col("amount").sum().alias("effective_units"),
        pl.col("billed").sum().alias("billed_units"),
    )


def reconcile(billed: pl.DataFrame, allocation: pl.DataFrame) -> pl.DataFrame:
    """Billed in vs allocated out per day and currency; raises unless every difference is 0."""
    allocated = allocation.group_by("day", "currency").agg(
        to_units(pl.col("amount")).sum().alias("allocated_units"),
        to_units(pl.col("billed_amount")).sum().alias("allocated_billed_units"),
    )
    zero = pl.lit(0, pl.Int128)
    table = (
        billed.join(allocated, on=["day", "currency"], how="full", coalesce=True)
        .with_columns(
            pl.col("charges").fill_null(0),
            *[
                pl.col(name).fill_null(zero)
                for name in (
                    "effective_units",
                    "billed_units",
                    "allocated_units",
                    "allocated_billed_units",
                )
            ],
        )
        .select(
            "day",
            "currency",
            pl.col("charges").cast(pl.Int64),
            from_units(pl.col("effective_units")).alias("effective_cost"),
            from_units(pl.col("allocated_units")).alias("allocated_amount"),
            from_units(pl.col("effective_units") - pl.col("allocated_units")).alias("difference"),
            from_units(pl.col("billed_units")).alias("billed_cost"),
            from_units(pl.col("allocated_billed_units")).alias("allocated_billed_amount"),
            from_units(pl.col("billed_units") - pl.col("allocated_billed_units")).alias(
                "billed_difference"
            ),
        )
        .sort("day", "currency")
    )
    wrong = table.filter((pl.col("difference") != 0) | (pl.col("billed_difference") != 0))
    if wrong.height:
        raise ConservationError(wrong)
    return table
