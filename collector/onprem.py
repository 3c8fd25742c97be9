"""``onprem``: GPU servers the team owns, as hourly cost rows in ``billing``.

Owned servers appear on no invoice, yet their GPU-hours must cost something for the allocator
to treat them like cloud GPUs. Each server declared in the config costs, every hour it is in
service, its straight-line depreciation (until fully depreciated), its fixed monthly opex and
the electricity it draws, measured from GPU power where the lake has it, else nameplate.

Cost model, per server and UTC hour (all Decimal, see :data:`HOURS_PER_MONTH`)::

    depreciation = purchase_price / (depreciation_months * 730)   while the hour starts
                   within depreciation_months * 730 hours of purchase_date 00:00 UTC, else 0
    opex         = opex_monthly / 730
    power        = watts * pue / 1000 * price_per_kwh                (one hour: W -> kWh)
    watts        = measured GPU watts + overhead_watts   when gpu_usage has the hour,
                   else nameplate_watts

Each component is computed exactly (60 significant digits) and rounded half-to-even to 18
decimal places, the scale of billing's Decimal(38, 18); the row's cost is their exact sum.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any, ClassVar

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.parsing import tags_to_json
from gpucost.core.contracts import BILLING, MONEY_SCALE, UTC_TIME
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

HOURS_PER_MONTH = 730
"""Hours in a month of the cost model: 8760 / 12, a 365-day year.

Chosen over calendar hours because (1) it is the convention cloud list prices use to turn
hourly into monthly prices (AWS and Google Cloud pricing calculators price a month as 730
hours), so an owned GPU-hour compares directly with a cloud on-demand GPU-hour; (2) every hour
of a server's life costs the same, whatever the month's length or daylight-saving changes;
(3) the depreciation period is exactly ``months * 730`` hours, so the hourly depreciation adds
up to the purchase price (36 months = 26280 hours = 1095 days)."""
PROVIDER_NAME = "On-premises"
SKU_ID = "onprem-gpu-server-hour"
QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
"""Rounding quantum: 1e-18, billing's Decimal(38, 18) scale."""
_EXACT = Context(prec=60, rounding=ROUND_HALF_EVEN)
MILLIWATT = Decimal("0.001")
"""Measured watts are rounded to milliwatts: NVML reports power in milliwatts
(``nvmlDeviceGetPowerUsage``), so finer digits of an average carry no information."""


class OnPremServer(BaseModel):
    """One ``[[sources.servers]]`` entry: a GPU server and what it costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(
        min_length=1, description="Host name, as the GPU metrics (gpu_usage.host) name it."
    )
    gpu_count: int = Field(ge=1, le=64)
    gpu_model: str = Field(min_length=1, description="E.g. A100-80GB, H100-80GB, L40S.")
    purchase_price: Decimal = Field(ge=0, description="What the server cost, in `currency`.")
    purchase_date: date = Field(description="In service (and depreciating) from 00:00 UTC.")
    depreciation_months: int = Field(ge=1, le=240)
    opex_monthly: Decimal = Field(
        default=Decimal(0), ge=0, description="Fixed monthly cost: colocation, support, network."
    )
    nameplate_watts: Decimal = Field(
        gt=0, description="Whole-server draw at full load, used for hours without measurements."
    )
    overhead_watts: Decimal = Field(
        default=Decimal(0),
        ge=0,
        description="Non-GPU draw (CPUs, memory, fans) added to measured GPU power.",
    )
    power_price_per_kwh: Decimal | None = Field(
        default=None, gt=0, description="Overrides the source's price (another site)."
    )
    pue: Decimal | None = Field(default=None, ge=1, description="Overrides the source's PUE.")
    retired_date: date | None = Field(default=None, description="Out of service from 00:00 UTC.")
    site: str | None = Field(default=None, description="Data centre; becomes RegionId.")
    instance_type: str | None = Field(default=None, description="E.g. dgx-a100; x_InstanceType.")
    tags: dict[str, str] = Field(default_factory=dict, description="Become the rows' Tags.")

    @model_validator(mode="after")
    def _retired_after_purchase(self) -> OnPremServer:
        if self.retired_date is not None and self.retired_date <= self.purchase_date:
            raise ValueError(f"{self.host}: retired_date must be after purchase_date")
        return self


class OnPremSettings(SourceSettings):
    """Settings of an ``onprem`` source."""

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    power_price_per_kwh: Decimal = Field(gt=0, description="Electricity price per kWh.")
    pue: Decimal = Field(
        default=Decimal(1), ge=1, description="Power usage effectiveness of the site."
    )
    measured_power: bool = Field(
        default=True, description="Use gpu_usage power_avg_w when the shell can hand it in."
    )
    servers: list[OnPremServer] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_hosts(self) -> OnPremSettings:
        hosts = [server.host for server in self.servers]
        duplicates = sorted({host for host in hosts if hosts.count(host) > 1})
        if duplicates:
            raise ValueError(f"servers declared twice: {', '.join(duplicates)}")
        return self


@dataclass(frozen=True)
class HourCost:
    """The cost of one server-hour, by component."""

    depreciation: Decimal
    opex: Decimal
    power: Decimal
    watts: Decimal
    measured: bool

    @property
    def total(self) -> Decimal:
        """Sum of the components (exact: they share the 1e-18 quantum)."""
        return _EXACT.add(_EXACT.add(self.depreciation, self.opex), self.power)


def _round(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=_EXACT)


def depreciation_end(server: OnPremServer) -> datetime:
    """The first hour no longer depreciated: purchase_date 00:00 UTC + months x 730 hours."""
    start = datetime.combine(server.purchase_date, time(), tzinfo=UTC)
    return start + timedelta(hours=server.depreciation_months * HOURS_PER_MONTH)


def hour_cost(
    server: OnPremServer,
    hour: datetime,
    *,
    power_price_per_kwh: Decimal,
    pue: Decimal,
    measured_gpu_watts: Decimal | None,
) -> HourCost:
    """The cost of ``server`` in the hour starting at ``hour`` (pure)."""
    price = server.power_price_per_kwh or power_price_per_kwh
    efficiency = server.pue or pue
    with localcontext(_EXACT):
        if hour < depreciation_end(server):
            depreciation = _round(
                server.purchase_price / (server.depreciation_months * HOURS_PER_MONTH)
            )
        else:
            depreciation = Decimal(0)
        opex = _round(server.opex_monthly / HOURS_PER_MONTH)
        if measured_gpu_watts is not None:
            watts = measured_gpu_watts + server.overhead_watts
        else:
            watts = server.nameplate_watts
        # Energy in one hour: W x 1 h = Wh; / 1000 = kWh; x PUE for cooling and distribution.
        power = _round(watts * efficiency / 1000 * price)
    return HourCost(depreciation, opex, power, watts, measured_gpu_watts is not None)


def measured_gpu_watts(
    usage: pl.DataFrame, servers: Sequence[OnPremServer]
) -> dict[tuple[str, datetime], Decimal]:
    """Measured GPU watts per (host, hour) from gpu_usage rows (pure).

    gpu_usage has one row per GPU x workload x hour, so a GPU's watts are the seconds-weighted
    mean of its rows' ``power_avg_w``. MIG slices of one GPU share its ``gpu_index`` and report
    the whole GPU's power, so GPUs are told apart by index (uuid when there is no index). When
    fewer GPUs than ``gpu_count`` were seen in an hour, the missing ones are counted at the
    mean of those seen: a gap in the metrics must not make power look cheaper.
    """
    if usage.is_empty():
        return {}
    gpu_counts = {server.host: server.gpu_count for server in servers}
    columns = usage.columns
    gpu_key = (
        pl.coalesce(pl.col("gpu_index").cast(pl.String), pl.col("gpu_uuid"))
        if "gpu_index" in columns
        else pl.col("gpu_uuid")
    )
    seconds = pl.col("seconds_observed").fill_null(0.0)
    per_gpu = (
        usage.filter(
            pl.col("host").is_in(list(gpu_counts))
            & pl.col("power_avg_w").is_not_null()
            & pl.col("power_avg_w").is_finite()
            & (pl.col("power_avg_w") >= 0)
        )
        .with_columns(
            pl.col("hour").cast(UTC_TIME).dt.truncate("1h"),
            gpu_key.alias("__gpu"),
            # A row without observed seconds still carries an average: give it weight 1.
            pl.when(seconds > 0).then(seconds).otherwise(1.0).alias("__weight"),
        )
        .group_by("host", "hour", "__gpu")
        .agg(
            ((pl.col("power_avg_w") * pl.col("__weight")).sum() / pl.col("__weight").sum()).alias(
                "watts"
            )
        )
    )
    per_host = per_gpu.group_by("host", "hour").agg(
        pl.col("watts").sum().alias("watts"), pl.len().alias("gpus")
    )
    measured: dict[tuple[str, datetime], Decimal] = {}
    for host, hour, watts, gpus in per_host.iter_rows():
        total = Decimal(repr(float(watts)))
        expected = gpu_counts[host]
        if gpus < expected:
            total = total * expected / gpus
        measured[(host, hour)] = total.quantize(MILLIWATT, rounding=ROUND_HALF_EVEN)
    return measured


@register("onprem")
class OnPrem:
    """Costs owned GPU servers per hour: depreciation, opex and power, into billing.

    One billing row per server and UTC hour in service: ChargeCategory Usage, ResourceId the
    host, x_GpuModel, x_GpuHours = gpu_count, cost = purchase_price / (depreciation_months x
    730 h) while depreciating + opex_monthly / 730 + watts x PUE / 1000 x price per kWh.
    Watts are the measured GPU power (gpu_usage ``power_avg_w``) plus ``overhead_watts`` when
    the shell hands the collector a lake reader, else the nameplate. Money is exact Decimal;
    write prices as TOML strings ("0.1234") to keep every digit (floats are read by their
    shortest decimal form). List this source after the GPU metrics sources so their hours
    have landed.

    ```toml
    [[sources]]
    name = "onprem"
    kind = "onprem"
    currency = "USD"
    power_price_per_kwh = "0.12"
    pue = "1.4"
    measured_power = true

    [[sources.servers]]
    host = "gpu-node-01"
    gpu_count = 8
    gpu_model = "A100-80GB"
    instance_type = "dgx-a100"
    purchase_price = "262800.00"
    purchase_date = 2023-01-01
    depreciation_months = 36
    opex_monthly = "730.00"
    nameplate_watts = 6500
    overhead_watts = 1500
    site = "fra-dc1"
    tags = { team = "vision" }
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("billing",)
    Settings: ClassVar[type[SourceSettings]] = OnPremSettings

    def __init__(self, settings: OnPremSettings, context: CollectorContext) -> None:
        """Measured power needs the lake's gpu_usage table, which a collector does not open on
        its own: it comes from ``context.table_reader`` when the shell provides one (and
        ``measured_power`` is on); without it every hour is costed at nameplate power."""
        self.settings, self.context, self.name = settings, context, settings.name
        self.table_reader = context.table_reader if settings.measured_power else None

    def collect(self, window: Window) -> Collected:
        """One row per server-hour in service within the window."""
        settings = self.settings
        measured = self._measured(window)
        ingested_at = self.context.clock()
        records: list[dict[str, Any]] = []
        totals = {"depreciation": Decimal(0), "opex": Decimal(0), "power": Decimal(0)}
        hours_measured = hours_nameplate = 0
        depreciated: set[str] = set()
        for server in settings.servers:
            start = datetime.combine(server.purchase_date, time(), tzinfo=UTC)
            end = (
                datetime.combine(server.retired_date, time(), tzinfo=UTC)
                if server.retired_date
                else None
            )
            tags = tags_to_json(server.tags) if server.tags else None
            for hour in _hours(window):
                if hour < start or (end is not None and hour >= end):
                    continue
                cost = hour_cost(
                    server,
                    hour,
                    power_price_per_kwh=settings.power_price_per_kwh,
                    pue=settings.pue,
                    measured_gpu_watts=measured.get((server.host, hour)),
                )
                if cost.measured:
                    hours_measured += 1
                else:
                    hours_nameplate += 1
                if not cost.depreciation:
                    depreciated.add(server.host)
                for component in totals:
                    totals[component] = _EXACT.add(totals[component], getattr(cost, component))
                records.append(self._record(server, hour, cost, tags, ingested_at))
        billing = self._frame(records)
        notes: dict[str, Any] = {
            "servers": len(settings.servers),
            "hours_measured_power": hours_measured,
            "hours_nameplate_power": hours_nameplate,
            "fully_depreciated": sorted(depreciated),
            "cost_by_component": {key: str(value) for key, value in totals.items()},
            "currency": settings.currency,
            "hours_per_month": HOURS_PER_MONTH,
        }
        if self.table_reader is None:
            notes["power_source"] = "nameplate (no gpu_usage reader was handed in)"
        return Collected({"billing": billing}, notes=notes)

    def _measured(self, window: Window) -> dict[tuple[str, datetime], Decimal]:
        if self.table_reader is None:
            return {}
        try:
            usage = self.table_reader("gpu_usage", window).collect()
        except Exception as error:  # the reader is the shell's; name it, keep the message
            raise CollectorError(
                self.name, f"reading measured GPU power for {window} failed: {error}"
            ) from error
        missing = [c for c in ("hour", "host", "power_avg_w") if c not in usage.columns]
        if missing:
            raise CollectorError(
                self.name, f"the gpu_usage frame handed in lacks {', '.join(missing)}"
            )
        if "seconds_observed" not in usage.columns:
            usage = usage.with_columns(pl.lit(None, pl.Float64).alias("seconds_observed"))
        if "gpu_uuid" not in usage.columns:
            usage = usage.with_columns(pl.lit(None, pl.String).alias("gpu_uuid"))
        return measured_gpu_watts(usage, self.settings.servers)

    def _record(
        self,
        server: OnPremServer,
        hour: datetime,
        cost: HourCost,
        tags: str | None,
        ingested_at: datetime,
    ) -> dict[str, Any]:
        price = server.power_price_per_kwh or self.settings.power_price_per_kwh
        pue = server.pue or self.settings.pue
        basis = (
            f"measured GPU power + {server.overhead_watts:f} W overhead"
            if cost.measured
            else "nameplate power"
        )
        description = (
            f"depreciation {cost.depreciation:f} + opex {cost.opex:f} + power {cost.power:f} "
            f"({cost.watts:f} W {basis}, PUE {pue:f}, {price:f} {self.settings.currency}/kWh)"
        )
        month_start = hour.replace(day=1, hour=0)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        return {
            "ChargePeriodStart": hour,
            "ChargePeriodEnd": hour + timedelta(hours=1),
            "BillingPeriodStart": month_start,
            "BillingPeriodEnd": next_month,
            "ChargeCategory": "Usage",
            "ChargeFrequency": "Recurring",
            "ChargeDescription": description,
            "BilledCost": cost.total,
            "EffectiveCost": cost.total,
            "BillingCurrency": self.settings.currency,
            "ConsumedQuantity": Decimal(1),
            "ConsumedUnit": "Hours",
            "PricingQuantity": Decimal(1),
            "PricingUnit": "Hours",
            "ProviderName": PROVIDER_NAME,
            "ServiceProviderName": PROVIDER_NAME,
            "HostProviderName": PROVIDER_NAME,
            "ServiceName": "GPU servers",
            "ServiceCategory": "Compute",
            "ResourceId": server.host,
            "ResourceName": server.host,
            "ResourceType": "GPU server",
            "RegionId": server.site,
            "SkuId": SKU_ID,
            "Tags": tags,
            "x_InstanceType": server.instance_type,
            "x_GpuModel": server.gpu_model,
            "x_GpuHours": Decimal(server.gpu_count),
            "x_Source": self.name,
            "x_IngestedAt": ingested_at,
        }

    def _frame(self, records: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
        if not records:
            return BILLING.empty()
        schema = {name: BILLING.schema[name] for name in records[0]}
        return BILLING.conform(pl.DataFrame(records, schema=schema), self.name)


def _hours(window: Window) -> list[datetime]:
    """Every UTC hour of the window."""
    start = window.start_time
    count = int((window.end_time - start).total_seconds() // 3600)
    return [start + timedelta(hours=offset) for offset in range(count)]
