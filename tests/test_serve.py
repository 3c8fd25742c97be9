"""``gpucost serve``: scheduled jobs, a persistent schedule, clean SIGTERM, /metrics, /healthz.

The service runs as a real subprocess on a fast schedule (six-field cron, seconds first), its
endpoints on a free loopback port read from its log.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from gpucost.cli import app
from gpucost.config import load_config
from gpucost.core.contracts import ALLOCATION, FINDINGS
from gpucost.core.errors import ConfigError
from gpucost.core.window import Window
from gpucost.httpd import EndpointServer
from gpucost.metrics import ServeMetrics, business_figures, business_windows
from gpucost.nightly import run_nightly
from gpucost.pipeline import Runtime
from gpucost.scheduler import (
    crontab_day_of_week,
    job_specs,
    jobstore_url,
    parse_schedule,
    reconcile,
    scheduler_options,
    serve,
)

if TYPE_CHECKING:
    from tests.helpers import ConfigWriter, Manifests

runner = CliRunner()


@pytest.fixture
def config_file(write_config: ConfigWriter) -> Callable[..., Path]:
    """Two sources on fast schedules (the FOCUS sample, a roster), a night pinned to 2024-10-01.

    ``focus_schedule=""`` leaves the FOCUS source unscheduled; other keywords go to ``[serve]``.
    """

    def write(
        *,
        focus_schedule: str = "*/1 * * * * *",
        roster_schedule: str = "*/1 * * * * *",
        nightly_schedule: str = "0 0 1 1 *",
        data_dir: str | None = None,
        **serve: object,
    ) -> Path:
        return write_config.sample_night(
            lookback_days=2,
            focus_schedule=focus_schedule or None,
            roster_schedule=roster_schedule,
            store={"data_dir": data_dir} if data_dir else {},
            serve={"nightly_schedule": nightly_schedule, "metrics_port": 0, **serve},
        )

    return write


class Service:
    """A ``gpucost serve`` subprocess whose stderr goes to a file we can poll."""

    def __init__(self, config: Path, log: Path, script: Path | None = None) -> None:
        self.log = log
        command = (
            [sys.executable, str(script)]
            if script is not None
            else [sys.executable, "-m", "gpucost.cli"]
        )
        self.process = subprocess.Popen(
            [*command, "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        self.base = wait_for(self._base_url, 30, "the service to report its address")

    def _base_url(self) -> str | None:
        assert self.process.poll() is None, self.text()
        match = re.search(r"serving /metrics and /healthz on (http://[\d.]+:\d+)", self.text())
        return match.group(1) if match else None

    def text(self) -> str:
        return self.log.read_text()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def runs_of(runs: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """The scheduled runs of ``source`` alone."""
    return [
        m for m in runs if m["command"] == "serve" and [s["name"] for s in m["sources"]] == [source]
    ]


def stored_jobs(jobstore: Path) -> dict[str, float]:
    with sqlite3.connect(jobstore) as connection:
        return dict(connection.execute("select id, next_run_time from apscheduler_jobs"))


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_serve_runs_two_jobs_survives_a_restart_and_stops_cleanly(
    tmp_path: Path, config_file: Callable[..., Path], manifests: Manifests
) -> None:
    config = config_file()
    lake = tmp_path / "lake"
    service = Service(config, tmp_path / "serve-1.log")
    wait_for(
        lambda: (
            len(runs_of(manifests(), "finance-focus")) >= 2
            and len(runs_of(manifests(), "roster")) >= 2
        ),
        30,
        "two runs of each scheduled source",
    )
    assert service.get("/healthz")[0] == 200
    status, text = service.get("/metrics")
    assert status == 200
    values = metric_values(text)
    for source in ("finance-focus", "roster"):
        assert values[("gpucost_source_last_success_timestamp_seconds", (("source", source),))]
        assert values[("gpucost_source_last_run_success", (("source", source),))] == 1.0
    assert values[("gpucost_source_rows", (("source", "finance-focus"), ("table", "billing")))] > 0
    assert service.terminate() == 0
    log = service.text()
    assert "jobs: 0 kept as stored, 3 added" in log and "stopped cleanly" in log

    jobstore = lake / "_scheduler.sqlite"
    stored = stored_jobs(jobstore)
    assert set(stored) == {"nightly", "source:finance-focus", "source:roster"}
    before = {name: len(runs_of(manifests(), name)) for name in ("finance-focus", "roster")}

    # Restart: the stored schedule is kept as it was (the nightly keeps its stored next run
    # time), nothing is added twice, and the jobs run again.
    service = Service(config, tmp_path / "serve-2.log")
    wait_for(
        lambda: all(len(runs_of(manifests(), name)) >= count + 2 for name, count in before.items()),
        30,
        "the restarted service to run both jobs again",
    )
    assert "jobs: 3 kept as stored, 0 added, 0 replaced, 0 removed" in service.text()
    restarted = stored_jobs(jobstore)
    assert set(restarted) == set(stored)
    assert restarted["nightly"] == stored["nightly"]
    assert service.terminate() == 0

    # One worker, max_instances=1: no run of a source overlaps another run of it.
    for name in ("finance-focus", "roster"):
        runs = runs_of(manifests(), name)  # in the order they started
        assert all(m["status"] == "complete" for m in runs)
        for earlier, later in itertools.pairwise(runs):
            assert earlier["finished_at"] <= later["started_at"]


SLOW_WRITER = """
import os, sys, time
from gpucost.core import storage

original = storage.LocalStorage.put_atomic
READY = os.environ["GPUCOST_TEST_READY"]

def slow_put(self, relative, data, content_sha256=None):
    if relative.startswith("billing/") and not os.path.exists(READY):
        open(READY, "w").close()
        time.sleep(2)  # SIGTERM arrives now, in the middle of the job's first lake write
    return original(self, relative, data, content_sha256)

storage.LocalStorage.put_atomic = slow_put
from gpucost.cli import main
sys.argv = ["gpucost"] + sys.argv[1:]
main()
"""


def test_sigterm_lets_the_write_in_progress_finish(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config_file: Callable[..., Path],
    manifests: Manifests,
) -> None:
    config = config_file(focus_schedule="*/2 * * * * *", roster_schedule="0 0 1 1 *")
    ready = tmp_path / "ready"
    monkeypatch.setenv("GPUCOST_TEST_READY", str(ready))
    script = tmp_path / "slow_writer.py"
    script.write_text(SLOW_WRITER)
    service = Service(config, tmp_path / "serve.log", script=script)
    wait_for(ready.exists, 30, "the first billing write to start")
    assert service.terminate() == 0
    log = service.text()
    assert "waiting for the job in progress to finish" in log
    runs = runs_of(manifests(), "finance-focus")
    assert len(runs) == 1 and runs[0]["status"] == "complete", runs
    assert runs[0]["sources"][0]["rows"]["billing"] > 0
    assert not list((tmp_path / "lake").rglob(".*.tmp"))


def test_reconcile_keeps_unchanged_jobs_replaces_changed_and_removes_gone(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config_path = config_file(nightly_schedule="0 2 * * *")
    config = load_config(config_path)
    specs = job_specs(config, str(config_path))
    first = BackgroundScheduler(**scheduler_options(config))
    first.start(paused=True)
    report = reconcile(first, specs, config.serve.misfire_grace_s)
    assert sorted(report.added) == ["nightly", "source:finance-focus", "source:roster"]
    stored = {job.id: job.next_run_time for job in first.get_jobs()}
    job = first.get_job("nightly")
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 6 * 3600)
    first.shutdown()

    # finance-focus loses its schedule, the nightly moves, the roster stays as it was.
    config_path = config_file(focus_schedule="", nightly_schedule="30 2 * * *")
    config = load_config(config_path)
    second = BackgroundScheduler(**scheduler_options(config))
    second.start(paused=True)
    report = reconcile(second, job_specs(config, str(config_path)), config.serve.misfire_grace_s)
    assert report.kept == ["source:roster"]
    assert report.replaced == ["nightly"] and report.removed == ["source:finance-focus"]
    assert second.get_job("source:roster").next_run_time == stored["source:roster"]
    assert len(second.get_jobs()) == 2
    second.shutdown()


@pytest.mark.parametrize(
    ("expression", "fires"),
    [
        ("0 3 * * *", [datetime(2024, 9, 2, 3, tzinfo=UTC), datetime(2024, 9, 3, 3, tzinfo=UTC)]),
        # Crontab's 0 is Sunday: 2024-09-08 is a Sunday.
        ("0 3 * * 0", [datetime(2024, 9, 8, 3, tzinfo=UTC), datetime(2024, 9, 15, 3, tzinfo=UTC)]),
        ("15 6 * * 7", [datetime(2024, 9, 8, 6, 15, tzinfo=UTC)]),
        ("0 0 * * 1-5", [datetime(2024, 9, 2, tzinfo=UTC), datetime(2024, 9, 3, tzinfo=UTC)]),
        ("*/20 * * * * *", [datetime(2024, 9, 1, 12, 0, 20, tzinfo=UTC)]),
        # Both day fields restricted: the 1st OR any Monday (crontab(5), Vixie cron), not
        # "a 1st that is a Monday" (which would next be 2025-09-01).
        (
            "0 0 1 * 1",
            [
                datetime(2024, 9, 2, tzinfo=UTC),
                datetime(2024, 9, 9, tzinfo=UTC),
                datetime(2024, 9, 16, tzinfo=UTC),
                datetime(2024, 9, 23, tzinfo=UTC),
                datetime(2024, 9, 30, tzinfo=UTC),
                datetime(2024, 10, 1, tzinfo=UTC),
                datetime(2024, 10, 7, tzinfo=UTC),
            ],
        ),
        # A day field starting with * does not restrict: odd days that are Mondays.
        ("0 0 */2 * 1", [datetime(2024, 9, 9, tzinfo=UTC), datetime(2024, 9, 23, tzinfo=UTC)]),
    ],
)
def test_schedules_read_as_crontab_in_utc(expression: str, fires: list[datetime]) -> None:
    trigger = parse_schedule(expression)
    now = datetime(2024, 9, 1, 12, 0, 0, 500000, tzinfo=UTC)  # a Sunday, noon
    previous = None
    for expected in fires:
        fire = trigger.get_next_fire_time(previous, now)
        assert fire == expected
        previous, now = fire, fire


def test_crontab_weekdays_become_names() -> None:
    assert crontab_day_of_week("*") == "*"
    assert crontab_day_of_week("0,6") == "sun,sat"
    assert crontab_day_of_week("1-5") == "mon,tue,wed,thu,fri"
    assert crontab_day_of_week("*/2") == "sun,tue,thu,sat"
    assert crontab_day_of_week("mon-fri") == "mon-fri"
    with pytest.raises(ValueError, match="outside 0-7"):
        crontab_day_of_week("8")


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (('"*/1 * * * * *"', '"61 * * * *"'), "sources[0] (finance-focus).schedule"),
        (('"0 0 1 1 *"', '"every night"'), "serve.nightly_schedule"),
    ],
)
def test_bad_schedules_are_config_errors(
    tmp_path: Path, replace: tuple[str, str], message: str, config_file: Callable[..., Path]
) -> None:
    config = config_file()
    config.write_text(config.read_text().replace(*replace, 1))
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert message in result.output


def test_an_object_store_lake_needs_a_jobstore(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config = config_file(data_dir="s3://bucket/lake")
    with pytest.raises(ConfigError, match=r"serve\.jobstore: set it to a local file"):
        jobstore_url(load_config(config))
    jobstore = tmp_path / "volume" / "scheduler.sqlite"
    config = config_file(data_dir="s3://bucket/lake", jobstore=jobstore)
    assert jobstore_url(load_config(config)) == f"sqlite:///{jobstore}"
    assert jobstore.parent.is_dir()


def test_healthz_says_503_once_stopping() -> None:
    healthy = threading.Event()
    healthy.set()
    server = EndpointServer(
        "127.0.0.1", 0, ServeMetrics().registry, lambda: (healthy.is_set(), {"jobs": 1})
    )
    host, port = server.start()
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
            assert json.loads(response.read()) == {"status": "ok", "jobs": 1}
        healthy.clear()
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5)
        assert raised.value.code == 503
    finally:
        server.stop()


def test_business_gauges_come_from_the_allocation_and_findings(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config = load_config(config_file())
    runtime = Runtime.from_config(config)
    run_nightly(runtime, Window(date(2024, 9, 1), date(2024, 10, 1)))
    windows = business_windows(date(2024, 10, 1))
    assert windows["yesterday"] == Window(date(2024, 9, 30), date(2024, 10, 1))
    assert windows["month_to_date"] == Window(date(2024, 9, 1), date(2024, 10, 1))

    allocation = pl.DataFrame(
        {
            "day": [date(2024, 9, 30), date(2024, 9, 30), date(2024, 9, 12)],
            "project": ["llm", "llm", "llm"],
            "category": ["gpu_used", "gpu_idle", "gpu_idle"],
            "amount": [Decimal("10"), Decimal("4"), Decimal("2")],
            "currency": ["USD"] * 3,
            "gpu_hours_used": [20.0, 0.0, 0.0],
            "gpu_hours_idle": [0.0, 8.0, 5.0],
            "source": ["allocator"] * 3,
        }
    )
    conformed = ALLOCATION.conform(allocation, "allocator")
    runtime.lake.write_window(
        ALLOCATION, "allocator", Window(date(2024, 9, 1), date(2024, 10, 1)), conformed
    )
    findings = FINDINGS.conform(
        pl.DataFrame(
            {
                "day": [date(2024, 9, 30)],
                "kind": ["idle_gpu_server"],
                "project": ["llm"],
                "est_monthly_waste": [Decimal("1234.5")],
                "currency": ["USD"],
                "severity": ["high"],
                "source": ["reports"],
            }
        ),
        "reports",
    )
    runtime.lake.write_window(
        FINDINGS, "reports", Window(date(2024, 9, 30), date(2024, 10, 1)), findings
    )

    metrics = ServeMetrics()
    metrics.set_business(business_figures(runtime, date(2024, 10, 1)))
    from prometheus_client import generate_latest

    values = metric_values(generate_latest(metrics.registry).decode())
    effective = {
        (dict(labels)["project"], dict(labels)["period"]): value
        for (name, labels), value in values.items()
        if name == "gpucost_project_effective_cost"
    }
    # The allocation's amounts, not the billing rows the nightly collected (the tag view):
    # the rows written above replaced September's allocation.
    assert effective == {("llm", "yesterday"): 14.0, ("llm", "month_to_date"): 16.0}
    hours = {
        (dict(labels)["state"], dict(labels)["period"]): value
        for (name, labels), value in values.items()
        if name == "gpucost_project_gpu_hours"
    }
    assert hours[("idle", "yesterday")] == 8.0 and hours[("idle", "month_to_date")] == 13.0
    assert hours[("used", "yesterday")] == 20.0
    waste_key = (
        "gpucost_estimated_monthly_waste",
        (("currency", "USD"), ("kind", "idle_gpu_server"), ("project", "llm")),
    )
    assert values[waste_key] == 1234.5
    assert values[("gpucost_findings", (("kind", "idle_gpu_server"), ("severity", "high")))] == 1


def test_a_taken_port_fails_the_start_before_any_job_runs(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config_path = config_file()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = config_path.read_text().replace("metrics_port = 0", f"metrics_port = {port}")
        config_path.write_text(text)
        with pytest.raises(OSError):
            serve(load_config(config_path), threading.Event())
    assert not (tmp_path / "lake" / "_runs").exists()


def test_the_nightly_job_can_be_left_to_cron(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config_path = config_file(run_nightly=False)
    ids = [spec.id for spec in job_specs(load_config(config_path), str(config_path))]
    assert ids == ["source:finance-focus", "source:roster"]


def test_config_check_prints_the_next_three_runs_of_every_schedule(
    config_file: Callable[..., Path],
) -> None:
    config = config_file(focus_schedule="0 0 1 * 1", nightly_schedule="30 2 * * *")
    result = runner.invoke(app, ["config", "check", "--config", str(config), "--output", "json"])
    assert result.exit_code == 0, result.output
    schedules = {item["job"]: item for item in json.loads(result.stdout)["schedules"]}
    assert set(schedules) == {"source:finance-focus", "source:roster", "nightly"}
    runs = [
        datetime.fromisoformat(moment) for moment in schedules["source:finance-focus"]["next_runs"]
    ]
    assert len(runs) == 3 and runs == sorted(runs)
    assert all(run.day == 1 or run.weekday() == 0 for run in runs), runs
    assert all(
        (run.hour, run.minute) == (2, 30)
        for run in (datetime.fromisoformat(m) for m in schedules["nightly"]["next_runs"])
    )
    text = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert text.exit_code == 0, text.output
    assert "Next runs (UTC)" in text.stdout
    assert re.search(
        r"source:finance-focus  '0 0 1 \* 1': (\d{4}-\d\d-\d\d 00:00:00(, )?){3}", text.stdout
    )


def test_metrics_show_only_the_sources_the_config_enables() -> None:
    from gpucost.core.manifest import RunManifest, SourceRun

    metrics = ServeMetrics(configured_sources=["billing"])
    manifest = RunManifest(
        run_id="20241001T020000Z-abcdef",
        command="serve",
        window_start="2024-09-29",
        window_end_exclusive="2024-10-01",
        config_path=None,
        started_at="2024-10-01T02:00:00+00:00",
        status="incomplete",
        finished_at="2024-10-01T02:00:05+00:00",
        sources=[
            SourceRun("billing", "focus-files", rows={"billing": 10}),
            SourceRun("old-name", "focus-files", status="failed", error="gone"),
        ],
    )
    metrics.record_manifest(manifest)
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'gpucost_source_last_run_success{source="billing"} 1.0' in text
    assert "old-name" not in text, "a source renamed away must not keep an alert firing"
    metrics.set_configured_sources(["billing", "old-name"])
    text = generate_latest(metrics.registry).decode()
    assert 'gpucost_source_last_run_success{source="old-name"} 0.0' in text
