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
from decimal import Decimal
from typing import Any, Final, Literal

import polars as pl

from gpucost.core.contracts import ALLOCATION, MONEY
from gpucost.reports._common import Frame, eager, money_text

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
    ordered = summed.select([column.name for column in CHARGEBACK_COLUMNS])
    return _canonical(ordered, CHARGEBACK_COLUMNS)


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
        "totals": _totals(rows),
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


def _totals(rows: pl.DataFrame) -> dict[str, dict[str, str]]:
    """Per currency: EffectiveCost and BilledCost totals as exact decimal strings."""
    totals: dict[str, dict[str, str]] = {}
    grouped = rows.group_by("currency").agg(pl.col("amount").sum(), pl.col("billed_amount").sum())
    for currency, amount, billed in grouped.sort("currency").iter_rows():
        totals[currency] = {
            "EffectiveCost": money_text(amount or Decimal(0)),
            "BilledCost": money_text(billed or Decimal(0)),
        }
    return totals
