"""Helpers shared by the report modules: exact money, canonical JSON, frame inputs.

Money stays :class:`~decimal.Decimal` from the lake to every output: Polars sums
``Decimal(38, 18)`` columns exactly, and the few divisions a report needs (a monthly
projection, a cost per 1,000 requests) are done here in a 60-digit decimal context and rounded
half-even to the contract's 18 places, never through a binary float.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, Final

import polars as pl

from gpucost.core.contracts import MONEY_SCALE

Frame = pl.DataFrame | pl.LazyFrame
"""Report functions accept eager or lazy frames (the shell hands in ``Lake.scan`` results)."""

HOURS_PER_MONTH: Final = Decimal(730)
"""A month is 730 hours (8,760 hours a year / 12): the convention of the AWS Pricing Calculator
and the Google Cloud pricing pages for monthly estimates."""

MONEY_QUANTUM: Final = Decimal(1).scaleb(-MONEY_SCALE)
SOURCE: Final = "reports"
"""The ``source`` column of every table the reports write (``findings``)."""


def eager(frame: Frame) -> pl.DataFrame:
    """A DataFrame from an eager or lazy frame."""
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def to_money(value: Decimal | int) -> Decimal:
    """``value`` rounded half-even to the contract's 18 decimal places."""
    with localcontext() as context:
        context.prec = 60
        return Decimal(value).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


def divide_money(numerator: Decimal, denominator: Decimal | int) -> Decimal:
    """``numerator / denominator`` with 60 significant digits, rounded to 18 places."""
    with localcontext() as context:
        context.prec = 60
        return to_money(Decimal(numerator) / Decimal(denominator))


def monthly(cost_in_window: Decimal, hours_in_window: int) -> Decimal:
    """Project a cost seen over ``hours_in_window`` hours onto a 730-hour month."""
    with localcontext() as context:
        context.prec = 60
        return divide_money(cost_in_window * HOURS_PER_MONTH, hours_in_window)


def money_text(value: Decimal) -> str:
    """Exact decimal text with the contract's 18 places (no exponent, no rounding beyond)."""
    return format(to_money(value), "f")


MINOR_UNIT_EXPONENTS: Final = {
    **dict.fromkeys(
        (
            "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
            "VND", "VUV", "XAF", "XOF", "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}  # fmt: skip
"""ISO 4217 minor-unit exponents that are not 2 (the standard's list one, "Minor unit" column,
as the SIX maintenance agency publishes it); every other currency has 2 (cents)."""


def minor_unit_exponent(currency: str | None) -> int:
    """Decimal places of ``currency``'s minor unit: 2 for USD and EUR, 0 for JPY (ISO 4217)."""
    return MINOR_UNIT_EXPONENTS.get((currency or "").upper(), 2)


def display_money(
    value: Decimal | None, currency: str | None = None, *, suffix: bool = True
) -> str:
    """Rounded to the currency's minor unit (cents; whole yen) with thousands separators, for
    people (stored values keep every digit); the currency code follows unless ``suffix`` is
    False. Without a currency, to cents."""
    if value is None:
        return "n/a"
    with localcontext() as context:
        context.prec = 60
        quantum = Decimal(1).scaleb(-minor_unit_exponent(currency))
        text = f"{Decimal(value).quantize(quantum, rounding=ROUND_HALF_EVEN):,}"
    return f"{text} {currency}" if currency and suffix else text


def iso_utc(moment: datetime | date | None) -> str | None:
    """``2024-09-24T13:00:00Z`` for an aware datetime, ``2024-09-24`` for a date."""
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.isoformat()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money_text(value)
    if isinstance(value, datetime | date):
        return iso_utc(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in evidence")


def canonical_json(value: Mapping[str, Any] | list[Any]) -> str:
    """Sorted keys, no spaces, money as exact decimal strings, floats rounded to 6 places."""
    return json.dumps(
        _round_floats(value), sort_keys=True, separators=(",", ":"), default=_json_default
    )


def _round_floats(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, Mapping):
        return {key: _round_floats(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_round_floats(item) for item in value]
    return value


def tag_value(tags_column: str, key: str) -> pl.Expr:
    """One key of a canonical-JSON tags column (null when absent or not JSON)."""
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return pl.col(tags_column).str.json_path_match(f"$['{escaped}']")
