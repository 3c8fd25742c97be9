"""Secrets and people's names stay out of everything gpucost writes or serves.

One module-scoped run drives the real commands as subprocesses (``config check``, ``nightly``,
``backfill``, and ``serve`` with a nightly of its own) over a synthetic fleet, at DEBUG with
JSON logs; the tests then scan every log line, every file under the lake and the outputs
(Parquet decoded, not just its compressed bytes) and the ``/metrics`` body.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from gpucost.cli import app
from gpucost.config import ServeSettings
from gpucost.httpd import EndpointServer
from gpucost.metrics import ServeMetrics
from gpucost.synth import generate
from tests.helpers import ConfigWriter

runner = CliRunner()
SECRET = f"gpucost-planted-secret-{secrets.token_hex(8)}"
TOKEN_VARIABLE = "GPUCOST_TEST_METRICS_TOKEN"


@dataclass
class Artifacts:
    """Everything the commands printed, wrote and served."""

    root: Path
    texts: dict[str, str] = field(default_factory=dict)
    metrics_status_without_token: int = 0
    metrics_body: str = ""
    serve_log: str = ""

    def files(self) -> list[Path]:
        return sorted(
            path
            for folder in (self.root / "lake", self.root / "out")
            for path in folder.rglob("*")
            if path.is_file()
        )


def demo_like_config(root: Path, fleet: Path) -> Path:
    config = ConfigWriter(root)(
        nightly={"as_of": "2024-09-27", "lookback_days": 3},
        serve={
            "nightly_schedule": "*/2 * * * * *",
            "metrics_port": 0,
            "metrics_token": {"env": TOKEN_VARIABLE},
        },
        sources=[
            {
                "name": "fleet-billing",
                "kind": "focus-files",
                "path": fleet / "billing" / "*.csv",
                "schedule": "0 3 * * *",
            },
            {
                "name": "fleet-inventory",
                "kind": "inventory-file",
                "path": fleet / "inventory.csv",
                "schedule": "*/1 * * * * *",
            },
            {
                "name": "roster",
                "kind": "roster",
                "path": fleet / "roster.csv",
                "schedule": "*/1 * * * * *",
            },
        ],
        projects=[
            {"name": name, "cost_center": cost_center, "match": {"tags": {"project": name}}}
            for name, cost_center in (("llm-serving", "CC-101"), ("recsys-training", "CC-102"))
        ],
    )
    config.chmod(0o600)
    return config


def run_cli(*args: str) -> str:
    environment = {**os.environ, TOKEN_VARIABLE: SECRET, "COLUMNS": "200"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpucost.cli",
            *args,
            "--log-format",
            "json",
            "--log-level",
            "DEBUG",
        ],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    root = tmp_path_factory.mktemp("security")
    fleet = root / "fleet"
    generate(fleet, gpus=8, days=3, projects=2, seed=11, start=date(2024, 9, 24))
    config = demo_like_config(root, fleet)
    found = Artifacts(root)
    found.texts["config check"] = run_cli("config", "check", "--config", str(config))
    found.texts["nightly"] = run_cli("nightly", "--config", str(config))
    found.texts["backfill"] = run_cli(
        "backfill", "--config", str(config), "--since", "2024-09-24", "--until", "2024-09-26"
    )

    log = root / "serve.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpucost.cli",
            "serve",
            "--config",
            str(config),
            "--log-format",
            "json",
            "--log-level",
            "DEBUG",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env={**os.environ, TOKEN_VARIABLE: SECRET},
    )
    try:
        base = None
        deadline = time.monotonic() + 30
        while base is None or '"nightly 2' not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "serve did not run its nightly"
            match = re.search(r"on (http://[\d.]+:\d+)", log.read_text())
            base = match.group(1) if match else None
            time.sleep(0.2)
        time.sleep(0.5)  # the business gauges refresh right after the night
        try:
            urllib.request.urlopen(f"{base}/metrics", timeout=5)
        except urllib.error.HTTPError as error:
            found.metrics_status_without_token = error.code
        request = urllib.request.Request(
            f"{base}/metrics", headers={"Authorization": f"Bearer {SECRET}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            found.metrics_body = response.read().decode()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    found.serve_log = log.read_text()
    found.texts["serve"] = found.serve_log
    found.texts["/metrics"] = found.metrics_body
    return found


def file_texts(artifacts: Artifacts) -> dict[str, str]:
    """Each file as text; Parquet as its decoded rows plus its raw bytes (footer metadata)."""
    texts = {}
    for path in artifacts.files():
        raw = path.read_bytes().decode("utf-8", "replace")
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            raw += frame.select(pl.all().cast(pl.String)).write_csv()
        texts[str(path.relative_to(artifacts.root))] = raw
    return texts


def test_the_run_produced_what_the_scans_read(artifacts: Artifacts) -> None:
    names = [str(path.relative_to(artifacts.root)) for path in artifacts.files()]
    assert any(name.startswith("lake/headcount/") for name in names)
    assert any(name.startswith("lake/billing/") for name in names)
    assert any(name.startswith("lake/_runs/") for name in names)
    assert any(name.startswith("out/summary/") for name in names)
    assert "gpucost_project_billed_cost{" in artifacts.metrics_body
    assert "gpucost_source_rows{" in artifacts.metrics_body
    assert '"level": "debug"' in artifacts.serve_log


def test_a_planted_secret_never_reaches_logs_manifests_outputs_or_metrics(
    artifacts: Artifacts,
) -> None:
    # config check shows where the secret lives (the variable's name), never its value.
    assert f'"env": "{TOKEN_VARIABLE}"' in artifacts.texts["config check"]
    leaks = [
        where
        for where, text in {**artifacts.texts, **file_texts(artifacts)}.items()
        if SECRET in text
    ]
    assert leaks == []


def test_metrics_need_the_token_when_one_is_configured(artifacts: Artifacts) -> None:
    assert artifacts.metrics_status_without_token == 401


def test_roster_names_never_reach_the_lake_outputs_logs_or_metrics(artifacts: Artifacts) -> None:
    with (artifacts.root / "fleet" / "roster.csv").open(newline="") as handle:
        people = [row["name"] for row in csv.DictReader(handle)]
    assert len(people) >= 3 and all(" " in name for name in people)
    texts = {**artifacts.texts, **file_texts(artifacts)}
    leaks = sorted(
        {(where, name) for where, text in texts.items() for name in people if name in text}
    )
    assert leaks == []
    # The roster did land: ids and fractions, without names.
    headcount = pl.read_parquet(next((artifacts.root / "lake" / "headcount").rglob("*.parquet")))
    assert "person_id" in headcount.columns and "name" not in headcount.columns


def test_metrics_bind_loopback_unless_configured(artifacts: Artifacts) -> None:
    assert ServeSettings().metrics_host == "127.0.0.1"
    assert re.search(
        r"serving /metrics and /healthz on http://127\.0\.0\.1:\d+", artifacts.serve_log
    )
    server = EndpointServer("0.0.0.0", 0, ServeMetrics().registry, lambda: (True, {}))
    try:
        assert server.address[0] == "0.0.0.0"  # only because it was asked for
    finally:
        server.stop()


def write_secret_config(tmp_path: Path, secret_mode: int, config_mode: int) -> Path:
    secret_file = tmp_path / "metrics-token"
    secret_file.write_text(SECRET)
    secret_file.chmod(secret_mode)
    config = ConfigWriter(tmp_path)(
        serve={"metrics_token": {"file": secret_file}},
        # A config needs a source (an empty one is a config error); its files are not read.
        sources=[{"name": "finance-focus", "kind": "focus-files", "path": "focus/*.csv"}],
    )
    config.chmod(config_mode)
    return config


@pytest.mark.parametrize(
    ("secret_mode", "config_mode", "warnings"),
    [
        (0o600, 0o600, []),
        (0o644, 0o600, ["is readable by group or others (mode 0644); chmod 600 it"]),
        (0o600, 0o644, ["names secret files and is readable by others (mode 0644)"]),
        (
            0o640,
            0o604,
            ["(mode 0640); chmod 600 it", "names secret files and is readable by others"],
        ),
    ],
)
def test_loose_permissions_on_secrets_draw_a_warning(
    tmp_path: Path, secret_mode: int, config_mode: int, warnings: list[str]
) -> None:
    config = write_secret_config(tmp_path, secret_mode, config_mode)
    result = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    logged = [line for line in result.output.splitlines() if "WARNING" in line]
    assert len(logged) == len(warnings), result.output
    for expected in warnings:
        assert any(expected in line for line in logged), (expected, logged)
    assert SECRET not in result.output
    assert stat.S_IMODE(config.stat().st_mode) == config_mode
