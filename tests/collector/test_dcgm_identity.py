"""The exporter's own identity is not a workload, on real Prometheus answers (issue 15, item 1).

Prometheus' Kubernetes service discovery attaches the scrape target's ``namespace``/``pod``/
``container`` to every series; dcgm-exporter adds workload labels only to GPUs that have a
workload. In NVIDIA's 2 x 8 H100 EKS cluster (``tests/data/dcgm/prometheus_api``) 15 idle GPUs
carry ``gpu-operator/nvidia-dcgm-exporter-*`` and one carries its vLLM pod; in UpCloud's L40S
cluster the idle GPU carries ``default/dcgm-exporter-*``, container ``exporter``. The same
label sets are read through the ``prometheus`` source's decoding and, written as an exposition
page (as Prometheus' federation would give them), through the ``dcgm-exporter`` source; both
must see one workload, and the allocator must leave the idle GPUs idle.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from gpucost.allocator.allocate import allocate
from gpucost.allocator.policy import AllocationPolicy
from gpucost.collector.dcgm_exporter import DcgmExporter
from gpucost.collector.gpu_rollup import clear_exporter_identity, rollup_hourly
from gpucost.collector.prometheus import QueryResult, samples_from_results, target_identities
from gpucost.core.window import Window
from tests.allocator.builders import billing, charge, headcount, host, inventory, rule
from tests.collector.builders import build_collector

ANSWERS = Path(__file__).resolve().parents[1] / "data" / "dcgm" / "prometheus_api"
H100 = {
    "util": "nvidia_aicr_eks_H100_query_DCGM_FI_DEV_GPU_UTIL.json",
    "mem_used_mib": "nvidia_aicr_eks_H100_query_DCGM_FI_DEV_FB_USED.json",
    "power_w": "nvidia_aicr_eks_H100_query_DCGM_FI_DEV_POWER_USAGE.json",
}
L40S = "upcloud_L40S_query_DCGM_FI_DEV_GPU_TEMP.json"
WORKLOAD_GPU = "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005"
VLLM_POD = "vllm-agg-0-vllmdecodeworker-s65j5"
STEP_S = 60


def answer(name: str) -> list[dict[str, Any]]:
    """The ``result`` of a recorded instant query."""
    body = json.loads((ANSWERS / name).read_text(encoding="utf-8"))
    assert body["status"] == "success" and body["data"]["resultType"] == "vector"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def step_time(series: list[dict[str, Any]]) -> int:
    """The step a ``query_range`` would put the answer's points on (the minute it began)."""
    return int(float(series[0]["value"][0])) // STEP_S * STEP_S


def as_range(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instant-vector series as one-point range series on a common step, as ``query_range``
    gives every measure's points (the recorded answers were taken a fraction of a second
    apart)."""
    at = step_time(series)
    return [{"metric": item["metric"], "values": [[at, item["value"][1]]]} for item in series]


def prometheus_samples(files: dict[str, str]) -> tuple[pl.DataFrame, int]:
    """The answers decoded as the prometheus source decodes them, own identity cleared."""
    results = [QueryResult(measure, as_range(answer(file))) for measure, file in files.items()]
    samples, unplaced = samples_from_results(results, STEP_S)
    assert unplaced == 0
    return clear_exporter_identity(samples)


def workloads(rows: pl.DataFrame) -> dict[str, tuple[str | None, str | None]]:
    """GPU uuid -> (namespace, pod) of rollup rows."""
    return {
        uuid: (namespace, pod)
        for uuid, namespace, pod in rows.select("gpu_uuid", "namespace", "pod").iter_rows()
    }


def test_prometheus_answers_idle_h100s_have_no_workload() -> None:
    samples, cleared = prometheus_samples(H100)
    assert cleared == 15  # one sample per idle GPU (the three measures share an instant)
    rows = rollup_hourly(samples, interval_s=STEP_S, source="gpu-metrics")
    assert rows.height == 16
    seen = workloads(rows)
    assert seen.pop(WORKLOAD_GPU) == ("dynamo-workload", VLLM_POD)
    assert set(seen.values()) == {(None, None)}
    held = dict(rows.select("gpu_uuid", "gpu_seconds_held").iter_rows())
    assert held.pop(WORKLOAD_GPU) == STEP_S
    assert set(held.values()) == {0.0}
    busy = rows.filter(pl.col("gpu_uuid") == WORKLOAD_GPU).row(0, named=True)
    assert busy["power_avg_w"] == pytest.approx(113.611)
    assert busy["container"] == "main"


def test_without_the_rule_the_exporter_would_hold_every_idle_gpu() -> None:
    results = [QueryResult(measure, as_range(answer(file))) for measure, file in H100.items()]
    raw, _ = samples_from_results(results, STEP_S)
    pods = raw.filter(pl.col("gpu_uuid") != WORKLOAD_GPU).get_column("pod").unique().sort()
    assert pods.to_list() == ["nvidia-dcgm-exporter-g2fjs", "nvidia-dcgm-exporter-wqqqn"]


def test_helm_chart_exporter_container_is_recognised() -> None:
    samples, cleared = prometheus_samples({"power_w": L40S})
    assert cleared == 1
    assert samples.select("namespace", "pod", "container").row(0) == (None, None, None)


def test_pod_glob_is_the_last_resort() -> None:
    labels = {
        "Hostname": "node-a",
        "UUID": "GPU-1",
        "gpu": "0",
        "instance": "10.0.0.1:9400",
        "job": "gpus",
        "namespace": "monitoring",
        "pod": "my-gpu-metrics-x2k9p",
        "container": "metrics",
    }
    results = [QueryResult("util", [{"metric": labels, "values": [[1_700_000_000, "0.5"]]}])]
    samples, _ = samples_from_results(results, STEP_S)
    assert clear_exporter_identity(samples)[1] == 0
    assert clear_exporter_identity(samples, ["my-gpu-metrics-*"])[1] == 1


def test_target_identity_from_up_clears_the_targets_own_pod() -> None:
    # With honor_labels and an exporter container named otherwise, the target's own pod (as
    # ``up`` shows it) is what says the series has no workload.
    target = {"job": "gpus", "instance": "10.0.0.1:9400"}
    own = {**target, "namespace": "monitoring", "pod": "gpu-metrics-x2k9p", "container": "m"}
    worker = {**target, "namespace": "research", "pod": "train-0", "container": "pytorch"}
    series = [
        {"metric": {**own, "Hostname": "n", "UUID": "GPU-1"}, "values": [[1.7e9, "0"]]},
        {"metric": {**worker, "Hostname": "n", "UUID": "GPU-2"}, "values": [[1.7e9, "0.9"]]},
    ]
    up = [{"metric": {**target, "namespace": "monitoring", "pod": "gpu-metrics-x2k9p"}}]
    samples, _ = samples_from_results([QueryResult("util", series)], STEP_S, target_identities(up))
    pods = dict(samples.select("gpu_uuid", "pod").iter_rows())
    assert pods == {"GPU-1": None, "GPU-2": "train-0"}


def exposition(files: dict[str, str]) -> str:
    """The answers as exposition lines with their labels and millisecond timestamps."""
    names = {
        "util": "DCGM_FI_DEV_GPU_UTIL",
        "mem_used_mib": "DCGM_FI_DEV_FB_USED",
        "power_w": "DCGM_FI_DEV_POWER_USAGE",
    }
    lines = []
    for measure, file in files.items():
        for item in answer(file):
            labels = {k: v for k, v in item["metric"].items() if k != "__name__"}
            text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            # The prometheus source stamps a point at t with t - step: the same instant here.
            at = (step_time(answer(file)) - STEP_S) * 1000
            lines.append(f"{names[measure]}{{{text}}} {item['value'][1]} {at}")
    return "\n".join(lines) + "\n"


def test_dcgm_exporter_source_reads_the_same_label_sets_alike(tmp_path: Path) -> None:
    page = tmp_path / "federated" / "h100.prom"
    page.parent.mkdir()
    page.write_text(exposition(H100), encoding="utf-8")
    at = datetime.fromtimestamp(float(answer(H100["util"])[0]["value"][0]), UTC).date()
    source = build_collector(DcgmExporter, name="dcgm", paths=[str(page)], scrape_interval_s=60)
    collected = source.collect(Window(at, date.fromordinal(at.toordinal() + 1)))
    rows = collected.frames["gpu_usage"]
    assert collected.notes["exporter_own_samples"] == 15
    samples, _ = prometheus_samples(H100)
    through_prometheus = rollup_hourly(samples, interval_s=STEP_S, source="dcgm")
    assert workloads(rows) == workloads(through_prometheus)
    columns = ["gpu_uuid", "gpu_seconds_held", "gpu_seconds_busy"]
    assert (
        rows.select(columns)
        .sort("gpu_uuid")
        .equals(through_prometheus.select(columns).sort("gpu_uuid"))
    )


def test_allocation_basis_leaves_idle_h100s_idle() -> None:
    # A rule on the exporter's namespace must not be billed for GPUs nobody used.
    samples, _ = prometheus_samples(H100)
    rows = rollup_hourly(samples, interval_s=STEP_S, source="gpu-metrics")
    hour = rows.get_column("hour")[0]
    rules = [
        rule("platform", namespaces=("gpu-operator*",)),
        rule("inference", namespaces=("dynamo-*",)),
    ]
    charges = [
        charge("98.32", resource_id=f"i-{node}") | {"ChargePeriodStart": hour}
        for node in ("gpu-node-1", "gpu-node-2")
    ]
    for item in charges:
        item["ChargePeriodEnd"] = hour + timedelta(hours=1)
    hosts = [*host("i-gpu-node-1", "gpu-node-1", 8), *host("i-gpu-node-2", "gpu-node-2", 8)]
    result = allocate(
        billing(charges).lazy(),
        rows.lazy(),
        inventory(hosts).lazy(),
        headcount([]).lazy(),
        rules,
        AllocationPolicy(gpu_basis="allocation", idle="separate"),
    )
    amounts = dict(result.allocation.group_by("project").agg(pl.col("amount").sum()).iter_rows())
    # The vLLM pod held 60 s of one GPU's hour: 1/8 x 60/3600 of node 1's charge.
    assert abs(amounts["inference"] - Decimal("98.32") / 8 / 60) <= Decimal("1e-18")
    assert "platform" not in amounts
    assert amounts["idle"] == Decimal("196.64") - amounts["inference"]
