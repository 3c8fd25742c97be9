"""Exact money: Decimal(38, 18) as integer units, and largest-remainder splits in Polars.

A ``Decimal(38, 18)`` is stored by Polars as its unscaled ``Int128`` (``1.23`` is
``1230000000000000000``); :func:`to_units` and :func:`from_units` reinterpret between the two
without arithmetic, so no amount ever passes through a binary float.

:func:`split_exact` splits each charge over its pieces in proportion to non-negative integer
weights by the largest-remainder (Hamilton) method, at the stored precision of 1e-18:

1. every piece gets ``floor(|A| * w / W)`` units, computed exactly in ``Int128`` as
   ``(|A| // W) * w + ((|A| % W) * w) // W``; both products stay below ``2**127`` for any
   weights whose sum ``W`` per charge is below ``2**63`` and any ``|A| < 10**38``;
2. the ``|A| - sum(floors)`` units left over (fewer than the number of pieces) go one each to
   the pieces with the largest remainders ``((|A| % W) * w) % W``, ties broken by an integer
   key the caller gives (never by row order, so shuffling the input changes nothing);
3. the sign of the charge is put back, so credits split into non-positive pieces and positive
   charges never give a negative piece.

The pieces of every charge therefore add up to the charge exactly, and each piece differs from
its ideal share by less than one unit (1e-18).

The work is vectorised over all charges at once: the pieces are sorted by charge once, and
per-charge sums come from cumulative sums read at each charge's first and last row, so the
only sort is by one integer key. A piece's rank among its charge's remainders is counted by
comparing it with its neighbours when charges have few pieces (the usual case: a GPU host's
users and its idle time), and by a sort otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl

from gpucost.core.contracts import MONEY, MONEY_SCALE

UNITS_PER_CURRENCY: Final = 10**MONEY_SCALE
"""Integer units in one unit of currency at the lake's precision (Decimal scale 18)."""
NEIGHBOUR_RANKING_MAX_PIECES: Final = 8
"""Charges with at most this many pieces are ranked by neighbour comparisons, not a sort."""


def to_units(expression: pl.Expr) -> pl.Expr:
    """A ``Decimal(38, 18)`` expression as its exact ``Int128`` units of 1e-18."""
    return expression.cast(MONEY).reinterpret(dtype=pl.Int128)


def from_units(expression: pl.Expr) -> pl.Expr:
    """``Int128`` units of 1e-18 back to ``Decimal(38, 18)`` (exact; raises past 38 digits)."""
    return expression.cast(pl.Int128).reinterpret(dtype=MONEY)


def split_exact(
    pieces: pl.DataFrame,
    *,
    charge: str,
    amounts: Sequence[str],
    weight: str,
    tiebreak: str,
) -> pl.DataFrame:
    """Split each charge's ``amounts`` over its piece rows in proportion to ``weight``.

    ``pieces`` has one row per piece; ``charge`` (an integer) identifies the charge, and every
    amount column (``Int128`` units) repeats the charge's whole amount on each of its rows.
    ``weight`` is an integer >= 0 whose sum per charge must be positive and below ``2**63``;
    ``tiebreak`` is an integer unique among the pieces of one charge (the lower key wins a
    tie). Each amount column ``a`` is replaced by the piece's exact share: the pieces of a
    charge add up to the charge, unit for unit. A later amount column equal to the first (or
    zero) on every row reuses the first's split. Rows come back grouped by charge.
    """
    if pieces.height == 0:
        return pieces
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    starts = pl.col(charge).ne_missing(pl.col(charge).shift(1))
    ends = pl.col(charge).ne_missing(pl.col(charge).shift(-1))
    bounds = [
        pl.when(starts).then(row).otherwise(None).forward_fill().alias("__first"),
        pl.when(ends).then(row).otherwise(None).backward_fill().alias("__last"),
    ]
    frame = pieces.sort(charge).with_columns(bounds)
    # A charge of one piece is that piece (a GPU host nobody used that hour), and a charge of
    # zero splits into zeros (an unbilled GPU hour carrying only GPU-hours): no arithmetic.
    alone = (pl.col("__first") == pl.col("__last")) | pl.all_horizontal(
        [pl.col(name) == 0 for name in amounts]
    )
    single = frame.filter(alone)
    frame = (
        frame.filter(~alone)
        .with_columns(bounds)
        .with_columns(
            pl.col(weight).cast(pl.Int128).alias("__weight"),
            pl.col(tiebreak).cast(pl.Int64).alias("__tiebreak"),
        )
    )
    frame = frame.with_columns(_per_charge_sum(pl.col("__weight"), starts, ends).alias("__total"))
    first_amount = amounts[0]
    frame = frame.with_columns([pl.col(name).alias(f"__original_{name}") for name in amounts[1:]])
    largest = int(frame.select((pl.col("__last") - pl.col("__first")).max()).item() or 0) + 1
    frame = _split_one(frame, charge, first_amount, starts, ends, largest)
    for name in amounts[1:]:
        original = pl.col(f"__original_{name}")
        reusable = frame.select(
            ((original == pl.col(f"__whole_{first_amount}")) | (original == 0)).all()
        ).item()
        if reusable:
            frame = frame.with_columns(
                pl.when(original == 0)
                .then(pl.lit(0, pl.Int128))
                .otherwise(pl.col(first_amount))
                .alias(name)
            )
        else:
            frame = _split_one(frame, charge, name, starts, ends, largest)
    return pl.concat(
        [
            single.select(pieces.columns),
            frame.select(pieces.columns),
        ]
    )


def _per_charge_sum(value: pl.Expr, starts: pl.Expr, ends: pl.Expr) -> pl.Expr:
    """The sum of ``value`` over each charge's rows (rows sorted by charge), on every row."""
    running = value.cast(pl.Int128).cum_sum()
    before = pl.when(starts).then(running - value.cast(pl.Int128)).otherwise(None).forward_fill()
    after = pl.when(ends).then(running).otherwise(None).backward_fill()
    return after - before


def _split_one(
    frame: pl.DataFrame, charge: str, amount: str, starts: pl.Expr, ends: pl.Expr, largest: int
) -> pl.DataFrame:
    whole = pl.col(amount).abs()
    total = pl.col("__total")
    # |A| // W and |A| % W are the same on every piece of a charge: divide once per charge
    # (Int128 division is the costly step) and spread the results by the charge's ordinal.
    heads = frame.filter(starts).select(
        (whole // total).alias("__quotient"), whole.alias("__whole"), total.alias("__t")
    )
    heads = heads.with_columns(
        (pl.col("__whole") - pl.col("__quotient") * pl.col("__t")).alias("__remainder")
    )
    ordinal = frame.select(starts.cast(pl.Int64).cum_sum() - 1).to_series()
    frame = frame.with_columns(
        heads.get_column("__quotient").gather(ordinal).alias("__quotient"),
        heads.get_column("__remainder").gather(ordinal).alias("__remainder"),
    )
    product = pl.col("__remainder") * pl.col("__weight")
    floor_part = product // total
    frame = frame.with_columns(
        pl.col(amount).alias(f"__whole_{amount}"),
        (pl.col("__quotient") * pl.col("__weight") + floor_part).alias("__floor"),
        (product - floor_part * total).alias("__fraction"),
    )
    # The units left over: |A| minus the sum of the floors (no division needed).
    frame = frame.with_columns(
        (whole - _per_charge_sum(pl.col("__floor"), starts, ends)).alias("__left_over")
    )
    if largest <= NEIGHBOUR_RANKING_MAX_PIECES:
        rank = _neighbour_rank(largest)
    else:
        # Sorting by charge first keeps every charge's block of rows where it was.
        frame = frame.sort([charge, "__fraction", "__tiebreak"], descending=[False, True, False])
        rank = pl.int_range(pl.len(), dtype=pl.Int64) - pl.col("__first")
    piece = pl.col("__floor") + pl.when(rank < pl.col("__left_over")).then(1).otherwise(0)
    # Int128 has no unary minus in Polars: subtract from zero.
    signed = pl.when(pl.col(amount) < 0).then(pl.lit(0, pl.Int128) - piece).otherwise(piece)
    return frame.with_columns(signed.cast(pl.Int128).alias(amount))


def _neighbour_rank(largest: int) -> pl.Expr:
    """How many pieces of the same charge beat this one (larger remainder, or equal remainder
    and lower tie-break key), counted against the ``largest - 1`` neighbours on each side."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    fraction, tiebreak = pl.col("__fraction"), pl.col("__tiebreak")
    counts: list[pl.Expr] = []
    for distance in range(1, largest):
        for offset in (distance, -distance):
            other_fraction = fraction.shift(-offset)
            other_tiebreak = tiebreak.shift(-offset)
            inside = (
                (row + offset <= pl.col("__last"))
                if offset > 0
                else (row + offset >= pl.col("__first"))
            )
            beats = (other_fraction > fraction) | (
                (other_fraction == fraction) & (other_tiebreak < tiebreak)
            )
            counts.append((inside & beats.fill_null(False)).cast(pl.Int64))
    if not counts:
        return pl.lit(0, pl.Int64)
    return pl.sum_horizontal(counts)
