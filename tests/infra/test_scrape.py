"""The shipped scrape configurations, run by a real Prometheus against a real ``gpucost serve``.

``serve`` runs as a subprocess with ``[serve] metrics_token`` set (as the shipped ConfigMap
does) over a lake the sample night filled. Prometheus (Debian's binary; the test skips, naming
it, when it is missing) then scrapes it twice:

* with ``infra/prometheus/scrape-config.yaml`` as shipped, its Kubernetes discovery replaced by
  a static target carrying the ``__meta_kubernetes_*`` labels discovery would give the
  ``gpucost-metrics`` Service's endpoint (so its relabelling runs as in a cluster);
* with ``infra/kubernetes/monitoring/servicemonitor.yaml`` turned into the scrape job the
  Prometheus Operator generates from it (selector and port kept by relabelling, ``jobLabel``,
  ``authorization`` from the Secret), the labels taken from ``infra/kubernetes/service.yaml``.

Each time ``up{job="gpucost"}`` is 1 (``GpucostServeDown`` stays silent), a job without the
token is refused, and the dashboard's cost queries, run by that Prometheus, give the
allocation table's per-project figures.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from gpucost.cli import app
from tests.fakes.prometheus_server import free_port, prometheus_binary
from tests.helpers import ConfigWriter

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
DASHBOARD = INFRA / "grafana" / "gpucost-dashboard.json"
ALERTS = INFRA / "prometheus" / "alerts.yaml"
NIGHT = date(2024, 10, 1)
runner = CliRunner()


def k8s(path: str) -> Any:
    (document,) = [doc for doc in yaml.safe_load_all((INFRA / path).read_text()) if doc]
    return document


@dataclass
class Service:
    """``gpucost serve`` in a subprocess; its address read from its log."""

    process: subprocess.Popen[bytes]
    log: Path
    address: str = ""

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            found = re.search(r"serving /metrics and /healthz on http://([\d.]+:\d+)", self.text)
            if found:
                self.address = found.group(1)
                return
            time.sleep(0.1)
        raise AssertionError(f"serve did not start: {self.text}")

    @property
    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def token() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def serve(tmp_path: Path, write_config: ConfigWriter, token: str) -> Iterator[Service]:
    """A sample night in the lake, then ``serve`` with a metrics token, its gauges computed."""
    (tmp_path / "metrics-token").write_text(token + "\n")
    config = write_config.sample_night(
        lookback_days=30,
        serve={
            "metrics_port": 0,
            "metrics_token": {"file": str(tmp_path / "metrics-token")},
            "nightly_schedule": "0 2 * * *",
            "run_nightly": False,
        },
    )
    night = runner.invoke(app, ["nightly", "--config", str(config)])
    assert night.exit_code == 0, night.output
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gpucost.cli", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    service = Service(process, log)
    try:
        service.wait_ready()
        yield service
    finally:
        process.terminate()
        process.wait(timeout=30)


class Prometheus:
    """A real Prometheus with the given ``scrape_configs``, on a free loopback port."""

    def __init__(self, binary: str, directory: Path, scrape_configs: list[Mapping[str, Any]]):
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": list(scrape_configs),
                }
            )
        )
        self.log = directory / "prometheus.log"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=5) as response:
            result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
            return result

    def wait_for(self, expression: str, timeout_s: float = 30) -> list[dict[str, Any]]:
        """The first non-empty result of ``expression`` (Prometheus starting, first scrapes)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                result = self.query(expression)
            except (urllib.error.URLError, ConnectionError):
                result = []
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"{expression} stayed empty: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def binary() -> str:
    found, why = prometheus_binary()
    if found is None:
        pytest.skip(why)
    return found


def discovered_labels(port_name: str) -> dict[str, str]:
    """The ``__meta_kubernetes_*`` labels endpoints discovery gives the Service's endpoint."""
    service = k8s("kubernetes/service.yaml")
    labels = {
        "__meta_kubernetes_namespace": service["metadata"]["namespace"],
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_port_name": port_name,
        "__meta_kubernetes_pod_name": "gpucost-serve-7d9c6-x2x4q",
    }
    for key, value in service["metadata"]["labels"].items():
        # Prometheus: "any unsupported characters in the label name converted to underscore".
        labels[f"__meta_kubernetes_service_label_{re.sub(r'[^a-zA-Z0-9_]', '_', key)}"] = value
    return labels


def plain_scrape_job(address: str, token_file: Path) -> dict[str, Any]:
    """infra/prometheus/scrape-config.yaml's job, discovery swapped for a labelled target."""
    (job,) = yaml.safe_load((INFRA / "prometheus" / "scrape-config.yaml").read_text())[
        "scrape_configs"
    ]
    assert job["authorization"]["type"] == "Bearer"
    job = {key: value for key, value in job.items() if key != "kubernetes_sd_configs"}
    job["authorization"] = {**job["authorization"], "credentials_file": str(token_file)}
    job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
    job["static_configs"] = [{"targets": [address], "labels": discovered_labels("metrics")}]
    return job


def operator_scrape_job(address: str, token: str) -> dict[str, Any]:
    """The job the Prometheus Operator generates from the shipped ServiceMonitor.

    The operator keeps endpoints whose Service matches ``selector.matchLabels`` and whose port
    is the endpoint's ``port``, sets ``job`` from the ``jobLabel`` Service label, and puts the
    Secret's key into ``authorization.credentials``.
    """
    monitor = k8s("kubernetes/monitoring/servicemonitor.yaml")
    secret = k8s("kubernetes/secret.example.yaml")
    spec = monitor["spec"]
    (endpoint,) = spec["endpoints"]
    reference = endpoint["authorization"]["credentials"]
    assert reference["name"] == secret["metadata"]["name"], "the ServiceMonitor's Secret ships"
    assert reference["key"] in secret["stringData"], "the token's key is the pod's key"
    assert monitor["metadata"]["namespace"] == secret["metadata"]["namespace"]

    def meta(label: str) -> str:
        return f"__meta_kubernetes_service_label_{re.sub(r'[^a-zA-Z0-9_]', '_', label)}"

    relabel: list[dict[str, Any]] = [
        {"source_labels": [meta(key)], "regex": value, "action": "keep"}
        for key, value in spec["selector"]["matchLabels"].items()
    ]
    relabel += [
        {
            "source_labels": ["__meta_kubernetes_endpoint_port_name"],
            "regex": endpoint["port"],
            "action": "keep",
        },
        {
            "source_labels": ["__meta_kubernetes_namespace"],
            "regex": "|".join(spec["namespaceSelector"]["matchNames"]),
            "action": "keep",
        },
        {"source_labels": [meta(spec["jobLabel"])], "target_label": "job", "regex": "(.+)"},
    ]
    return {
        "job_name": f"serviceMonitor/{monitor['metadata']['namespace']}/gpucost/0",
        "metrics_path": endpoint["path"],
        "scheme": endpoint["scheme"],
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "authorization": {"type": endpoint["authorization"]["type"], "credentials": token},
        "static_configs": [{"targets": [address], "labels": discovered_labels(endpoint["port"])}],
        "relabel_configs": relabel,
    }


def no_token_job(address: str) -> dict[str, Any]:
    """What annotation-based discovery amounts to: the same target, no token."""
    return {"job_name": "no-token", "static_configs": [{"targets": [address]}]}


def serve_down_expression() -> str:
    document = yaml.safe_load(ALERTS.read_text())
    (rule,) = [
        rule
        for group in document["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "GpucostServeDown"
    ]
    return str(rule["expr"])


def allocation_figures(lake: Path) -> dict[str, dict[tuple[str, str], float]]:
    """Per period, (project, currency) -> allocated cost, from the lake's parquet."""
    frame = pl.read_parquet(lake / "allocation" / "**" / "*.parquet", hive_partitioning=False)
    day = date.fromordinal(NIGHT.toordinal() - 1)
    periods = {
        "yesterday": frame.filter(pl.col("day") == day),
        "month_to_date": frame.filter(pl.col("day") >= day.replace(day=1), pl.col("day") <= day),
    }
    figures: dict[str, dict[tuple[str, str], float]] = {}
    for period, rows in periods.items():
        sums = rows.group_by("project", "currency").agg(pl.col("amount").sum())
        figures[period] = {
            (project, currency): float(amount)
            for project, currency, amount in sums.iter_rows()
            if currency is not None and amount != Decimal(0)
        }
    return figures


def dashboard_cost_queries() -> dict[str, str]:
    """Per-project cost panels (title -> expression), ``$project`` as "All" selects it."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        panel["title"]: target["expr"].replace("$project", ".*")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if panel["title"].startswith("Cost per project")
    }


def check_scrape(prometheus: Prometheus, lake: Path) -> None:
    (up,) = prometheus.wait_for('up{job="gpucost"}')
    assert up["value"][1] == "1", up
    assert prometheus.query(serve_down_expression()) == [], "GpucostServeDown would fire"
    (refused,) = prometheus.wait_for('up{job="no-token"}')
    assert refused["value"][1] == "0", "without the token the scrape fails (401)"
    prometheus.wait_for('gpucost_project_effective_cost{job="gpucost"}')
    figures = allocation_figures(lake)
    queries = dashboard_cost_queries()
    assert len(queries) == 2, queries
    for title, expression in queries.items():
        period = re.search(r'period="(\w+)"', expression)
        assert period is not None, expression
        shown = {
            (row["metric"]["project"], row["metric"]["currency"]): float(row["value"][1])
            for row in prometheus.query(expression)
            if float(row["value"][1]) != 0.0  # a project with no cost that day shows 0
        }
        expected = figures[period.group(1)]
        assert shown.keys() == expected.keys(), title
        for key, value in expected.items():
            assert shown[key] == pytest.approx(value, rel=1e-12), (title, key)


def test_the_shipped_scrape_config_scrapes_serve_with_its_token(
    tmp_path: Path, binary: str, serve: Service
) -> None:
    token_file = tmp_path / "metrics-token"
    prometheus = Prometheus(
        binary,
        tmp_path / "prometheus",
        [plain_scrape_job(serve.address, token_file), no_token_job(serve.address)],
    )
    try:
        check_scrape(prometheus, tmp_path / "lake")
        (target,) = prometheus.wait_for('up{job="gpucost"}')
        assert target["metric"]["namespace"] == "gpucost", "the shipped relabelling ran"
    finally:
        prometheus.stop()


def test_the_shipped_servicemonitor_scrapes_serve_with_its_token(
    tmp_path: Path, binary: str, serve: Service, token: str
) -> None:
    prometheus = Prometheus(
        binary,
        tmp_path / "prometheus",
        [operator_scrape_job(serve.address, token), no_token_job(serve.address)],
    )
    try:
        check_scrape(prometheus, tmp_path / "lake")
    finally:
        prometheus.stop()


def test_401_names_the_scheme(serve: Service, token: str) -> None:
    url = f"http://{serve.address}/metrics"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer ")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert b"gpucost_project_effective_cost" in response.read()
