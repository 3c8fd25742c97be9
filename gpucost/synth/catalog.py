"""The GPU models, machine types and prices synth builds and bills, read from ``catalog.toml``.

The data file beside this module holds every number that comes from outside (a price list, a
data sheet, a real scrape) with the source it was read from; this module only types it. Prices
are strings in the file and :class:`~decimal.Decimal` here, so they stay exact.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Final

CATALOG_FILE: Final = "catalog.toml"

AWS: Final = "AWS"
GCP: Final = "Google Cloud"
ONPREM: Final = "On-Prem"
PROVIDERS: Final = (AWS, GCP, ONPREM)
REQUIRED_RATES: Final = ("savings_plan_discount", "support", "credit_per_8_gpus_usd")


class CatalogError(ValueError):
    """``catalog.toml`` lacks a value, has one of the wrong type or names an unknown entry."""


@dataclass(frozen=True)
class GpuModel:
    """A GPU model as dcgm-exporter reports it."""

    model_name: str
    """``modelName`` label (dcgm-exporter) and ``gpu_model`` column."""
    family: str
    fb_total_mib: int
    """FB_USED + FB_FREE of an idle GPU (nvidia-smi's total minus the driver's reservation)."""
    idle_power_w: int
    max_power_w: int
    idle_sm_clock_mhz: int
    max_sm_clock_mhz: int


@dataclass(frozen=True)
class InstanceType:
    """A machine type: its GPUs, vCPUs and on-demand price."""

    name: str
    provider: str
    gpu: GpuModel | None
    gpu_count: int
    gpu_mem_mib: int
    """Memory per GPU as the provider's API reports it (EC2 DescribeInstanceTypes GpuInfo)."""
    vcpus: int
    hourly_price: Decimal | None
    region: str
    region_name: str
    zone: str
    tz_offset_h: int
    """Local time of the users, for the day curves (US East -4, US Central -5, San Jose -7)."""
    pci_bus_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Charge:
    """A usage-priced service (storage per GB-month, data per GB, a gateway per hour)."""

    provider: str
    service: str
    """FOCUS ServiceName."""
    service_category: str
    description: str
    """FOCUS ChargeDescription, worded as the provider's own export words it."""
    unit: str
    unit_price: Decimal
    resource_type: str | None


Table = Mapping[str, object]


def _table(parent: Table, key: str) -> Table:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise CatalogError(f"{CATALOG_FILE}: [{key}] must be a table")
    return value


def _text(table: Table, key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise CatalogError(f"{CATALOG_FILE}: {where}.{key} must be a non-empty string")
    return value


def _integer(table: Table, key: str, where: str, default: int | None = None) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CatalogError(f"{CATALOG_FILE}: {where}.{key} must be an integer")
    return value


def _provider(table: Table, where: str) -> str:
    provider = _text(table, "provider", where)
    if provider not in PROVIDERS:
        raise CatalogError(f"{CATALOG_FILE}: {where}.provider must be one of {PROVIDERS}")
    return provider


def _price(table: Table, key: str, where: str) -> Decimal:
    """A price or rate: a string, because a TOML float would already have lost its exactness."""
    return Decimal(_text(table, key, where))


def _sourced(table: Table, where: str, sources: Table) -> Table:
    """The table, once its ``source`` names an entry of ``[sources]``."""
    source = _text(table, "source", where)
    if source not in sources:
        raise CatalogError(f"{CATALOG_FILE}: {where}.source {source!r} is not in [sources]")
    return table


def _entries(catalog: Table, section: str, sources: Table) -> Iterator[tuple[str, str, Table]]:
    """(key, where, table) of every ``[section.key]`` table, each naming a known source."""
    tables = _table(catalog, section)
    for key in tables:
        where = f"{section}.{key}"
        yield key, where, _sourced(_table(tables, key), where, sources)


def _gpu_model(entry: Table, where: str) -> GpuModel:
    return GpuModel(
        model_name=_text(entry, "model_name", where),
        family=_text(entry, "family", where),
        fb_total_mib=_integer(entry, "fb_total_mib", where),
        idle_power_w=_integer(entry, "idle_power_w", where),
        max_power_w=_integer(entry, "max_power_w", where),
        idle_sm_clock_mhz=_integer(entry, "idle_sm_clock_mhz", where),
        max_sm_clock_mhz=_integer(entry, "max_sm_clock_mhz", where),
    )


def _instance_type(
    entry: Table, where: str, regions: Table, gpu_models: Mapping[str, GpuModel]
) -> InstanceType:
    provider = _provider(entry, where)
    region_key = _text(entry, "region", where)
    region = _table(regions, region_key)
    gpu_key = entry.get("gpu")
    if gpu_key is not None and gpu_key not in gpu_models:
        raise CatalogError(f"{CATALOG_FILE}: {where}.gpu {gpu_key!r} is not in [gpu_models]")
    bus_ids = entry.get("pci_bus_ids", [])
    if not isinstance(bus_ids, list) or not all(isinstance(b, str) for b in bus_ids):
        raise CatalogError(f"{CATALOG_FILE}: {where}.pci_bus_ids must be a list of strings")
    return InstanceType(
        name=_text(entry, "name", where),
        provider=provider,
        gpu=gpu_models[gpu_key] if isinstance(gpu_key, str) else None,
        gpu_count=_integer(entry, "gpu_count", where, default=0),
        gpu_mem_mib=_integer(entry, "gpu_mem_mib", where, default=0),
        vcpus=_integer(entry, "vcpus", where),
        hourly_price=_price(entry, "usd_per_hour", where) if "usd_per_hour" in entry else None,
        region=region_key,
        region_name=_text(region, "name", f"regions.{region_key}"),
        zone=_text(region, "zone", f"regions.{region_key}"),
        tz_offset_h=_integer(region, "tz_offset_h", f"regions.{region_key}"),
        pci_bus_ids=tuple(bus_ids),
    )


def _instance_types(
    catalog: Table, sources: Table, gpu_models: Mapping[str, GpuModel]
) -> dict[str, InstanceType]:
    entries = catalog.get("instance_types")
    if not isinstance(entries, list):
        raise CatalogError(f"{CATALOG_FILE}: [[instance_types]] must be an array of tables")
    regions = _table(catalog, "regions")
    types: dict[str, InstanceType] = {}
    for number, entry in enumerate(entries):
        where = f"instance_types[{number}]"
        if not isinstance(entry, dict):
            raise CatalogError(f"{CATALOG_FILE}: {where} must be a table")
        itype = _instance_type(_sourced(entry, where, sources), where, regions, gpu_models)
        if len(itype.pci_bus_ids) != itype.gpu_count:
            raise CatalogError(f"{CATALOG_FILE}: {where} needs one PCI bus id per GPU")
        types[itype.name] = itype
    return types


def _charge(entry: Table, where: str) -> Charge:
    return Charge(
        provider=_provider(entry, where),
        service=_text(entry, "service", where),
        service_category=_text(entry, "service_category", where),
        description=_text(entry, "description", where),
        unit=_text(entry, "unit", where),
        unit_price=_price(entry, "usd_per_unit", where),
        resource_type=_text(entry, "resource_type", where) if "resource_type" in entry else None,
    )


@dataclass(frozen=True)
class Catalog:
    """Everything ``catalog.toml`` holds, typed."""

    sources: Mapping[str, str]
    """Where the numbers come from, by the key entries name in their ``source``."""
    gpu_models: Mapping[str, GpuModel]
    instance_types: Mapping[str, InstanceType]
    """By name, in the file's order."""
    charges: Mapping[str, Charge]
    rates: Mapping[str, Decimal]


def parse_catalog(catalog: Table) -> Catalog:
    """Type a parsed catalogue; :class:`CatalogError` names the first bad entry."""
    raw_sources = _table(catalog, "sources")
    sources = {key: _text(raw_sources, key, "sources") for key in raw_sources}
    gpu_models = {
        key: _gpu_model(entry, where)
        for key, where, entry in _entries(catalog, "gpu_models", sources)
    }
    rates = {
        key: _price(entry, "value", where)
        for key, where, entry in _entries(catalog, "rates", sources)
    }
    for key in REQUIRED_RATES:
        if key not in rates:
            raise CatalogError(f"{CATALOG_FILE}: [rates.{key}] is missing")
    return Catalog(
        sources=sources,
        gpu_models=gpu_models,
        instance_types=_instance_types(catalog, sources, gpu_models),
        charges={
            key: _charge(entry, where)
            for key, where, entry in _entries(catalog, "charges", sources)
        },
        rates=rates,
    )


def read_catalog() -> Table:
    """The parsed ``catalog.toml`` shipped with the package (package data, see pyproject)."""
    text = resources.files("gpucost.synth").joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    return tomllib.loads(text)


CATALOG: Final = parse_catalog(read_catalog())
GPU_MODELS: Final = CATALOG.gpu_models
INSTANCE_TYPES: Final = CATALOG.instance_types
CHARGES: Final = CATALOG.charges
SAVINGS_PLAN_DISCOUNT: Final = CATALOG.rates["savings_plan_discount"]
"""Compute Savings Plan rate below on-demand (an assumption, see its source)."""
SUPPORT_RATE: Final = CATALOG.rates["support"]
"""AWS Business Support as a share of the day's AWS charges."""
CREDIT_PER_8_GPUS_USD: Final = CATALOG.rates["credit_per_8_gpus_usd"]
