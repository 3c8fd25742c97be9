"""A small GPU catalog: what a GPU host could run on instead, and at what hourly price.

Right-sizing (``oversized_gpu``) and the advice for a model server stuck on CPUs
(``cpu_misplaced_model_server``) pick the cheapest :class:`GpuOffer` that fits. Offers come from
three places, later ones replacing earlier ones with the same key:

1. :data:`DEFAULT_GPU_CATALOG`: on-demand Linux list prices of common GPU machines;
2. :func:`offers_from_inventory`: every priced GPU instance type the fleet's inventory shows
   (``hourly_list_price``), so a fleet's own prices and regions win;
3. offers the caller builds from configuration.

:func:`with_mig_profiles` adds, for every A100/H100 offer, its MIG profiles priced at their
share of the GPU (``Ng.*`` = N/7 of the GPU-hour, as the allocator weighs MIG slices). A MIG
slice is only a real option where the workload can share a partitioned GPU with others (a
Kubernetes node pool with MIG enabled, an on-prem host); the recommendation says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Final

import polars as pl

from gpucost.reports._common import Frame, divide_money, eager

MIB: Final = 1 << 20
GIB: Final = 1 << 30


@dataclass(frozen=True)
class GpuOffer:
    """A machine (or a MIG slice of one GPU) that can be rented or used, with its price."""

    provider: str
    """FOCUS ``ProviderName`` spelling (``AWS``, ``Google Cloud``, ``On-Prem``)."""
    region: str | None
    """Region the price is for; ``None`` prices it everywhere."""
    instance_type: str
    gpu_model: str
    gpu_count: int
    gpu_mem_bytes: int
    """Memory of one GPU (or of the MIG slice)."""
    hourly_price: Decimal
    """Price of the whole machine (or of the slice) per hour."""
    currency: str = "USD"
    vcpus: int | None = None
    mig_profile: str | None = None
    origin: str = "builtin"
    """``builtin``, ``inventory`` or ``config``: where the price came from."""

    @property
    def hourly_price_per_gpu(self) -> Decimal:
        """Price of one GPU (or slice) per hour."""
        return divide_money(self.hourly_price, self.gpu_count)

    @property
    def key(self) -> tuple[str, str | None, str, str | None]:
        """Offers with the same key replace each other when catalogs are merged."""
        return (self.provider, self.region, self.instance_type, self.mig_profile)

    def describe(self) -> str:
        """``g6.xlarge (1 x NVIDIA L4, 0.8048 USD/h)`` or ``a2-highgpu-1g MIG 2g.10gb (...)``."""
        gpus = f"{self.gpu_count} x {self.gpu_model}"
        if self.mig_profile:
            gpus = f"a {self.mig_profile} slice of {self.gpu_model}"
        return f"{self.instance_type} ({gpus}, {self.hourly_price.normalize():f} {self.currency}/h)"


_AWS, _GCP = "AWS", "Google Cloud"

# On-demand Linux prices, September 2024: AWS us-east-1 from the EC2 On-Demand pricing page,
# Google Cloud us-central1 from the Compute Engine pricing pages (machine and attached GPU
# together). GPU memory per GPU as the providers' APIs report it (EC2 DescribeInstanceTypes
# GpuInfo.MemoryInfo.SizeInMiB; Compute Engine's accelerator pages). The same table as
# gpucost.synth's, so the demo fleet's findings show real numbers.
DEFAULT_GPU_CATALOG: Final[tuple[GpuOffer, ...]] = (
    GpuOffer(_AWS, "us-east-1", "p5.48xlarge", "NVIDIA H100 80GB HBM3", 8, 81920 * MIB,
             Decimal("98.32"), vcpus=192),
    GpuOffer(_AWS, "us-east-1", "p4d.24xlarge", "NVIDIA A100-SXM4-40GB", 8, 40960 * MIB,
             Decimal("32.7726"), vcpus=96),
    GpuOffer(_AWS, "us-east-1", "g6.xlarge", "NVIDIA L4", 1, 22888 * MIB, Decimal("0.8048"),
             vcpus=4),
    GpuOffer(_AWS, "us-east-1", "g4dn.xlarge", "Tesla T4", 1, 16384 * MIB, Decimal("0.526"),
             vcpus=4),
    GpuOffer(_GCP, "us-central1", "a2-highgpu-1g", "NVIDIA A100-SXM4-40GB", 1, 40960 * MIB,
             Decimal("3.673385"), vcpus=12),
    GpuOffer(_GCP, "us-central1", "g2-standard-4", "NVIDIA L4", 1, 24576 * MIB,
             Decimal("0.706832"), vcpus=4),
)  # fmt: skip

MIG_SLICES_PER_GPU: Final = 7
"""A100 and H100 have 7 compute slices; profile ``Ng.XXgb`` owns N of them (NVIDIA MIG user
guide, "Supported MIG Profiles")."""

# Framebuffer of each MIG profile, approximately as ``nvidia-smi mig -lgip`` lists it (NVIDIA
# MIG user guide, "Supported MIG Profiles"); the full-GPU 7g profiles are left out (no saving).
MIG_PROFILES: Final[dict[str, tuple[tuple[str, int], ...]]] = {
    "A100-40GB": (("1g.5gb", 4864 * MIB), ("2g.10gb", 9984 * MIB), ("3g.20gb", 20096 * MIB),
                  ("4g.20gb", 20096 * MIB)),
    "A100-80GB": (("1g.10gb", 9984 * MIB), ("2g.20gb", 20096 * MIB), ("3g.40gb", 40448 * MIB),
                  ("4g.40gb", 40448 * MIB)),
    "H100-80GB": (("1g.10gb", 9984 * MIB), ("1g.20gb", 20096 * MIB), ("2g.20gb", 20096 * MIB),
                  ("3g.40gb", 40448 * MIB), ("4g.40gb", 40448 * MIB)),
}  # fmt: skip


def mig_family(gpu_model: str, gpu_mem_bytes: int) -> str | None:
    """The :data:`MIG_PROFILES` key of a GPU, or None when it has no MIG."""
    name = gpu_model.upper()
    large = gpu_mem_bytes > 48 * GIB
    if "A100" in name:
        return "A100-80GB" if large else "A100-40GB"
    if "H100" in name and large:
        return "H100-80GB"
    return None


def mig_slices(profile: str) -> int:
    """Compute slices of a profile: ``3g.40gb`` -> 3."""
    return int(profile.split("g.", 1)[0])


def with_mig_profiles(offers: Iterable[GpuOffer]) -> list[GpuOffer]:
    """``offers`` plus one offer per MIG profile of each MIG-capable full-GPU offer."""
    result: list[GpuOffer] = []
    for offer in offers:
        result.append(offer)
        family = None if offer.mig_profile else mig_family(offer.gpu_model, offer.gpu_mem_bytes)
        if family is None:
            continue
        per_gpu = offer.hourly_price_per_gpu
        for profile, memory in MIG_PROFILES[family]:
            result.append(
                replace(
                    offer,
                    instance_type=f"{offer.instance_type} MIG {profile}",
                    gpu_count=1,
                    gpu_mem_bytes=memory,
                    hourly_price=divide_money(per_gpu * mig_slices(profile), MIG_SLICES_PER_GPU),
                    mig_profile=profile,
                )
            )
    return result


def offers_from_inventory(inventory: Frame) -> list[GpuOffer]:
    """One offer per priced GPU instance type seen in the inventory (latest price wins)."""
    frame = eager(inventory).filter(
        pl.col("gpu_count") > 0,
        pl.col("hourly_list_price").is_not_null(),
        pl.col("instance_type").is_not_null(),
        pl.col("gpu_model").is_not_null(),
        pl.col("gpu_mem_bytes").is_not_null(),
    )
    latest = (
        frame.sort("day", "resource_id")
        .group_by("provider", "region", "instance_type", maintain_order=True)
        .last()
        .sort("provider", "region", "instance_type", nulls_last=True)
    )
    return [
        GpuOffer(
            provider=row["provider"],
            region=row["region"],
            instance_type=row["instance_type"],
            gpu_model=row["gpu_model"],
            gpu_count=row["gpu_count"],
            gpu_mem_bytes=row["gpu_mem_bytes"],
            hourly_price=row["hourly_list_price"],
            currency=row["currency"] or "USD",
            vcpus=row["vcpus"],
            origin="inventory",
        )
        for row in latest.iter_rows(named=True)
    ]


def merge_catalogs(*catalogs: Iterable[GpuOffer]) -> list[GpuOffer]:
    """Later catalogs replace earlier offers with the same key; sorted for determinism."""
    merged: dict[tuple[str, str | None, str, str | None], GpuOffer] = {}
    for catalog in catalogs:
        for offer in catalog:
            merged[offer.key] = offer
    return sorted(merged.values(), key=_offer_order)


def build_catalog(
    inventory: Frame | None = None, extra: Sequence[GpuOffer] = (), *, mig: bool = True
) -> list[GpuOffer]:
    """The catalog the findings use: defaults, then the inventory's prices, then ``extra``."""
    inventory_offers = offers_from_inventory(inventory) if inventory is not None else []
    merged = merge_catalogs(DEFAULT_GPU_CATALOG, inventory_offers, extra)
    return with_mig_profiles(merged) if mig else merged


def cheapest(
    offers: Iterable[GpuOffer],
    *,
    provider: str,
    region: str | None,
    currency: str,
    min_gpu_mem_bytes: int,
    full_gpus_only: bool = False,
) -> GpuOffer | None:
    """The cheapest offer per GPU of ``provider`` priced in ``region`` that has the memory.

    An offer priced for another region is not comparable and is skipped (an offer without a
    region fits every region; a host without a region accepts every offer of its provider).
    """
    fitting = [
        offer
        for offer in offers
        if offer.provider == provider
        and offer.currency == currency
        and (offer.region is None or region is None or offer.region == region)
        and offer.gpu_mem_bytes >= min_gpu_mem_bytes
        and not (full_gpus_only and offer.mig_profile)
    ]
    if not fitting:
        return None
    return min(fitting, key=lambda offer: (offer.hourly_price_per_gpu, *_offer_order(offer)))


def _offer_order(offer: GpuOffer) -> tuple[str, str, str, str]:
    return (offer.provider, offer.region or "", offer.instance_type, offer.mig_profile or "")
