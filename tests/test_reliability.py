"""Left alone for months: crashes, re-runs, cloud faults, overlapping runs, backfills, and a
60-night scheduler run on a fake clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from apscheduler.schedulers.base import BaseScheduler
from typer.testing import CliRunner

from gpucost.backfill import completed_days
from gpucost.cli import app
from gpucost.config import load_config
from gpucost.core.contracts import BILLING
from gpucost.core.lake import Lake
from gpucost.core.storage import LocalStorage
from gpucost.lock import RunLock, lock_path
from gpucost.metrics import ServeMetrics
from gpucost.scheduler import (
    ServeState,
    active_state,
    job_specs,
    reconcile,
    scheduler_options,
)
from tests.fakes.stalled_writer import kill_mid_write
from tests.helpers import FOCUS_SAMPLE

if TYPE_CHECKING:
    from tests.helpers import ConfigWriter, Manifests

runner = CliRunner()


@pytest.fixture
def config_file(write_config: ConfigWriter) -> Callable[..., Path]:
    """The FOCUS sample and a roster, scheduled nightly; a night pinned to 2024-10-01."""

    def write(lookback_days: int = 30, **options: Any) -> Path:
        return write_config.sample_night(
            lookback_days=lookback_days,
            focus_schedule="0 3 * * *",
            roster_schedule="30 3 * * *",
            **options,
        )

    return write


def digest(*roots: Path, pattern: str = "*") -> dict[str, str]:
    return {
        str(path.relative_to(root.parent)): hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots
        for path in sorted(root.rglob(pattern))
        if path.is_file() and not path.name.startswith(".")
    }


# --- crashes and re-runs ---------------------------------------------------------------------


def test_sigkill_during_a_nightly_keeps_the_lake_and_the_rerun_completes(
    tmp_path: Path, config_file: Callable[..., Path], manifests: Manifests
) -> None:
    partial_bill = tmp_path / "first.csv"
    lines = FOCUS_SAMPLE.read_text().splitlines()
    partial_bill.write_text("\n".join(lines[:400]) + "\n")
    config = config_file(focus_path=partial_bill)
    assert runner.invoke(app, ["nightly", "--config", str(config)]).exit_code == 0
    lake = Lake(LocalStorage(tmp_path / "lake"))
    before = lake.read(BILLING)

    config.write_text(config.read_text().replace(str(partial_bill), str(FOCUS_SAMPLE)))
    kill_mid_write(tmp_path / "ready", ["nightly", "--config", str(config)], prefix="billing/")

    assert lake.read(BILLING).equals(before), "the previous night's data stays readable"
    killed = [m for m in manifests() if m["status"] == "running"]
    assert len(killed) == 1, "the killed night is visible as one that never finished"
    assert completed_days(lake, ["summarise"]) == {
        date(2024, 9, 1) + timedelta(days=n) for n in range(30)
    }, "only the first, finished night counts as complete"

    # The kernel dropped the dead run's lock: the next night takes it and completes.
    result = runner.invoke(app, ["nightly", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert lake.read(BILLING).height == 1000
    assert not list((tmp_path / "lake").rglob(".*.tmp"))
    assert manifests()[-1]["status"] == "complete"


def test_two_nights_run_twice_give_byte_identical_lake_and_summaries(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config = config_file(lookback_days=3)
    nights = ["2024-09-20", "2024-09-21"]
    for night in nights:
        result = runner.invoke(app, ["nightly", "--config", str(config), "--date", night])
        assert result.exit_code == 0, result.output
    first = digest(tmp_path / "lake", pattern="*.parquet") | digest(tmp_path / "out")
    assert any(name.endswith(".parquet") for name in first)
    assert sum(name.startswith("out/summary/cost_by_project") for name in first) == 2
    for night in nights:
        assert (
            runner.invoke(app, ["nightly", "--config", str(config), "--date", night]).exit_code == 0
        )
    second = digest(tmp_path / "lake", pattern="*.parquet") | digest(tmp_path / "out")
    # The Slack digest names the run it reports on (its id differs per run); every export,
    # summary, report and lake part must be byte-identical.
    run_specific = {name for name in first if name.startswith("out/digest/")}
    assert run_specific
    assert {k: v for k, v in second.items() if k not in run_specific} == {
        k: v for k, v in first.items() if k not in run_specific
    }


# --- cloud faults ----------------------------------------------------------------------------


class FaultyAws(BaseHTTPRequestHandler):
    """Answers every AWS JSON-protocol request with one fault, counting the attempts."""

    status: ClassVar[int] = 503
    body: ClassVar[dict[str, str]] = {}
    attempts: ClassVar[Counter[str]] = Counter()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        target = self.headers.get("X-Amz-Target", "?").rsplit(".", 1)[-1]
        type(self).attempts[target] += 1
        payload = json.dumps(self.body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def faulty_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[type[FaultyAws], str]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    handler = type("Handler", (FaultyAws,), {"attempts": Counter()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "ThrottlingException"),  # how Cost Explorer throttles: HTTP 400 + the code
        (429, "TooManyRequestsException"),
        (503, "ServiceUnavailableException"),
    ],
)
def test_cloud_api_faults_are_retried_then_the_source_is_named(
    tmp_path: Path,
    faulty_aws: tuple[type[FaultyAws], str],
    status: int,
    error_type: str,
    config_file: Callable[..., Path],
    manifests: Manifests,
) -> None:
    handler, endpoint = faulty_aws
    handler.status = status
    handler.body = {"__type": error_type, "message": "simulated fault"}
    config = config_file(
        sources=[
            {
                "name": "aws-ce",
                "kind": "aws-cost-explorer",
                "endpoint_url": endpoint,
                "max_attempts": 2,
            }
        ]
    )
    result = runner.invoke(app, ["nightly", "--config", str(config)])
    assert result.exit_code == 1
    assert "incomplete: source aws-ce:" in result.output
    assert error_type in result.output
    assert handler.attempts["GetCostAndUsage"] == 2, "retried up to max_attempts, no more"
    manifest = manifests()[-1]
    statuses = {source["name"]: source["status"] for source in manifest["sources"]}
    assert statuses == {"finance-focus": "ok", "roster": "ok", "aws-ce": "failed"}
    assert manifest["status"] == "incomplete"
    error = next(s["error"] for s in manifest["sources"] if s["name"] == "aws-ce")
    assert error_type in error and "aws-ce" in error


# --- overlapping runs ------------------------------------------------------------------------


def test_a_second_nightly_exits_1_naming_the_run_that_holds_the_lock(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config = config_file()
    holder = RunLock(lock_path(load_config(config)), command="nightly")
    holder.acquire(now=datetime(2024, 10, 1, 2, 0, tzinfo=UTC))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gpucost.cli", "nightly", "--config", str(config)],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "300"},
            check=False,
        )
        assert result.returncode == 1
        assert "another nightly run holds the lock since 2024-10-01T02:00:00+00:00" in result.stderr
        assert f"pid {os.getpid()}" in result.stderr
        assert not (tmp_path / "lake" / "_runs").exists(), "the second run did nothing"
        backfill = runner.invoke(
            app,
            ["backfill", "--config", str(config), "--since", "2024-09-01", "--until", "2024-09-02"],
        )
        assert backfill.exit_code == 1 and "another nightly run holds the lock" in backfill.output
    finally:
        holder.release()
    assert runner.invoke(app, ["nightly", "--config", str(config)]).exit_code == 0


# --- backfill --------------------------------------------------------------------------------


def test_backfill_goes_day_by_day_and_resumes(
    tmp_path: Path, config_file: Callable[..., Path], manifests: Manifests
) -> None:
    config = config_file(lookback_days=1)
    lake = Lake(LocalStorage(tmp_path / "lake"))
    args = ["backfill", "--config", str(config), "--since", "2024-09-27", "--until", "2024-10-02"]
    result = runner.invoke(app, args)
    # The sample bills September only: October's days have no billing rows, so are incomplete.
    assert result.exit_code == 1, result.output
    assert "4 complete, 0 skipped, 2 incomplete, 0 failed" in result.output
    assert "incomplete: 2024-10-01: source finance-focus: returned no rows" in result.output
    runs = manifests()
    assert [m["window_start"] for m in runs if m["command"] == "backfill"] == [
        "2024-09-27",
        "2024-09-28",
        "2024-09-29",
        "2024-09-30",
        "2024-10-01",
        "2024-10-02",
    ]
    assert all(m["window_end_exclusive"] > m["window_start"] for m in runs)
    assert lake.read(BILLING).height > 0

    again = runner.invoke(app, args)  # resumes: only the incomplete days run again
    assert "0 complete, 4 skipped, 2 incomplete" in again.output
    assert len(manifests()) == 8

    forced = runner.invoke(app, [*args[:-2], "--until", "2024-09-28", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "2 complete, 0 skipped" in forced.output
    assert len(manifests()) == 10

    usage = runner.invoke(app, [*args[:-2], "--until", "2024-09-01"])
    assert usage.exit_code == 2 and "is before --since" in usage.output


# --- 60 nights on a fake clock ---------------------------------------------------------------


class FakeClock:
    """The one 'now' that APScheduler, its executor and the jobs all read."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def datetime_class(self) -> type[datetime]:
        clock = self

        class FakeDatetime(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> FakeDatetime:  # type: ignore[override]
                moment = clock.now.astimezone(tz) if tz else clock.now.replace(tzinfo=None)
                return cls.fromtimestamp(moment.timestamp(), tz)

        return FakeDatetime


class ManualScheduler(BaseScheduler):  # type: ignore[misc]
    """An APScheduler 3 scheduler without a thread: the test calls ``_process_jobs``."""

    def wakeup(self) -> None:
        pass

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_sixty_nights_on_a_fake_clock_do_each_job_once_in_bounded_memory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_config: ConfigWriter,
    manifests: Manifests,
) -> None:
    # Two cheap sources (rosters) keep 180 job runs within seconds; the work per run is real.
    roster = write_config.roster()
    config_path = write_config(
        nightly={"lookback_days": 1},
        sources=[
            {"name": "team-a", "kind": "roster", "path": roster, "schedule": "0 3 * * *"},
            {"name": "team-b", "kind": "roster", "path": roster, "schedule": "30 3 * * 0-6"},
        ],
    )
    config = load_config(config_path)
    start = datetime(2024, 9, 1, 0, 30, tzinfo=UTC)
    clock = FakeClock(start)
    fake = clock.datetime_class()
    monkeypatch.setattr("apscheduler.schedulers.base.datetime", fake)
    monkeypatch.setattr("apscheduler.executors.base.datetime", fake)

    scheduler = ManualScheduler(**scheduler_options(config, executor="inline"))
    metrics = ServeMetrics()
    state = ServeState(metrics, clock=lambda: clock.now)
    rss: dict[int, int] = {}
    gap = (date(2024, 10, 10), date(2024, 10, 13))  # down for three days, back at 02:00:05
    with active_state(state):
        scheduler.start(paused=True)
        reconcile(scheduler, job_specs(config, str(config_path)), config.serve.misfire_grace_s)
        scheduler.resume()
        nights = 0
        while True:
            upcoming = min(job.next_run_time for job in scheduler.get_jobs())
            if upcoming.date() == gap[0]:
                upcoming = datetime.combine(gap[1], datetime.min.time(), UTC) + timedelta(
                    hours=2, seconds=5
                )
            if upcoming >= datetime(2024, 11, 3, tzinfo=UTC):
                break
            clock.now = upcoming
            scheduler._process_jobs()
            if upcoming.hour == 2:
                nights += 1
                rss[nights] = resident_bytes()
        scheduler.shutdown()

    runs = manifests()
    nightly = [m for m in runs if m["command"] == "nightly"]
    as_of_days = [date.fromisoformat(m["window_end_exclusive"]) for m in nightly]
    expected = [
        date(2024, 9, 1) + timedelta(days=n)
        for n in range(63)
        if not gap[0] <= date(2024, 9, 1) + timedelta(days=n) < gap[1]
    ]
    assert as_of_days == expected, "one night per day; the three missed nights coalesce into one"
    assert nights == len(expected) >= 60
    for name in ("team-a", "team-b"):
        windows = [
            m["window_start"]
            for m in runs
            if m["command"] == "serve" and [s["name"] for s in m["sources"]] == [name]
        ]
        assert len(windows) == len(set(windows)) == len(expected), f"{name} ran once a day"
    assert all(m["status"] == "complete" for m in runs)
    assert metrics.nightly.runs == {"complete": len(expected)}
    assert len(scheduler_jobs_rows(tmp_path / "lake" / "_scheduler.sqlite")) == 3
    growth = rss[nights] - rss[10]
    assert growth < 64 * 2**20, f"resident memory grew {growth / 2**20:.0f} MiB over 50 nights"


def scheduler_jobs_rows(path: Path) -> list[tuple[str]]:
    import sqlite3

    with sqlite3.connect(path) as connection:
        return list(connection.execute("select id from apscheduler_jobs"))
