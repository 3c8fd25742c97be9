"""Table contracts: every lake table's columns and types, declared once.

Each stage boundary (a collector's output, a lake write, a lake read, the allocator's and the
reports' outputs) passes its frame through :meth:`TableContract.conform` or
:meth:`TableContract.validate`; a mismatch raises :class:`~gpucost.core.errors.ContractError`
naming the table, the source and the columns.

Money is ``Decimal(38, 18)`` everywhere (``MONEY``): 20 integer digits and 18 fractional
digits hold every amount a bill prints (AWS CUR prints costs such as ``1.81E-8``; FOCUS
samples carry 11 fractional digits) exactly, and Polars sums decimals without binary floats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import polars as pl

from gpucost.core.errors import ContractError

MONEY_SCALE = 18
MONEY = pl.Decimal(38, MONEY_SCALE)
UTC_TIME = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class Column:
    """One column of a table contract."""

    name: str
    dtype: pl.DataType
    nullable: bool = True
    doc: str = ""


@dataclass(frozen=True)
class TableContract:
    """A lake table: its columns, the column that names its day partition and its source."""

    name: str
    columns: tuple[Column, ...]
    day_column: str
    """Date or UTC datetime column whose UTC date picks the ``day=YYYY-MM-DD`` partition."""
    source_column: str
    """Column naming the source that wrote the row; a write replaces one source's day."""
    doc: str = ""

    @cached_property
    def schema(self) -> pl.Schema:
        """The Polars schema, in contract column order."""
        return pl.Schema({column.name: column.dtype for column in self.columns})

    @property
    def column_names(self) -> list[str]:
        """Column names in contract order."""
        return [column.name for column in self.columns]

    def conform(self, frame: pl.DataFrame, source: str) -> pl.DataFrame:
        """Shape a producer's frame into the contract.

        Absent nullable columns are added as nulls, columns are put in contract order and cast
        where the cast cannot lose information (for example Int32 to Int64). Unknown columns,
        absent non-nullable columns and incompatible types raise :class:`ContractError`.
        """
        unknown = [name for name in frame.columns if name not in self.schema]
        if unknown:
            raise ContractError(self.name, source, "columns not in the contract", unknown)
        missing = [
            column.name
            for column in self.columns
            if not column.nullable and column.name not in frame.columns
        ]
        if missing:
            raise ContractError(self.name, source, "mandatory columns missing", missing)
        expressions: list[pl.Expr] = []
        wrong: list[str] = []
        for column in self.columns:
            if column.name not in frame.columns:
                expressions.append(pl.lit(None, dtype=column.dtype).alias(column.name))
                continue
            actual = frame.schema[column.name]
            if actual == column.dtype:
                expressions.append(pl.col(column.name))
            elif _safe_cast(actual, column.dtype):
                expressions.append(pl.col(column.name).cast(column.dtype, strict=True))
            else:
                wrong.append(f"{column.name} ({actual} instead of {column.dtype})")
        if wrong:
            raise ContractError(self.name, source, "columns of the wrong type", wrong)
        conformed = frame.select(expressions)
        self._check_nulls(conformed, source)
        return conformed

    def validate(self, frame: pl.DataFrame | pl.LazyFrame, source: str) -> None:
        """Check that a frame has exactly the contract's columns, order and types."""
        schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
        if list(schema.names()) != self.column_names:
            missing = [name for name in self.column_names if name not in schema]
            extra = [name for name in schema.names() if name not in self.schema]
            problem = "columns differ from the contract"
            raise ContractError(
                self.name,
                source,
                problem,
                [f"missing {name}" for name in missing] + [f"unexpected {name}" for name in extra]
                or ["same columns, different order"],
            )
        wrong = [
            f"{name} ({schema[name]} instead of {self.schema[name]})"
            for name in self.column_names
            if schema[name] != self.schema[name]
        ]
        if wrong:
            raise ContractError(self.name, source, "columns of the wrong type", wrong)
        if isinstance(frame, pl.DataFrame):
            self._check_nulls(frame, source)

    def _check_nulls(self, frame: pl.DataFrame, source: str) -> None:
        required = [column.name for column in self.columns if not column.nullable]
        if not required or frame.height == 0:
            return
        counts = frame.select(pl.col(required).null_count()).row(0)
        with_nulls = [
            f"{name} ({count} null)" for name, count in zip(required, counts, strict=True) if count
        ]
        if with_nulls:
            raise ContractError(self.name, source, "nulls in non-nullable columns", with_nulls)

    def empty(self) -> pl.DataFrame:
        """An empty frame with the contract's schema."""
        return pl.DataFrame(schema=self.schema)


def _safe_cast(actual: pl.DataType, wanted: pl.DataType) -> bool:
    """Casts that cannot lose information or change meaning."""
    if actual == pl.Null:
        return True
    integer_widths = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.Int64: 64}
    if actual in integer_widths and wanted in integer_widths:
        return integer_widths[actual] <= integer_widths[wanted]  # type: ignore[index]
    if actual in integer_widths and wanted == pl.Float64:
        return True
    if actual == pl.Float32 and wanted == pl.Float64:
        return True
    if isinstance(actual, pl.Decimal) and isinstance(wanted, pl.Decimal):
        return (actual.scale or 0) <= (wanted.scale or 0)
    if actual in integer_widths and isinstance(wanted, pl.Decimal):
        return True
    if isinstance(actual, pl.Datetime) and isinstance(wanted, pl.Datetime):
        # Only a change of resolution; a naive or other-zone datetime is a real mismatch.
        return actual.time_zone == wanted.time_zone
    return actual == pl.Categorical and wanted == pl.String


def _columns(
    spec: Iterable[tuple[str, pl.DataType] | tuple[str, pl.DataType, bool]],
) -> tuple[Column, ...]:
    columns = []
    for item in spec:
        if len(item) == 2:
            name, dtype = item
            columns.append(Column(name, dtype))
        else:
            name, dtype, nullable = item
            columns.append(Column(name, dtype, nullable))
    return tuple(columns)


S = pl.String()
F64 = pl.Float64()
I32 = pl.Int32()
I64 = pl.Int64()
DATE = pl.Date()

# FOCUS 1.0 columns, then columns added by FOCUS 1.1-1.3 that gpucost keeps, then gpucost's own
# x_ columns (FOCUS reserves the x_ prefix for custom columns, spec section 2.1.2).
FOCUS_MONEY_COLUMNS = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ContractedCost",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
)
FOCUS_QUANTITY_COLUMNS = ("ConsumedQuantity", "PricingQuantity", "CommitmentDiscountQuantity")
FOCUS_TIME_COLUMNS = (
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
)
FOCUS_STRING_COLUMNS = (
    # FOCUS 1.3 provider-calculated split cost allocation and contract columns: a provider's own
    # split of a shared resource (AllocatedTags/AllocatedResourceId name the workload a row's
    # share belongs to; project rules match them before Tags). JSON columns are canonical JSON.
    "AllocatedMethodDetails",
    "AllocatedMethodId",
    "AllocatedResourceId",
    "AllocatedResourceName",
    "AllocatedTags",
    "ContractApplied",
    "AvailabilityZone",
    "BillingAccountId",
    "BillingAccountName",
    "BillingAccountType",
    "BillingCurrency",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "ConsumedUnit",
    "HostProviderName",
    "InvoiceId",
    "InvoiceIssuerName",
    "PricingCategory",
    "PricingCurrency",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceProviderName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "Tags",
)
FOCUS_NOT_NULL = {"BilledCost", "BillingCurrency", "ChargePeriodStart", "ChargePeriodEnd"}

BILLING = TableContract(
    name="billing",
    columns=tuple(
        sorted(
            [Column(n, MONEY, n not in FOCUS_NOT_NULL) for n in FOCUS_MONEY_COLUMNS]
            + [Column(n, MONEY) for n in FOCUS_QUANTITY_COLUMNS]
            + [Column(n, UTC_TIME, n not in FOCUS_NOT_NULL) for n in FOCUS_TIME_COLUMNS]
            + [Column(n, S, n not in FOCUS_NOT_NULL) for n in FOCUS_STRING_COLUMNS],
            key=lambda column: column.name,
        )
    )
    + _columns(
        [
            ("x_Source", S, False),
            ("x_IngestedAt", UTC_TIME, False),
            ("x_InstanceType", S),
            ("x_UsageType", S),
            ("x_GpuModel", S),
            ("x_GpuHours", MONEY),
            ("x_CurrencyConversionRate", MONEY),
            # AWS split cost allocation data (CUR splitLineItem/*): a shared instance's cost
            # split over the containers (EKS/ECS tasks) that ran on it.
            ("x_SplitParentResourceId", S),
            ("x_SplitCost", MONEY),
            ("x_SplitUnusedCost", MONEY),
            ("x_SplitNetCost", MONEY),
            ("x_SplitNetUnusedCost", MONEY),
            ("x_SplitUsageRatio", MONEY),
        ]
    ),
    day_column="ChargePeriodStart",
    source_column="x_Source",
    doc="One row per charge, FOCUS column names verbatim; Tags is canonical JSON (sorted keys).",
)

GPU_USAGE = TableContract(
    name="gpu_usage",
    columns=_columns(
        [
            ("hour", UTC_TIME, False),
            ("host", S, False),
            ("gpu_uuid", S, False),
            ("gpu_index", I32),
            ("gpu_model", S),
            ("mig_profile", S),
            ("namespace", S),
            ("pod", S),
            ("container", S),
            ("workload", S),
            ("project", S),
            ("seconds_observed", F64, False),
            # The series' share of its GPU (or MIG slice), summed over the hour's samples:
            # interval x 1/(workload series on the device at that instant), and that times the
            # device's utilisation (or the process's own). Seconds of the device, not yet
            # scaled by a MIG slice's fraction; null where a writer predates them.
            ("gpu_seconds_held", F64),
            ("gpu_seconds_busy", F64),
            ("util_avg", F64),
            ("util_max", F64),
            ("mem_used_max_bytes", I64),
            ("mem_total_bytes", I64),
            ("power_avg_w", F64),
            ("sm_clock_avg_mhz", F64),
            ("source", S, False),
        ]
    ),
    day_column="hour",
    source_column="source",
    doc="Hourly rollup per GPU (or MIG slice) x workload; util_* are fractions 0..1.",
)

INVENTORY = TableContract(
    name="inventory",
    columns=_columns(
        [
            ("day", DATE, False),
            ("resource_id", S, False),
            ("provider", S, False),
            ("host", S),
            ("instance_type", S),
            ("gpu_count", I32),
            ("gpu_model", S),
            ("gpu_mem_bytes", I64),
            ("vcpus", I32),
            ("role", S),
            ("tags", S),
            ("region", S),
            ("hourly_list_price", MONEY),
            ("currency", S),
            ("first_seen", UTC_TIME),
            ("last_seen", UTC_TIME),
            ("source", S, False),
        ]
    ),
    day_column="day",
    source_column="source",
    doc="Hosts seen on a day: instance type, GPUs, role, tags (canonical JSON), list price.",
)

HOST_METRICS = TableContract(
    name="host_metrics",
    columns=_columns(
        [
            ("hour", UTC_TIME, False),
            ("resource_id", S, False),
            ("host", S),
            ("cpu_util_avg", F64),
            ("cpu_util_max", F64),
            ("cpu_util_p95", F64),
            ("source", S, False),
        ]
    ),
    day_column="hour",
    source_column="source",
    doc="Hourly CPU use per host (fractions 0..1), for the misplaced-model-server findings.",
)

HEADCOUNT = TableContract(
    name="headcount",
    columns=_columns(
        [
            ("day", DATE, False),
            ("person_id", S, False),
            ("project", S, False),
            ("cost_center", S),
            ("fraction", F64, False),
            ("source", S, False),
        ]
    ),
    day_column="day",
    source_column="source",
    doc="Who works on what, per day, as fractions of a full-time person; no names.",
)

PRICES = TableContract(
    name="prices",
    columns=_columns(
        [
            ("day", DATE, False),
            ("provider", S, False),
            ("sku_id", S, False),
            ("description", S),
            ("region", S),
            ("gpu_model", S),
            ("machine_type", S),
            ("unit", S),
            ("usage_type", S),
            ("start_usage_amount", MONEY),
            ("unit_price", MONEY, False),
            ("currency", S, False),
            ("source", S, False),
        ]
    ),
    day_column="day",
    source_column="source",
    doc="List prices (for example per GPU-hour) from provider catalogs, one row per price tier.",
)

ALLOCATION = TableContract(
    name="allocation",
    columns=_columns(
        [
            ("day", DATE, False),
            ("project", S, False),
            ("cost_center", S),
            ("provider", S),
            ("category", S, False),
            ("amount", MONEY, False),
            ("billed_amount", MONEY),
            ("currency", S, False),
            ("gpu_hours_used", F64),
            ("gpu_hours_idle", F64),
            ("fte", F64),
            ("AllocatedMethodId", S),
            ("AllocatedMethodDetails", S),
            ("AllocatedResourceId", S),
            ("AllocatedTags", S),
            ("source", S, False),
        ]
    ),
    day_column="day",
    source_column="source",
    doc="Cost and FTE per project, day and category; FOCUS 1.3 allocation columns trace splits.",
)

FINDINGS = TableContract(
    name="findings",
    columns=_columns(
        [
            ("day", DATE, False),
            ("kind", S, False),
            ("resource_id", S),
            ("host", S),
            ("project", S),
            ("window_start", UTC_TIME),
            ("window_end", UTC_TIME),
            ("evidence", S),
            ("est_monthly_waste", MONEY),
            ("currency", S),
            ("recommendation", S),
            ("severity", S),
            ("source", S, False),
        ]
    ),
    day_column="day",
    source_column="source",
    doc="Idle, misplaced and oversized GPU servers with their evidence and monthly waste.",
)

CONTRACTS: Mapping[str, TableContract] = {
    contract.name: contract
    for contract in (
        BILLING,
        GPU_USAGE,
        INVENTORY,
        HOST_METRICS,
        HEADCOUNT,
        PRICES,
        ALLOCATION,
        FINDINGS,
    )
}


def contract_for(table: str) -> TableContract:
    """The contract of a lake table, or a ContractError listing the known tables."""
    try:
        return CONTRACTS[table]
    except KeyError:
        raise ContractError(table, "-", "no such table; known tables", sorted(CONTRACTS)) from None
