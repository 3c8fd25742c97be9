"""Finance exports: chargeback per project and cost center, daily and monthly, CSV and Parquet.

:func:`build_exports` turns a month of the ``allocation`` table into files (pure: bytes in a
dict), :func:`write_exports` hands them to a ``put_atomic(relative, data)`` callable (the lake's
storage: a local directory or S3), the manifest last, so a reader that finds the manifest finds
every file it lists.

The columns use FOCUS names where FOCUS has the concept (``ChargePeriodStart``,
``EffectiveCost``, ``BillingCurrency``, ``ServiceProviderName``, and FOCUS 1.3's
``AllocatedMethodId``, ``AllocatedMethodDetails``, ``AllocatedResourceId``, ``AllocatedTags``
for split cost allocation), and the ``x_`` prefix FOCUS reserves for custom columns (FOCUS
1.x, "Column Naming and Ordering") for the rest. Order and types: :data:`CHARGEBACK_COLUMNS`.

Money comes twice. ``EffectiveCost`` and ``BilledCost`` are exact decimal text with 18 places
(what the allocation holds: a split of a charge can need them). ``x_EffectiveCostMinor`` and
``x_BilledCostMinor`` are integers in the currency's minor unit (ISO 4217 exponent, in
``x_MinorUnitExponent``: 2 for USD and EUR, 0 for JPY), which spreadsheets, ``pandas.read_csv``
and DuckDB read exactly (they read decimal text as float64). The rounding is split by largest
remainder (:func:`largest_remainder`): per project, month and currency, the rows' minor amounts
add up to the exact total rounded half-even, in the daily file and in the monthly file alike.

The monthly file leaves out rows with neither money nor hours (no cost, no GPU-hours, no
FTE-days): a month of zero-cost splits (a resource's idle hours priced at 0, a credit that
cancelled out) adds rows no one books. The daily file keeps every row, for tracing.

Re-running an export on the same allocation gives the same bytes: rows are sorted on every key
column, money is written as exact decimal text with 18 places, GPU-hours and FTE-days are summed
as decimals (so the order rows arrive in cannot change a float's last bit) and printed with 6
places, and the manifest holds no clock reading.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, Final, Literal

import polars as pl

from gpucost.core.contracts import ALLOCATION, MONEY
from gpucost.reports._common import (
    MINOR_UNIT_EXPONENTS,
    Frame,
    eager,
    minor_unit_exponent,
    money_text,
)

PutAtomic = Callable[[str, bytes], None]
"""``put_atomic(relative_path, data)``: replace one object whole or not at all."""

Granularity = Literal["daily", "monthly"]
FLOAT_PLACES: Final = 6
EXPORT_FORMAT: Final = "gpucost-export/1"
UTC_TIME: Final = pl.Datetime("us", "UTC")
_FLOAT_SUM = pl.Decimal(38, 9)
"""Floats are summed through this decimal type: exact and independent of row order."""


@dataclass(frozen=True)
class ExportColumn:
    """One column of an export file: its name, type and meaning."""

    name: str
    dtype: pl.DataType
    doc: str


CHARGEBACK_COLUMNS: Final[tuple[ExportColumn, ...]] = (
    ExportColumn(
        "ChargePeriodStart", UTC_TIME, "First instant of the day or month (UTC, inclusive)."
    ),
    ExportColumn("ChargePeriodEnd", UTC_TIME, "End of the day or month (UTC, exclusive)."),
    ExportColumn("BillingCurrency", pl.String(), "ISO 4217 currency of the amounts."),
    ExportColumn("x_Project", pl.String(), "ML project the cost is charged back to."),
    ExportColumn("x_CostCenter", pl.String(), "The project's cost center (empty if none)."),
    ExportColumn("ServiceProviderName", pl.String(), "Provider of the charges (AWS, ...)."),
    ExportColumn(
        "x_CostCategory",
        pl.String(),
        "gpu_used, gpu_idle, compute, storage, network, shared or other.",
    ),
    ExportColumn("EffectiveCost", MONEY, "Allocated amortised cost (FOCUS EffectiveCost)."),
    ExportColumn("BilledCost", MONEY, "Allocated invoiced cost (FOCUS BilledCost)."),
    ExportColumn(
        "x_EffectiveCostMinor",
        pl.Int64(),
        "EffectiveCost in minor units (cents, yen), by largest remainder: a project's rows of "
        "a month and currency add up to its total rounded half-even.",
    ),
    ExportColumn(
        "x_BilledCostMinor",
        pl.Int64(),
        "BilledCost in minor units, split the same way (empty where BilledCost is).",
    ),
    ExportColumn(
        "x_MinorUnitExponent",
        pl.Int64(),
        "ISO 4217 minor-unit exponent of BillingCurrency: amount = minor / 10^exponent.",
    ),
    ExportColumn("x_GpuHoursUsed", pl.Float64(), "GPU-hours the project used."),
    ExportColumn("x_GpuHoursIdle", pl.Float64(), "Idle GPU-hours charged to the project."),
    ExportColumn("x_FteDays", pl.Float64(), "Full-time-equivalent person-days (sum of fte)."),
    ExportColumn("AllocatedMethodId", pl.String(), "FOCUS 1.3: the allocation method."),
    ExportColumn(
        "AllocatedMethodDetails",
        pl.String(),
        "FOCUS 1.3: JSON of the split's ratios (daily files only; empty in monthly files).",
    ),
    ExportColumn(
        "AllocatedResourceId", pl.String(), "FOCUS 1.3: the resource whose cost was split."
    ),
    ExportColumn("AllocatedTags", pl.String(), "FOCUS 1.3: tags of the split, JSON."),
)

UNIT_COST_COLUMNS: Final[tuple[ExportColumn, ...]] = (
    ExportColumn("ChargePeriodStart", UTC_TIME, "The day (UTC, inclusive)."),
    ExportColumn("ChargePeriodEnd", UTC_TIME, "The next day (UTC, exclusive)."),
    ExportColumn("x_Project", pl.String(), "Owner of the model server."),
    ExportColumn("ResourceId", pl.String(), "The model server's resource id."),
    ExportColumn("ResourceName", pl.String(), "Its host name."),
    ExportColumn("x_Requests", pl.Int64(), "Requests served that day."),
    ExportColumn("EffectiveCost", MONEY, "The server's cost that day."),
    ExportColumn("BillingCurrency", pl.String(), "Currency of the costs."),
    ExportColumn("x_CostPer1kRequests", MONEY, "EffectiveCost x 1000 / x_Requests."),
    ExportColumn("x_PricedHours", pl.Int64(), "Hours of the day with a bill row or list price."),
)

_KEYS: Final = (
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BillingCurrency",
    "x_Project",
    "x_CostCenter",
    "ServiceProviderName",
    "x_CostCategory",
    "AllocatedMethodId",
    "AllocatedMethodDetails",
    "AllocatedResourceId",
    "AllocatedTags",
)


@dataclass(frozen=True)
class ExportBundle:
    """The files of one month's export, by name under ``folder``, and their manifest."""

    folder: str
    files: Mapping[str, bytes]
    manifest: Mapping[str, Any]

    @property
    def manifest_bytes(self) -> bytes:
        """The manifest as canonical JSON (sorted keys, 2-space indent, final newline)."""
        return (json.dumps(self.manifest, indent=2, sort_keys=True) + "\n").encode()


def month_bounds(month: str | date) -> tuple[date, date]:
    """First day of ``month`` (``YYYY-MM`` or any date in it) and of the month after."""
    if isinstance(month, str):
        try:
            first = date.fromisoformat(f"{month}-01")
        except ValueError:
            raise ValueError(f"month {month!r} is not YYYY-MM") from None
    else:
        first = month.replace(day=1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following


def chargeback(allocation: Frame, granularity: Granularity) -> pl.DataFrame:
    """Allocation rows summed per period and key, in :data:`CHARGEBACK_COLUMNS` order.

    ``daily`` keeps every FOCUS 1.3 allocation column; ``monthly`` leaves
    ``AllocatedMethodDetails`` empty, because a month sums days whose split ratios differ.
    """
    frame = eager(allocation)
    ALLOCATION.validate(frame, "allocation")
    day_start = pl.col("day").cast(UTC_TIME)
    if granularity == "daily":
        start, end = day_start, day_start.dt.offset_by("1d")
        details = pl.col("AllocatedMethodDetails")
    else:
        start = day_start.dt.truncate("1mo")
        end = start.dt.offset_by("1mo")
        details = pl.lit(None, pl.String)
    shaped = frame.select(
        start.alias("ChargePeriodStart"),
        end.alias("ChargePeriodEnd"),
        pl.col("currency").alias("BillingCurrency"),
        pl.col("project").alias("x_Project"),
        pl.col("cost_center").alias("x_CostCenter"),
        pl.col("provider").alias("ServiceProviderName"),
        pl.col("category").alias("x_CostCategory"),
        pl.col("amount").alias("EffectiveCost"),
        pl.col("billed_amount").alias("BilledCost"),
        pl.col("gpu_hours_used").alias("x_GpuHoursUsed"),
        pl.col("gpu_hours_idle").alias("x_GpuHoursIdle"),
        pl.col("fte").alias("x_FteDays"),
        pl.col("AllocatedMethodId"),
        details.alias("AllocatedMethodDetails"),
        pl.col("AllocatedResourceId"),
        pl.col("AllocatedTags"),
    )
    summed = shaped.group_by(list(_KEYS)).agg(
        pl.col("EffectiveCost").sum(),
        _sum_or_null("BilledCost"),
        *[_float_sum(name) for name in ("x_GpuHoursUsed", "x_GpuHoursIdle", "x_FteDays")],
    )
    if granularity == "monthly":
        summed = summed.filter(_carries_something())
    with_minor = summed.with_columns(
        pl.lit(None, pl.Int64).alias("x_EffectiveCostMinor"),
        pl.lit(None, pl.Int64).alias("x_BilledCostMinor"),
        pl.col("BillingCurrency")
        .str.to_uppercase()
        .replace_strict(MINOR_UNIT_EXPONENTS, default=2, return_dtype=pl.Int64)
        .alias("x_MinorUnitExponent"),
    )
    ordered = _canonical(
        with_minor.select([column.name for column in CHARGEBACK_COLUMNS]), CHARGEBACK_COLUMNS
    )
    return ordered.with_columns(
        pl.Series("x_EffectiveCostMinor", _minor_column(ordered, "EffectiveCost"), pl.Int64),
        pl.Series("x_BilledCostMinor", _minor_column(ordered, "BilledCost"), pl.Int64),
    )


def _carries_something() -> pl.Expr:
    """A monthly row with money, GPU-hours or FTE-days (anything but all zero or empty)."""
    money = [pl.col(name).fill_null(Decimal(0)) != 0 for name in ("EffectiveCost", "BilledCost")]
    amounts = [
        pl.col(name).fill_null(0.0) != 0.0
        for name in ("x_GpuHoursUsed", "x_GpuHoursIdle", "x_FteDays")
    ]
    return pl.any_horizontal(*money, *amounts)


def largest_remainder(amounts: list[Decimal], exponent: int) -> list[int]:
    """``amounts`` in minor units (``10**-exponent``), adding up to their rounded total.

    Each amount is floored to whole minor units; the units the floors lack against the exact
    total rounded half-even go, one each, to the amounts with the largest remainders (ties to
    the earlier amount). Every result is its amount floored or ceiled; negative amounts
    (credits) work the same way.
    """
    with localcontext() as context:
        context.prec = 80
        scaled = [amount.scaleb(exponent) for amount in amounts]
        floors = [int(value.to_integral_value(rounding=ROUND_FLOOR)) for value in scaled]
        total = int(sum(scaled, Decimal(0)).to_integral_value(rounding=ROUND_HALF_EVEN))
        missing = total - sum(floors)
        ranked = sorted(
            range(len(scaled)), key=lambda index: (-(scaled[index] - floors[index]), index)
        )
    result = list(floors)
    for index in ranked[:missing]:
        result[index] += 1
    return result


def _minor_column(table: pl.DataFrame, column: str) -> list[int | None]:
    """``column`` in minor units, split per project, month and currency (rows in file order)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    values = table.get_column(column).to_list()
    keys = table.select(
        pl.col("x_Project"),
        pl.col("BillingCurrency"),
        pl.col("ChargePeriodStart").dt.truncate("1mo"),
    ).rows()
    for index, (key, value) in enumerate(zip(keys, values, strict=True)):
        if value is not None:
            groups.setdefault(key, []).append(index)
    minor: list[int | None] = [None] * table.height
    for (_, currency, _), indexes in groups.items():
        split = largest_remainder([values[i] for i in indexes], minor_unit_exponent(currency))
        for index, units in zip(indexes, split, strict=True):
            minor[index] = units
    return minor


def unit_cost_rows(unit_costs: pl.DataFrame) -> pl.DataFrame:
    """``gpucost.reports.unit_economics`` output in :data:`UNIT_COST_COLUMNS` order and names."""
    day_start = pl.col("day").cast(UTC_TIME)
    shaped = unit_costs.select(
        day_start.alias("ChargePeriodStart"),
        day_start.dt.offset_by("1d").alias("ChargePeriodEnd"),
        pl.col("project").alias("x_Project"),
        pl.col("resource_id").alias("ResourceId"),
        pl.col("host").alias("ResourceName"),
        pl.col("requests").alias("x_Requests"),
        pl.col("cost").alias("EffectiveCost"),
        pl.col("currency").alias("BillingCurrency"),
        pl.col("cost_per_1k_requests").alias("x_CostPer1kRequests"),
        pl.col("priced_hours").alias("x_PricedHours"),
    )
    return _canonical(shaped, UNIT_COST_COLUMNS)


def build_exports(
    allocation: Frame,
    month: str | date,
    *,
    unit_costs: pl.DataFrame | None = None,
    folder: str | None = None,
) -> ExportBundle:
    """The export of one month: chargeback daily and monthly (and unit costs when given).

    ``folder`` defaults to ``exports/YYYY-MM``. A month still running (the nightly export)
    holds the days the allocation has so far; the manifest's ``through`` names the last one.
    """
    first, following = month_bounds(month)
    label = f"{first:%Y-%m}"
    rows = eager(allocation).filter(pl.col("day") >= first, pl.col("day") < following)
    tables: dict[str, tuple[pl.DataFrame, tuple[ExportColumn, ...], str]] = {
        "chargeback_daily": (chargeback(rows, "daily"), CHARGEBACK_COLUMNS, "daily"),
        "chargeback_monthly": (chargeback(rows, "monthly"), CHARGEBACK_COLUMNS, "monthly"),
    }
    if unit_costs is not None:
        month_costs = unit_costs.filter(pl.col("day") >= first, pl.col("day") < following)
        tables["unit_costs_daily"] = (unit_cost_rows(month_costs), UNIT_COST_COLUMNS, "daily")
    files: dict[str, bytes] = {}
    listed: list[dict[str, Any]] = []
    for stem, (table, columns, granularity) in tables.items():
        for suffix, data in (("csv", csv_bytes(table)), ("parquet", parquet_bytes(table))):
            name = f"{stem}.{suffix}"
            files[name] = data
            listed.append(
                {
                    "path": name,
                    "format": suffix,
                    "granularity": granularity,
                    "rows": table.height,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "columns": [{"name": c.name, "type": type_name(c.dtype)} for c in columns],
                }
            )
    last_day = rows["day"].max() if rows.height else None
    manifest = {
        "format": EXPORT_FORMAT,
        "month": label,
        "period_start": first.isoformat(),
        "period_end_exclusive": following.isoformat(),
        "through": last_day.isoformat() if isinstance(last_day, date) else None,
        "totals": _totals(rows, tables["chargeback_monthly"][0]),
        "files": listed,
    }
    return ExportBundle(folder=folder or f"exports/{label}", files=files, manifest=manifest)


def type_name(dtype: pl.DataType) -> str:
    """The type as the docs and manifest spell it (Parquet/Arrow style)."""
    if isinstance(dtype, pl.Datetime):
        return f"timestamp[{dtype.time_unit}, {dtype.time_zone}]"
    if isinstance(dtype, pl.Decimal):
        return f"decimal({dtype.precision},{dtype.scale})"
    return str(dtype).lower()


def csv_bytes(table: pl.DataFrame) -> bytes:
    """CSV with a header, ``\\n`` line ends, UTC ``Z`` times, exact money, 6-place floats."""
    buffer = io.BytesIO()
    table.write_csv(
        buffer,
        datetime_format="%Y-%m-%dT%H:%M:%SZ",
        float_precision=FLOAT_PLACES,
        float_scientific=False,
        line_terminator="\n",
        null_value="",
    )
    return buffer.getvalue()


def parquet_bytes(table: pl.DataFrame) -> bytes:
    """Parquet with fixed settings (zstd level 3, one row group per 1M rows, statistics)."""
    buffer = io.BytesIO()
    table.write_parquet(
        buffer,
        compression="zstd",
        compression_level=3,
        statistics=True,
        row_group_size=1_000_000,
    )
    return buffer.getvalue()


def write_exports(bundle: ExportBundle, put_atomic: PutAtomic) -> list[str]:
    """Write every file, then the manifest; returns the relative paths written, in order."""
    written: list[str] = []
    for name in sorted(bundle.files):
        relative = f"{bundle.folder}/{name}"
        put_atomic(relative, bundle.files[name])
        written.append(relative)
    manifest = f"{bundle.folder}/manifest.json"
    put_atomic(manifest, bundle.manifest_bytes)
    written.append(manifest)
    return written


def _sum_or_null(name: str) -> pl.Expr:
    column = pl.col(name)
    return pl.when(column.is_not_null().any()).then(column.sum()).otherwise(None).alias(name)


def _float_sum(name: str) -> pl.Expr:
    column = pl.col(name).cast(_FLOAT_SUM)
    return (
        pl.when(column.is_not_null().any())
        .then(column.sum().round(FLOAT_PLACES).cast(pl.Float64))
        .otherwise(None)
        .alias(name)
    )


def _canonical(frame: pl.DataFrame, columns: tuple[ExportColumn, ...]) -> pl.DataFrame:
    """Cast to the documented types and sort on every column (nulls first)."""
    typed = frame.select([pl.col(c.name).cast(c.dtype) for c in columns])
    return typed.sort([c.name for c in columns], nulls_last=False, maintain_order=True)


def _totals(rows: pl.DataFrame, monthly: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per currency: EffectiveCost and BilledCost totals as exact decimal strings, and the
    monthly file's minor-unit totals (the sum of its rounded rows)."""
    totals: dict[str, dict[str, Any]] = {}
    grouped = rows.group_by("currency").agg(pl.col("amount").sum(), pl.col("billed_amount").sum())
    minor = monthly.group_by("BillingCurrency").agg(
        pl.col("x_EffectiveCostMinor").sum(), pl.col("x_BilledCostMinor").sum()
    )
    minor_totals = {row[0]: row[1:] for row in minor.iter_rows()}
    for currency, amount, billed in grouped.sort("currency").iter_rows():
        effective_minor, billed_minor = minor_totals.get(currency, (0, 0))
        totals[currency] = {
            "EffectiveCost": money_text(amount or Decimal(0)),
            "BilledCost": money_text(billed or Decimal(0)),
            "EffectiveCostMinor": effective_minor,
            "BilledCostMinor": billed_minor,
            "MinorUnitExponent": minor_unit_exponent(currency),
        }
    return totals
