"""aws-ec2 against moto's EC2, CloudWatch and STS: GPU inventory and model servers' CPU."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from gpucost.collector.aws_ec2 import AwsEc2, AwsEc2Settings, instance_type_info
from gpucost.config import validate_config
from gpucost.core.contracts import HOST_METRICS, INVENTORY
from gpucost.core.lake import Lake
from gpucost.core.storage import LocalStorage
from gpucost.core.window import Window
from gpucost.pipeline import Runtime, collect

try:  # pytest --import-mode=importlib with pythonpath "." (pyproject)
    from tests.collector.test_aws_support import aws_context, session_factory
except ModuleNotFoundError:  # the default prepend mode puts this directory on sys.path
    from test_aws_support import aws_context, session_factory  # type: ignore[no-redef]

# Regions no other test uses: the moto server's EC2 state lives for the whole session.
REGION = "eu-west-3"
OTHER_REGION = "ap-southeast-2"
ROLE_REGION = "sa-east-1"
HISTORY_REGION = "ca-central-1"


def client(service: str, endpoint: str, region: str, **credentials: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=credentials.get("key", "testing"),
        aws_secret_access_key=credentials.get("secret", "testing"),
        aws_session_token=credentials.get("token"),
    )


def launch(ec2: Any, instance_type: str, tags: dict[str, str], count: int = 1) -> list[str]:
    tagging = [
        {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
    ]
    response = ec2.run_instances(
        ImageId="ami-12345678",
        InstanceType=instance_type,
        MinCount=count,
        MaxCount=count,
        TagSpecifications=tagging if tags else [],
    )
    return [instance["InstanceId"] for instance in response["Instances"]]


def put_cpu(cloudwatch: Any, instance_id: str, hour: datetime, percents: list[float]) -> None:
    cloudwatch.put_metric_data(
        Namespace="AWS/EC2",
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                "Timestamp": hour + timedelta(minutes=5 * i),
                "Value": value,
                "Unit": "Percent",
            }
            for i, value in enumerate(percents)
        ],
    )


def test_p5_is_8_h100_and_model_servers_get_hourly_cpu(moto_endpoint: str, tmp_path: Path) -> None:
    ec2 = client("ec2", moto_endpoint, REGION)
    (p5,) = launch(ec2, "p5.48xlarge", {"role": "model-server", "project": "llm", "Name": "llm-0"})
    (cpu,) = launch(ec2, "m5.large", {"project": "web"})
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    put_cpu(client("cloudwatch", moto_endpoint, REGION), p5, hour, [10.0, 20.0, 30.0])
    config = validate_config(
        {
            "store": {
                "data_dir": str(tmp_path / "lake"),
                "out_dir": str(tmp_path / "out"),
                "s3_endpoint_url": moto_endpoint,
            },
            "sources": [
                {
                    "name": "aws-ec2",
                    "kind": "aws-ec2",
                    "regions": [REGION],
                    "prices": {"p5.48xlarge": "98.32"},
                }
            ],
        }
    )
    window = Window(now.date() - timedelta(days=1), now.date() + timedelta(days=1))

    manifest = collect(Runtime.from_config(config, boto3_session_factory=session_factory), window)

    (run,) = manifest.sources
    assert run.status == "ok", run.error
    lake = Lake(LocalStorage(tmp_path / "lake"))
    inventory = lake.read(INVENTORY).sort("instance_type", descending=True)
    assert inventory.select("resource_id", "instance_type", "gpu_count", "gpu_model").rows() == [
        (p5, "p5.48xlarge", 8, "H100"),
        (cpu, "m5.large", 0, None),
    ]
    server = inventory.row(0, named=True)
    assert server["gpu_mem_bytes"] == 80 * 1024**3  # one H100: 81,920 MiB
    assert server["vcpus"] == 192
    assert server["role"] == "model-server"
    assert server["tags"] == '{"Name":"llm-0","project":"llm","role":"model-server"}'
    assert server["hourly_list_price"] == Decimal("98.32")
    assert server["currency"] == "USD"
    assert server["region"] == REGION
    assert server["host"].endswith(".compute.internal")
    assert inventory.row(1, named=True)["hourly_list_price"] is None
    metrics = lake.read(HOST_METRICS)
    assert metrics.select("hour", "resource_id", "cpu_util_avg", "cpu_util_max").rows() == [
        (hour, p5, pytest.approx(0.2), pytest.approx(0.3))
    ]
    assert run.notes["aws_requests"]["describe_instance_types"] == 1


def test_instance_types_are_described_once_per_run(moto_endpoint: str) -> None:
    ec2 = client("ec2", moto_endpoint, OTHER_REGION)
    launch(ec2, "g5.xlarge", {"role": "training"}, count=3)
    settings = AwsEc2Settings.model_validate(
        {"name": "ec2", "kind": "aws-ec2", "regions": [OTHER_REGION, OTHER_REGION]}
    )
    source = AwsEc2(settings, aws_context(moto_endpoint))
    today = datetime.now(UTC).date()
    collected = source.collect(Window(today, today + timedelta(days=1)))
    inventory = collected.frames["inventory"]
    assert inventory.height == 6  # the region listed twice: its hosts twice, their type once
    assert set(inventory["gpu_model"]) == {"A10G"}
    assert collected.frames["host_metrics"].height == 0  # no model servers
    assert collected.notes["aws_requests"]["describe_instance_types"] == 1
    assert collected.notes["aws_requests"]["describe_instances"] == 2
    assert "instances_without_project_tag" in collected.notes


def test_accounts_are_read_through_an_assumed_role(moto_endpoint: str) -> None:
    role = "arn:aws:iam::111111111111:role/gpucost-inventory"
    sts = client("sts", moto_endpoint, "us-east-1")
    credentials = sts.assume_role(RoleArn=role, RoleSessionName="test")["Credentials"]
    other = client(
        "ec2",
        moto_endpoint,
        ROLE_REGION,
        key=credentials["AccessKeyId"],
        secret=credentials["SecretAccessKey"],
        token=credentials["SessionToken"],
    )
    (theirs,) = launch(other, "p4d.24xlarge", {"role": "training"})
    launch(client("ec2", moto_endpoint, ROLE_REGION), "t3.micro", {})  # the default account's
    settings = AwsEc2Settings.model_validate(
        {
            "name": "ec2",
            "kind": "aws-ec2",
            "regions": [ROLE_REGION],
            "accounts": [{"role_arn": role}],
        }
    )
    today = datetime.now(UTC).date()

    collected = AwsEc2(settings, aws_context(moto_endpoint)).collect(
        Window(today, today + timedelta(days=1))
    )

    inventory = collected.frames["inventory"]
    assert inventory.select("resource_id", "gpu_count", "gpu_model").rows() == [(theirs, 8, "A100")]
    assert collected.notes["aws_requests"]["assume_role"] == 1
    assert collected.notes["accounts"] == [role]


def test_days_before_an_instance_existed_get_no_inventory_row(moto_endpoint: str) -> None:
    launch(client("ec2", moto_endpoint, HISTORY_REGION), "g6e.xlarge", {"role": "model-server"})
    today = datetime.now(UTC).date()
    settings = AwsEc2Settings.model_validate(
        {"name": "ec2", "kind": "aws-ec2", "regions": [HISTORY_REGION], "cpu_metrics": False}
    )
    collected = AwsEc2(settings, aws_context(moto_endpoint)).collect(
        Window(today - timedelta(days=3), today + timedelta(days=1))
    )
    assert collected.frames["inventory"]["day"].to_list() == [today]  # created today
    assert collected.frames["host_metrics"].height == 0  # cpu_metrics = false


def test_gpu_info_without_gpus_and_with_two_models() -> None:
    assert instance_type_info({"VCpuInfo": {"DefaultVCpus": 2}}).gpu_count == 0
    mixed = instance_type_info(
        {
            "GpuInfo": {
                "Gpus": [
                    {"Name": "T4", "Count": 1, "MemoryInfo": {"SizeInMiB": 15360}},
                    {"Name": "A10G", "Count": 2, "MemoryInfo": {"SizeInMiB": 22888}},
                ]
            }
        }
    )
    assert (mixed.gpu_count, mixed.gpu_model, mixed.gpu_mem_bytes) == (
        3,
        "A10G+T4",
        22888 * 1024 * 1024,
    )
