"""A fake of the Cloud Billing catalog REST API (``cloudbilling.googleapis.com/v1``).

* ``GET /v1/services``                 services.list, paged with ``nextPageToken``
* ``GET /v1/services/{id}/skus``       services.skus.list, paged with ``nextPageToken``

google-cloud-billing's REST transport asks for ``$alt=json;enum-encoding=int``, so enum fields
(``geoTaxonomy.type``, ``aggregationInfo.aggregationLevel``...) are answered as integers, the
way the real API answers that request; recorded payloads written with enum names are
converted on the way out.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.gcp_server import JsonFake, Request, Response, google_error

# google/cloud/billing/v1/cloud_catalog.proto enum numbers.
GEO_TAXONOMY_TYPES = {"TYPE_UNSPECIFIED": 0, "GLOBAL": 1, "REGIONAL": 2, "MULTI_REGIONAL": 3}
AGGREGATION_LEVELS = {"AGGREGATION_LEVEL_UNSPECIFIED": 0, "ACCOUNT": 1, "PROJECT": 2}
AGGREGATION_INTERVALS = {"AGGREGATION_INTERVAL_UNSPECIFIED": 0, "DAILY": 1, "MONTHLY": 2}


def with_enum_numbers(sku: dict[str, Any]) -> dict[str, Any]:
    """A SKU payload with its enum names replaced by their numbers (enum-encoding=int)."""
    sku = copy.deepcopy(sku)
    geo = sku.get("geoTaxonomy")
    if geo and isinstance(geo.get("type"), str):
        geo["type"] = GEO_TAXONOMY_TYPES[geo["type"]]
    for info in sku.get("pricingInfo", []):
        aggregation = info.get("aggregationInfo")
        if aggregation:
            if isinstance(aggregation.get("aggregationLevel"), str):
                aggregation["aggregationLevel"] = AGGREGATION_LEVELS[
                    aggregation["aggregationLevel"]
                ]
            if isinstance(aggregation.get("aggregationInterval"), str):
                aggregation["aggregationInterval"] = AGGREGATION_INTERVALS[
                    aggregation["aggregationInterval"]
                ]
    return sku


@dataclass
class FakeCatalog(JsonFake):
    """Serves ``services`` in pages of ``service_page_size`` and each service's SKU pages.

    ``sku_pages`` maps a service id to its list of pages (lists of SKU payloads).
    ``fail_sku_page`` (1-based) answers that page with ``fail_status`` ``fail_times`` times
    (``None``: every time).
    """

    services: list[dict[str, Any]] = field(default_factory=list)
    service_page_size: int = 2
    sku_pages: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    fail_sku_page: int | None = None
    fail_status: int = 500
    fail_times: int | None = None
    failures: int = 0

    def route(self, request: Request) -> Response:
        """Dispatch on the REST path."""
        if request.method != "GET":
            return google_error(404, "notFound", f"no route {request.method} {request.path}")
        if request.path == "/v1/services":
            return self._list_services(request)
        if match := re.fullmatch(r"/v1/services/([^/]+)/skus", request.path):
            return self._list_skus(match.group(1), request)
        return google_error(404, "notFound", f"no route {request.path}")

    def _list_services(self, request: Request) -> Response:
        start = int(request.query.get("pageToken", ["0"])[0] or 0)
        page = self.services[start : start + self.service_page_size]
        body: dict[str, Any] = {"services": page}
        if start + self.service_page_size < len(self.services):
            body["nextPageToken"] = str(start + self.service_page_size)
        return Response(200, body)

    def _list_skus(self, service_id: str, request: Request) -> Response:
        pages = self.sku_pages.get(service_id)
        if pages is None:
            return google_error(404, "notFound", f"Service services/{service_id} not found")
        token = request.query.get("pageToken", [""])[0]
        index = int(token.removeprefix("page-")) if token else 0
        if self.fail_sku_page == index + 1 and (
            self.fail_times is None or self.failures < self.fail_times
        ):
            self.failures += 1
            return google_error(self.fail_status, "backendError", "Internal error encountered.")
        body: dict[str, Any] = {"skus": [with_enum_numbers(sku) for sku in pages[index]]}
        # The real API ends with an empty nextPageToken rather than leaving it out.
        body["nextPageToken"] = f"page-{index + 1}" if index + 1 < len(pages) else ""
        return Response(200, body)

    @property
    def sku_requests(self) -> list[Request]:
        """The skus.list requests received."""
        return [r for r in self.requests if r.path.endswith("/skus")]
