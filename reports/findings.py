"""Findings: idle GPU servers, model servers on the wrong hardware, oversized GPUs.

Every function here is pure: frames in (``gpu_usage``, ``inventory``, ``billing``,
``host_metrics`` for a window), a ``findings`` frame out (see ``gpucost.core.contracts.FINDINGS``).
Each finding names the machine, its owner (the host's ``project`` tag), the evidence (canonical
JSON) and the money: ``est_monthly_waste`` is a ``Decimal(38, 18)`` projected onto a 730-hour
month (``HOURS_PER_MONTH``). The rules and their thresholds are documented in
``docs/reports.md``; the thresholds live in
:class:`~gpucost.reports.thresholds.FindingThresholds`.

How hours are judged, for every rule: the ``gpu_usage`` rows of a host and hour are first
summed per GPU (time-sliced pods each carry their share of one GPU), then the host's hour takes
the busiest GPU. Hours with no GPU rows are not observed: missing telemetry never counts as idle.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import polars as pl

from gpucost.core.contracts import FINDINGS
from gpucost.reports._common import (
    HOURS_PER_MONTH,
    SOURCE,
    Frame,
    canonical_json,
    display_money,
    divide_money,
    eager,
    iso_utc,
    monthly,
    to_money,
)
from gpucost.reports.catalog import GIB, GpuOffer, build_catalog, cheapest
from gpucost.reports.costs import cost_of_hours, hourly_costs, latest_hosts
from gpucost.reports.thresholds import FindingThresholds

IDLE_GPU_SERVER: Final = "idle_gpu_server"
CPU_MISPLACED_MODEL_SERVER: Final = "cpu_misplaced_model_server"
MODEL_ON_CPU_IN_GPU_HOST: Final = "model_on_cpu_in_gpu_host"
OVERSIZED_GPU: Final = "oversized_gpu"
KINDS: Final = (
    IDLE_GPU_SERVER,
    CPU_MISPLACED_MODEL_SERVER,
    MODEL_ON_CPU_IN_GPU_HOST,
    OVERSIZED_GPU,
)
PRECEDENCE: Final = (MODEL_ON_CPU_IN_GPU_HOST, IDLE_GPU_SERVER, OVERSIZED_GPU)
"""When several GPU findings fall on one host, :func:`find_all` keeps the first of these: the
most specific cause, and the same money is never counted twice."""


@dataclass(frozen=True)
class FleetData:
    """The lake tables of one window that the findings read (eager or lazy frames).

    ``start``/``end`` are aware UTC datetimes, ``end`` exclusive (``Window.start_time``,
    ``Window.end_time``). ``day`` is the findings' partition day: the window's last day unless
    given.
    """

    gpu_usage: Frame
    inventory: Frame
    billing: Frame
    start: datetime
    end: datetime
    host_metrics: Frame | None = None
    day: date | None = None

    @property
    def report_day(self) -> date:
        """The ``day`` column of the findings."""
        return self.day or (self.end - timedelta(microseconds=1)).date()

    @property
    def window_hours(self) -> int:
        """Whole hours in the window."""
        return int((self.end - self.start).total_seconds() // 3600)


@dataclass
class _Context:
    """Inputs prepared once and shared by the rules."""

    data: FleetData
    thresholds: FindingThresholds
    hosts: pl.DataFrame
    """Latest inventory row per resource, with ``owner``."""
    gpu_hours: pl.DataFrame
    """Per host and hour: busiest GPU's util, mean util, max memory, workloads, MIG."""
    per_gpu: pl.DataFrame
    """Per host, hour and GPU."""
    hourly: pl.DataFrame
    cpu: pl.DataFrame
    catalog: list[GpuOffer] = field(default_factory=list)


def _prepare(
    data: FleetData, thresholds: FindingThresholds, catalog: Sequence[GpuOffer] | None
) -> _Context:
    hosts = latest_hosts(data.inventory, thresholds.owner_tag_keys)
    usage = eager(data.gpu_usage).filter(
        pl.col("hour") >= pl.lit(data.start), pl.col("hour") < pl.lit(data.end)
    )
    per_gpu = usage.group_by("host", "hour", "gpu_uuid").agg(
        # Time-sliced pods each report their own share of one GPU: the GPU's use is the sum.
        pl.col("util_avg").sum().alias("util"),
        pl.col("util_avg").is_not_null().any().alias("util_known"),
        pl.col("mem_used_max_bytes").fill_null(0).sum().alias("mem_bytes"),
        pl.col("mem_total_bytes").max().alias("mem_total_bytes"),
        pl.col("mig_profile").drop_nulls().first().alias("mig_profile"),
        pl.col("gpu_model").drop_nulls().first().alias("gpu_model"),
        pl.col("workload").drop_nulls().unique().sort().alias("workloads"),
    )
    gpu_hours = (
        per_gpu.group_by("host", "hour")
        .agg(
            pl.col("util").max().alias("util_busiest"),
            pl.col("util").mean().alias("util_mean"),
            pl.col("util_known").all().alias("util_known"),
            pl.col("mem_bytes").max().alias("mem_bytes"),
            pl.col("mig_profile").is_not_null().any().alias("mig"),
            pl.col("workloads")
            .list.explode(keep_nulls=False, empty_as_null=False)
            .unique()
            .sort()
            .alias("workloads"),
        )
        .join(_host_index(hosts), on="host", how="left")
        .sort("host", "hour")
    )
    cpu = (
        eager(data.host_metrics)
        .filter(pl.col("hour") >= pl.lit(data.start), pl.col("hour") < pl.lit(data.end))
        .group_by("resource_id", "hour")
        .agg(pl.col("cpu_util_p95").max(), pl.col("cpu_util_avg").mean())
        .sort("resource_id", "hour")
        if data.host_metrics is not None
        else pl.DataFrame(
            schema={
                "resource_id": pl.String,
                "hour": pl.Datetime("us", "UTC"),
                "cpu_util_p95": pl.Float64,
                "cpu_util_avg": pl.Float64,
            }
        )
    )
    return _Context(
        data=data,
        thresholds=thresholds,
        hosts=hosts,
        gpu_hours=gpu_hours,
        per_gpu=per_gpu,
        hourly=hourly_costs(data.billing, start=data.start, end=data.end),
        cpu=cpu,
        catalog=list(catalog) if catalog is not None else build_catalog(data.inventory),
    )


# ---- the rules -------------------------------------------------------------------------------


def find_idle_gpu_servers(
    data: FleetData, thresholds: FindingThresholds | None = None
) -> pl.DataFrame:
    """GPU hosts idle (util and memory under thresholds) for N consecutive hours or more.

    Waste: the cost of all the window's idle hours, projected per month
    (``idle cost x 730 / observed hours``).
    """
    return _idle(_prepare(data, thresholds or FindingThresholds(), []))


def find_model_on_cpu_in_gpu_hosts(
    data: FleetData, thresholds: FindingThresholds | None = None
) -> pl.DataFrame:
    """GPU hosts running a model server whose GPUs sit at ~0 while the CPU is busy.

    Waste: the whole cost of those hours (the GPUs bought for the model do nothing), projected
    per month.
    """
    return _model_on_cpu(_prepare(data, thresholds or FindingThresholds(), []))


def find_cpu_misplaced_model_servers(
    data: FleetData,
    thresholds: FindingThresholds | None = None,
    catalog: Sequence[GpuOffer] | None = None,
) -> pl.DataFrame:
    """Model servers on instances without GPUs whose CPU stays saturated.

    Recommends the cheapest GPU instance of the same provider and region with at least
    ``misplaced_min_gpu_memory_bytes``; ``est_monthly_waste`` is ``(current list price - that
    instance's price) x 730``: positive when the move also saves money, negative when it costs
    more (the finding is then about latency and throughput).
    """
    return _cpu_misplaced(_prepare(data, thresholds or FindingThresholds(), catalog))


def find_oversized_gpus(
    data: FleetData,
    thresholds: FindingThresholds | None = None,
    catalog: Sequence[GpuOffer] | None = None,
) -> pl.DataFrame:
    """GPUs whose peak memory is under half the card's and mean utilisation under 30 %.

    Recommends the cheapest GPU or MIG profile of the same provider holding the peak memory plus
    headroom; ``est_monthly_waste`` is ``(price per GPU now - offer's price per GPU) x GPUs x
    730``. Hosts already split into MIG slices, idle hosts and hosts with no cheaper fit are
    not flagged.
    """
    return _oversized(_prepare(data, thresholds or FindingThresholds(), catalog))


def find_all(
    data: FleetData,
    thresholds: FindingThresholds | None = None,
    catalog: Sequence[GpuOffer] | None = None,
) -> pl.DataFrame:
    """Every rule over the window, one GPU finding per host (see :data:`PRECEDENCE`).

    ``catalog`` defaults to :func:`gpucost.reports.catalog.build_catalog` over the inventory.
    """
    context = _prepare(data, thresholds or FindingThresholds(), catalog)
    frames = {
        MODEL_ON_CPU_IN_GPU_HOST: _model_on_cpu(context),
        IDLE_GPU_SERVER: _idle(context),
        OVERSIZED_GPU: _oversized(context),
    }
    kept: list[pl.DataFrame] = []
    taken: set[str] = set()
    for kind in PRECEDENCE:
        frame = frames[kind].filter(~pl.col("host").is_in(sorted(taken)))
        taken.update(frame["host"].drop_nulls().to_list())
        kept.append(frame)
    kept.append(_cpu_misplaced(context))
    return _sorted(pl.concat(kept, how="vertical"))


# ---- rule bodies -----------------------------------------------------------------------------


def _idle(context: _Context) -> pl.DataFrame:
    thresholds = context.thresholds
    hours = context.gpu_hours.with_columns(
        (
            pl.col("util_known")
            & (pl.col("util_busiest") < thresholds.idle_util)
            & (pl.col("mem_bytes") < thresholds.idle_memory_bytes)
        ).alias("idle")
    )
    runs = _runs(hours, "idle")
    summary = (
        runs.group_by("host")
        .agg(
            pl.len().alias("observed_hours"),
            pl.col("idle").sum().cast(pl.Int64).alias("idle_hours"),
            pl.col("run_length").filter(pl.col("idle")).max().alias("longest_idle_hours"),
            pl.col("hour").filter(~pl.col("idle")).max().alias("last_active_hour"),
            pl.col("hour").max().alias("last_hour"),
            pl.col("run_start").filter(pl.col("idle")).max().alias("last_idle_run_start"),
            pl.col("idle").sort_by("hour").last().alias("idle_at_end"),
            pl.col("run_length").sort_by("hour").last().alias("last_run_hours"),
            pl.col("util_mean").mean().alias("mean_util"),
            pl.col("mem_bytes").max().alias("peak_memory_bytes"),
            pl.col("resource_id").first(),
        )
        .filter(pl.col("longest_idle_hours") >= thresholds.idle_min_hours)
        .sort("host")
    )
    if summary.is_empty():
        return FINDINGS.empty()
    idle_hours = runs.filter(pl.col("idle"), pl.col("resource_id").is_not_null())
    costs = cost_of_hours(idle_hours, context.hourly, context.hosts)
    rows = []
    for item in _with_hosts(summary, context, costs).iter_rows(named=True):
        waste = _projected(item["cost"], item["observed_hours"])
        # "Idle since" only when the stretch running at the window's end is itself long enough.
        still_idle = item["idle_at_end"] and item["last_run_hours"] >= thresholds.idle_min_hours
        idle_since = item["last_idle_run_start"] if still_idle else None
        evidence = {
            "idle_hours": item["idle_hours"],
            "observed_hours": item["observed_hours"],
            "longest_idle_hours": item["longest_idle_hours"],
            "mean_util": item["mean_util"],
            "peak_memory_bytes": item["peak_memory_bytes"],
            "last_active_hour": item["last_active_hour"],
            "idle_since": idle_since,
            "owner": item["owner"],
            **_host_evidence(item),
            **_cost_evidence(item, "idle_cost_in_window"),
        }
        machine = _machine(item)
        if idle_since is not None:
            advice = f"Idle since {iso_utc(idle_since)}: stop or release {machine}, or give it work"
        else:
            advice = (
                f"GPUs idle {item['idle_hours']} of {item['observed_hours']} h (longest "
                f"stretch {item['longest_idle_hours']} h): scale {machine} down between jobs "
                "or share it"
            )
        rows.append(
            _row(context, IDLE_GPU_SERVER, item, evidence, waste, advice + _cost_note(waste, item))
        )
    return _frame(rows)


def _model_on_cpu(context: _Context) -> pl.DataFrame:
    thresholds = context.thresholds
    servers = _model_server_hosts(context)
    hours = (
        context.gpu_hours.filter(pl.col("host").is_in(servers))
        .join(context.cpu, on=["resource_id", "hour"], how="left")
        .with_columns(
            (
                pl.col("util_known")
                & (pl.col("util_busiest") < thresholds.on_cpu_gpu_util)
                & (pl.col("mem_bytes") < thresholds.on_cpu_gpu_memory_bytes)
                & (pl.col("cpu_util_p95") > thresholds.cpu_busy_p95)
            )
            .fill_null(False)
            .alias("on_cpu")
        )
    )
    summary = (
        hours.group_by("host")
        .agg(
            pl.len().alias("observed_hours"),
            pl.col("on_cpu").sum().cast(pl.Int64).alias("on_cpu_hours"),
            pl.col("util_busiest").filter(pl.col("on_cpu")).max().alias("gpu_util_max"),
            pl.col("mem_bytes").filter(pl.col("on_cpu")).max().alias("gpu_memory_max_bytes"),
            pl.col("cpu_util_p95").filter(pl.col("on_cpu")).median().alias("cpu_p95_median"),
            pl.col("workloads")
            .list.explode(keep_nulls=False, empty_as_null=False)
            .unique()
            .sort()
            .alias("workloads"),
            pl.col("resource_id").first(),
        )
        .filter(pl.col("on_cpu_hours") >= thresholds.on_cpu_min_hours)
        .sort("host")
    )
    if summary.is_empty():
        return FINDINGS.empty()
    costs = cost_of_hours(
        hours.filter(pl.col("on_cpu"), pl.col("resource_id").is_not_null()),
        context.hourly,
        context.hosts,
    )
    rows = []
    for item in _with_hosts(summary, context, costs).iter_rows(named=True):
        waste = _projected(item["cost"], item["observed_hours"])
        evidence = {
            "on_cpu_hours": item["on_cpu_hours"],
            "observed_hours": item["observed_hours"],
            "gpu_util_max": item["gpu_util_max"],
            "gpu_memory_max_bytes": item["gpu_memory_max_bytes"],
            "cpu_p95_median": item["cpu_p95_median"],
            "workloads": item["workloads"],
            "owner": item["owner"],
            **_host_evidence(item),
            **_cost_evidence(item, "on_cpu_cost_in_window"),
        }
        served = ", ".join(item["workloads"]) or "a model server"
        advice = (
            f"{served} runs on the CPU of {_machine(item)} while its GPUs stay at ~0 %: check "
            "the image's CUDA build and the device setting (a CPU-only wheel, "
            "CUDA_VISIBLE_DEVICES, device='cpu'); until then the whole GPU cost is wasted"
        )
        rows.append(
            _row(
                context,
                MODEL_ON_CPU_IN_GPU_HOST,
                item,
                evidence,
                waste,
                advice + _cost_note(waste, item),
            )
        )
    return _frame(rows)


def _cpu_misplaced(context: _Context) -> pl.DataFrame:
    thresholds = context.thresholds
    candidates = context.hosts.filter(
        (pl.col("gpu_count").fill_null(0) == 0) & pl.col("gpu_model").is_null(),
        pl.col("role").is_in(list(thresholds.model_server_roles)),
    )
    if candidates.is_empty() or context.cpu.is_empty():
        return FINDINGS.empty()
    metrics = context.cpu.filter(
        pl.col("resource_id").is_in(candidates["resource_id"].implode()),
        pl.col("cpu_util_p95").is_not_null(),
    )
    summary = (
        metrics.group_by("resource_id")
        .agg(
            pl.len().alias("observed_hours"),
            (pl.col("cpu_util_p95") > thresholds.cpu_busy_p95)
            .sum()
            .cast(pl.Int64)
            .alias("busy_hours"),
            pl.col("cpu_util_p95").median().alias("cpu_p95_median"),
            pl.col("cpu_util_p95").quantile(0.95, "nearest").alias("cpu_p95_window"),
            pl.col("cpu_util_avg").mean().alias("cpu_mean"),
        )
        .filter(
            pl.col("observed_hours") >= thresholds.cpu_min_hours,
            pl.col("busy_hours") >= pl.col("observed_hours") * thresholds.cpu_busy_min_fraction,
        )
        .join(candidates.select("resource_id", "host"), on="resource_id")
        .sort("resource_id")
    )
    if summary.is_empty():
        return FINDINGS.empty()
    costs = cost_of_hours(
        metrics.filter(pl.col("resource_id").is_in(summary["resource_id"].implode())),
        context.hourly,
        context.hosts,
    )
    rows = []
    for item in _with_hosts(summary, context, costs).iter_rows(named=True):
        current = _current_hourly_price(item)
        currency = item["currency"] or item["list_currency"] or "USD"
        offer = cheapest(
            context.catalog,
            provider=item["provider"],
            region=item["region"],
            currency=currency,
            min_gpu_mem_bytes=thresholds.misplaced_min_gpu_memory_bytes,
            full_gpus_only=True,
        )
        waste = (
            to_money((current - offer.hourly_price) * HOURS_PER_MONTH)
            if offer is not None and current is not None
            else None
        )
        evidence = {
            "busy_hours": item["busy_hours"],
            "observed_hours": item["observed_hours"],
            "cpu_p95_median": item["cpu_p95_median"],
            "cpu_p95_window": item["cpu_p95_window"],
            "cpu_mean": item["cpu_mean"],
            "vcpus": item["vcpus"],
            "owner": item["owner"],
            "current_hourly_price": current,
            "recommended": _offer_evidence(offer),
            "monthly_cost_difference": None if waste is None else -waste,
            **_host_evidence(item),
        }
        if offer is None:
            advice = (
                f"{_machine(item)} serves a model on CPUs saturated in {item['busy_hours']} of "
                f"{item['observed_hours']} h: move it to a GPU instance (the catalog has no "
                f"priced GPU of {item['provider']} in {item['region']})"
            )
        else:
            change = (
                f"saves {display_money(waste, currency)}/month"
                if waste is not None and waste >= 0
                else f"costs {display_money(-waste if waste is not None else None, currency)}"
                "/month more, for GPU latency and throughput"
            )
            advice = (
                f"{_machine(item)} serves a model on CPUs saturated in {item['busy_hours']} of "
                f"{item['observed_hours']} h: move it to {offer.describe()}; the move {change}"
            )
        rows.append(
            _row(context, CPU_MISPLACED_MODEL_SERVER, item, evidence, waste, advice, currency)
        )
    return _frame(rows)


def _oversized(context: _Context) -> pl.DataFrame:
    thresholds = context.thresholds
    per_host = (
        context.per_gpu.group_by("host")
        .agg(
            pl.col("hour").n_unique().alias("observed_hours"),
            pl.col("gpu_uuid").n_unique().alias("gpus_seen"),
            pl.col("mem_bytes").max().alias("peak_memory_bytes"),
            pl.col("mem_total_bytes").min().alias("card_memory_bytes"),
            pl.col("util").mean().alias("mean_util"),
            pl.col("util").max().alias("max_util"),
            pl.col("util_known").all().alias("util_known"),
            pl.col("mig_profile").is_not_null().any().alias("mig"),
            pl.col("gpu_model").drop_nulls().first().alias("usage_gpu_model"),
        )
        .join(_host_index(context.hosts), on="host")
        .filter(
            ~pl.col("mig"),
            pl.col("util_known"),
            pl.col("observed_hours") >= thresholds.oversized_min_hours,
            pl.col("peak_memory_bytes") >= thresholds.idle_memory_bytes,
            pl.col("peak_memory_bytes")
            < pl.col("card_memory_bytes") * thresholds.oversized_memory_fraction,
            pl.col("mean_util") < thresholds.oversized_util,
        )
        .sort("host")
    )
    if per_host.is_empty():
        return FINDINGS.empty()
    hours = context.gpu_hours.filter(pl.col("host").is_in(per_host["host"].implode()))
    costs = cost_of_hours(
        hours.filter(pl.col("resource_id").is_not_null()), context.hourly, context.hosts
    )
    rows = []
    for item in _with_hosts(per_host, context, costs).iter_rows(named=True):
        gpu_count = item["gpu_count"] or item["gpus_seen"]
        current = _current_hourly_price(item)
        currency = item["currency"] or item["list_currency"] or "USD"
        required = math.ceil(item["peak_memory_bytes"] * (1 + thresholds.oversized_headroom))
        offer = cheapest(
            context.catalog,
            provider=item["provider"],
            region=item["region"],
            currency=currency,
            min_gpu_mem_bytes=required,
        )
        if offer is None or current is None:
            continue
        current_per_gpu = divide_money(current, gpu_count)
        saving_per_gpu = current_per_gpu - offer.hourly_price_per_gpu
        if saving_per_gpu <= 0:
            continue
        waste = to_money(saving_per_gpu * gpu_count * HOURS_PER_MONTH)
        evidence = {
            "peak_memory_bytes": item["peak_memory_bytes"],
            "card_memory_bytes": item["card_memory_bytes"],
            "required_memory_bytes": required,
            "mean_util": item["mean_util"],
            "max_util": item["max_util"],
            "observed_hours": item["observed_hours"],
            "owner": item["owner"],
            "current_hourly_price": current,
            "current_hourly_price_per_gpu": current_per_gpu,
            "recommended": _offer_evidence(offer),
            **_host_evidence(item),
        }
        share = "" if not offer.mig_profile else " on a MIG-partitioned GPU shared with others"
        advice = (
            f"Peak memory {item['peak_memory_bytes'] / GIB:.1f} GiB of "
            f"{item['card_memory_bytes'] / GIB:.1f} GiB and {item['mean_util']:.0%} mean use on "
            f"{_machine(item)}: run it on {offer.describe()}{share}; saves "
            f"{display_money(waste, currency)}/month"
        )
        rows.append(_row(context, OVERSIZED_GPU, item, evidence, waste, advice, currency))
    return _frame(rows)


# ---- helpers ---------------------------------------------------------------------------------


def _runs(hours: pl.DataFrame, flag: str) -> pl.DataFrame:
    """Add ``run_start`` and ``run_length``: stretches of consecutive hours with equal ``flag``.

    A gap in the hours (no telemetry) ends a stretch.
    """
    marked = hours.sort("host", "hour").with_columns(
        (
            (pl.col(flag) != pl.col(flag).shift(1).over("host"))
            | (pl.col("hour") - pl.col("hour").shift(1).over("host") != pl.duration(hours=1))
        )
        .fill_null(True)
        .cum_sum()
        .over("host")
        .alias("_run")
    )
    return marked.with_columns(
        pl.col("hour").min().over("host", "_run").alias("run_start"),
        pl.len().over("host", "_run").cast(pl.Int64).alias("run_length"),
    ).drop("_run")


def _host_index(hosts: pl.DataFrame) -> pl.DataFrame:
    """``host`` -> ``resource_id``, one row per host name (usage rows name hosts)."""
    return (
        hosts.filter(pl.col("host").is_not_null())
        .select("host", "resource_id")
        .unique("host", keep="first", maintain_order=True)
    )


def _model_server_hosts(context: _Context) -> list[str]:
    """GPU hosts whose role or workloads say they serve models."""
    thresholds = context.thresholds
    by_role = set(
        context.hosts.filter(pl.col("role").is_in(list(thresholds.model_server_roles)))["host"]
        .drop_nulls()
        .to_list()
    )
    workloads = (
        context.gpu_hours.select("host", "workloads").explode("workloads").drop_nulls().unique()
    )
    by_workload = {
        host
        for host, workload in workloads.iter_rows()
        if any(
            fnmatch.fnmatchcase(workload, pattern) for pattern in thresholds.model_server_workloads
        )
    }
    return sorted(by_role | by_workload)


def _with_hosts(summary: pl.DataFrame, context: _Context, costs: pl.DataFrame) -> pl.DataFrame:
    """Add the host's inventory attributes and the priced hours to a per-host summary."""
    attributes = context.hosts.select(
        "resource_id",
        "provider",
        "instance_type",
        "gpu_count",
        "gpu_model",
        "vcpus",
        "region",
        "owner",
        pl.col("hourly_list_price").alias("list_price"),
        pl.col("currency").alias("list_currency"),
    )
    return (
        summary.join(attributes, on="resource_id", how="left")
        .join(costs, on="resource_id", how="left")
        .sort("host", nulls_last=True)
    )


def _projected(cost: Decimal | None, observed_hours: int) -> Decimal | None:
    return None if cost is None or observed_hours <= 0 else monthly(cost, observed_hours)


def _current_hourly_price(item: Mapping[str, Any]) -> Decimal | None:
    """The host's list price, else its mean billed hourly cost over the hours priced."""
    if item["list_price"] is not None:
        return to_money(item["list_price"])
    priced = (item.get("billed_hours") or 0) + (item.get("list_price_hours") or 0)
    if item.get("cost") is None or priced == 0:
        return None
    return divide_money(item["cost"], priced)


def _host_evidence(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "instance_type": item["instance_type"],
        "provider": item["provider"],
        "region": item["region"],
        "gpu_count": item["gpu_count"],
        "gpu_model": item["gpu_model"],
    }


def _cost_evidence(item: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {
        name: item.get("cost"),
        "billed_hours": item.get("billed_hours"),
        "list_price_hours": item.get("list_price_hours"),
        "unpriced_hours": item.get("unpriced_hours"),
    }


def _offer_evidence(offer: GpuOffer | None) -> dict[str, Any] | None:
    if offer is None:
        return None
    return {
        "instance_type": offer.instance_type,
        "gpu_model": offer.gpu_model,
        "gpu_count": offer.gpu_count,
        "gpu_mem_bytes": offer.gpu_mem_bytes,
        "mig_profile": offer.mig_profile,
        "hourly_price": offer.hourly_price,
        "hourly_price_per_gpu": offer.hourly_price_per_gpu,
        "region": offer.region,
        "origin": offer.origin,
    }


def _machine(item: Mapping[str, Any]) -> str:
    kind = item.get("instance_type")
    return f"{item['host']} ({kind})" if kind else str(item["host"])


def _cost_note(waste: Decimal | None, item: Mapping[str, Any]) -> str:
    currency = item.get("currency") or item.get("list_currency")
    if waste is None:
        return "; no bill or list price for it, so the money is unknown"
    note = f"; about {display_money(waste, currency)}/month"
    if item.get("unpriced_hours"):
        note += f" ({item['unpriced_hours']} h had no price)"
    return note


def _severity(waste: Decimal | None, thresholds: FindingThresholds) -> str:
    if waste is None:
        return "medium"
    if waste >= thresholds.severity_high:
        return "high"
    return "medium" if waste >= thresholds.severity_medium else "low"


def _row(
    context: _Context,
    kind: str,
    item: Mapping[str, Any],
    evidence: Mapping[str, Any],
    waste: Decimal | None,
    recommendation: str,
    currency: str | None = None,
) -> dict[str, Any]:
    return {
        "day": context.data.report_day,
        "kind": kind,
        "resource_id": item.get("resource_id"),
        "host": item.get("host"),
        "project": item.get("owner"),
        "window_start": context.data.start,
        "window_end": context.data.end,
        "evidence": canonical_json(dict(evidence)),
        "est_monthly_waste": None if waste is None else to_money(waste),
        "currency": currency or item.get("currency") or item.get("list_currency"),
        "recommendation": recommendation,
        "severity": _severity(waste, context.thresholds),
        "source": SOURCE,
    }


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    if not rows:
        return FINDINGS.empty()
    frame = pl.DataFrame(rows, schema=FINDINGS.schema)
    FINDINGS.validate(frame, SOURCE)
    return _sorted(frame)


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """Canonical order: kind, then resource, then host."""
    return frame.sort("kind", "resource_id", "host", nulls_last=True)
