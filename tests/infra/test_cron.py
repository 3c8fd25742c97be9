"""The shipped crontab line, run by ``/bin/sh`` as cron runs it: results, logs and mail.

Cron mails the job's output to ``MAILTO``; the line sends the tables to a file and the JSON
logs to another, and prints (so mails) only when the night exits non-zero. The paths of the
line are swapped for the test's, nothing else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ConfigWriter
from tests.infra.test_infra import INFRA, crontab_jobs

GPUCOST = Path(sys.executable).with_name("gpucost")


def run_cron_line(config: Path, logs: Path) -> subprocess.CompletedProcess[str]:
    """The crontab's command, with its program, config and log folder swapped for ours."""
    ((_, _, command),) = crontab_jobs(INFRA / "cron" / "gpucost.crontab")
    assert "/var/log/gpucost" in command and "/etc/gpucost/gpucost.toml" in command
    ours = (
        command.replace("/opt/gpucost/.venv/bin/gpucost", str(GPUCOST))
        .replace("/etc/gpucost/gpucost.toml", str(config))
        .replace("/var/log/gpucost", str(logs))
    )
    logs.mkdir(exist_ok=True)
    # Cron's environment: no terminal, no COLUMNS, a minimal PATH.
    return subprocess.run(
        ["/bin/sh", "-c", ours],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(logs)},
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(autouse=True)
def _gpucost_installed() -> None:
    if not GPUCOST.exists() or shutil.which("sh") is None:
        pytest.skip(f"needs the gpucost console script at {GPUCOST} and /bin/sh")


def test_a_complete_night_mails_nothing_and_keeps_full_width_tables(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = write_config.sample_night(lookback_days=30)
    done = run_cron_line(config, tmp_path / "log")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr == "", "a complete night sends no mail"
    tables = (tmp_path / "log" / "nightly-last.txt").read_text()
    assert "Allocated cost per project, month to date" in tables
    assert "…" not in tables, "no column cut to 80 characters"
    assert "data-platform" in tables and "unallocated" in tables
    lines = (tmp_path / "log" / "nightly.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # only JSON: the tables went elsewhere
    landed = [r for r in records if r.get("table") == "billing"]
    assert landed and landed[0]["source"] == "finance-focus" and landed[0]["rows"] == 1000
    assert all(r["run_id"] == landed[0]["run_id"] for r in records if "source" in r)
    assert not any("{'" in r["message"] for r in records), "fields, not dict reprs"


def test_a_failed_night_is_mailed_with_its_status_and_log(
    tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = write_config.sample_night(lookback_days=30, focus_path=tmp_path / "missing.csv")
    mailed = run_cron_line(config, tmp_path / "log")
    assert "gpucost nightly failed: exit status 1" in mailed.stdout
    assert "Allocated cost per project" in mailed.stdout, "the night's tables are in the mail"
    assert "finance-focus" in mailed.stdout and '"level": "error"' in mailed.stdout
