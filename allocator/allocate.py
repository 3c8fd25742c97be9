"""``allocate``: every charge and the team's headcount attributed to ML projects, exactly.

Inputs are lake tables as LazyFrames (billing, gpu_usage, inventory, headcount), the ordered
``[[projects]]`` rules and an :class:`~gpucost.allocator.policy.AllocationPolicy`; the output is the
``allocation`` table and a reconciliation per day and currency. Nothing here reads or writes
files.

Each charge (a billing row) is attributed by the first of:

1. **GPU host** (its ``ResourceId`` is an inventory host with GPUs): split hour by hour over
   the projects that used the host's GPUs, and the idle rest (:mod:`gpucost.allocator.gpu`);
2. **matched** by a rule (tags, accounts, hosts), or an unmatched line of a resource whose
   other lines a rule matched (a refund follows its charge): whole to that project;
3. **shared** (unmatched support, networking, credits...): split by the shared policy
   (:mod:`gpucost.allocator.shared`);
4. otherwise **unallocated**, visibly.

The amount allocated is ``EffectiveCost`` (amortised commitments; ``BilledCost`` when
EffectiveCost is null) and ``BilledCost`` is split beside it into ``billed_amount`` by the same
weights. Every split is exact (:mod:`.exact`): the pieces of a charge add up to it to
the last 1e-18, and :func:`allocate` refuses to return a result whose reconciliation is not
exactly zero.

**Grain.** Pieces are summed to one row per day x project x cost centre x provider x category
x currency x method x ``AllocatedResourceId`` x matched rule. Keeping the resource keeps every
split traceable to the invoice lines it came from (the GPU host, the NAT gateway, the bucket)
while the hourly detail collapses: a GPU host gives about three rows a day (each user project
and its idle line) instead of one per hour and project. The rows get FOCUS 1.3's allocation
columns (``AllocatedMethodId``, ``AllocatedMethodDetails``, ``AllocatedResourceId``,
``AllocatedTags``) in :mod:`gpucost.allocator.table`, which also reconciles them with the bill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from gpucost.allocator import gpu, table
from gpucost.allocator.exact import to_units
from gpucost.allocator.matching import (
    BILLING_MATCH_COLUMNS,
    PROJECT_CODE_BASE,
    UNALLOCATED_CODE,
    billing_match_code,
    host_match_code,
    is_allocated_match,
    resource_code,
    targets,
    workload_match_code,
)
from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.projects import ProjectRule
from gpucost.allocator.shared import (
    WEIGHT_UNITS,
    direct_pieces,
    is_shared,
    recipients,
    shared_pieces,
)
from gpucost.allocator.table import SOURCE, ConservationError
from gpucost.core.contracts import MONEY
from gpucost.core.errors import GpucostError

__all__ = ["SOURCE", "AllocationResult", "ConservationError", "allocate", "gpu_resources"]


_BILLING_COLUMNS: Final = (
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "ChargeCategory",
    "ServiceCategory",
    "ServiceName",
    *BILLING_MATCH_COLUMNS,
    "ProviderName",
    "ServiceProviderName",
)
_GRAIN: Final = ("day", "code", "provider", "category", "currency", "method", "resource_id")
_SUMS: Final = (
    pl.col("amount").sum(),
    pl.col("billed").sum(),
    pl.col("used_units").sum(),
    pl.col("idle_units").sum(),
    pl.col("ratio_weight").cast(pl.Int128).sum(),
)


@dataclass(frozen=True)
class AllocationResult:
    """The ``allocation`` table and its reconciliation with billing per day and currency."""

    allocation: pl.DataFrame
    """Rows in the ``allocation`` contract, sorted by every key column."""
    reconciliation: pl.DataFrame
    """``day``, ``currency``, ``charges``, ``effective_cost`` and ``billed_cost`` in,
    ``allocated_amount`` and ``allocated_billed_amount`` out, and their differences (always 0)."""


def allocate(
    billing: pl.LazyFrame,
    gpu_usage: pl.LazyFrame,
    inventory: pl.LazyFrame,
    headcount: pl.LazyFrame,
    rules: Sequence[ProjectRule],
    policy: AllocationPolicy | None = None,
) -> AllocationResult:
    """Attribute every charge and every FTE to projects; see the module docstring."""
    policy = policy or AllocationPolicy()
    rules = list(rules)
    charges = _charges(billing, rules)
    billed = table.billed(charges)
    workloads = gpu.workload_weights(gpu_usage, policy)
    hosts = _hosts(inventory, workloads, rules)
    fte = _fte(headcount)
    target = _targets(rules, _extra_projects(rules, fte, policy))
    dictionary = _Dictionary.of(charges, hosts, policy)

    # The GPU path works on integer keys and frees each large frame as soon as it is used.
    gpu_charges, other = _gpu_charges(charges, hosts, dictionary)
    del charges
    hours = gpu.charge_hours(gpu_charges)
    del gpu_charges
    weights, observed = _weights(workloads, hosts, rules, policy)
    del workloads
    unbilled = _unbilled_hours(observed, hours, hosts, dictionary)
    hours = pl.concat([hours, unbilled.select(gpu.HOUR_COLUMNS)])
    del unbilled, observed
    pieces = gpu.gpu_pieces(hours, weights, policy)
    del hours, weights
    gpu_rows = _gpu_rows(pieces, hosts, dictionary, policy)
    del pieces

    other = _follow_resource(other)
    shared_mask = other.get_column("code").is_null() & other.select(is_shared(policy)).to_series()
    rest = other.filter(~shared_mask).with_columns(
        pl.col("code").fill_null(pl.lit(UNALLOCATED_CODE, pl.Int64))
    )
    direct_rows = _sum_pieces(direct_pieces(rest.lazy()), rest)
    attributed = pl.concat([gpu_rows, direct_rows]).join(
        target.select("code", "project"), on="code", how="left"
    )
    project_codes = target.filter(pl.col("code") >= PROJECT_CODE_BASE).select("project", "code")
    receivers, on = recipients(
        attributed.lazy().select("day", "currency", "project", "code", "amount"),
        fte.lazy(),
        project_codes.lazy(),
        policy,
    )
    shared_charges = other.filter(shared_mask)
    shared_rows = _sum_pieces(
        shared_pieces(shared_charges.lazy(), receivers, on, policy), shared_charges
    )
    rows = pl.concat([gpu_rows, direct_rows, shared_rows])
    allocation = table.allocation_rows(rows, target, fte, policy)
    reconciliation = table.reconcile(billed, allocation)
    return AllocationResult(allocation, reconciliation)


def gpu_resources(inventory: pl.LazyFrame, rules: Sequence[ProjectRule]) -> pl.Series:
    """Resource ids and host names of the inventory's GPU hosts: the billing ``ResourceId``
    values whose charges :func:`allocate` splits by GPU use (latest snapshot per host)."""
    empty = pl.DataFrame(schema={"host": pl.String})
    hosts = _hosts(inventory, empty, list(rules)).filter(pl.col("gpu_count") > 0)
    return pl.concat([hosts.get_column("resource_id"), hosts.get_column("host")]).unique()


_ROW_COLUMNS: Final = (
    "day",
    "code",
    "provider",
    "category",
    "currency",
    "method",
    "resource_id",
    "amount",
    "billed",
    "used_units",
    "idle_units",
    "ratio_weight",
    "usage_unit",
    "usage_quantity",
    "charges",
)


def _charges(billing: pl.LazyFrame, rules: list[ProjectRule]) -> pl.DataFrame:
    """Billing rows with a charge id, day, currency, provider, Int128 amounts and match code."""
    schema = billing.collect_schema()
    columns = [
        pl.col(name) if name in schema else pl.lit(None, pl.String).alias(name)
        for name in _BILLING_COLUMNS
        if name not in ("ChargePeriodStart", "ChargePeriodEnd", "BilledCost", "EffectiveCost")
    ]
    frame = billing.select(
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "BilledCost",
        pl.col("EffectiveCost")
        if "EffectiveCost" in schema
        else pl.lit(None, MONEY).alias("EffectiveCost"),
        *columns,
    ).collect()
    frame = frame.with_row_index("charge_id").with_columns(pl.col("charge_id").cast(pl.Int64))
    return frame.select(
        "charge_id",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        pl.col("ChargePeriodStart").dt.date().alias("day"),
        pl.col("BillingCurrency").alias("currency"),
        pl.coalesce("ServiceProviderName", "ProviderName").alias("provider"),
        pl.col("ResourceId").alias("resource_id"),
        "ServiceName",
        "ServiceCategory",
        "ChargeCategory",
        to_units(pl.coalesce("EffectiveCost", "BilledCost")).alias("amount"),
        to_units(pl.col("BilledCost")).alias("billed"),
        billing_match_code(frame, rules).alias("code"),
    )


def _hosts(
    inventory: pl.LazyFrame, workloads: pl.DataFrame, rules: list[ProjectRule]
) -> pl.DataFrame:
    """Every host, numbered ``host_id`` in name order: inventory hosts (latest snapshot) with
    their GPUs, hourly capacity and owner code, then hosts only gpu_usage knows."""
    latest = (
        inventory.select("day", "resource_id", "provider", "host", "gpu_count", "tags")
        .collect()
        # Every column in the key, so that two snapshots of one host and day (two sources)
        # resolve the same way whatever the input order.
        .sort("resource_id", "day", "host", "provider", "gpu_count", "tags", nulls_last=True)
        .unique("resource_id", keep="last", maintain_order=True)
    )
    known = (
        latest.select(
            pl.coalesce("host", "resource_id").alias("host"),
            "resource_id",
            "provider",
            pl.col("gpu_count").fill_null(0).cast(pl.Int64),
            host_match_code(latest, rules).alias("owner_code"),
        )
        .sort("host", "resource_id")
        .unique("host", keep="first", maintain_order=True)
    )
    unknown = (
        workloads.select(pl.col("host").unique())
        .join(known.select("host"), on="host", how="anti")
        .select(
            "host",
            pl.col("host").alias("resource_id"),
            pl.lit(None, pl.String).alias("provider"),
            pl.lit(None, pl.Int64).alias("gpu_count"),
            pl.lit(None, pl.Int64).alias("owner_code"),
        )
    )
    every = pl.concat([known, unknown]).sort("host")
    return every.with_row_index("host_id").with_columns(
        pl.col("host_id").cast(pl.Int64),
        (pl.col("gpu_count") * gpu.SECONDS_PER_HOUR * gpu.WEIGHT_UNITS_PER_SECOND).alias(
            "capacity"
        ),
    )


@dataclass(frozen=True)
class _Dictionary:
    """Small integer codes of currencies and providers, to pack a GPU row's origin in an Int64.

    ``origin = ((((host_id << 17 | day) << 8 | currency) << 8 | provider) << 1 | by_name``:
    the host, the charge's day (days since 1970), currency and provider, and whether the
    charge named the host by its name rather than its resource id.
    """

    currencies: list[str]
    providers: list[str | None]
    reporting: int
    """Code of the policy's reporting currency."""

    @classmethod
    def of(
        cls, charges: pl.DataFrame, hosts: pl.DataFrame, policy: AllocationPolicy
    ) -> _Dictionary:
        currencies = sorted({*charges.get_column("currency").unique().to_list(),
                             policy.reporting_currency})  # fmt: skip
        providers = {*charges.get_column("provider").unique().to_list(),
                     *hosts.get_column("provider").unique().to_list()}  # fmt: skip
        named = sorted(name for name in providers if name is not None)
        if len(currencies) > 255 or len(named) > 254:
            raise GpucostError("more than 255 currencies or 254 providers in one allocation")
        return cls(currencies, [None, *named], currencies.index(policy.reporting_currency))

    def currency_code(self, expression: pl.Expr) -> pl.Expr:
        return expression.replace_strict(
            self.currencies, list(range(len(self.currencies))), return_dtype=pl.Int64
        )

    def provider_code(self, expression: pl.Expr) -> pl.Expr:
        named = self.providers[1:]
        return expression.replace_strict(
            named, list(range(1, len(named) + 1)), default=0, return_dtype=pl.Int64
        )

    @staticmethod
    def origin(
        host_id: pl.Expr, day: pl.Expr, currency: pl.Expr, provider: pl.Expr, by_name: pl.Expr
    ) -> pl.Expr:
        packed = host_id.cast(pl.Int64) * (1 << 17) + day.cast(pl.Int64)
        packed = (packed * 256 + currency) * 256 + provider
        return packed * 2 + by_name.cast(pl.Int64)

    def decode(self, frame: pl.DataFrame, hosts: pl.DataFrame) -> pl.DataFrame:
        """Replace packed ``origin`` by ``day``, ``currency``, ``provider``, ``resource_id``."""
        origin = frame.get_column("origin")
        host_id = origin // (2 * 256 * 256 * (1 << 17))
        by_name = (origin % 2) == 1
        resource = pl.Series(
            "resource_id",
            hosts.get_column("resource_id").gather(host_id),
            dtype=pl.String,
        ).zip_with(~by_name, hosts.get_column("host").gather(host_id))
        return frame.with_columns(
            ((pl.col("origin") // (2 * 256 * 256)) % (1 << 17))
            .cast(pl.Int32)
            .cast(pl.Date)
            .alias("day"),
            pl.Series(self.currencies, dtype=pl.String)
            .gather((origin // (2 * 256)) % 256)
            .alias("currency"),
            pl.Series(self.providers, dtype=pl.String)
            .gather((origin // 2) % 256)
            .alias("provider"),
            resource.alias("resource_id"),
        ).drop("origin")


def _gpu_charges(
    charges: pl.DataFrame, hosts: pl.DataFrame, dictionary: _Dictionary
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split charges into those of GPU hosts (with host, origin, capacity) and the others."""
    with_gpus = hosts.filter(pl.col("gpu_count") > 0)
    by_id = with_gpus.select(pl.col("resource_id").alias("key"), "host_id", pl.lit(0).alias("n"))
    by_name = with_gpus.select(pl.col("host").alias("key"), "host_id", pl.lit(1).alias("n"))
    keys = pl.concat([by_id, by_name]).unique("key", keep="first", maintain_order=True)
    # One lookup gives both the host and whether the charge named it by its host name.
    found = _lookup("resource_id", keys.get_column("key"),
                    keys.get_column("host_id") * 2 + keys.get_column("n"))  # fmt: skip
    tagged = charges.with_columns(found.alias("__found")).with_columns(
        (pl.col("__found") // 2).alias("host_id"), (pl.col("__found") % 2).alias("by_name")
    )
    mask = tagged.get_column("host_id").is_not_null()
    mine = tagged.filter(mask)
    ids = mine.get_column("host_id")
    capacity = hosts.get_column("capacity").gather(ids)
    owner = hosts.get_column("owner_code").gather(ids)
    mine = mine.with_columns(capacity.alias("capacity"), owner.alias("__host_owner")).select(
        "charge_id",
        "host_id",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "amount",
        "billed",
        "capacity",
        pl.coalesce("code", "__host_owner").alias("owner_code"),
        dictionary.origin(
            pl.col("host_id"),
            pl.col("day"),
            dictionary.currency_code(pl.col("currency")),
            dictionary.provider_code(pl.col("provider")),
            pl.col("by_name"),
        ).alias("origin"),
    )
    return mine, charges.filter(~mask)


def _lookup(column: str, keys: pl.Series, values: pl.Series) -> pl.Expr:
    """``values`` at the position of ``column``'s value in ``keys`` (null when absent)."""
    if keys.len() == 0:
        return pl.lit(None, pl.Int64)
    return pl.col(column).replace_strict(
        keys, values.cast(pl.Int64), default=None, return_dtype=pl.Int64
    )


def _follow_resource(charges: pl.DataFrame) -> pl.DataFrame:
    """Charges no rule matched take the project of their resource's other charges (the first
    rule among them): a refund or an untagged line follows the charge it belongs to."""
    # A provider-split share (FOCUS 1.3 AllocatedTags) names a workload, not the resource's owner.
    owners = (
        charges.filter(
            pl.col("code").is_not_null()
            & pl.col("resource_id").is_not_null()
            & ~is_allocated_match(pl.col("code"))
        )
        .group_by("resource_id")
        .agg(resource_code(pl.col("code").min()).alias("__resource_code"))
    )
    if owners.height == 0:
        return charges
    return (
        charges.join(owners, on="resource_id", how="left", maintain_order="left")
        .with_columns(pl.coalesce("code", "__resource_code").alias("code"))
        .drop("__resource_code")
    )


def _weights(
    workloads: pl.DataFrame,
    hosts: pl.DataFrame,
    rules: list[ProjectRule],
    policy: AllocationPolicy,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Weights per host-hour key and target code (workload rules first, then the host's
    owner), and every observed host-hour (``key``, ``host_id``, ``hour``), busy or not."""
    keyed = workloads.select(
        _lookup("host", hosts.get_column("host"), hosts.get_column("host_id")).alias("host_id"),
        gpu.epoch_hour(pl.col("hour")).alias("hour"),
        workload_match_code(workloads, rules, policy.owner_tag_key).alias("__workload_code"),
        "weight",
    ).with_columns(gpu.host_hour_key(pl.col("host_id"), pl.col("hour")).alias("key"))
    observed = keyed.select("key", "host_id", "hour").unique("key")
    busy = keyed.filter(pl.col("weight") > 0)
    owner = hosts.get_column("owner_code").gather(busy.get_column("host_id"))
    weights = (
        busy.with_columns(owner.alias("__owner"))
        .select(
            "key",
            pl.coalesce("__workload_code", "__owner", pl.lit(UNALLOCATED_CODE, pl.Int64)).alias(
                "code"
            ),
            "weight",
        )
        .group_by("key", "code")
        .agg(pl.col("weight").sum())
    )
    return weights, observed


def _unbilled_hours(
    observed: pl.DataFrame,
    hours: pl.DataFrame,
    hosts: pl.DataFrame,
    dictionary: _Dictionary,
) -> pl.DataFrame:
    """Zero-amount charge-hours for host-hours gpu_usage saw but no charge covers (on-prem
    hosts, late bills), so that their GPU-hours are still attributed."""
    missing = observed.join(hours.select("key"), on="key", how="anti").sort("key")
    ids = missing.get_column("host_id")
    return missing.with_columns(
        hosts.get_column("capacity").gather(ids).alias("capacity"),
        hosts.get_column("owner_code").gather(ids).alias("owner_code"),
        hosts.get_column("provider").gather(ids).alias("__provider"),
    ).select(
        (pl.int_range(pl.len(), dtype=pl.Int64) + gpu.PSEUDO_CHARGE_BASE).alias("charge_id"),
        "host_id",
        pl.lit(0, pl.Int128).alias("amount"),
        pl.lit(0, pl.Int128).alias("billed"),
        "capacity",
        "owner_code",
        dictionary.origin(
            pl.col("host_id"),
            (pl.col("hour") // 24),
            pl.lit(dictionary.reporting, pl.Int64),
            dictionary.provider_code(pl.col("__provider")),
            pl.lit(0),
        ).alias("origin"),
        pl.lit(1, pl.Int64).alias("hours"),
        "key",
        pl.lit(True).alias("carrier"),
    )


def _fte(headcount: pl.LazyFrame) -> pl.DataFrame:
    """FTE per day and project as integer micro-FTE (exact sums), with a cost centre."""
    return (
        headcount.select(
            "day",
            "project",
            "cost_center",
            (pl.col("fraction").fill_null(0.0) * WEIGHT_UNITS).round().cast(pl.Int64).alias("u"),
        )
        .group_by("day", "project")
        .agg(pl.col("u").sum().alias("fte_units"), pl.col("cost_center").drop_nulls().min())
        .filter(pl.col("fte_units") > 0)
        .sort("day", "project")
        .collect()
    )


def _extra_projects(
    rules: list[ProjectRule], fte: pl.DataFrame, policy: AllocationPolicy
) -> dict[str, str | None]:
    """Every project name a shared split may reach, with a cost centre to fall back on."""
    names: dict[str, str | None] = {rule.name: None for rule in rules}
    for project, cost_center in (
        fte.select("project", "cost_center").sort("project", "cost_center").iter_rows()
    ):
        if names.get(project) is None:
            names[project] = cost_center
    for name in policy.shared_weights:
        names.setdefault(name, None)
    return dict(sorted(names.items()))


def _targets(rules: list[ProjectRule], extra: dict[str, str | None]) -> pl.DataFrame:
    """Target codes with project, cost centre (the rule's, else the roster's) and rule label."""
    fallback = pl.DataFrame(
        {"project": list(extra), "fallback_cost_center": list(extra.values())},
        schema={"project": pl.String, "fallback_cost_center": pl.String},
    )
    return (
        targets(rules, sorted(extra))
        .join(fallback, on="project", how="left")
        .select(
            "code",
            "project",
            pl.coalesce("cost_center", "fallback_cost_center").alias("cost_center"),
            "rule",
        )
    )


def _gpu_rows(
    pieces: pl.DataFrame, hosts: pl.DataFrame, dictionary: _Dictionary, policy: AllocationPolicy
) -> pl.DataFrame:
    """GPU pieces summed per origin (host, day, currency, provider), target and kind."""
    summed = pieces.group_by("origin", "code", "kind").agg(
        *_SUMS, pl.len().cast(pl.Int64).alias("charges")
    )
    idle_method = "gpu-idle-separate" if policy.idle == "separate" else "gpu-idle-owner"
    return (
        dictionary.decode(summed, hosts)
        .with_columns(
            pl.when(pl.col("kind") == gpu.USE)
            .then(pl.lit("gpu_used"))
            .otherwise(pl.lit("gpu_idle"))
            .alias("category"),
            pl.when(pl.col("kind") == gpu.USE)
            .then(pl.lit(f"gpu-{policy.gpu_basis}"))
            .when(pl.col("kind") == gpu.IDLE_OVER_USERS)
            .then(pl.lit("gpu-idle-users"))
            .otherwise(pl.lit(idle_method))
            .alias("method"),
            pl.lit("GPU-Hours").alias("usage_unit"),
            pl.lit(None, pl.Float64).alias("usage_quantity"),
        )
        .select(_ROW_COLUMNS)
    )


def _sum_pieces(pieces: pl.LazyFrame, charges: pl.DataFrame) -> pl.DataFrame:
    """Direct or shared pieces summed to the output grain."""
    attributes = charges.lazy().select("charge_id", "day", "currency", "provider", "resource_id")
    return (
        pieces.join(attributes, on="charge_id", how="left")
        .group_by(list(_GRAIN))
        .agg(
            *_SUMS,
            pl.col("usage_unit").first(),
            pl.col("usage_quantity").max(),
            pl.len().cast(pl.Int64).alias("charges"),
        )
        .select(_ROW_COLUMNS)
        .collect()
    )
