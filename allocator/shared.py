"""Charges that are not GPU hosts: direct attribution, shared splits and the unallocated rest.

* A charge a ``[[projects]]`` rule matches goes whole to that project (``direct-tags``,
  ``direct-accounts`` or ``direct-hosts``, after the criterion that matched), credits included:
  a tagged or resource-bound credit follows its charge.
* A charge no rule matches is *shared* when its ``ServiceName`` matches a shared glob, its
  ``ServiceCategory`` or its ``ChargeCategory`` is listed as shared (by default support,
  networking and credits), and is split exactly over the day's recipients by the shared policy:

  - ``even``: every project with allocated cost that day (same currency) weighs 1;
  - ``proportional``: each such project weighs its direct cost that day (GPU used and idle
    pieces included; a net credit weighs 0), as AWS Cost Categories' proportional split does;
  - ``headcount``: each project weighs its FTE that day (from the roster);
  - ``weights``: fixed weights from the policy.

  A shared charge with no recipient (no cost, no people that day) stays ``unallocated``.
* Every other charge lands in ``unallocated``, visibly, with its category.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from gpucost.allocator.exact import UNITS_PER_CURRENCY, split_exact
from gpucost.allocator.matching import CODE_STRIDE, IDLE_CODE, UNALLOCATED_CODE, VIA
from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.projects import glob_to_regex

WEIGHT_UNITS: Final = 1_000_000
"""Shared weights are integers: micro-FTE, micro-currency of direct cost, micro-weights."""

CATEGORY_BY_SERVICE: Final = {"Compute": "compute", "Storage": "storage", "Networking": "network"}
"""FOCUS ``ServiceCategory`` -> allocation ``category``; every other category is ``other``."""


def category_of_service() -> pl.Expr:
    """The allocation category of a charge from its FOCUS ``ServiceCategory``."""
    return pl.col("ServiceCategory").replace_strict(
        CATEGORY_BY_SERVICE, default="other", return_dtype=pl.String
    )


def is_shared(policy: AllocationPolicy) -> pl.Expr:
    """Whether an unmatched charge is shared by everyone under ``policy``."""
    conditions = [pl.col("ServiceName").str.contains(glob_to_regex(pattern)).fill_null(False)
                  for pattern in policy.shared_service_names]  # fmt: skip
    if policy.shared_service_categories:
        conditions.append(
            pl.col("ServiceCategory").is_in(list(policy.shared_service_categories)).fill_null(False)
        )
    if policy.shared_charge_categories:
        conditions.append(
            pl.col("ChargeCategory").is_in(list(policy.shared_charge_categories)).fill_null(False)
        )
    return pl.any_horizontal(conditions) if conditions else pl.lit(False)


def direct_pieces(charges: pl.LazyFrame) -> pl.LazyFrame:
    """One piece per matched or unallocated charge, carrying it whole."""
    via = (pl.col("code") % CODE_STRIDE).replace_strict(
        dict(enumerate(VIA)), default=None, return_dtype=pl.String
    )
    method = (
        pl.when(pl.col("code") == UNALLOCATED_CODE)
        .then(pl.lit("unallocated"))
        .otherwise(pl.concat_str([pl.lit("direct-"), via]))
    )
    return charges.select(
        "charge_id",
        "code",
        category_of_service().alias("category"),
        method.alias("method"),
        "amount",
        "billed",
        pl.lit(None, pl.Int64).alias("ratio_weight"),
        pl.lit(0, pl.Int64).alias("used_units"),
        pl.lit(0, pl.Int64).alias("idle_units"),
        pl.lit(None, pl.String).alias("usage_unit"),
        pl.lit(None, pl.Float64).alias("usage_quantity"),
    )


def recipients(
    attributed: pl.LazyFrame,
    fte: pl.LazyFrame,
    project_codes: pl.LazyFrame,
    policy: AllocationPolicy,
) -> tuple[pl.LazyFrame, list[str]]:
    """Who receives shared charges, with integer weights, and the columns to join them on.

    ``attributed``: non-shared pieces with ``day``, ``currency``, ``project``, ``amount``.
    ``fte``: ``day``, ``project``, ``fte_units`` (micro-FTE). ``project_codes``: ``project``,
    ``code``. Returns a frame with the join columns, ``code`` and ``weight`` (Int64 > 0).
    """
    real = attributed.filter(~pl.col("code").is_in([UNALLOCATED_CODE, IDLE_CODE]))
    if policy.shared in ("even", "proportional"):
        per_project = real.group_by("day", "currency", "project").agg(pl.col("amount").sum())
        if policy.shared == "even":
            weight = pl.when(pl.col("amount") != 0).then(1).otherwise(0)
        else:
            micro = UNITS_PER_CURRENCY // WEIGHT_UNITS
            weight = (pl.col("amount") // micro).clip(lower_bound=0)
        frame = per_project.select(
            "day", "currency", "project", weight.cast(pl.Int64).alias("weight")
        )
        on = ["day", "currency"]
    elif policy.shared == "headcount":
        frame = fte.select("day", "project", pl.col("fte_units").alias("weight"))
        on = ["day"]
    else:
        weights = sorted(policy.shared_weights.items())
        frame = pl.LazyFrame(
            {
                "project": [name for name, _ in weights],
                "weight": [round(value * WEIGHT_UNITS) for _, value in weights],
            },
            schema={"project": pl.String, "weight": pl.Int64},
        )
        on = []
    frame = frame.filter(pl.col("weight") > 0).join(project_codes, on="project", how="inner")
    return frame.drop("project"), on


def shared_pieces(
    charges: pl.LazyFrame,
    recipients_frame: pl.LazyFrame,
    on: list[str],
    policy: AllocationPolicy,
) -> pl.LazyFrame:
    """Exact pieces of shared charges (``charge_id``, ``day``, ``currency``, ``amount``,
    ``billed``) over ``recipients_frame`` (from :func:`recipients`)."""
    base = charges.select("charge_id", "day", "currency", "amount", "billed")
    if on:
        joined = base.join(recipients_frame, on=on, how="inner")
    else:
        joined = base.join(recipients_frame, how="cross")
    joined = joined.select("charge_id", "code", "weight", "amount", "billed")
    orphans = base.join(joined.select("charge_id").unique(), on="charge_id", how="anti").select(
        "charge_id",
        pl.lit(UNALLOCATED_CODE, pl.Int64).alias("code"),
        pl.lit(1, pl.Int64).alias("weight"),
        "amount",
        "billed",
    )
    method = f"shared-{policy.shared}"
    split = (
        split_exact(
            joined.with_columns(pl.col("code").alias("tiebreak")).collect(),
            charge="charge_id",
            amounts=["amount", "billed"],
            weight="weight",
            tiebreak="tiebreak",
        )
        .lazy()
        .with_columns(pl.lit(method).alias("method"))
    )
    unit, scale = {
        "even": ("Projects", 1.0),
        "proportional": ("Cost", float(WEIGHT_UNITS)),
        "headcount": ("FTE", float(WEIGHT_UNITS)),
        "weights": ("Weight", float(WEIGHT_UNITS)),
    }[policy.shared]
    pieces = pl.concat(
        [
            split.select("charge_id", "code", "method", "amount", "billed", "weight"),
            orphans.select(
                "charge_id",
                "code",
                pl.lit("shared-unallocated").alias("method"),
                "amount",
                "billed",
                "weight",
            ),
        ]
    )
    return pieces.select(
        "charge_id",
        "code",
        pl.lit("shared").alias("category"),
        "method",
        "amount",
        "billed",
        pl.col("weight").alias("ratio_weight"),
        pl.lit(0, pl.Int64).alias("used_units"),
        pl.lit(0, pl.Int64).alias("idle_units"),
        pl.lit(unit).alias("usage_unit"),
        (pl.col("weight").cast(pl.Float64) / scale).alias("usage_quantity"),
    )
