"""onprem: owned GPU servers as hourly billing rows, with the arithmetic written out."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import polars as pl
import pytest

from gpucost.collector.base import CollectorContext, get_spec
from gpucost.collector.onprem import (
    HOURS_PER_MONTH,
    OnPrem,
    OnPremServer,
    OnPremSettings,
    depreciation_end,
    hour_cost,
)
from gpucost.config import validate_config
from gpucost.core.contracts import BILLING, GPU_USAGE
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window
from tests.collector.builders import build_collector

WINDOW = Window(date(2024, 9, 17), date(2024, 9, 19))  # 48 hours
INGESTED = datetime(2024, 9, 19, 5, tzinfo=UTC)
PRICE_PER_KWH = Decimal("0.12")
PUE = Decimal("1.4")


def hour(day: int, hour_of_day: int) -> datetime:
    """A UTC hour of September 2024."""
    return datetime(2024, 9, day, hour_of_day, tzinfo=UTC)


DGX = OnPremServer(
    host="gpu-node-01",
    gpu_count=8,
    gpu_model="A100-80GB",
    instance_type="dgx-a100",
    purchase_price=Decimal("262800.00"),
    purchase_date=date(2023, 1, 1),
    depreciation_months=36,
    opex_monthly=Decimal("730.00"),
    nameplate_watts=Decimal(6500),
    overhead_watts=Decimal(1500),
    site="fra-dc1",
    tags={"team": "vision"},
)
OLD = OnPremServer(  # bought 2020-01-01: 36 x 730 h = 1095 days later (2022-12-31) written off
    host="gpu-node-02",
    gpu_count=4,
    gpu_model="L4",
    purchase_price=Decimal("40000"),
    purchase_date=date(2020, 1, 1),
    depreciation_months=36,
    opex_monthly=Decimal("365"),
    nameplate_watts=Decimal(1200),
)
ENDING = OnPremServer(  # 2021-09-19 + 1095 days = 2024-09-18 00:00 UTC: ends inside the window
    host="gpu-node-03",
    gpu_count=8,
    gpu_model="H100-80GB",
    purchase_price=Decimal("240000"),
    purchase_date=date(2021, 9, 19),
    depreciation_months=36,
    nameplate_watts=Decimal(10200),
    pue=Decimal("1.2"),
)


def gpu_usage_rows() -> pl.DataFrame:
    """gpu_usage rows for gpu-node-01 in three hours, as the metrics collectors land them.

    10:00 - 8 GPUs at 250 W; GPU 0 ran two workloads (1800 s at 300 W, 1800 s at 200 W).
    11:00 - only 6 GPUs reported, at 250 W.
    12:00 - GPU 0 split into 3 MIG slices (3 uuids, one gpu_index) each reporting 250 W.
    """
    rows: list[dict[str, Any]] = []

    def add(at: datetime, index: int, uuid: str, watts: float, seconds: float) -> None:
        rows.append(
            {
                "hour": at,
                "host": "gpu-node-01",
                "gpu_uuid": uuid,
                "gpu_index": index,
                "gpu_model": "NVIDIA A100-SXM4-80GB",
                "seconds_observed": seconds,
                "power_avg_w": watts,
                "source": "dcgm",
            }
        )

    add(hour(17, 10), 0, "GPU-0", 300.0, 1800.0)
    add(hour(17, 10), 0, "GPU-0", 200.0, 1800.0)
    for index in range(1, 8):
        add(hour(17, 10), index, f"GPU-{index}", 250.0, 3600.0)
    for index in range(6):
        add(hour(17, 11), index, f"GPU-{index}", 250.0, 3600.0)
    for slice_number in range(3):
        add(hour(17, 12), 0, f"MIG-0-{slice_number}", 250.0, 3600.0)
    for index in range(1, 8):
        add(hour(17, 12), index, f"GPU-{index}", 250.0, 3600.0)
    add(hour(17, 13), 0, "GPU-0", None, 3600.0)  # type: ignore[arg-type]  # no power: nameplate
    return GPU_USAGE.conform(pl.DataFrame(rows, schema_overrides={"gpu_index": pl.Int32}), "dcgm")


def collector(
    power_reader: Callable[[Window], pl.LazyFrame] | None = None,
    servers: Sequence[OnPremServer] = (DGX, OLD, ENDING),
    **keys: Any,
) -> OnPrem:
    """The servers (default: the three above), $0.12/kWh, PUE 1.4; ``power_reader`` answers
    the shell's gpu_usage reads."""

    def table_reader(table: str, window: Window) -> pl.LazyFrame:
        assert power_reader is not None and table == "gpu_usage"
        return power_reader(window)

    context = CollectorContext(
        clock=lambda: INGESTED, table_reader=table_reader if power_reader else None
    )
    keys = {"power_price_per_kwh": PRICE_PER_KWH, "pue": PUE, **keys}
    return build_collector(OnPrem, context, name="onprem", servers=list(servers), **keys)


def test_an_8_gpu_host_costs_depreciation_plus_opex_plus_power() -> None:
    readers: list[Window] = []

    def power_reader(window: Window) -> pl.LazyFrame:
        readers.append(window)
        return gpu_usage_rows().lazy()

    collected = collector(power_reader=power_reader).collect(WINDOW)
    billing = collected.frames["billing"]
    BILLING.validate(billing, "onprem")
    assert readers == [WINDOW]
    assert billing.height == 3 * 48
    dgx = billing.filter(ResourceId="gpu-node-01").sort("ChargePeriodStart")

    # Depreciation: 262800.00 / (36 months x 730 h) = 262800 / 26280 = 10 per hour.
    # Opex: 730.00 / 730 h = 1 per hour.
    # Measured hour 10:00: GPU 0 = (300 x 1800 + 200 x 1800) / 3600 = 250 W; 8 x 250 W = 2000 W
    #   GPU + 1500 W overhead = 3500 W; 3500 W x 1 h x PUE 1.4 / 1000 = 4.9 kWh x 0.12 = 0.588.
    #   Total 10 + 1 + 0.588 = 11.588.
    # Nameplate hour: 6500 W x 1.4 / 1000 = 9.1 kWh x 0.12 = 1.092; total 12.092.
    depreciation = Decimal("262800.00") / (36 * HOURS_PER_MONTH)
    opex = Decimal("730.00") / HOURS_PER_MONTH
    measured_power = (8 * 250 + 1500) * PUE / 1000 * PRICE_PER_KWH
    nameplate_power = 6500 * PUE / 1000 * PRICE_PER_KWH
    assert (depreciation, opex, measured_power, nameplate_power) == (
        Decimal(10),
        Decimal(1),
        Decimal("0.588"),
        Decimal("1.092"),
    )
    costs = dict(zip(dgx["ChargePeriodStart"], dgx["EffectiveCost"], strict=True))
    assert costs[hour(17, 10)] == depreciation + opex + measured_power == Decimal("11.588")
    # 11:00: 6 of 8 GPUs reported 250 W; the 2 missing count at the mean: 2000 W again.
    assert costs[hour(17, 11)] == Decimal("11.588")
    # 12:00: three MIG slices of GPU 0 are one GPU (one gpu_index), not 3 x 250 W.
    assert costs[hour(17, 12)] == Decimal("11.588")
    # 13:00 (no power value) and every other hour: nameplate.
    assert costs[hour(17, 13)] == depreciation + opex + nameplate_power == Decimal("12.092")
    assert costs[hour(18, 23)] == Decimal("12.092")
    assert dgx["BilledCost"].to_list() == dgx["EffectiveCost"].to_list()
    assert dgx["EffectiveCost"].sum() == 3 * Decimal("11.588") + 45 * Decimal("12.092")

    first = dgx.row(10, named=True)
    assert first["ChargePeriodStart"] == hour(17, 10)
    assert first["ChargePeriodEnd"] == hour(17, 11)
    assert first["ChargeCategory"] == "Usage"
    assert first["ProviderName"] == "On-premises"
    assert first["x_Source"] == "onprem"
    assert first["x_GpuModel"] == "A100-80GB"
    assert first["x_GpuHours"] == 8
    assert first["x_InstanceType"] == "dgx-a100"
    assert first["RegionId"] == "fra-dc1"
    assert first["Tags"] == '{"team":"vision"}'
    assert first["BillingCurrency"] == "USD"
    assert first["ChargeDescription"] == (
        "depreciation 10.000000000000000000 + opex 1.000000000000000000 + power "
        "0.588000000000000000 (3500.000 W measured GPU power + 1500 W overhead, PUE 1.4, "
        "0.12 USD/kWh)"
    )
    assert collected.notes["hours_measured_power"] == 3
    assert collected.notes["hours_nameplate_power"] == 3 * 48 - 3


def test_past_depreciation_only_opex_and_power() -> None:
    billing = collector().collect(WINDOW).frames["billing"]
    old = billing.filter(ResourceId="gpu-node-02")
    # Written off on 2022-12-31: 365 / 730 = 0.5 opex + 1200 W x 1.4 / 1000 x 0.12 = 0.2016.
    assert old["EffectiveCost"].unique().to_list() == [Decimal("0.7016")]
    assert old["ChargeDescription"][0].startswith("depreciation 0 + opex 0.5")
    assert depreciation_end(OLD) == datetime(2022, 12, 31, tzinfo=UTC)


def test_depreciation_ends_after_months_times_730_hours() -> None:
    billing = collector().collect(WINDOW).frames["billing"]
    ending = billing.filter(ResourceId="gpu-node-03").sort("ChargePeriodStart")
    # 36 x 730 h = 26280 h = 1095 days after 2021-09-19: 2024-09-18 00:00 UTC (a calendar
    # 36 months would run a day longer, to 2024-09-19, because 2024 is a leap year).
    assert depreciation_end(ENDING) == datetime(2024, 9, 18, tzinfo=UTC)
    # 240000 / 26280 = 9.13242009132420091324… -> 9.132420091324200913 (half-even, 18 places).
    hourly = (Decimal(240000) / 26280).quantize(Decimal("1e-18"), rounding=ROUND_HALF_EVEN)
    assert hourly == Decimal("9.132420091324200913")
    # Power at this server's own PUE 1.2: 10200 W x 1.2 / 1000 x 0.12 = 1.4688.
    power = Decimal("1.4688")
    by_day = ending.group_by(pl.col("ChargePeriodStart").dt.date()).agg(
        pl.col("EffectiveCost").unique()
    )
    assert dict(by_day.iter_rows()) == {
        date(2024, 9, 17): [hourly + power],
        date(2024, 9, 18): [power],
    }


def test_service_starts_and_retires_at_midnight_utc() -> None:
    new = DGX.model_copy(update={"host": "new", "purchase_date": date(2024, 9, 18)})
    retired = DGX.model_copy(
        update={
            "host": "retired",
            "purchase_date": date(2022, 1, 1),
            "retired_date": date(2024, 9, 18),
        }
    )
    billing = collector(servers=[new, retired], pue=Decimal(1)).collect(WINDOW).frames["billing"]
    spans = billing.group_by("ResourceId").agg(
        pl.col("ChargePeriodStart").min().alias("first"), pl.len().alias("hours")
    )
    assert sorted(spans.iter_rows()) == [
        ("new", hour(18, 0), 24),
        ("retired", hour(17, 0), 24),
    ]


def test_hour_cost_rounds_each_component_half_even() -> None:
    server = OLD.model_copy(
        update={
            "purchase_date": date(2024, 9, 17),
            "purchase_price": Decimal("1"),
            "depreciation_months": 1,
            "opex_monthly": Decimal("2"),
        }
    )
    cost = hour_cost(
        server,
        hour(17, 0),
        power_price_per_kwh=Decimal("0.3"),
        pue=Decimal(1),
        measured_gpu_watts=Decimal("0.001"),
    )
    # 1 / 730 = 0.00136986301369863013698… -> 0.001369863013698630 (18 places)
    # 2 / 730 = 0.00273972602739726027397… -> 0.002739726027397260
    # 0.001 W x 1 / 1000 x 0.3 = 0.0000003
    assert cost.depreciation == Decimal("0.001369863013698630")
    assert cost.opex == Decimal("0.002739726027397260")
    assert cost.power == Decimal("0.0000003")
    assert cost.total == Decimal("0.004109589041095890") + Decimal("0.0000003")
    small = collector(servers=[server], power_price_per_kwh=Decimal("0.3"), pue=Decimal(1))
    description = small.collect(Window(date(2024, 9, 17), date(2024, 9, 18))).frames["billing"][
        "ChargeDescription"
    ][0]
    assert "E-" not in description  # fixed-point text, never exponents


def test_a_failing_power_reader_is_named() -> None:
    def broken(window: Window) -> pl.LazyFrame:
        raise OSError("lake unreachable")

    with pytest.raises(CollectorError, match=r"reading measured GPU power .* lake unreachable"):
        collector(power_reader=broken).collect(WINDOW)


def test_settings_refuse_bad_servers() -> None:
    base: dict[str, Any] = {
        "name": "onprem",
        "kind": "onprem",
        "power_price_per_kwh": "0.1",
        "servers": [
            {
                "host": "a",
                "gpu_count": 8,
                "gpu_model": "A100",
                "purchase_price": 1,
                "purchase_date": date(2023, 1, 1),
                "depreciation_months": 36,
                "nameplate_watts": 6500,
            }
        ],
    }
    OnPremSettings.model_validate(base)
    with pytest.raises(ValueError, match="servers declared twice: a"):
        OnPremSettings.model_validate({**base, "servers": base["servers"] * 2})
    with pytest.raises(ValueError, match="retired_date must be after purchase_date"):
        OnPremSettings.model_validate(
            {**base, "servers": [{**base["servers"][0], "retired_date": date(2022, 1, 1)}]}
        )


def test_docstring_example_builds_and_hands_in_the_lake_reader() -> None:
    spec = get_spec("onprem")
    example = re.search(r"```toml\n(.*?)```", spec.doc, re.S)
    assert example is not None
    settings = validate_config(tomllib.loads(example.group(1))).sources[0]
    assert isinstance(settings, OnPremSettings)
    assert settings.servers[0].purchase_price == Decimal("262800.00")

    # Without a lake reader in the context: nameplate power, said so in the notes.
    plain = spec.build(settings, CollectorContext(clock=lambda: INGESTED))
    day = Window(date(2024, 9, 17), date(2024, 9, 18))
    notes = plain.collect(day).notes
    assert notes["power_source"].startswith("nameplate")

    # With one (the shell's CollectorContext.table_reader), gpu_usage is read.
    asked: list[tuple[str, Window]] = []

    def table_reader(table: str, window: Window) -> pl.LazyFrame:
        asked.append((table, window))
        return gpu_usage_rows().lazy()

    context = CollectorContext(table_reader=table_reader, clock=lambda: INGESTED)
    measured = spec.build(settings, context).collect(day)
    assert asked == [("gpu_usage", day)]
    assert measured.notes["hours_measured_power"] == 3
    row = measured.frames["billing"].filter(ChargePeriodStart=hour(17, 10)).row(0, named=True)
    assert row["EffectiveCost"] == Decimal("11.588")
    assert row["ChargePeriodStart"] + timedelta(hours=1) == row["ChargePeriodEnd"]
