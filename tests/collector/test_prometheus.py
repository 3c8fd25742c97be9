"""Tests for the prometheus collector: a real Prometheus scraping a local exporter, and a fake API.

The real part: Debian's ``prometheus`` binary (``.ci/run`` installs it; without it the test
skips, naming it) scrapes a loopback exporter serving a recorded dcgm-exporter page every
second, with target labels that make it rename the page's workload labels to ``exported_*``;
the collector reads the series back through ``query_range``. The fake API answers what a real
one answers in the cases a real one cannot be made to: 503s, 429 with Retry-After,
``isPartial``, warnings, authentication.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import polars as pl
import pytest

from gpucost.collector.base import CollectorContext
from gpucost.collector.dcgm_exporter import DcgmExporter
from gpucost.collector.prometheus import (
    DEFAULT_QUERIES,
    PrometheusGpuMetrics,
    PrometheusSettings,
    chunk_range,
)
from gpucost.core.contracts import GPU_USAGE
from gpucost.core.errors import CollectorError, ConfigError
from gpucost.core.window import Window
from tests.collector.builders import build_collector
from tests.fakes.prometheus_server import ExporterServer, PrometheusServer, prometheus_binary

DATA = Path(__file__).resolve().parents[1] / "data"
H100 = DATA / "dcgm" / "nvidia_aicr_eks_p5_H100x8_sampled_with_pod_labels.prom"
DAY = Window(date(2024, 9, 24), date(2024, 9, 25))
GPU0 = "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005"


# ---- a real Prometheus ---------------------------------------------------------------------


@dataclass
class LivePrometheus:
    url: str
    started: datetime


@pytest.fixture(scope="session")
def live_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrometheus]:
    """Debian's prometheus scraping a local exporter (the H100 page) every second."""
    binary, reason = prometheus_binary()
    if binary is None:
        pytest.skip(f"no prometheus binary: {reason}")
    exporter = ExporterServer()
    exporter.page("/metrics", H100.read_bytes())
    with exporter.serve() as exporter_url:
        server = PrometheusServer(
            binary,
            tmp_path_factory.mktemp("prometheus"),
            targets=[exporter_url.removeprefix("http://")],
            # As a Kubernetes ServiceMonitor would label the exporter's own pod.
            target_labels={
                "namespace": "gpu-operator",
                "pod": "nvidia-dcgm-exporter-x7k2p",
                "container": "nvidia-dcgm-exporter",
            },
        )
        started = datetime.now(UTC)
        server.start()
        try:
            server.wait_for_samples("count_over_time(DCGM_FI_DEV_POWER_USAGE[1m])", at_least=4)
            yield LivePrometheus(server.url, started)
        finally:
            server.stop()


def test_reads_a_real_prometheus_back(live_prometheus: LivePrometheus) -> None:
    now = datetime.now(UTC)
    window = Window.days_inclusive(live_prometheus.started.date(), now.date())
    settings = PrometheusSettings(
        name="gpu-metrics", kind="prometheus", url=live_prometheus.url, step_s=1
    )
    source = PrometheusGpuMetrics(settings, CollectorContext())
    collected = source.collect(window)
    rows = collected.frames["gpu_usage"]
    GPU_USAGE.validate(rows, "gpu-metrics")
    # step 1 s over whole days: far more than 11,000 points per series, so it was chunked.
    assert collected.notes["chunks"] >= 8
    # One request more: the targets' own labels (``up``).
    assert collected.notes["requests"] == collected.notes["chunks"] * len(DEFAULT_QUERIES) + 1
    assert "partial_answers" not in collected.notes
    assert set(rows.get_column("host")) == {"gpu-node-1"}
    per_gpu = rows.group_by("gpu_uuid").agg(
        pl.col("seconds_observed").sum(), pl.col("namespace").first(), pl.col("pod").first()
    )
    assert per_gpu.height == 8
    elapsed = (datetime.now(UTC) - live_prometheus.started).total_seconds()
    for seconds in per_gpu.get_column("seconds_observed"):
        assert 3 <= seconds <= elapsed + 1  # seen for a few 1-s steps, never longer than up
    busy = rows.filter(pl.col("gpu_uuid") == GPU0).row(0, named=True)
    # Prometheus renamed the page's own pod/namespace to exported_*: those win ...
    assert busy["namespace"] == "dynamo-workload"
    assert busy["pod"] == "vllm-agg-0-vllmdecodeworker-s65j5"
    assert busy["container"] == "main"
    assert busy["power_avg_w"] == pytest.approx(113.611)
    assert busy["util_avg"] == 0.0 and busy["gpu_model"] == "NVIDIA H100 80GB HBM3"
    assert busy["gpu_index"] == 0
    # ... and the exporter's own pod, on GPUs nobody uses, is not a workload.
    idle = per_gpu.filter(pl.col("gpu_uuid") != GPU0)
    assert idle.get_column("pod").null_count() == 7
    assert idle.get_column("namespace").null_count() == 7


def test_chunking_gives_the_same_rows(live_prometheus: LivePrometheus) -> None:
    window = Window.days_inclusive(live_prometheus.started.date(), datetime.now(UTC).date())
    wide, narrow = (
        build_collector(
            PrometheusGpuMetrics,
            name="p",
            url=live_prometheus.url,
            step_s=1,
            max_points_per_series=max_points,
        )
        for max_points in (11_000, 7_001)
    )
    # Same instant cut-off for both: only hours already finished a while ago can be compared.
    first = wide.collect(window).frames["gpu_usage"]
    second = narrow.collect(window).frames["gpu_usage"]
    settled = pl.col("hour") < datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert first.filter(settled).equals(second.filter(settled))
    assert first.height >= 8 and second.height >= 8


# ---- shares on a real Prometheus, the same as dcgm-exporter's --------------------------------

SLICED_PODS = ("vllm-agg-0-vllmdecodeworker-s65j5", "vllm-agg-1-vllmdecodeworker-q7x2m")
TRAIN_POD = "train-00042-worker-0"
GPU1 = "GPU-bc5610b9-79c8-fedd-8899-07539c7f868a"
SHARES = {
    # GPU 0: two pods time-slicing it at 40 %; GPU 1: one pod at 90 %; the rest: nobody.
    (GPU0, SLICED_PODS[0]): (0.5, 0.2),
    (GPU0, SLICED_PODS[1]): (0.5, 0.2),
    (GPU1, TRAIN_POD): (1.0, 0.9),
}


def sliced_page() -> str:
    """The real H100 page with GPU 0 time-sliced by two pods (40 %) and GPU 1 given a pod (90
    %): dcgm-exporter repeats the device's values on each pod's series."""
    lines = []
    for line in H100.read_text(encoding="utf-8").splitlines():
        if 'gpu="0"' in line:
            if line.startswith("DCGM_FI_DEV_GPU_UTIL"):
                line = line.rsplit(" ", 1)[0] + " 40"
            lines.append(line)
            lines.append(line.replace(SLICED_PODS[0], SLICED_PODS[1]))
        elif 'gpu="1"' in line:
            labels = 'container="pytorch",namespace="research",pod="' + TRAIN_POD + '",pod_uid=""'
            line = line.replace('DCGM_FI_DRIVER_VERSION="580.105.08"}', f"DCGM_FI_DRIVER_VERSION="
                                f'"580.105.08",{labels}}}')  # fmt: skip
            if line.startswith("DCGM_FI_DEV_GPU_UTIL"):
                line = line.rsplit(" ", 1)[0] + " 90"
            lines.append(line)
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def sliced_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrometheus]:
    """A real Prometheus keeping the page's labels (honor_labels), the target labelled with an
    exporter pod whose names no default rule knows: only ``up`` tells it is the target's own."""
    binary, reason = prometheus_binary()
    if binary is None:
        pytest.skip(f"no prometheus binary: {reason}")
    exporter = ExporterServer()
    exporter.page("/metrics", sliced_page())
    with exporter.serve() as exporter_url:
        server = PrometheusServer(
            binary,
            tmp_path_factory.mktemp("prometheus-sliced"),
            targets=[exporter_url.removeprefix("http://")],
            target_labels={"namespace": "monitoring", "pod": "gpu-metrics-x7k2p"},
            honor_labels=True,
        )
        started = datetime.now(UTC)
        server.start()
        try:
            server.wait_for_samples("count_over_time(DCGM_FI_DEV_POWER_USAGE[1m])", at_least=5)
            yield LivePrometheus(server.url, started)
        finally:
            server.stop()


def share_ratios(rows: pl.DataFrame) -> dict[tuple[str, str], tuple[float, float]]:
    """Per GPU and pod: held and busy seconds over seconds observed."""
    totals = rows.group_by("gpu_uuid", "pod").agg(
        pl.col("seconds_observed").sum(),
        pl.col("gpu_seconds_held").sum(),
        pl.col("gpu_seconds_busy").sum(),
    )
    return {
        (uuid, pod or ""): (round(held / seconds, 9), round(busy / seconds, 9))
        for uuid, pod, seconds, held, busy in totals.iter_rows()
    }


def test_shares_from_a_real_prometheus_equal_dcgm_exporters(
    sliced_prometheus: LivePrometheus, tmp_path: Path
) -> None:
    window = Window.days_inclusive(sliced_prometheus.started.date(), datetime.now(UTC).date())
    metrics = build_collector(
        PrometheusGpuMetrics, name="p", url=sliced_prometheus.url, step_s=1
    ).collect(window)
    through_prometheus = share_ratios(metrics.frames["gpu_usage"])
    # The same series as dcgm-exporter saw them: Prometheus' raw samples with their scrape
    # times, written back as an exposition page and read by the dcgm-exporter source (which,
    # without ``up``, knows the exporter's pod by the glob).
    query = '{__name__=~"DCGM_FI_DEV_GPU_UTIL|DCGM_FI_DEV_POWER_USAGE"}[10m]'
    with urllib.request.urlopen(
        f"{sliced_prometheus.url}/api/v1/query?{urlencode({'query': query})}", timeout=5
    ) as response:
        raw = json.loads(response.read())
    lines = []
    for item in raw["data"]["result"]:
        labels = {k: v for k, v in item["metric"].items() if k not in ("__name__", "job")}
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for at, value in item["values"]:
            lines.append(f"{item['metric']['__name__']}{{{text}}} {value} {round(at * 1000)}")
    page = tmp_path / "gpu-node-1" / "recorded.prom"
    page.parent.mkdir()
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dcgm = build_collector(
        DcgmExporter,
        name="d",
        paths=[str(page)],
        scrape_interval_s=1,
        exporter_pods=["gpu-metrics-*"],
    ).collect(window)
    through_dcgm = share_ratios(dcgm.frames["gpu_usage"])
    expected = {key: SHARES.get(key, (0.0, 0.0)) for key in through_dcgm}
    assert len(expected) == 9 and set(expected) >= set(SHARES)
    assert through_dcgm == expected
    assert through_prometheus == expected


# ---- chunking ------------------------------------------------------------------------------


@pytest.mark.parametrize(("step_s", "max_points"), [(1, 11_000), (60, 11_000), (60, 7), (15, 2)])
def test_chunks_cover_every_point_once(step_s: int, max_points: int) -> None:
    start = datetime(2024, 9, 24, 0, 1, tzinfo=UTC)
    end = datetime(2024, 9, 27, tzinfo=UTC)
    chunks = chunk_range(start, end, step_s, max_points)
    points: list[datetime] = []
    for chunk_start, chunk_end in chunks:
        count = int((chunk_end - chunk_start).total_seconds()) // step_s + 1
        assert count <= max_points
        # Prometheus' own check: (end - start) / step must not exceed 11,000.
        assert (chunk_end - chunk_start).total_seconds() / step_s <= 11_000
        points.extend(chunk_start + timedelta(seconds=step_s * k) for k in range(count))
    expected = int((end - start).total_seconds()) // step_s + 1
    assert len(points) == len(set(points)) == expected
    assert points[0] == start and points[-1] == end
    assert len(chunks) == math.ceil(expected / max_points)


# ---- a fake API for what a real one will not do on demand ---------------------------------


@dataclass
class FakeApi:
    """Answers /api/v1/query_range from ``answer(query, params)``; records every request."""

    answer: Callable[[dict[str, str], dict[str, str]], tuple[int, Any, dict[str, str]]]
    requests: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def serve(self) -> Iterator[str]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                params = {key: values[0] for key, values in parse_qs(parts.query).items()}
                headers = {key.lower(): value for key, value in self.headers.items()}
                with fake.lock:
                    fake.requests.append((params, headers))
                extra: dict[str, str] = {}
                if parts.path != "/api/v1/query_range":
                    status, body = 404, {"status": "error", "error": "no route"}
                else:
                    status, body, extra = fake.answer(params, headers)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture
def fake_api(request: pytest.FixtureRequest) -> Iterator[tuple[FakeApi, str]]:
    fake = FakeApi(request.param)
    with fake.serve() as url:
        yield fake, url


def matrix(series: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": series}, **extra}


LABELS = {
    "__name__": "ignored",
    "gpu": "0",
    "UUID": "GPU-aaaa",
    "modelName": "NVIDIA A100-SXM4-80GB",
    "Hostname": "gpu-node-7",
    "instance": "10.0.0.7:9400",
    "job": "dcgm",
    "pod": "nvidia-dcgm-exporter-abcde",
    "namespace": "gpu-operator",
    "exported_pod": "train-00042-worker-0",
    "exported_namespace": "research",
    "exported_container": "pytorch",
}
MIG_LABELS = {
    "gpu": "1",
    "UUID": "GPU-bbbb",
    "GPU_I_PROFILE": "1g.10gb",
    "GPU_I_ID": "9",
    "Hostname": "gpu-node-7",
    "instance": "10.0.0.7:9400",
    "job": "dcgm",
    "pod": "nvidia-dcgm-exporter-abcde",
    "namespace": "gpu-operator",
}
VALUES = {
    "util": 0.5,
    "util_max": 0.75,
    "mem_used_mib": 1024.0,
    "mem_total_mib": 81920.0,
    "power_w": 300.0,
    "sm_clock_mhz": 1410.0,
}
QUERY_TO_MEASURE = {
    template.replace("{step}", "300s"): measure for measure, template in DEFAULT_QUERIES.items()
}


def hourly_points(params: dict[str, str], skip: frozenset[float] = frozenset()) -> list[list[Any]]:
    start, end, step = float(params["start"]), float(params["end"]), float(params["step"][:-1])
    points: list[list[Any]] = []
    moment = start
    while moment <= end:
        if moment not in skip:
            points.append([moment, None])
        moment += step
    return points


def steady(params: dict[str, str], _headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    """Every measure constant for both series; the MIG slice reports no utilisation."""
    measure = QUERY_TO_MEASURE[params["query"]]
    value = VALUES[measure]
    series = [{"metric": LABELS, "values": [[t, str(value)] for t, _ in hourly_points(params)]}]
    if not measure.startswith("util"):
        mig_points = [[t, str(value)] for t, _ in hourly_points(params)]
        series.append({"metric": MIG_LABELS, "values": mig_points})
    else:
        series.append(
            {"metric": MIG_LABELS, "values": [[t, "NaN"] for t, _ in hourly_points(params)]}
        )
    return 200, matrix(series), {}


def source(
    url: str, sleep: Callable[[float], None] | None = None, **keys: Any
) -> PrometheusGpuMetrics:
    """A prometheus source over ``url`` (step 300 s unless given); ``sleep`` records pauses."""
    context = CollectorContext(sleep=sleep) if sleep is not None else CollectorContext()
    keys.setdefault("step_s", 300)
    # The fake answers the measures' queries; the targets' ``up`` query is tested live.
    keys.setdefault("target_query", None)
    return build_collector(PrometheusGpuMetrics, context, name="gpu-metrics", url=url, **keys)


@pytest.mark.parametrize("fake_api", [steady], indirect=True)
def test_points_become_hourly_rows(fake_api: tuple[FakeApi, str]) -> None:
    fake, url = fake_api
    collected = source(url, max_points_per_series=100).collect(DAY)
    rows = collected.frames["gpu_usage"]
    # 288 points of 300 s per series over a day; chunks of 100 points: 3 per measure.
    assert collected.notes["chunks"] == 3 and len(fake.requests) == 18
    first_chunk = [
        params
        for params, _ in fake.requests
        if params["query"] == DEFAULT_QUERIES["power_w"].replace("{step}", "300s")
    ]
    assert float(first_chunk[0]["start"]) == DAY.start_time.timestamp() + 300
    assert float(first_chunk[-1]["end"]) == DAY.end_time.timestamp()
    assert rows.height == 48 and set(rows.get_column("seconds_observed")) == {3600.0}
    whole = rows.filter(pl.col("gpu_uuid") == "GPU-aaaa").row(0, named=True)
    assert (whole["namespace"], whole["pod"], whole["container"]) == (
        "research",
        "train-00042-worker-0",
        "pytorch",
    )
    assert whole["workload"] == "train-00042"
    assert whole["util_avg"] == 0.5 and whole["util_max"] == 0.75
    assert whole["mem_used_max_bytes"] == 1024 << 20
    assert whole["mem_total_bytes"] == 81920 << 20
    assert whole["power_avg_w"] == 300.0 and whole["sm_clock_avg_mhz"] == 1410.0
    assert whole["hour"] == DAY.start_time and whole["gpu_index"] == 0
    assert whole["gpu_seconds_held"] == 3600.0 and whole["gpu_seconds_busy"] == 1800.0
    mig = rows.filter(pl.col("gpu_uuid") == "GPU-bbbb/9").row(0, named=True)
    assert mig["mig_profile"] == "1g.10gb" and mig["util_avg"] is None
    assert mig["gpu_seconds_held"] == 0.0 and mig["gpu_seconds_busy"] is None
    # The exporter's own pod label on a series without exported_pod is not a workload.
    assert mig["pod"] is None and mig["namespace"] is None


def gappy(params: dict[str, str], _headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    missing = frozenset(DAY.start_time.timestamp() + 300 * k for k in (3, 4, 5))  # 00:10-00:25
    points = [[t, "1"] for t, _ in hourly_points(params, missing)]
    return 200, matrix([{"metric": LABELS, "values": points}]), {}


@pytest.mark.parametrize("fake_api", [gappy], indirect=True)
def test_missing_steps_leave_the_hour_short(fake_api: tuple[FakeApi, str]) -> None:
    _, url = fake_api
    rows = source(url).collect(DAY).frames["gpu_usage"]
    first_hour = rows.filter(pl.col("hour") == DAY.start_time).row(0, named=True)
    assert first_hour["seconds_observed"] == 3600 - 3 * 300


def flaky_state() -> Callable[[dict[str, str], dict[str, str]], tuple[int, Any, dict[str, str]]]:
    calls = {"count": 0}

    def answer(params: dict[str, str], headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        calls["count"] += 1
        if calls["count"] == 1:
            return 503, {"status": "error", "errorType": "unavailable", "error": "busy"}, {}
        if calls["count"] == 2:
            return 429, {"status": "error", "error": "slow down"}, {"Retry-After": "7"}
        return steady(params, headers)

    return answer


@pytest.mark.parametrize("fake_api", [flaky_state()], indirect=True)
def test_retries_5xx_and_429_with_backoff(fake_api: tuple[FakeApi, str]) -> None:
    fake, url = fake_api
    pauses: list[float] = []
    collected = source(url, sleep=pauses.append).collect(DAY)
    assert len(pauses) == 2 and 0 <= pauses[0] <= 0.5 and pauses[1] == 7.0
    assert collected.notes["requests"] == len(fake.requests) == 6 + 2
    assert collected.frames["gpu_usage"].height == 48


def always_down(_params: dict[str, str], _h: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    return 502, {"status": "error", "error": "bad gateway"}, {}


@pytest.mark.parametrize("fake_api", [always_down], indirect=True)
def test_retries_are_bounded(fake_api: tuple[FakeApi, str]) -> None:
    fake, url = fake_api
    pauses: list[float] = []
    with pytest.raises(CollectorError, match=r"failed 3 times .* HTTP 502: error: bad gateway"):
        source(url, max_retries=2, sleep=pauses.append).collect(DAY)
    assert len(fake.requests) == 3 and len(pauses) == 2


def bad_query(_params: dict[str, str], _h: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    return 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, {}


@pytest.mark.parametrize("fake_api", [bad_query], indirect=True)
def test_a_bad_query_fails_at_once(fake_api: tuple[FakeApi, str]) -> None:
    fake, url = fake_api
    with pytest.raises(CollectorError, match=r"refused query .*bad_data: parse error"):
        source(url, sleep=lambda _: None).collect(DAY)
    assert len(fake.requests) == 1


def partial(params: dict[str, str], headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    status, body, extra = steady(params, headers)
    if QUERY_TO_MEASURE[params["query"]] == "power_w":
        body["isPartial"] = True  # VictoriaMetrics
    if QUERY_TO_MEASURE[params["query"]] == "util":
        body["warnings"] = ["partial response: store 10.0.0.9:10901 unreachable"]  # Thanos
    return status, body, extra


@pytest.mark.parametrize("fake_api", [partial], indirect=True)
def test_partial_answers_are_flagged(fake_api: tuple[FakeApi, str]) -> None:
    _, url = fake_api
    notes = source(url).collect(DAY).notes
    assert notes["partial_answers"] == ["util", "power_w"]
    assert notes["warnings"] == ["partial response: store 10.0.0.9:10901 unreachable"]


def needs_auth(params: dict[str, str], headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    wanted = {
        "Bearer s3cr3t-token",
        "Basic " + base64.b64encode(b"gpucost:p4ss").decode(),
    }
    if headers.get("authorization") not in wanted or headers.get("x-scope-orgid") != "ml":
        return 401, {"status": "error", "error": "unauthorized"}, {}
    return steady(params, headers)


@pytest.mark.parametrize("fake_api", [needs_auth], indirect=True)
def test_bearer_and_basic_auth_from_secret_refs(
    fake_api: tuple[FakeApi, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = fake_api
    monkeypatch.setenv("PROM_TOKEN", "s3cr3t-token")
    password_file = tmp_path / "password"
    password_file.write_text("p4ss\n")
    for auth in (
        {"bearer_token": {"env": "PROM_TOKEN"}},
        {"basic_auth": {"username": "gpucost", "password": {"file": str(password_file)}}},
    ):
        settings = PrometheusSettings.model_validate(
            {"name": "gpu-metrics", "kind": "prometheus", "url": url, "step_s": 300}
            | {"headers": {"X-Scope-OrgID": "ml"}}
            | auth
        )
        assert "s3cr3t" not in repr(settings) and "p4ss" not in repr(settings)
        collected = PrometheusGpuMetrics(settings, CollectorContext()).collect(DAY)
        assert collected.frames["gpu_usage"].height == 48
        assert "s3cr3t" not in json.dumps(collected.notes) and "p4ss" not in json.dumps(
            collected.notes
        )
    monkeypatch.delenv("PROM_TOKEN")
    settings = PrometheusSettings.model_validate(
        {
            "name": "gpu-metrics",
            "kind": "prometheus",
            "url": url,
            "bearer_token": {"env": "PROM_TOKEN"},
        }
    )
    with pytest.raises(ConfigError, match="PROM_TOKEN is not set"):
        PrometheusGpuMetrics(settings, CollectorContext())


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="step_s must divide 3600"):
        PrometheusSettings(name="p", kind="prometheus", url="http://x", step_s=7)
    with pytest.raises(ValueError, match="unknown measures"):
        PrometheusSettings(name="p", kind="prometheus", url="http://x", queries={"temp": "x"})


def test_query_overrides_replace_the_default() -> None:
    collector = build_collector(
        PrometheusGpuMetrics,
        name="p",
        url="http://user:secret@prometheus.example:9090/",
        queries={"power_w": "avg_over_time(my_power[{step}])"},
    )
    assert collector.queries["power_w"] == "avg_over_time(my_power[{step}])"
    assert collector.queries["util"] == DEFAULT_QUERIES["util"]
    assert collector.api.safe_url == "http://prometheus.example:9090"
