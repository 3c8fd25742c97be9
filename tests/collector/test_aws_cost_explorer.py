"""aws-cost-explorer against moto's Cost Explorer (results queue), through a fault proxy."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.shared import is_shared
from gpucost.collector.aws_cost_explorer import AwsCostExplorer, CostExplorerSettings
from gpucost.config import validate_config
from gpucost.core.contracts import BILLING
from gpucost.core.errors import CollectorError
from gpucost.core.lake import Lake
from gpucost.core.storage import LocalStorage
from gpucost.core.window import Window
from gpucost.pipeline import Runtime, collect

try:  # pytest --import-mode=importlib with pythonpath "." (pyproject)
    from tests.collector.test_aws_support import (
        CE_AWSCLI,
        CE_CLOUDSCAPE,
        LEGACY_CUR,
        aws_context,
        fault_proxy,
        moto_api,
        session_factory,
        throttled,
    )
except ModuleNotFoundError:  # the default prepend mode puts this directory on sys.path
    from test_aws_support import (  # type: ignore[no-redef]
        CE_AWSCLI,
        CE_CLOUDSCAPE,
        LEGACY_CUR,
        aws_context,
        fault_proxy,
        moto_api,
        session_factory,
        throttled,
    )

CE_RESULTS = "/moto-api/static/ce/cost-and-usage-results"


def settings(**overrides: Any) -> CostExplorerSettings:
    return CostExplorerSettings.model_validate(
        {"name": "aws-ce", "kind": "aws-cost-explorer", **overrides}
    )


def build(endpoint: str, now: datetime | None = None, **overrides: Any) -> AwsCostExplorer:
    return AwsCostExplorer(settings(**overrides), aws_context(endpoint, now))


def awscli_groups() -> list[dict[str, Any]]:
    """The AWS CLI example's groups, re-keyed to LINKED_ACCOUNT + TAG project, with amounts
    (and Amortized = Unblended) kept from the real response."""
    example = json.loads(CE_AWSCLI.read_text())
    groups = []
    for group, project in zip(
        example["ResultsByTime"][0]["Groups"], ["project$", "project$llm"], strict=True
    ):
        metrics = group["Metrics"]
        groups.append(
            {
                "Keys": ["123456789012", project],
                "Metrics": {
                    "UnblendedCost": metrics["UnblendedCost"],
                    "AmortizedCost": metrics["UnblendedCost"],
                    "UsageQuantity": metrics["UsageQuantity"],
                },
            }
        )
    return groups


def daily(day: date, groups: list[dict[str, Any]], estimated: bool = False) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
        "Total": {},
        "Groups": groups,
        "Estimated": estimated,
    }


def test_daily_costs_by_account_and_tag_follow_pages_and_stay_exact(moto_endpoint: str) -> None:
    first = date(2017, 9, 1)
    groups = awscli_groups()
    broken = {
        "Keys": ["210987654321", "project$vision"],
        "Metrics": {
            "UnblendedCost": {"Amount": "12,50", "Unit": "USD"},
            "AmortizedCost": {"Amount": "12.5", "Unit": "USD"},
            "UsageQuantity": {"Amount": "1", "Unit": "Hrs"},
        },
    }
    pages = [
        {
            "ResultsByTime": [daily(first, groups), daily(first + timedelta(days=1), groups)],
            "NextPageToken": "page-2",
            "DimensionValueAttributes": [],
        },
        {
            "ResultsByTime": [daily(first + timedelta(days=2), [*groups, broken], True)],
            "DimensionValueAttributes": [],
        },
    ]
    moto_api(moto_endpoint, CE_RESULTS, {"results": pages})
    window = Window(first, first + timedelta(days=3))

    collected = build(moto_endpoint).collect(window)

    billing = collected.frames["billing"]
    assert billing.height == 6
    expected = 3 * sum(Decimal(g["Metrics"]["UnblendedCost"]["Amount"]) for g in groups)
    assert billing["BilledCost"].sum() == expected == Decimal("121.8678413334")
    assert billing["EffectiveCost"].sum() == expected
    assert set(billing["Tags"]) == {"{}", '{"project":"llm"}'}
    assert set(billing["SubAccountId"]) == {"123456789012"}
    assert billing["ChargePeriodStart"].dt.date().unique().sort().to_list() == [
        first,
        first + timedelta(days=1),
        first + timedelta(days=2),
    ]
    assert billing["ConsumedUnit"].null_count() == 6  # "N/A": the group mixes units
    assert (billing["ProviderName"] == "AWS").all()
    (reject,) = collected.rejects.iter_rows(named=True)
    assert (reject["field"], reject["raw"], reject["reason"]) == (
        "BilledCost",
        "12,50",
        "not a number",
    )
    assert collected.notes["ce_requests"] == 2
    assert collected.notes["ce_estimated_cost_usd"] == "0.02"
    assert collected.notes["estimated_days"] == ["2017-09-03"]


def test_real_six_month_response_by_service_is_parsed_exactly(moto_endpoint: str) -> None:
    response = json.loads(CE_CLOUDSCAPE.read_text())
    moto_api(moto_endpoint, CE_RESULTS, {"results": [response]})
    amounts = [
        Decimal(group["Metrics"]["UnblendedCost"]["Amount"])
        for result in response["ResultsByTime"]
        for group in result["Groups"]
    ]

    collected = build(moto_endpoint, group_by=["SERVICE"]).collect(
        Window(date(2023, 4, 1), date(2023, 10, 1))
    )

    billing = collected.frames["billing"]
    assert billing.height == len(amounts)
    assert billing["BilledCost"].sum() == sum(amounts, Decimal(0))
    assert "AWS CloudTrail" in set(billing["ServiceName"])
    assert billing["Tags"].null_count() == billing.height  # no TAG grouping, no tags claimed
    assert collected.rejects.height == 0
    # The real answer carries UnblendedCost only: EffectiveCost stays empty, and the manifest
    # says why instead of reporting a clean run.
    assert billing["EffectiveCost"].null_count() == billing.height
    assert collected.notes["warnings"] == [
        f"{len(amounts)} of {len(amounts)} Cost Explorer rows came without the requested "
        "AmortizedCost; their EffectiveCost is empty"
    ]

    # moto answers a repeated request from its cache, so the service categories of the same
    # real answer are checked here rather than in a test of their own.
    groups = [g for result in response["ResultsByTime"] for g in result["Groups"]]
    category = dict(billing.select("ServiceName", "ServiceCategory").unique().iter_rows())
    # FOCUS categories of the real service names (the FOCUS converters' AWS table).
    assert {name: category[name] for name in NETWORKING_AND_SOME_OTHERS} == (
        NETWORKING_AND_SOME_OTHERS
    )
    subcategory = dict(billing.select("ServiceName", "ServiceSubcategory").unique().iter_rows())
    assert subcategory["Amazon Elastic Compute Cloud - Compute"] == "Virtual Machines"
    assert subcategory["Amazon Virtual Private Cloud"] == "Network Infrastructure"
    # "EC2 - Other" (EBS, NAT gateways, Elastic IPs, data transfer together) has no one
    # category: it stays empty and is counted, not guessed.
    ec2_other = sum(1 for g in groups if g["Keys"][0] == "EC2 - Other")
    assert collected.notes["service_category_unmapped"] == {"EC2 - Other": ec2_other}
    assert billing.filter(pl.col("ServiceCategory").is_null()).height == ec2_other
    # The default "Networking is shared" policy now sees these charges.
    shared = billing.filter(is_shared(AllocationPolicy()))
    assert set(shared["ServiceName"]) == {
        "Amazon CloudFront",
        "Amazon Route 53",
        "Amazon Virtual Private Cloud",
    }


NETWORKING_AND_SOME_OTHERS = {
    "Amazon Virtual Private Cloud": "Networking",
    "Amazon CloudFront": "Networking",
    "Amazon Route 53": "Networking",
    "Amazon Elastic Compute Cloud - Compute": "Compute",
    "Amazon Simple Storage Service": "Storage",
    "Amazon Relational Database Service": "Databases",
    "AWS Key Management Service": "Security",
    "AmazonCloudWatch": "Management and Governance",
    "CloudWatch Events": "Integration",
}


@pytest.mark.parametrize("code", ["LimitExceededException", "ThrottlingException"])
def test_a_throttled_call_is_retried_then_succeeds(moto_endpoint: str, code: str) -> None:
    first = date(2017, 10, 1) if code.startswith("Limit") else date(2017, 11, 1)
    moto_api(
        moto_endpoint, CE_RESULTS, {"results": [{"ResultsByTime": [daily(first, awscli_groups())]}]}
    )
    with fault_proxy(moto_endpoint) as proxy:
        proxy.answer("GetCostAndUsage", throttled(code))
        collected = build(proxy.endpoint).collect(Window(first, first + timedelta(days=1)))

    assert proxy.operations() == ["GetCostAndUsage", "GetCostAndUsage"]
    assert collected.frames["billing"].height == 2
    assert collected.notes["ce_requests"] == 1
    assert collected.notes["aws_retries"] == {"get_cost_and_usage": 1}


def test_endless_throttling_fails_the_source_visibly_and_others_still_land(
    moto_endpoint: str, tmp_path: Path
) -> None:
    config = validate_config(
        {
            "store": {"data_dir": str(tmp_path / "lake"), "out_dir": str(tmp_path / "out")},
            "sources": [
                {"name": "aws-ce", "kind": "aws-cost-explorer", "max_attempts": 2},
                {"name": "cur-file", "kind": "aws-cur", "path": str(LEGACY_CUR)},
            ],
        }
    )
    with fault_proxy(moto_endpoint) as proxy:
        proxy.answer(
            "GetCostAndUsage",
            throttled("LimitExceededException"),
            throttled("LimitExceededException"),
        )
        config = config.model_copy(
            update={"store": config.store.model_copy(update={"s3_endpoint_url": proxy.endpoint})}
        )
        runtime = Runtime.from_config(config, boto3_session_factory=session_factory)
        manifest = collect(runtime, Window(date(2023, 11, 1), date(2023, 12, 1)))

    by_name = {source.name: source for source in manifest.sources}
    assert proxy.operations() == ["GetCostAndUsage", "GetCostAndUsage"]  # bounded: 2 attempts
    assert manifest.status == "incomplete"
    assert by_name["aws-ce"].status == "failed"
    assert "LimitExceededException" in (by_name["aws-ce"].error or "")
    assert "after 1 retries" in (by_name["aws-ce"].error or "")
    assert by_name["cur-file"].status == "ok"
    assert by_name["cur-file"].rows == {"billing": 1281}


def test_resource_level_rows_use_the_with_resources_call(moto_endpoint: str) -> None:
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    day = date(2026, 11, 20)
    response = {
        "GroupDefinitions": [
            {"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"},
            {"Type": "DIMENSION", "Key": "RESOURCE_ID"},
        ],
        "ResultsByTime": [
            daily(
                day,
                [
                    {
                        "Keys": ["123456789012", "i-0b3b3095474a3772a"],
                        "Metrics": {
                            "UnblendedCost": {"Amount": "27.36", "Unit": "USD"},
                            "AmortizedCost": {"Amount": "24", "Unit": "USD"},
                            "UsageQuantity": {"Amount": "24", "Unit": "Hrs"},
                        },
                    },
                    {
                        "Keys": ["123456789012", "NoResourceId"],
                        "Metrics": {
                            "UnblendedCost": {"Amount": "0.0000000181", "Unit": "USD"},
                            "AmortizedCost": {"Amount": "0.0000000181", "Unit": "USD"},
                            "UsageQuantity": {"Amount": "3", "Unit": "Hrs"},
                        },
                    },
                ],
            )
        ],
    }
    with fault_proxy(moto_endpoint) as proxy:  # moto does not implement this operation
        proxy.answer("GetCostAndUsageWithResources", (200, response))
        collected = build(
            proxy.endpoint, now, group_by=["LINKED_ACCOUNT"], with_resources=True
        ).collect(Window(day, day + timedelta(days=1)))

    ((operation, request),) = proxy.calls
    assert operation == "GetCostAndUsageWithResources"
    assert request["GroupBy"] == [
        {"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"},
        {"Type": "DIMENSION", "Key": "RESOURCE_ID"},
    ]
    assert request["Filter"] == {
        "Dimensions": {"Key": "SERVICE", "Values": ["Amazon Elastic Compute Cloud - Compute"]}
    }
    billing = collected.frames["billing"].sort("BilledCost")
    assert billing["ResourceId"].to_list() == [None, "i-0b3b3095474a3772a"]
    assert billing["BilledCost"].to_list() == [Decimal("0.0000000181"), Decimal("27.36")]
    assert billing["ConsumedUnit"].to_list() == ["Hrs", "Hrs"]
    assert collected.notes["ce_requests"] == 1


def test_resource_level_data_older_than_14_days_is_refused_without_a_request(
    moto_endpoint: str,
) -> None:
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    with fault_proxy(moto_endpoint) as proxy:
        source = build(proxy.endpoint, now, group_by=["LINKED_ACCOUNT"], with_resources=True)
        with pytest.raises(
            CollectorError, match=r"last 14 days only.*earliest day available is 2026-11-12"
        ):
            source.collect(Window(date(2026, 11, 1), date(2026, 11, 26)))
    assert proxy.calls == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"group_by": ["LINKED_ACCOUNT", "SERVICE", "TAG:project"]}, "at most 2"),
        ({"group_by": ["OPERATION"]}, "use TAG:<key> or one of"),
        ({"group_by": ["RESOURCE_ID"]}, "needs with_resources"),
        ({"group_by": ["LINKED_ACCOUNT", "SERVICE"], "with_resources": True}, "adds RESOURCE_ID"),
        ({"group_by": ["TAG:"]}, "needs a tag key"),
    ],
)
def test_settings_refuse_what_the_api_refuses(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**overrides)


def test_rows_land_in_the_lake_once(moto_endpoint: str, tmp_path: Path) -> None:
    first = date(2017, 12, 1)
    moto_api(
        moto_endpoint, CE_RESULTS, {"results": [{"ResultsByTime": [daily(first, awscli_groups())]}]}
    )
    lake = Lake(LocalStorage(tmp_path))
    window = Window(first, first + timedelta(days=1))
    source = build(moto_endpoint)
    for _ in range(2):  # same request body: moto answers the same result again
        collected = source.collect(window)
        lake.write_window(BILLING, "aws-ce", window, collected.frames["billing"])
    stored = lake.read(BILLING)
    assert stored.height == 2
    assert stored["BilledCost"].sum() == sum(
        (Decimal(g["Metrics"]["UnblendedCost"]["Amount"]) for g in awscli_groups()), Decimal(0)
    )
