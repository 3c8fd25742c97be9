"""``gpucost backfill`` that finance can run: whole-month exports at the end, no digest flood.

A backfill of September equals a nightly run at September's end (same lake allocation, same
export bytes); a short forced backfill inside a month leaves that month's export whole; the
Slack digest is posted per backfilled day only with ``--digest``, against a real local
webhook receiver.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from gpucost.cli import app
from tests.helpers import ConfigWriter

runner = CliRunner()


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def allocation_parts(lake: Path) -> dict[str, str]:
    return file_digests(lake / "allocation")


@pytest.fixture
def webhook() -> Iterator[list[dict[str, Any]]]:
    """A Slack incoming-webhook stand-in on a loopback port; yields the bodies it received."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    received.append({"url": f"http://127.0.0.1:{server.server_port}/services/T0/B0/token"})
    yield received
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_backfill_over_a_month_equals_a_nightly_at_its_end(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    nightly_root, backfill_root = tmp_path / "nightly", tmp_path / "backfill"
    nightly_root.mkdir()
    backfill_root.mkdir()
    nightly_config = ConfigWriter(nightly_root).sample_night(lookback_days=30)
    backfill_config = ConfigWriter(backfill_root).sample_night(lookback_days=30)

    night = runner.invoke(app, ["nightly", "--config", str(nightly_config)])
    assert night.exit_code == 0, night.output
    filled = runner.invoke(
        app,
        [
            "backfill",
            "--config",
            str(backfill_config),
            "--since",
            "2024-09-01",
            "--until",
            "2024-09-30",
            "--output",
            "json",
        ],
    )
    assert filled.exit_code == 0, filled.output
    report = json.loads(filled.stdout)
    assert report["counts"]["complete"] == 30
    assert list(report["exports"]) == ["2024-09"]

    assert allocation_parts(backfill_root / "lake") == allocation_parts(nightly_root / "lake")
    nightly_exports = file_digests(nightly_root / "out" / "exports")
    assert nightly_exports and file_digests(backfill_root / "out" / "exports") == nightly_exports
    manifest = json.loads(
        (backfill_root / "out" / "exports" / "2024-09" / "manifest.json").read_text()
    )
    assert manifest["through"] == "2024-09-30"
    billing = pl.read_parquet(
        backfill_root / "lake" / "billing" / "**" / "*.parquet", hive_partitioning=False
    )
    assert set(billing["BillingCurrency"]) == {"USD"}
    assert Decimal(manifest["totals"]["USD"]["EffectiveCost"]) == billing["EffectiveCost"].sum()
    assert not (backfill_root / "out" / "digest").exists(), "no digest without --digest"


def test_a_short_forced_backfill_keeps_the_months_export_whole(
    tmp_path: Path, write_config: ConfigWriter, webhook: list[dict[str, Any]]
) -> None:
    url = webhook.pop(0)["url"]
    (tmp_path / "webhook").write_text(url)
    config = write_config.sample_night(
        lookback_days=30, reports={"slack_webhook": {"file": str(tmp_path / "webhook")}}
    )
    night = runner.invoke(app, ["nightly", "--config", str(config)])
    assert night.exit_code == 0, night.output
    posted_by_the_night = len(webhook)
    assert posted_by_the_night >= 1
    exports = tmp_path / "out" / "exports"
    whole_month = file_digests(exports)

    days = ["--since", "2024-09-10", "--until", "2024-09-14"]
    forced = runner.invoke(app, ["backfill", "--config", str(config), *days, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "5 complete" in forced.stdout and "export 2024-09:" in forced.stdout
    assert file_digests(exports) == whole_month, "the export is September's, not 1-14 September"
    assert len(webhook) == posted_by_the_night, "no digest per backfilled day"

    with_digest = runner.invoke(
        app, ["backfill", "--config", str(config), *days, "--force", "--digest"]
    )
    assert with_digest.exit_code == 0, with_digest.output
    headers = [
        block["text"]["text"]
        for body in webhook[posted_by_the_night:]
        for block in body["blocks"]
        if block["type"] == "header"
    ]
    assert [h.rsplit(" ", 1)[-1] for h in headers] == [f"2024-09-{d}" for d in range(10, 15)]


def test_resuming_skips_done_days_and_still_rebuilds_the_export(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = write_config.sample_night(lookback_days=30)
    args = ["backfill", "--config", str(config), "--since", "2024-09-28", "--until", "2024-09-30"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "3 complete" in first.stdout
    september = file_digests(tmp_path / "out" / "exports" / "2024-09")
    (tmp_path / "out" / "exports" / "2024-09" / "chargeback_monthly.csv").unlink()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "3 skipped" in again.stdout
    assert file_digests(tmp_path / "out" / "exports" / "2024-09") == september
