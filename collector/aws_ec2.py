"""``aws-ec2``: EC2 hosts with their GPUs (inventory) and model servers' CPU use (host_metrics).

``DescribeInstances`` (paginated) over the configured regions and accounts gives the hosts;
``DescribeInstanceTypes`` gives each type's GPUs (``GpuInfo``: count, model, memory per GPU)
and vCPUs, looked up once per type per run (100 types per request, the API's maximum). Tags
give the host's role (``role = "model-server"``) and project. For hosts whose role marks them as
model servers, CloudWatch ``GetMetricData`` returns hourly ``CPUUtilization`` Average and
Maximum (plain ``MetricStat`` queries, two per instance, at most 500 queries per request).

The inventory is a snapshot taken when the collector runs: it lists the instances that exist
now (terminated instances vanish from DescribeInstances within about an hour), on each day of
the window from the day the instance was created. Billing, not inventory, is the record of
what ran and was charged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

import polars as pl
from pydantic import Field

from gpucost.collector.aws_common import AwsAccount, AwsClients, AwsSourceSettings
from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.parsing import tags_to_json
from gpucost.core.contracts import HOST_METRICS, INVENTORY, MONEY
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
TYPES_PER_REQUEST = 100
"""DescribeInstanceTypes: at most 100 instance types per request."""
QUERIES_PER_REQUEST = 500
"""GetMetricData: at most 500 MetricDataQuery structures per request."""
HOUR_S = 3600
CPU_STATISTICS = {"avg": "Average", "max": "Maximum"}
"""GetMetricData query id prefix (ids start with a lowercase letter) -> CloudWatch statistic."""


class AwsEc2Settings(AwsSourceSettings):
    """Settings of an ``aws-ec2`` source."""

    regions: list[str] = Field(default_factory=lambda: ["us-east-1"], min_length=1)
    accounts: list[AwsAccount] = Field(
        default_factory=list,
        description="Accounts to read ({ role_arn = ... }); the default credentials' when empty.",
    )
    instance_states: list[str] = Field(
        default_factory=lambda: ["pending", "running"],
        description="instance-state-name values to list.",
    )
    role_tag: str = Field(default="role", description="Tag whose value is the host's role.")
    project_tag: str = Field(
        default="project", description="Tag naming the project (kept in tags; logged if absent)."
    )
    model_server_roles: list[str] = Field(
        default_factory=lambda: ["model-server"],
        description="Roles whose hosts get hourly CPU metrics.",
    )
    cpu_metrics: bool = Field(default=True, description="Collect host_metrics from CloudWatch.")
    prices: dict[str, Decimal] = Field(
        default_factory=dict,
        description='Hourly list price per instance type, e.g. { "p5.48xlarge" = "98.32" }.',
    )
    currency: str = Field(default="USD", description="Currency of `prices`.")


@dataclass(frozen=True)
class InstanceTypeInfo:
    """What DescribeInstanceTypes says about one type."""

    gpu_count: int | None
    gpu_model: str | None
    gpu_mem_bytes: int | None
    vcpus: int | None


@dataclass(frozen=True)
class Host:
    """One instance as the inventory needs it."""

    instance_id: str
    host: str | None
    instance_type: str
    region: str
    tags: dict[str, str]
    vcpus: int | None
    created: datetime


@register("aws-ec2")
class AwsEc2:
    """Lists EC2 hosts with their GPUs, role and tags, and model servers' hourly CPU use.

    GPU count, model and memory come from DescribeInstanceTypes' ``GpuInfo`` (a
    ``p5.48xlarge`` has 8 NVIDIA H100 with 80 GiB each); ``hourly_list_price`` comes only from
    the optional ``prices`` table (no Pricing API call). Roles come from a tag (``role``);
    hosts with a model-server role get ``CPUUtilization`` hourly Average and Maximum.

    ```toml
    [[sources]]
    name = "aws-ec2"
    kind = "aws-ec2"
    regions = ["us-east-1", "us-west-2"]
    accounts = [{ role_arn = "arn:aws:iam::111122223333:role/gpucost-inventory" }]
    role_tag = "role"
    model_server_roles = ["model-server"]
    cpu_metrics = true
    prices = { "p5.48xlarge" = "98.32", "g5.xlarge" = "1.006" }
    schedule = "0 * * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("inventory", "host_metrics")
    Settings: ClassVar[type[SourceSettings]] = AwsEc2Settings

    def __init__(self, settings: AwsEc2Settings, context: CollectorContext) -> None:
        self.settings, self.context, self.name = settings, context, settings.name
        self.clients = AwsClients.for_source(settings, context)
        self._types: dict[str, InstanceTypeInfo] = {}

    def collect(self, window: Window) -> Collected:
        """Inventory for the window's days and model servers' hourly CPU in the window."""
        now = self.context.clock().astimezone(UTC)
        settings = self.settings
        accounts = settings.accounts or [settings.account]
        inventory: list[dict[str, Any]] = []
        metrics: list[dict[str, Any]] = []
        hosts_seen = 0
        for account in accounts:
            for region in settings.regions:
                hosts = list(self._hosts(account, region))
                hosts_seen += len(hosts)
                self._describe_types(account, region, {h.instance_type for h in hosts})
                inventory.extend(self._inventory_rows(hosts, window, now))
                servers = [
                    h for h in hosts if h.tags.get(settings.role_tag) in settings.model_server_roles
                ]
                if settings.cpu_metrics and servers:
                    metrics.extend(self._cpu_rows(account, region, servers, window, now))
        untagged = sorted(
            {row["resource_id"] for row in inventory if settings.project_tag not in row["_tags"]}
        )
        notes: dict[str, Any] = {
            "instances": hosts_seen,
            "instance_types": len(self._types),
            "regions": settings.regions,
            "accounts": [a.role_arn or "default credentials" for a in accounts],
            "snapshot_at": now.isoformat(),
        }
        if untagged:
            notes[f"instances_without_{settings.project_tag}_tag"] = untagged[:100]
        notes.update(self.clients.counter.as_notes())
        frames = {
            "inventory": _frame(INVENTORY.schema, inventory),
            "host_metrics": _frame(HOST_METRICS.schema, metrics),
        }
        return Collected(frames, notes=notes)

    def _hosts(self, account: AwsAccount, region: str) -> Iterator[Host]:
        client = self.clients.client("ec2", region=region, account=account)
        filters = [{"Name": "instance-state-name", "Values": self.settings.instance_states}]
        for page in self.clients.pages(client, "describe_instances", Filters=filters):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    yield _host(instance, region)

    def _describe_types(self, account: AwsAccount, region: str, types: Iterable[str]) -> None:
        missing = sorted(set(types) - set(self._types))
        if not missing:
            return
        client = self.clients.client("ec2", region=region, account=account)
        for start in range(0, len(missing), TYPES_PER_REQUEST):
            batch = missing[start : start + TYPES_PER_REQUEST]
            response = self.clients.call(client, "describe_instance_types", InstanceTypes=batch)
            for item in response.get("InstanceTypes", []):
                self._types[item["InstanceType"]] = instance_type_info(item)
        for name in set(missing) - set(self._types):
            logger.warning("source %s: %s has no DescribeInstanceTypes entry", self.name, name)
            self._types[name] = InstanceTypeInfo(None, None, None, None)

    def _inventory_rows(
        self, hosts: list[Host], window: Window, now: datetime
    ) -> Iterator[dict[str, Any]]:
        settings = self.settings
        for host in hosts:
            info = self._types.get(host.instance_type, InstanceTypeInfo(None, None, None, None))
            price = settings.prices.get(host.instance_type)
            row = {
                "resource_id": host.instance_id,
                "provider": "aws",
                "host": host.host,
                "instance_type": host.instance_type,
                "gpu_count": info.gpu_count,
                "gpu_model": info.gpu_model,
                "gpu_mem_bytes": info.gpu_mem_bytes,
                "vcpus": host.vcpus if host.vcpus is not None else info.vcpus,
                "role": host.tags.get(settings.role_tag),
                "tags": tags_to_json(host.tags),
                "_tags": host.tags,
                "region": host.region,
                "hourly_list_price": price,
                "currency": settings.currency if price is not None else None,
                "first_seen": host.created,
                "last_seen": now,
                "source": self.name,
            }
            for day in window.each_day():
                if host.created.date() <= day <= now.date():
                    yield {**row, "day": day}

    def _cpu_rows(
        self,
        account: AwsAccount,
        region: str,
        servers: list[Host],
        window: Window,
        now: datetime,
    ) -> Iterator[dict[str, Any]]:
        end = min(window.end_time, now.replace(minute=0, second=0, microsecond=0))
        if end <= window.start_time:
            return
        client = self.clients.client("cloudwatch", region=region, account=account)
        per_request = QUERIES_PER_REQUEST // 2
        for start in range(0, len(servers), per_request):
            batch = servers[start : start + per_request]
            queries = [
                _cpu_query(f"{label}_{index}", host.instance_id, stat)
                for index, host in enumerate(batch)
                for label, stat in CPU_STATISTICS.items()
            ]
            values: dict[tuple[str, datetime], dict[str, float]] = {}
            for page in self.clients.pages(
                client,
                "get_metric_data",
                MetricDataQueries=queries,
                StartTime=window.start_time,
                EndTime=end,
                ScanBy="TimestampAscending",
            ):
                for result in page.get("MetricDataResults", []):
                    stat, _, index = result["Id"].partition("_")
                    instance = batch[int(index)].instance_id
                    for stamp, value in zip(
                        result.get("Timestamps", []), result.get("Values", []), strict=True
                    ):
                        hour = stamp.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                        # CPUUtilization is a percentage (0-100); host_metrics holds fractions.
                        values.setdefault((instance, hour), {})[stat] = value / 100.0
            hosts = {h.instance_id: h.host for h in batch}
            for (instance, hour), stats in sorted(values.items()):
                yield {
                    "hour": hour,
                    "resource_id": instance,
                    "host": hosts[instance],
                    "cpu_util_avg": stats.get("avg"),
                    "cpu_util_max": stats.get("max"),
                    "cpu_util_p95": None,
                    "source": self.name,
                }


def _cpu_query(query_id: str, instance_id: str, stat: str) -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": "AWS/EC2",
                "MetricName": "CPUUtilization",
                "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
            },
            "Period": HOUR_S,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def instance_type_info(item: Mapping[str, Any]) -> InstanceTypeInfo:
    """GPU count, model and per-GPU memory, and default vCPUs, from DescribeInstanceTypes."""
    gpus = item.get("GpuInfo", {}).get("Gpus", [])
    count = sum(int(gpu.get("Count", 0)) for gpu in gpus)
    models = sorted({str(gpu["Name"]) for gpu in gpus if gpu.get("Name")})
    memories = {int(gpu["MemoryInfo"]["SizeInMiB"]) for gpu in gpus if gpu.get("MemoryInfo")}
    vcpus = item.get("VCpuInfo", {}).get("DefaultVCpus")
    return InstanceTypeInfo(
        gpu_count=count,
        gpu_model="+".join(models) or None,
        # Memory of one GPU (GpuInfo.Gpus[].MemoryInfo.SizeInMiB), not of all of them.
        gpu_mem_bytes=max(memories) * MIB if memories else None,
        vcpus=int(vcpus) if vcpus is not None else None,
    )


def _host(instance: Mapping[str, Any], region: str) -> Host:
    tags = {str(t["Key"]): str(t.get("Value", "")) for t in instance.get("Tags", [])}
    created = _created(instance)
    cpu = instance.get("CpuOptions") or {}
    vcpus = (
        int(cpu["CoreCount"]) * int(cpu.get("ThreadsPerCore", 1)) if cpu.get("CoreCount") else None
    )
    return Host(
        instance_id=str(instance["InstanceId"]),
        host=instance.get("PrivateDnsName") or None,
        instance_type=str(instance["InstanceType"]),
        region=region,
        tags=tags,
        vcpus=vcpus,
        created=created,
    )


def _created(instance: Mapping[str, Any]) -> datetime:
    """When the instance was created.

    ``LaunchTime`` is the last start, so a stopped and restarted host looks new; the primary
    network interface's ``AttachTime`` (device 0) is set when the instance is created.
    """
    times = [instance.get("LaunchTime")]
    for interface in instance.get("NetworkInterfaces", []):
        attachment = interface.get("Attachment", {})
        if attachment.get("DeviceIndex") == 0:
            times.append(attachment.get("AttachTime"))
    known = [t.astimezone(UTC) for t in times if isinstance(t, datetime)]
    return min(known) if known else datetime.now(UTC)


def _frame(schema: pl.Schema, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A frame in the contract's schema; the one Decimal column is built from Decimals."""
    columns = {name: [row.get(name) for row in rows] for name in schema.names()}
    series = []
    for name, dtype in schema.items():
        values = columns[name]
        if dtype == MONEY:
            values = [Decimal(v) if v is not None else None for v in values]
        if isinstance(dtype, pl.Date):
            values = [v if isinstance(v, date) else None for v in values]
        series.append(pl.Series(name, values, dtype=dtype))
    return pl.DataFrame(series)
