"""``gcp-catalog``: Compute Engine GPU list prices from the Cloud Billing catalog into ``prices``.

The catalog (``cloudbilling.googleapis.com``, ``CloudCatalogClient``) returns list prices per
SKU, never costs; costs come from the billing export (``gcp-bigquery``). Right-sizing and
on-demand comparisons read the per-GPU-hour prices written here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import polars as pl
from pydantic import Field

from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.gcp_common import (
    COMPUTE_ENGINE_DISPLAY_NAME,
    client_options,
    describe_google_error,
    gpu_sku,
    money_to_decimal,
    transient_retry,
)
from gpucost.core.contracts import MONEY, PRICES
from gpucost.core.errors import CollectorError, MissingDependencyError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

PROVIDER = "gcp"
USAGE_TYPE_COLUMN = "usage_type"
"""Kept in prices once the contract declares it; until then only ``usage_types`` are kept."""
SKU_PAGE_SIZE = 5000
"""SKUs asked for per page: the most ``services.skus.list`` returns (its ``pageSize``)."""
RETRY_INITIAL_DELAY_S = 1.0
"""First pause before retrying a transient failure (then doubling, see ``transient_retry``)."""


class GcpCatalogSettings(SourceSettings):
    """Settings of a ``gcp-catalog`` source."""

    service: str = Field(
        default=COMPUTE_ENGINE_DISPLAY_NAME,
        description="Catalog service whose SKUs are listed, by display name.",
    )
    currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code prices are listed in."
    )
    usage_types: list[str] = Field(
        default_factory=lambda: ["OnDemand"],
        description="SKU category usage types kept (OnDemand, Preemptible, Commit1Yr, ...).",
    )
    regions: list[str] = Field(
        default_factory=list, description="Keep only these regions; empty keeps every region."
    )
    machine_types: bool = Field(
        default=True, description="Also keep vCPU/RAM SKUs of GPU machine families (A2, A3, G2)."
    )
    retry_deadline_s: float = Field(
        default=120.0, gt=0, description="Give up retrying a transient API failure after this."
    )
    api_endpoint: str | None = Field(
        default=None, description="Cloud Billing API endpoint override (Private Service Connect)."
    )


@dataclass(frozen=True)
class PriceRow:
    """One price tier of one SKU in one region (a ``prices`` row before the frame)."""

    sku_id: str
    description: str
    region: str | None
    gpu_model: str | None
    machine_type: str | None
    unit: str
    start_usage_amount: Decimal
    unit_price: Decimal
    currency: str
    usage_type: str


@register("gcp-catalog")
class GcpCatalog:
    """Lists Compute Engine SKUs from the Cloud Billing catalog and keeps GPU list prices.

    Keeps GPU SKUs ("Nvidia Tesla A100 GPU running in Americas": gpu_model A100, per hour) and,
    unless ``machine_types = false``, the vCPU and RAM SKUs of GPU machine families ("A2
    Instance Core running in Americas": machine_type a2). One row per SKU, region and price
    tier; ``units`` + ``nanos`` become an exact Decimal (units=2, nanos=933908000 is 2.933908).
    Prices are today's list prices, stamped on the window's last day.

    Needs the Cloud Billing API enabled in the credentials' project; listing the public
    catalog needs no billing-account role. Credentials are Application Default Credentials.

    ```toml
    [[sources]]
    name = "gcp-prices"
    kind = "gcp-catalog"
    service = "Compute Engine"   # catalog service, by display name
    currency = "USD"
    usage_types = ["OnDemand"]   # also: "Preemptible", "Commit1Yr", "Commit3Yr"
    regions = []                 # e.g. ["us-central1", "europe-west4"]; empty keeps all
    machine_types = true         # keep A2/A3/A4/G2/G4 vCPU and RAM SKUs too
    schedule = "30 4 * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("prices",)
    Settings: ClassVar[type[SourceSettings]] = GcpCatalogSettings

    def __init__(self, settings: GcpCatalogSettings, context: CollectorContext) -> None:
        """The client is created at each collection, from the context's credentials."""
        self.settings, self.context, self.name = settings, context, settings.name

    def collect(self, window: Window) -> Collected:
        """List the service's SKUs and return their GPU prices, stamped on the window's last day."""
        try:
            from google.api_core import exceptions as google_exceptions
            from google.cloud import billing_v1
        except ImportError as error:
            raise MissingDependencyError(
                "google-cloud-billing", "the gcp-catalog collector"
            ) from error
        settings = self.settings
        client = billing_v1.CloudCatalogClient(
            transport="rest",
            credentials=self.context.google_credentials(),
            client_options=client_options(settings.api_endpoint),
        )
        retry = transient_retry(settings.retry_deadline_s, RETRY_INITIAL_DELAY_S)
        service_name, service_pages = self._find_service(client, retry, google_exceptions)
        skus: list[Any] = []
        page_number = 0
        try:
            pager = client.list_skus(
                request={
                    "parent": service_name,
                    "currency_code": settings.currency,
                    "page_size": SKU_PAGE_SIZE,
                },
                retry=retry,
            )
            for page in pager.pages:
                page_number += 1
                skus.extend(page.skus)
        except google_exceptions.GoogleAPIError as error:
            raise CollectorError(
                self.name,
                f"listing SKUs of {settings.service} ({service_name}) failed on page "
                f"{page_number + 1} after {len(skus)} SKUs: {describe_google_error(error)}",
            ) from error
        if not skus:
            raise CollectorError(self.name, f"the catalog lists no SKU for {service_name}")
        rows = price_rows(
            skus,
            usage_types=settings.usage_types,
            regions=settings.regions,
            machine_types=settings.machine_types,
        )
        day = window.end - timedelta(days=1)
        prices = prices_frame(rows, day=day, source=self.name)
        notes: dict[str, Any] = {
            "service": f"{settings.service} ({service_name})",
            "service_pages": service_pages,
            "sku_pages": page_number,
            "skus_listed": len(skus),
            "skus_kept": len({row.sku_id for row in rows}),
            "price_day": day.isoformat(),
            "gpu_models": sorted({row.gpu_model for row in rows if row.gpu_model}),
        }
        return Collected({"prices": prices}, notes=notes)

    def _find_service(self, client: Any, retry: Any, google_exceptions: Any) -> tuple[str, int]:
        """The service's resource name (``services/6F81-5844-456A``) and the pages read."""
        pages = 0
        seen = 0
        try:
            for pages, page in enumerate(client.list_services(retry=retry).pages, start=1):
                for service in page.services:
                    seen += 1
                    if service.display_name == self.settings.service:
                        return str(service.name), pages
        except google_exceptions.GoogleAPIError as error:
            raise CollectorError(
                self.name, f"listing catalog services failed: {describe_google_error(error)}"
            ) from error
        raise CollectorError(
            self.name,
            f"no catalog service is named {self.settings.service!r} ({seen} services listed)",
        )


def _latest_pricing(sku: Any) -> Any | None:
    infos = list(sku.pricing_info)
    if not infos:
        return None
    # Without a time range the API returns the current price only; with several versions the
    # latest effective one is today's.
    return max(infos, key=_effective_seconds)


def _effective_seconds(info: Any) -> float:
    effective = info.effective_time
    return float(effective.timestamp()) if effective else 0.0


def price_rows(
    skus: Iterable[Any],
    *,
    usage_types: Sequence[str] = ("OnDemand",),
    regions: Sequence[str] = (),
    machine_types: bool = True,
) -> list[PriceRow]:
    """Price rows of the GPU (and GPU machine-type) SKUs among ``skus`` (pure).

    ``skus`` are ``google.cloud.billing_v1.Sku`` messages (or anything with the same fields).
    """
    rows: list[PriceRow] = []
    wanted_regions = set(regions)
    for sku in skus:
        category = sku.category
        if usage_types and category.usage_type not in usage_types:
            continue
        gpu = gpu_sku(sku.description)
        is_gpu = gpu.model is not None or category.resource_group == "GPU"
        is_machine = machine_types and gpu.machine_family is not None
        if not (is_gpu or is_machine):
            continue
        pricing = _latest_pricing(sku)
        if pricing is None:
            continue
        expression = pricing.pricing_expression
        sku_regions = list(sku.service_regions) or [None]
        for region in sku_regions:
            if wanted_regions and region not in wanted_regions:
                continue
            for tier in expression.tiered_rates:
                price = tier.unit_price
                rows.append(
                    PriceRow(
                        sku_id=str(sku.sku_id),
                        description=str(sku.description),
                        region=region,
                        gpu_model=gpu.model,
                        machine_type=gpu.machine_family,
                        unit=str(expression.usage_unit),
                        # A double in the API; repr() is the shortest text that reads back
                        # as the same double, i.e. the decimal Google wrote (0, 1024...).
                        start_usage_amount=Decimal(repr(float(tier.start_usage_amount))),
                        unit_price=money_to_decimal(price.units, price.nanos),
                        currency=str(price.currency_code),
                        usage_type=str(category.usage_type),
                    )
                )
    return rows


def prices_frame(rows: Sequence[PriceRow], *, day: date, source: str) -> pl.DataFrame:
    """The ``prices`` table for ``rows``, stamped on ``day``."""
    if not rows:
        return PRICES.empty()
    frame = pl.DataFrame(
        {
            "day": [day] * len(rows),
            "provider": [PROVIDER] * len(rows),
            "sku_id": [row.sku_id for row in rows],
            "description": [row.description for row in rows],
            "region": [row.region for row in rows],
            "gpu_model": [row.gpu_model for row in rows],
            "machine_type": [row.machine_type for row in rows],
            "unit": [row.unit for row in rows],
            "start_usage_amount": pl.Series([row.start_usage_amount for row in rows], dtype=MONEY),
            "unit_price": pl.Series([row.unit_price for row in rows], dtype=MONEY),
            "currency": [row.currency for row in rows],
            "source": [source] * len(rows),
        },
        schema_overrides={"region": pl.String, "gpu_model": pl.String, "machine_type": pl.String},
    )
    if USAGE_TYPE_COLUMN in PRICES.schema:  # pragma: no cover - once the contract has it
        frame = frame.with_columns(pl.Series(USAGE_TYPE_COLUMN, [row.usage_type for row in rows]))
    return PRICES.conform(frame, source)
