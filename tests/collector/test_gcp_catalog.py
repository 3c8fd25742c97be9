"""gcp-catalog against the real google-cloud-billing client (REST transport) and a local fake.

Page 1 of Compute Engine's SKUs is a recorded catalog response (OpenCost's test fixture,
Apache-2.0, tests/data/gcp); page 2 adds synthetic SKUs for what that recording lacks (a T4,
a Spot and a commitment SKU, a two-tier price), marked as such below.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from google.auth.credentials import AnonymousCredentials

from gpucost.collector import gcp_catalog
from gpucost.collector.base import CollectorContext, get_spec
from gpucost.collector.gcp_catalog import GcpCatalog, GcpCatalogSettings
from gpucost.collector.gcp_common import money_to_decimal
from gpucost.config import validate_config
from gpucost.core.contracts import PRICES
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window
from tests.collector.builders import build_collector
from tests.fakes.gcp_catalog import FakeCatalog

DATA = Path(__file__).parents[1] / "data" / "gcp"
WINDOW = Window(date(2024, 9, 18), date(2024, 9, 21))
COMPUTE = "6F81-5844-456A"


def service(service_id: str, name: str) -> dict[str, Any]:
    """A services.list entry."""
    return {
        "name": f"services/{service_id}",
        "serviceId": service_id,
        "displayName": name,
        "businessEntityName": "businessEntities/GCP",
    }


def synthetic_sku(
    sku_id: str,
    description: str,
    usage_type: str,
    regions: list[str],
    tiers: list[tuple[float, str, int]],
    group: str = "GPU",
) -> dict[str, Any]:
    """A SKU in the recorded shape; ``tiers`` are (startUsageAmount, units, nanos)."""
    return {
        "name": f"services/{COMPUTE}/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": "Compute",
            "resourceGroup": group,
            "usageType": usage_type,
        },
        "serviceRegions": regions,
        "pricingInfo": [
            {
                "summary": "",
                "pricingExpression": {
                    "usageUnit": "h",
                    "displayQuantity": 1,
                    "tieredRates": [
                        {
                            "startUsageAmount": start,
                            "unitPrice": {"currencyCode": "USD", "units": units, "nanos": nanos},
                        }
                        for start, units, nanos in tiers
                    ],
                    "usageUnitDescription": "hour",
                    "baseUnit": "s",
                    "baseUnitDescription": "second",
                    "baseUnitConversionFactor": 3600,
                },
                "aggregationInfo": {
                    "aggregationLevel": "ACCOUNT",
                    "aggregationInterval": "MONTHLY",
                    "aggregationCount": 1,
                },
                "currencyConversionRate": 1,
                "effectiveTime": "2024-09-01T07:00:00Z",
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {
            "type": "REGIONAL" if len(regions) == 1 else "MULTI_REGIONAL",
            "regions": regions,
        },
    }


# Synthetic (not recorded): T4 at its public $0.35/h list price, its Spot and 1-year
# commitment variants, a CPU SKU of a non-GPU family, and a made-up two-tier L4 price.
SYNTHETIC_PAGE = [
    synthetic_sku(
        "SYN2-T4GP-0001",
        "Nvidia Tesla T4 GPU running in Americas",
        "OnDemand",
        ["us-central1", "us-east1"],
        [(0, "0", 350000000)],
    ),
    synthetic_sku(
        "SYN2-T4SP-0002",
        "Spot Preemptible Nvidia Tesla T4 GPU running in Americas",
        "Preemptible",
        ["us-central1"],
        [(0, "0", 70000000)],
    ),
    synthetic_sku(
        "SYN2-T4CM-0003",
        "Commitment v1: Nvidia Tesla T4 GPU in Americas for 1 Year",
        "Commit1Yr",
        ["us-central1"],
        [(0, "0", 220000000)],
    ),
    synthetic_sku(
        "SYN2-N1CO-0004",
        "N1 Predefined Instance Core running in Americas",
        "OnDemand",
        ["us-central1"],
        [(0, "0", 31611000)],
        group="CPU",
    ),
    synthetic_sku(
        "SYN2-L4TI-0005",
        "Nvidia L4 GPU running in Netherlands",
        "OnDemand",
        ["europe-west4"],
        [(0, "0", 672000000), (730.5, "0", 600000000)],
    ),
]


def recorded_page() -> list[dict[str, Any]]:
    """OpenCost's recorded Compute Engine SKUs (A100 GPU, A2 Ram, A2 Core)."""
    document = json.loads((DATA / "opencost_catalog_skus_a100_a2.json").read_text())
    skus: list[dict[str, Any]] = document["skus"]
    return skus


@pytest.fixture
def fake() -> FakeCatalog:
    """Three services over two pages; Compute Engine's SKUs over two pages."""
    return FakeCatalog(
        services=[
            service("24E6-581D-38E5", "BigQuery"),
            service("95FF-2EF5-5EA1", "Cloud Storage"),
            service(COMPUTE, "Compute Engine"),
        ],
        sku_pages={COMPUTE: [recorded_page(), SYNTHETIC_PAGE]},
    )


@pytest.fixture
def endpoint(fake: FakeCatalog) -> Iterator[str]:
    """The fake's base URL while it serves."""
    with fake.serve() as url:
        yield url


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries of transient failures start after 10 ms, not 1 s."""
    monkeypatch.setattr(gcp_catalog, "RETRY_INITIAL_DELAY_S", 0.01)


def make_collector(endpoint: str, **keys: Any) -> GcpCatalog:
    """The collector, its real CloudCatalogClient (REST) pointed at the fake, anonymously."""
    context = CollectorContext(google_credentials_factory=AnonymousCredentials)
    return build_collector(GcpCatalog, context, name="gcp-prices", api_endpoint=endpoint, **keys)


def test_units_and_nanos_land_exactly(fake: FakeCatalog, endpoint: str) -> None:
    collected = make_collector(endpoint).collect(WINDOW)
    prices = collected.frames["prices"]
    PRICES.validate(prices, "gcp-prices")

    a100 = prices.filter(sku_id="039F-D0DA-4055").sort("region")
    # Recorded: unitPrice {"units": "2", "nanos": 933908000} -> 2 + 933908000 / 10^9.
    assert a100["unit_price"].to_list() == [Decimal("2.933908")] * 3
    assert str(a100["unit_price"][0]) == "2.933908000000000000"
    assert a100["region"].to_list() == ["us-central1", "us-east1", "us-west1"]
    assert a100["gpu_model"].unique().to_list() == ["A100"]
    assert a100["unit"].unique().to_list() == ["h"]
    assert a100["start_usage_amount"].unique().to_list() == [Decimal(0)]
    assert a100["machine_type"].null_count() == 3

    machine = prices.filter(pl.col("machine_type") == "a2").sort("sku_id", "region")
    assert machine["description"].unique().sort().to_list() == [
        "A2 Instance Core running in Americas",
        "A2 Instance Ram running in Americas",
    ]
    ram = machine.filter(sku_id="2390-DCAF-DA38")
    assert ram["unit"].unique().to_list() == ["GiBy.h"]
    assert ram["unit_price"].unique().to_list() == [Decimal("0.004237")]

    t4 = prices.filter(sku_id="SYN2-T4GP-0001")
    assert t4["unit_price"].to_list() == [Decimal("0.35")] * 2
    # Two tiers, two rows per region; the tier start stays the decimal Google wrote.
    l4 = prices.filter(gpu_model="L4").sort("start_usage_amount")
    assert l4.select("start_usage_amount", "unit_price").rows() == [
        (Decimal(0), Decimal("0.672")),
        (Decimal("730.5"), Decimal("0.6")),
    ]
    # On-demand only by default: Spot, commitment and non-GPU SKUs are not kept.
    assert set(prices["sku_id"]) == {
        "039F-D0DA-4055",
        "2390-DCAF-DA38",
        "2922-40C5-B19F",
        "SYN2-T4GP-0001",
        "SYN2-L4TI-0005",
    }
    assert prices["day"].unique().to_list() == [date(2024, 9, 20)]
    assert prices["provider"].unique().to_list() == ["gcp"]
    assert prices["currency"].unique().to_list() == ["USD"]
    assert prices["source"].unique().to_list() == ["gcp-prices"]
    assert collected.notes["service"] == "Compute Engine (services/6F81-5844-456A)"
    assert collected.notes["service_pages"] == 2
    assert collected.notes["sku_pages"] == 2
    assert collected.notes["skus_listed"] == 8
    assert collected.notes["gpu_models"] == ["A100", "L4", "T4"]


def test_requests_follow_page_tokens_and_ask_for_int_enums(
    fake: FakeCatalog, endpoint: str
) -> None:
    make_collector(endpoint, currency="EUR").collect(WINDOW)
    services = [r for r in fake.requests if r.path == "/v1/services"]
    assert [r.query.get("pageToken") for r in services] == [None, ["2"]]
    skus = fake.sku_requests
    assert [r.query.get("pageToken") for r in skus] == [None, ["page-1"]]
    assert all(r.query["currencyCode"] == ["EUR"] for r in skus)
    # The REST transport asks for enum numbers; the fake answers geoTaxonomy.type with them.
    assert all(r.query["$alt"] == ["json;enum-encoding=int"] for r in fake.requests)


def test_usage_types_and_regions_are_configurable(fake: FakeCatalog, endpoint: str) -> None:
    collector = make_collector(
        endpoint,
        usage_types=["OnDemand", "Preemptible", "Commit1Yr"],
        regions=["us-central1"],
        machine_types=False,
    )
    prices = collector.collect(WINDOW).frames["prices"]
    assert sorted(prices["sku_id"]) == [
        "039F-D0DA-4055",
        "SYN2-T4CM-0003",
        "SYN2-T4GP-0001",
        "SYN2-T4SP-0002",
    ]
    assert prices["region"].unique().to_list() == ["us-central1"]
    commitment = prices.filter(sku_id="SYN2-T4CM-0003")
    assert commitment["gpu_model"].item() == "T4"
    assert commitment["unit_price"].item() == Decimal("0.22")


def test_a_failing_catalog_page_is_retried_then_named(fake: FakeCatalog, endpoint: str) -> None:
    fake.fail_sku_page = 2
    collector = make_collector(endpoint, retry_deadline_s=0.5)
    with pytest.raises(CollectorError) as raised:
        collector.collect(WINDOW)
    message = str(raised.value)
    assert "source 'gcp-prices'" in message
    assert "Compute Engine (services/6F81-5844-456A) failed on page 2 after 3 SKUs" in message
    assert "500" in message and "Internal error encountered" in message
    assert fake.failures >= 2  # retried (a 500 is transient) until the deadline


def test_a_transient_page_failure_recovers(fake: FakeCatalog, endpoint: str) -> None:
    fake.fail_sku_page, fake.fail_times, fake.fail_status = 2, 1, 503
    prices = make_collector(endpoint).collect(WINDOW).frames["prices"]
    assert fake.failures == 1
    assert "SYN2-T4GP-0001" in prices["sku_id"].to_list()


def test_a_permission_error_is_not_retried(fake: FakeCatalog, endpoint: str) -> None:
    fake.fail_sku_page, fake.fail_status = 1, 403
    with pytest.raises(CollectorError, match="failed on page 1 after 0 SKUs: 403"):
        make_collector(endpoint, retry_deadline_s=30).collect(WINDOW)
    assert fake.failures == 1


def test_an_unknown_service_is_named(endpoint: str) -> None:
    with pytest.raises(CollectorError, match=r"no catalog service is named 'Compute' \(3 services"):
        make_collector(endpoint, service="Compute").collect(WINDOW)


@pytest.mark.parametrize(
    ("units", "nanos", "expected"),
    [
        ("2", 933908000, "2.933908"),
        ("0", 350000000, "0.35"),
        (-1, -750000000, "-1.75"),
        ("0", -1, "-0.000000001"),
        ("123456789012", 999999999, "123456789012.999999999"),
    ],
)
def test_money_to_decimal(units: str | int, nanos: int, expected: str) -> None:
    assert money_to_decimal(units, nanos) == Decimal(expected)


@pytest.mark.parametrize(("units", "nanos"), [(1, -1), (-1, 1), (0, 1_000_000_000)])
def test_money_to_decimal_refuses_malformed_money(units: int, nanos: int) -> None:
    with pytest.raises(ValueError, match="nanos"):
        money_to_decimal(units, nanos)


def test_docstring_example_is_a_valid_config() -> None:
    spec = get_spec("gcp-catalog")
    example = re.search(r"```toml\n(.*?)```", spec.doc, re.S)
    assert example is not None
    settings = validate_config(tomllib.loads(example.group(1))).sources[0]
    assert isinstance(settings, GcpCatalogSettings)
    assert settings.usage_types == ["OnDemand"]
    assert isinstance(spec.build(settings, CollectorContext()), GcpCatalog)
