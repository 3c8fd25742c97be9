"""GPU host charges split hour by hour over the projects that used the host's GPUs.

Weights are integers (:data:`WEIGHT_UNITS_PER_SECOND` per GPU-second), computed per
``gpu_usage`` row and summed as integers, so no floating-point sum (whose result depends on the
order of its terms) ever decides a split: shuffling the input cannot change a single unit.

Per GPU row (a GPU, a MIG slice or one pod of a time-sliced GPU) and hour:

* slice fraction: 1 for a whole GPU; ``N / 7`` for a MIG profile ``Ng.*`` (or a compute
  instance ``Nc.Mg.*``) on A100/H100/H200-class GPUs, whose MIG geometry has 7 compute slices,
  and ``N / 4`` on an A30, which has 4 (NVIDIA Multi-Instance GPU User Guide, "Supported MIG
  Profiles");
* used = ``gpu_seconds_busy x fraction`` and held = ``gpu_seconds_held x fraction``: the
  collectors' rollup gives every sample its share of the device (1 / workload series present
  at that instant), so pods that follow one another within an hour each hold the GPU for their
  own minutes, and pods time-slicing a GPU split its seconds and its busy time instead of each
  being counted whole (:mod:`gpucost.collector.gpu_rollup`);
* rows written without those columns (by a writer that predates them) fall back to the
  hour-level estimate: used = ``util_avg x seconds_observed x fraction``, held =
  ``seconds_observed x fraction / pods on that GPU that hour``;
* the basis weight is used, held or their maximum (:data:`~gpucost.allocator.policy.GpuBasis`); the
  weights on one GPU (or slice) in one hour are scaled down to its seconds when they exceed
  them (an hour, for rows with the share columns; the longest row's seconds otherwise).

A charge of a GPU host (billing ``ResourceId`` = the inventory's ``resource_id`` or ``host``)
covering the hours ``h`` then splits exactly (:func:`gpucost.allocator.exact.split_exact`) into one
piece per project with weight ``sum_h weight(project, h)`` and one idle piece with weight
``sum_h (GPUs x 3600 s - sum of the hour's weights)``. With the ``usage`` basis a project thus
pays ``cost x used GPU-seconds / (GPUs x 3600)`` of each hour, exactly the ground truth of
``gpucost synth``.

Hosts and hours travel as one integer key (``host_id << 24 | hour since the epoch``), so every
join of this stage is on a single integer column.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from gpucost.allocator.exact import split_exact
from gpucost.allocator.matching import IDLE_CODE, UNALLOCATED_CODE
from gpucost.allocator.policy import AllocationPolicy

WEIGHT_UNITS_PER_SECOND: Final = 8_400_000
"""GPU weights are integers of 1/8,400,000 GPU-second: sums are exact, and since 84 is divisible
by 7, 4, 3 and 2, MIG sevenths and quarters and a GPU held by 2, 3, 4 or 6 pods are whole units
for whole seconds. A month of a 72-GPU host is 1.6e18 units, below 2**63."""
SECONDS_PER_HOUR: Final = 3600
MIG_COMPUTE_SLICES: Final = 7
"""A100, H100, H200 and B200: 7 MIG compute slices, so ``1g.10gb`` is 1/7 of an H100 (NVIDIA
MIG User Guide, "Supported MIG Profiles")."""
MIG_COMPUTE_SLICES_A30: Final = 4
"""The A30 has 4 compute slices (``1g.6gb`` is 1/4; same guide)."""
HOUR_BITS: Final = 24
"""Bits of the hour in a host-hour key: hours since 1970 fit until the year 3884."""
KIND_SHIFT: Final = 1 << 36
"""Tie-break key of a piece: ``kind * KIND_SHIFT + target code`` (idle 0, use 1)."""
PSEUDO_CHARGE_BASE: Final = 1 << 50
"""Charge ids of zero-amount charges standing for the unbilled hours of GPU hosts."""
USE, IDLE, IDLE_OVER_USERS = 1, 0, 2
"""Kinds of GPU pieces: a project's use, idle time (owner or separate line), idle time split
over the hour's users."""

HOUR_COLUMNS: Final = (
    "charge_id",
    "host_id",
    "amount",
    "billed",
    "capacity",
    "owner_code",
    "origin",
    "hours",
    "key",
    "carrier",
)
"""Columns of a charge-hour (:func:`charge_hours`)."""

_PIECE_COLUMNS: Final = (
    "charge_id",
    "origin",
    "code",
    "kind",
    "amount",
    "billed",
    "ratio_weight",
    "used_units",
    "idle_units",
)
_GPU_KEY: Final = ("hour", "host", "gpu_uuid", "mig_profile")
_WORKLOAD_KEY: Final = ("host", "hour", "namespace", "pod", "project")


def epoch_hour(expression: pl.Expr) -> pl.Expr:
    """Whole hours since 1970-01-01 UTC of a UTC datetime (floored)."""
    return expression.dt.epoch("s").floordiv(SECONDS_PER_HOUR)


def host_hour_key(host_id: pl.Expr, hour: pl.Expr) -> pl.Expr:
    """One Int64 for a host and an hour (``hour`` in epoch hours)."""
    return (host_id.cast(pl.Int64) * (1 << HOUR_BITS)) + hour.cast(pl.Int64)


def slice_fraction() -> pl.Expr:
    """The fraction of a physical GPU a gpu_usage row stands for (1, or N/7, N/4 for MIG).

    The A30 is recognised by its profiles alone (``1g.6gb``, ``2g.12gb``, ``4g.24gb``: 6 GB per
    slice, a size no 7-slice GPU has), so the ``gpu_model`` strings of millions of ordinary rows
    need not be read.
    """
    profile = pl.col("mig_profile")
    compute = profile.str.extract(r"^(\d+)c\.", 1).cast(pl.Float64)
    parts = profile.str.extract_groups(r"^(?:\d+c\.)?(\d+)g\.(\d+)gb")
    instance = parts.struct.field("1").cast(pl.Float64)
    memory_gb = parts.struct.field("2").cast(pl.Float64)
    slices_of_gpu = (
        pl.when(memory_gb == instance * 6)
        .then(pl.lit(float(MIG_COMPUTE_SLICES_A30)))
        .otherwise(pl.lit(float(MIG_COMPUTE_SLICES)))
    )
    fraction = pl.coalesce(compute, instance) / slices_of_gpu
    return (
        pl.when(profile.is_null())
        .then(pl.lit(1.0))
        .otherwise(fraction.clip(0.0, 1.0).fill_null(1.0))
    )


def workload_weights(gpu_usage: pl.LazyFrame, policy: AllocationPolicy) -> pl.DataFrame:
    """Integer basis weights per host, hour and workload (``namespace``, ``pod``, label).

    Columns: ``host``, ``hour``, ``namespace``, ``pod``, ``project`` (the pod's project label),
    ``weight`` (Int64 units of the policy's basis; 0 for rows nobody used, kept so that every
    observed host-hour is present).

    Nearly every GPU (or slice) has one row an hour, and one row never exceeds its own seconds:
    its weight is its basis as it is. Only GPU-hours with several rows (handovers,
    time-slicing) may need their weights capped, so the GPUs that have any such hour are found
    first (more rows than distinct hours per GPU uuid: a group-by over a few thousand GPUs, far
    cheaper than one over millions of GPU-hours) and all their rows take the exact path, where
    a GPU-hour of one row keeps its basis as it is. Both passes run on the streaming engine.
    """
    units = float(WEIGHT_UNITS_PER_SECOND)
    seconds = pl.col("seconds_observed").fill_null(0.0).clip(0.0, float(SECONDS_PER_HOUR))
    utilisation = pl.col("util_avg").fill_null(0.0).clip(0.0, 1.0)
    gpu_key = list(_GPU_KEY)
    # A GPU's uuid names its host; MIG slices sharing a parent uuid are flagged together and
    # take the exact path, which keys them by profile too (rows without a uuid count as one
    # GPU here, as several slices do).
    crowded_gpus = (
        gpu_usage.group_by("gpu_uuid")
        .agg(pl.len().alias("__rows"), pl.col("hour").n_unique().alias("__hours"))
        .filter(pl.col("__rows") > pl.col("__hours"))
        .collect(engine="streaming")
        .get_column("gpu_uuid")
    )
    on_crowded_gpu = pl.col("gpu_uuid").is_in(crowded_gpus.drop_nulls().implode())
    if crowded_gpus.null_count():
        on_crowded_gpu = on_crowded_gpu | pl.col("gpu_uuid").is_null()
    # Rows with the rollup's per-sample share columns (null where a writer predates them).
    shared = pl.col("gpu_seconds_held").is_not_null()
    capacity = (seconds * slice_fraction() * units).round().cast(pl.Int64)
    hour_of_slice = (SECONDS_PER_HOUR * slice_fraction() * units).round().cast(pl.Int64)
    busy_seconds = (
        pl.when(shared)
        .then(pl.col("gpu_seconds_busy").fill_null(0.0).clip(0.0, float(SECONDS_PER_HOUR)))
        .otherwise(utilisation * seconds)
    )
    used = (busy_seconds * slice_fraction() * units).round().cast(pl.Int64)
    held_seconds = pl.col("gpu_seconds_held").clip(0.0, float(SECONDS_PER_HOUR))
    held = (held_seconds * slice_fraction() * units).round().cast(pl.Int64)
    # Only the allocation and max bases count pods, so only they read ``workload``.
    holder = (
        pl.col("pod").is_not_null()
        if policy.gpu_basis == "usage"
        else pl.col("pod").is_not_null() | pl.col("workload").is_not_null()
    )
    workload = list(_WORKLOAD_KEY)
    rows = gpu_usage.select(
        *gpu_key,
        "namespace",
        "pod",
        "project",
        capacity.alias("__capacity"),
        pl.when(shared).then(hour_of_slice).otherwise(capacity).alias("__limit"),
        used.alias("__used"),
        pl.when(shared).then(held).alias("__held"),
        holder.alias("__holder"),
        on_crowded_gpu.alias("__crowded"),
    )
    alone = rows.filter(~pl.col("__crowded")).select(
        *workload, _basis(policy, pl.col("__holder").cast(pl.Int64)).alias("weight")
    )
    if crowded_gpus.len() == 0:
        return alone.group_by(workload).agg(pl.col("weight").sum()).collect(engine="streaming")
    holders = pl.col("__holder").cast(pl.Int64).sum().over(gpu_key).clip(lower_bound=1)
    crowded = (
        rows.filter(pl.col("__crowded"))
        .with_columns(_basis(policy, holders).alias("__basis"))
        .with_columns(
            pl.col("__basis").sum().over(gpu_key).alias("__total"),
            pl.col("__limit").max().over(gpu_key).alias("__most"),
        )
    )
    # A GPU (or slice) whose weights exceed its seconds is scaled down to them, rounding up
    # (integer operands, so the float division is the same on every run): its weights then
    # cover its seconds (a few units over at most) and leave it no idle time.
    capped = (
        pl.when(pl.col("__total") > pl.col("__most"))
        .then(
            (
                pl.col("__basis").cast(pl.Float64)
                * pl.col("__most").cast(pl.Float64)
                / pl.col("__total").clip(lower_bound=1).cast(pl.Float64)
            )
            .ceil()
            .cast(pl.Int64)
        )
        .otherwise(pl.col("__basis"))
    )
    shared_rows = crowded.select(*workload, capped.alias("weight"))
    # One query for both branches, so the file is read once.
    return (
        pl.concat([alone, shared_rows])
        .group_by(workload)
        .agg(pl.col("weight").sum())
        .collect(engine="streaming")
    )


def _basis(policy: AllocationPolicy, holders: pl.Expr) -> pl.Expr:
    """A row's basis weight: its share columns' when it has them, else the hour-level
    estimate given how many pods hold its GPU that hour."""
    estimate = (
        pl.when(pl.col("__holder"))
        .then((pl.col("__capacity").cast(pl.Float64) / holders).round().cast(pl.Int64))
        .otherwise(pl.lit(0, pl.Int64))
    )
    held = pl.coalesce(pl.col("__held"), estimate)
    if policy.gpu_basis == "usage":
        return pl.col("__used")
    if policy.gpu_basis == "allocation":
        return held
    return pl.max_horizontal(pl.col("__used"), held)


def charge_hours(charges: pl.DataFrame) -> pl.DataFrame:
    """One row per GPU charge and hour it covers, keyed by host and hour.

    ``charges`` has ``charge_id``, ``host_id``, ``ChargePeriodStart``, ``ChargePeriodEnd``,
    ``amount``, ``billed``, ``origin`` and ``capacity``. ``carrier`` marks, per host and hour,
    the one charge whose pieces carry the hour's GPU-hours (the largest: a GPU VM billed as
    several SKUs, or with a refund beside it, counts its GPU-hours once); ``hours`` is the
    number of hours of the charge.
    """
    first = epoch_hour(pl.col("ChargePeriodStart"))
    last = epoch_hour(pl.col("ChargePeriodEnd") - pl.duration(microseconds=1))
    frame = charges.with_columns(
        first.alias("__first"), pl.max_horizontal(last, first).alias("__last")
    ).with_columns((pl.col("__last") - pl.col("__first") + 1).alias("hours"))
    single = frame.filter(pl.col("hours") == 1).with_columns(pl.col("__first").alias("__hour"))
    many = frame.filter(pl.col("hours") > 1)
    if many.height:
        exploded = many.with_columns(
            pl.int_ranges("__first", pl.col("__last") + 1).alias("__hour")
        ).explode("__hour")
        single = pl.concat([single, exploded.select(single.columns)])
    hours = single.with_columns(host_hour_key(pl.col("host_id"), pl.col("__hour")).alias("key"))
    shared_hour = hours.get_column("key").is_duplicated()
    if not shared_hour.any():
        carrier = pl.lit(True)
        hours = hours.with_columns(carrier.alias("carrier"))
    else:
        alone = hours.filter(~shared_hour).with_columns(pl.lit(True).alias("carrier"))
        crowded = hours.filter(shared_hour).sort(
            ["key", "amount", "billed", "origin", "charge_id"],
            descending=[False, True, True, False, False],
        )
        crowded = crowded.with_columns(
            pl.col("key").ne_missing(pl.col("key").shift(1)).alias("carrier")
        )
        hours = pl.concat([alone, crowded])
    return hours.select(HOUR_COLUMNS)


def gpu_pieces(
    hours: pl.DataFrame, weights: pl.DataFrame, policy: AllocationPolicy
) -> pl.DataFrame:
    """Exact pieces of GPU host charges.

    ``hours``: from :func:`charge_hours`. ``weights``: ``key``, ``code``, ``weight`` per
    host-hour and target. Returns one row per piece: ``charge_id``, ``origin``, ``code``,
    ``kind`` (:data:`USE`, :data:`IDLE` or :data:`IDLE_OVER_USERS`), ``amount`` and ``billed``
    (Int128 units), ``ratio_weight`` (the piece's weight), ``used_units`` and ``idle_units``
    (GPU-second units of the hours the piece carries).
    """
    busy = weights.group_by("key").agg(pl.col("weight").sum().alias("busy"))
    # Charge order is kept throughout (joins keep the left order, the two kinds of pieces are
    # merged, not concatenated), so the split's sort by charge finds the rows in order.
    per_hour = (
        hours.sort("charge_id")
        .join(busy, on="key", how="left", maintain_order="left")
        .with_columns(pl.col("busy").fill_null(0), pl.col("capacity").fill_null(0))
    )
    idle_weight = (
        pl.when((pl.col("busy") == 0) & (pl.col("capacity") == 0))
        # Nobody used a host whose size the inventory does not know: one unit keeps the
        # charge's weights positive, and the whole charge is idle.
        .then(pl.lit(1, pl.Int64))
        .otherwise((pl.col("capacity") - pl.col("busy")).clip(lower_bound=0))
    )
    idle_units = (pl.col("capacity") - pl.col("busy")).clip(lower_bound=0)
    owner = pl.coalesce("owner_code", pl.lit(UNALLOCATED_CODE, pl.Int64))
    idle_code = pl.lit(IDLE_CODE, pl.Int64) if policy.idle == "separate" else owner
    carried = ["charge_id", "origin", "amount", "billed", "hours"]
    idle = per_hour.select(
        *carried,
        pl.lit(IDLE, pl.Int8).alias("kind"),
        idle_code.alias("code"),
        idle_weight.alias("weight"),
        pl.lit(0, pl.Int64).alias("used_units"),
        pl.when(pl.col("carrier")).then(idle_units).otherwise(0).alias("idle_units"),
    )
    users = per_hour.join(weights, on="key", how="inner", maintain_order="left").select(
        *carried,
        pl.lit(USE, pl.Int8).alias("kind"),
        "code",
        "weight",
        pl.when(pl.col("carrier")).then(pl.col("weight")).otherwise(0).alias("used_units"),
        pl.lit(0, pl.Int64).alias("idle_units"),
    )
    del per_hour
    pieces = users.merge_sorted(idle, key="charge_id")
    several = pieces.filter(pl.col("hours") > 1)
    if several.height:
        several = (
            several.group_by("charge_id", "kind", "code")
            .agg(
                pl.col("origin", "amount", "billed", "hours").first(),
                pl.col("weight", "used_units", "idle_units").sum(),
            )
            .select(pieces.columns)
            .sort("charge_id", "kind", "code")
        )
        pieces = pieces.filter(pl.col("hours") == 1).merge_sorted(several, key="charge_id")
    pieces = pieces.filter(pl.col("weight") > 0).with_columns(
        (pl.col("kind").cast(pl.Int64) * KIND_SHIFT + pl.col("code")).alias("tiebreak")
    )
    split = split_exact(
        pieces,
        charge="charge_id",
        amounts=["amount", "billed"],
        weight="weight",
        tiebreak="tiebreak",
    ).rename({"weight": "ratio_weight"})
    used = split.filter(pl.col("kind") == USE)
    idle_split = split.filter(pl.col("kind") == IDLE)
    if policy.idle == "users":
        idle_split = _idle_over_users(idle_split, used)
    return pl.concat([used.select(_PIECE_COLUMNS), idle_split.select(_PIECE_COLUMNS)])


def _idle_over_users(idle: pl.DataFrame, used: pl.DataFrame) -> pl.DataFrame:
    """Idle policy ``users``: each idle piece splits again, exactly, over the charge's users in
    proportion to their weights; a charge nobody used keeps its idle piece with its owner."""
    users = used.select(
        "charge_id", pl.col("code").alias("user_code"), pl.col("ratio_weight").alias("user_weight")
    )
    with_users = idle.join(users, on="charge_id", how="inner").select(
        "charge_id",
        "origin",
        pl.col("user_code").alias("code"),
        "kind",
        "amount",
        "billed",
        pl.col("idle_units").cast(pl.Int128),
        pl.col("ratio_weight").cast(pl.Int128),
        pl.col("user_weight").alias("weight"),
        pl.col("user_code").alias("tiebreak"),
    )
    resplit = split_exact(
        with_users,
        charge="charge_id",
        amounts=["amount", "billed", "idle_units", "ratio_weight"],
        weight="weight",
        tiebreak="tiebreak",
    ).with_columns(
        pl.col("idle_units").cast(pl.Int64),
        pl.col("ratio_weight").cast(pl.Int64),
        pl.lit(0, pl.Int64).alias("used_units"),
        pl.lit(IDLE_OVER_USERS, pl.Int8).alias("kind"),
    )
    alone = idle.join(users.select("charge_id").unique(), on="charge_id", how="anti")
    return pl.concat([resplit.select(_PIECE_COLUMNS), alone.select(_PIECE_COLUMNS)])
