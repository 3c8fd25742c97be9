"""The whole night on a synthetic fleet: collect, allocate, findings, exports, digest."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest
from typer.testing import CliRunner

from gpucost.cli import app
from gpucost.core.contracts import ALLOCATION, BILLING, FINDINGS, GPU_USAGE
from gpucost.core.lake import Lake
from gpucost.core.manifest import RunManifest
from gpucost.core.storage import LocalStorage
from gpucost.synth import generate
from tests.fakes.stalled_writer import kill_mid_write

if TYPE_CHECKING:
    from tests.helpers import ConfigWriter

runner = CliRunner()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fleet")
    generate(
        root, gpus=16, days=2, projects=4, seed=7, start=date(2024, 9, 28), usage_format="dcgm"
    )
    return root


@pytest.fixture
def night_config(write_config: ConfigWriter, fleet: Path) -> Path:
    """Every kind of file the fleet has as a source, one rule per project, two nights' days."""
    projects = json.loads((fleet / "truth.json").read_text())["projects"]
    return write_config(
        name="night.toml",
        nightly={"as_of": "2024-09-30", "lookback_days": 2},
        sources=[
            {"name": "bill", "kind": "focus-files", "path": fleet / "billing" / "*.csv"},
            {"name": "hosts", "kind": "inventory-file", "path": fleet / "inventory.csv"},
            {"name": "people", "kind": "roster", "path": fleet / "roster.csv"},
            {
                "name": "gpus",
                "kind": "dcgm-exporter",
                "paths": [fleet / "dcgm" / "*" / "*.prom"],
                "scrape_interval_s": 300,
            },
            {"name": "cpu", "kind": "host-metrics-file", "path": fleet / "host_metrics.csv"},
        ],
        projects=[
            {"name": name, "match": {"tags": {"project": name}, "namespaces": [f"{name}*"]}}
            for name in projects
        ],
    )


def test_nightly_runs_every_stage_and_conserves_money(tmp_path: Path, night_config: Path) -> None:
    config = night_config
    result = runner.invoke(app, ["nightly", "--config", str(config)])
    assert result.exit_code == 0, result.output
    lake = Lake(LocalStorage(tmp_path / "lake"))
    billing = lake.read(BILLING)
    allocation = lake.read(ALLOCATION)
    # Conservation: every EffectiveCost and BilledCost unit lands on some project.
    assert allocation["amount"].sum() == billing["EffectiveCost"].sum()
    assert allocation["billed_amount"].sum() == billing["BilledCost"].sum()
    assert lake.read(GPU_USAGE).height > 0
    kinds = set(lake.read(FINDINGS)["kind"])
    assert {"idle_gpu_server", "cpu_misplaced_model_server", "model_on_cpu_in_gpu_host"} <= kinds
    manifest = json.loads(next((tmp_path / "lake" / "_runs").glob("*.json")).read_text())
    assert manifest["status"] == "complete"
    assert RunManifest.from_dict(manifest).to_dict() == manifest, "one manifest type, read back"
    assert [s["name"] for s in manifest["stages"]] == [
        "allocate",
        "summarise",
        "report",
        "export",
        "digest",
    ]
    assert all(s["status"] == "ok" for s in manifest["stages"])
    kept = json.loads((tmp_path / "out" / "digest" / "2024-09-29.json").read_text())
    assert kept and "GPU cost digest" in kept[0]["text"]
    html = tmp_path / "out" / "reports" / "2024-09-29.html"
    assert html.exists() and "<svg" in html.read_text()
    monthly = pl.read_csv(
        tmp_path / "out" / "exports" / "2024-09" / "chargeback_monthly.csv", infer_schema=False
    )
    assert "AllocatedMethodId" in monthly.columns

    # The same night again: the exports are byte-identical.
    exports = {p: p.read_bytes() for p in (tmp_path / "out" / "exports").rglob("*") if p.is_file()}
    again = runner.invoke(app, ["nightly", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert {p: p.read_bytes() for p in exports} == exports


def test_allocate_export_and_digest_commands(tmp_path: Path, night_config: Path) -> None:
    config = night_config
    collected = runner.invoke(
        app, ["collect", "--config", str(config), "--since", "2024-09-28", "--until", "2024-09-29"]
    )
    assert collected.exit_code == 0, collected.output
    allocated = runner.invoke(
        app, ["allocate", "--config", str(config), "--since", "2024-09-28", "--until", "2024-09-29"]
    )
    assert allocated.exit_code == 0, allocated.output
    assert "0 with a difference" in allocated.output
    allocation = Lake(LocalStorage(tmp_path / "lake")).read(ALLOCATION)
    total = allocation["amount"].sum()
    assert isinstance(total, Decimal) and total > 0

    exported = runner.invoke(app, ["export", "--config", str(config), "--month", "2024-09"])
    assert exported.exit_code == 0, exported.output
    manifest = json.loads((tmp_path / "out" / "exports" / "2024-09" / "manifest.json").read_text())
    assert manifest["files"]
    # A month without data is not an error: a note, nothing written, exit 0.
    empty = runner.invoke(app, ["export", "--config", str(config), "--month", "2023-01"])
    assert empty.exit_code == 0 and "no allocation rows for 2023-01" in empty.output
    assert not (tmp_path / "out" / "exports" / "2023-01").exists()
    bad = runner.invoke(app, ["export", "--config", str(config), "--month", "2024-13"])
    assert bad.exit_code == 2 and "usage error" in bad.output

    digest = runner.invoke(
        app, ["digest", "--config", str(config), "--date", "2024-09-29", "--dry-run"]
    )
    assert digest.exit_code == 0, digest.output
    payloads = json.loads(digest.output)
    assert payloads and all(len(p["blocks"]) <= 50 for p in payloads)
    unsent = runner.invoke(app, ["digest", "--config", str(config), "--date", "2024-09-29"])
    assert unsent.exit_code == 2 and "slack_webhook is not set" in unsent.output


def test_sigkill_during_an_export_keeps_the_previous_export(
    tmp_path: Path, night_config: Path
) -> None:
    config = night_config
    assert runner.invoke(app, ["nightly", "--config", str(config)]).exit_code == 0
    exports = tmp_path / "out" / "exports" / "2024-09"
    before = {p.name: p.read_bytes() for p in exports.iterdir()}
    # A changed rule changes the allocation, so the next export writes new bytes.
    config.write_text(config.read_text() + '\n[allocation]\nidle = "separate"\n')
    kill_mid_write(
        tmp_path / "ready",
        ["nightly", "--config", str(config)],
        prefix="exports/",
        suffix="chargeback_monthly.csv",
    )
    visible = {p.name: p.read_bytes() for p in exports.iterdir() if not p.name.startswith(".")}
    assert visible["chargeback_monthly.csv"] == before["chargeback_monthly.csv"]
    assert list(exports.glob(".*.tmp")), "the kill should leave a temporary file"

    again = runner.invoke(app, ["nightly", "--config", str(config)])
    assert again.exit_code == 0, again.output
    after = (exports / "chargeback_monthly.csv").read_bytes()
    assert after != before["chargeback_monthly.csv"]
    manifest = json.loads((exports / "manifest.json").read_text())
    assert manifest["files"]


def test_the_whole_night_on_an_s3_lake(
    tmp_path: Path, night_config: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    """Lake and outputs on S3 (moto server): the same night, the same money, read back."""
    import boto3

    config = night_config
    text = config.read_text()
    text = text.replace(
        f'data_dir = "{tmp_path / "lake"}"',
        f'data_dir = "s3://{s3_bucket}/lake"\ns3_endpoint_url = "{moto_endpoint}"\n'
        's3_region = "us-east-1"',
    ).replace(f'out_dir = "{tmp_path / "out"}"', f'out_dir = "s3://{s3_bucket}/out"')
    config.write_text(text + f'\n[lock]\npath = "{tmp_path / "nightly.lock"}"\n')
    result = runner.invoke(app, ["nightly", "--config", str(config)])
    assert result.exit_code == 0, result.output
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    keys = {
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for item in page.get("Contents", [])
    }
    assert "out/exports/2024-09/chargeback_monthly.csv" in keys
    assert "out/reports/2024-09-29.html" in keys
    assert any(key.startswith("lake/allocation/day=2024-09-29/") for key in keys)
    options = {
        "aws_endpoint_url": moto_endpoint,
        "aws_allow_http": "true",
        "aws_region": "us-east-1",
    }
    from gpucost.core.storage import S3Storage

    lake = Lake(S3Storage(f"s3://{s3_bucket}/lake", client), options)
    assert lake.read(ALLOCATION)["amount"].sum() == lake.read(BILLING)["EffectiveCost"].sum()


def test_the_digest_speaks_of_its_own_night(tmp_path: Path, night_config: Path) -> None:
    """A later `collect` of one source must not become the digest's completeness line."""
    config = night_config
    assert runner.invoke(app, ["nightly", "--config", str(config)]).exit_code == 0
    night = json.loads(next((tmp_path / "lake" / "_runs").glob("*.json")).read_text())
    later = runner.invoke(
        app, ["collect", "--config", str(config), "--source", "cpu", "--since", "2024-09-29"]
    )
    assert later.exit_code == 0, later.output
    digest = runner.invoke(
        app, ["digest", "--config", str(config), "--date", "2024-09-29", "--dry-run"]
    )
    assert digest.exit_code == 0, digest.output
    assert night["run_id"] in digest.output
