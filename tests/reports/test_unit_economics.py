"""Cost per 1,000 requests per model server, checked by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import polars as pl
import pytest

from gpucost.reports.unit_economics import UNIT_COSTS_SCHEMA, cost_per_thousand_requests
from tests.reports.fleet import Fleet

DAY = date(2024, 9, 24)


def _server(fleet: Fleet, instance_type: str, *, plan: bool) -> dict[str, str]:
    """A model-server host of the fleet, on or off the Savings Plan."""
    covered = set(
        fleet.billing.filter(pl.col("CommitmentDiscountId").is_not_null())["ResourceId"]
        .drop_nulls()
        .to_list()
    )
    for row in fleet.inventory.filter(
        pl.col("instance_type") == instance_type, pl.col("role") == "model-server"
    ).iter_rows(named=True):
        if (row["resource_id"] in covered) == plan:
            return {"resource_id": row["resource_id"], "host": row["host"]}
    raise AssertionError(f"no {instance_type} model server (plan={plan})")


def test_cost_per_thousand_requests(fleet: Fleet) -> None:
    on_demand = _server(fleet, "g6.xlarge", plan=False)
    planned = _server(fleet, "g6.xlarge", plan=True)
    requests = pl.DataFrame(
        {
            "day": [DAY, DAY, DAY, date(2024, 9, 25)],
            "resource_id": [on_demand["resource_id"], None, None, on_demand["resource_id"]],
            "host": [None, planned["host"], "not-in-inventory", None],
            "requests": [1_000_000.0, 499_999.6, 10.0, 0.0],
        }
    )
    costs = cost_per_thousand_requests(requests, fleet.billing, fleet.inventory)
    assert costs.schema == UNIT_COSTS_SCHEMA
    rows = {(r["day"], r["host"]): r for r in costs.iter_rows(named=True)}

    # g6.xlarge on demand: 24 h x 0.8048 = 19.3152 USD; x 1000 / 1,000,000 = 0.0193152.
    first = rows[(DAY, on_demand["host"])]
    assert first["cost"] == Decimal("19.3152") and first["priced_hours"] == 24
    assert first["cost_per_1k_requests"] == Decimal("0.0193152")
    assert first["currency"] == "USD" and first["project"] is not None

    # Under the Savings Plan (28 % off): 24 x 0.579456 = 13.906944 USD for 500,000 requests
    # (499,999.6 rounds to a whole request): 13.906944 x 1000 / 500,000 = 0.027813888.
    second = rows[(DAY, planned["host"])]
    assert second["requests"] == 500_000 and second["resource_id"] == planned["resource_id"]
    assert second["cost_per_1k_requests"] == Decimal("0.027813888")

    # A server the inventory does not know keeps its row, unpriced; no request, no ratio.
    unknown = rows[(DAY, "not-in-inventory")]
    assert unknown["cost"] is None and unknown["cost_per_1k_requests"] is None
    assert rows[(date(2024, 9, 25), on_demand["host"])]["cost_per_1k_requests"] is None


def test_requests_need_a_server_column(fleet: Fleet) -> None:
    with pytest.raises(ValueError, match="resource_id or host"):
        cost_per_thousand_requests(
            pl.DataFrame({"day": [DAY], "requests": [1]}), fleet.billing, fleet.inventory
        )
    empty = pl.DataFrame(schema={"day": pl.Date, "host": pl.String, "requests": pl.Int64})
    assert cost_per_thousand_requests(empty, fleet.billing, fleet.inventory).is_empty()
