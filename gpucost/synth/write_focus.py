"""``billing/synth-focus.csv``: the bill as a FOCUS 1.0 CSV, formatted as the FOCUS sample data.

A bill is held as segments (:class:`Segment`): rows identical but for their period, written
once as text around the period columns and expanded to one line per period when the file is
written. Numbers are written unquoted with a fixed number of places (as FOCUS-Sample-Data's
focus_sample.csv does); every other value is a quoted string and an absent value is NULL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

import polars as pl

# The 43 FOCUS 1.0 columns in the order of FOCUS-Sample-Data's focus_sample.csv (its extra Id
# column left out).
# fmt: off
FOCUS_HEADER: Final = (
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName",
    "CommitmentDiscountStatus", "CommitmentDiscountType", "ConsumedQuantity", "ConsumedUnit",
    "ContractedCost", "ContractedUnitPrice", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingQuantity", "PricingUnit", "ProviderName",
    "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceName", "SkuId", "SkuPriceId", "SubAccountId", "SubAccountName",
    "Tags",
)
# fmt: on
PERIOD_COLUMNS: Final = (
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargePeriodEnd",
    "ChargePeriodStart",
)
"""Written per period when the file is written; every other column is fixed per segment."""
FOCUS_COST_PLACES: Final = 11
"""FOCUS sample files print costs with 11 fractional digits and ConsumedQuantity with 15."""
FOCUS_QUANTITY_PLACES: Final = 15
_COST_COLUMNS: Final = frozenset(
    {
        "BilledCost",
        "ContractedCost",
        "ContractedUnitPrice",
        "EffectiveCost",
        "ListCost",
        "PricingQuantity",
    }
)
_QUANTITY_COLUMNS: Final = frozenset({"ConsumedQuantity"})
_TIMESTAMP_FORMAT: Final = "%Y-%m-%d %H:%M:%S"

PeriodSets = Mapping[str, Sequence[tuple[int, int]]]
"""Named sets of periods, each period a pair of hour offsets from the window's start."""


@dataclass(frozen=True)
class Segment:
    """Rows identical but for their period: one resource's charge over a set of periods."""

    period_set: str
    sort_key: str
    provider: str
    category: str
    """FOCUS ChargeCategory."""
    texts: tuple[str, str, str]
    """The row's text around its two period pairs (:func:`focus_texts`)."""
    billed: Decimal
    effective: Decimal
    resource_id: str | None


def quote(text: str) -> str:
    """A CSV string cell, always quoted, quotes doubled."""
    return '"' + text.replace('"', '""') + '"'


def _decimal_text(value: Decimal, places: int) -> str:
    quantized = value.quantize(Decimal(1).scaleb(-places))
    if quantized != value:
        raise ValueError(f"{value} does not fit {places} decimal places exactly")
    return f"{quantized:f}"


def _cell(name: str, value: object) -> str:
    if value is None:
        return "NULL"
    if name in _COST_COLUMNS:
        assert isinstance(value, Decimal)
        return _decimal_text(value, FOCUS_COST_PLACES)
    if name in _QUANTITY_COLUMNS:
        assert isinstance(value, Decimal)
        return _decimal_text(value, FOCUS_QUANTITY_PLACES)
    return quote(str(value))


def focus_texts(values: Mapping[str, object]) -> tuple[str, str, str]:
    """The row's text around its two period pairs: (before, between, after)."""
    missing = set(FOCUS_HEADER) - set(PERIOD_COLUMNS) - set(values)
    extra = set(values) - set(FOCUS_HEADER)
    if missing or extra:
        raise AssertionError(f"FOCUS row: missing {sorted(missing)}, extra {sorted(extra)}")
    cells = ["\0" if name in PERIOD_COLUMNS else _cell(name, values[name]) for name in FOCUS_HEADER]
    line = ",".join(cells)
    before, _, rest = line.partition("\0,\0")
    between, _, after = rest.partition("\0,\0")
    return before.removesuffix(","), between.strip(","), after.removeprefix(",")


def month_start(day: date) -> datetime:
    """Midnight UTC of the first day of ``day``'s month."""
    return datetime(day.year, day.month, 1, tzinfo=UTC)


def next_month(moment: datetime) -> datetime:
    """Midnight UTC of the first day of the month after ``moment``'s."""
    return datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)


def _period_text(start: datetime, first: int, last: int) -> tuple[str, str]:
    """('"BillingPeriodEnd","BillingPeriodStart"', '"ChargePeriodEnd","ChargePeriodStart"')."""
    charge_start = start + timedelta(hours=first)
    charge_end = start + timedelta(hours=last)
    month = month_start(charge_start.date())
    return _pair(next_month(month), month), _pair(charge_end, charge_start)


def _pair(end: datetime, start: datetime) -> str:
    return f'"{end.strftime(_TIMESTAMP_FORMAT)}","{start.strftime(_TIMESTAMP_FORMAT)}"'


def write_focus(
    path: Path, segments: Sequence[Segment], period_sets: PeriodSets, window_start: datetime
) -> int:
    """Write the FOCUS CSV sorted by ChargePeriodStart, provider, resource; return its rows."""
    set_ids = {name: number for number, name in enumerate(period_sets)}
    periods, period_texts = _periods(period_sets, set_ids, window_start)
    rank = sorted(range(len(segments)), key=lambda i: segments[i].sort_key)
    order = pl.DataFrame(
        {
            "period_set": pl.Series(
                [set_ids[segments[i].period_set] for i in rank], dtype=pl.Int32
            ),
            "segment": pl.Series(rank, dtype=pl.Int64),
            "rank": pl.Series(range(len(rank)), dtype=pl.Int64),
        }
    )
    # Sort small integer keys first, then build the ~700-byte lines in their final order.
    index = order.join(periods, on="period_set", how="inner").sort("start", "rank")
    segment_texts = pl.DataFrame(
        {
            "a": [s.texts[0] for s in segments],
            "b": [s.texts[1] for s in segments],
            "c": [s.texts[2] for s in segments],
        }
    ).select(pl.all().gather(index["segment"]))
    lines = pl.concat(
        [segment_texts, period_texts.select(pl.all().gather(index["period"]))], how="horizontal"
    ).select(pl.concat_str(["a", "bp", "b", "cp", "c"], separator=",").alias("line"))
    with path.open("wb") as handle:
        handle.write((",".join(quote(name) for name in FOCUS_HEADER) + "\n").encode())
        lines.write_csv(handle, include_header=False, quote_style="never")
    return lines.height


def _periods(
    period_sets: PeriodSets, set_ids: Mapping[str, int], window_start: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every period of every set (set id, start hour, number) and its two texts (bp, cp)."""
    period_set, period_start, billing_texts, charge_texts = [], [], [], []
    for name, bounds in period_sets.items():
        for first, last in bounds:
            billing_text, charge_text = _period_text(window_start, first, last)
            period_set.append(set_ids[name])
            period_start.append(first)
            billing_texts.append(billing_text)
            charge_texts.append(charge_text)
    periods = pl.DataFrame(
        {
            "period_set": pl.Series(period_set, dtype=pl.Int32),
            "start": pl.Series(period_start, dtype=pl.Int64),
            "period": pl.Series(range(len(period_set)), dtype=pl.Int64),
        }
    )
    return periods, pl.DataFrame({"bp": billing_texts, "cp": charge_texts})
