"""synth's price catalogue: the data file ships with the package, types exactly, names sources."""

from __future__ import annotations

import copy
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gpucost.synth.catalog import (
    CATALOG,
    CATALOG_FILE,
    ONPREM,
    CatalogError,
    parse_catalog,
    read_catalog,
)

REPO = Path(__file__).resolve().parent.parent


def _raw() -> dict[str, Any]:
    return copy.deepcopy(dict(read_catalog()))


def test_the_wheel_ships_the_catalogue() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert CATALOG_FILE in package_data["gpucost.synth"]


def test_prices_are_exact_and_cloud_machines_only_are_billed() -> None:
    p5 = CATALOG.instance_types["p5.48xlarge"]
    assert p5.hourly_price == Decimal("98.32") and str(p5.hourly_price) == "98.32"
    for itype in CATALOG.instance_types.values():
        assert (itype.hourly_price is None) == (itype.provider == ONPREM), itype.name
        assert len(itype.pci_bus_ids) == itype.gpu_count
    # "0.020" stays "0.020": the exponent survives, not only the value.
    assert str(CATALOG.charges["gcs-standard"].unit_price) == "0.020"


def test_every_priced_entry_names_a_known_source() -> None:
    raw = _raw()
    entries = [
        *raw["gpu_models"].values(),
        *raw["instance_types"],
        *raw["charges"].values(),
        *raw["rates"].values(),
    ]
    for entry in entries:
        assert entry["source"] in CATALOG.sources
    assert all(text.strip() for text in CATALOG.sources.values())


def test_aws_descriptions_quote_the_price_they_charge() -> None:
    for name, charge in CATALOG.charges.items():
        if charge.description.startswith("$"):
            assert charge.description.startswith(f"${charge.unit_price} "), name


def test_a_float_price_is_refused() -> None:
    raw = _raw()
    raw["instance_types"][0]["usd_per_hour"] = 98.32
    with pytest.raises(CatalogError, match=r"instance_types\[0\]\.usd_per_hour"):
        parse_catalog(raw)


def test_an_unknown_source_or_gpu_is_refused() -> None:
    raw = _raw()
    raw["charges"]["s3-standard"]["source"] = "a blog post"
    with pytest.raises(CatalogError, match=r"charges\.s3-standard\.source"):
        parse_catalog(raw)
    raw = _raw()
    raw["instance_types"][0]["gpu"] = "B200"
    with pytest.raises(CatalogError, match="B200"):
        parse_catalog(raw)


def test_a_missing_rate_is_refused() -> None:
    raw = _raw()
    del raw["rates"]["support"]
    with pytest.raises(CatalogError, match=r"rates\.support"):
        parse_catalog(raw)
