"""The command line end to end: acceptance of the foundation issue, exit statuses, crashes."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest
from typer.testing import CliRunner

from gpucost.cli import app
from gpucost.core.contracts import BILLING
from gpucost.core.lake import Lake
from gpucost.core.storage import LocalStorage
from tests.fakes.stalled_writer import kill_mid_write

if TYPE_CHECKING:
    from tests.helpers import ConfigWriter

SAMPLE = Path(__file__).parent / "data" / "focus" / "focus_1.0_sample_1000.csv"
runner = CliRunner()
VIENNA_AI = {
    "name": "vienna-ai",
    "cost_center": "CC-104",
    "match": {"tags": {"business_unit": "Vienna*"}},
}


@pytest.fixture
def config_file(write_config: ConfigWriter) -> Callable[..., Path]:
    """The CLI tests' config: the FOCUS sample as one source, a 30-day night, one rule."""

    def write(source_path: Path = SAMPLE) -> Path:
        return write_config(
            nightly={"as_of": "2024-10-01", "lookback_days": 30},
            sources=[{"name": "finance-focus", "kind": "focus-files", "path": source_path}],
            projects=[VIENNA_AI],
        )

    return write


def lake_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


def test_collect_lands_the_real_sample_exactly(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config = config_file()
    args = ["collect", "--config", str(config), "--since", "2024-09-01", "--until", "2024-09-30"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lake = Lake(LocalStorage(tmp_path / "lake"))
    billing = lake.read(BILLING)
    assert billing.height == 1000
    expected: dict[str, Decimal] = defaultdict(Decimal)
    with SAMPLE.open(newline="") as handle:
        for row in csv.DictReader(handle):
            expected[row["ProviderName"]] += Decimal(row["BilledCost"])
    landed = dict(billing.group_by("ProviderName").agg(pl.col("BilledCost").sum()).iter_rows())
    assert landed == expected

    first = lake_digest(tmp_path / "lake")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert lake_digest(tmp_path / "lake") == first
    assert lake.read(BILLING).height == 1000


def test_nightly_prints_costs_and_paths(tmp_path: Path, config_file: Callable[..., Path]) -> None:
    result = runner.invoke(app, ["nightly", "--config", str(config_file())])
    assert result.exit_code == 0, result.output
    assert "vienna-ai" in result.output and "unallocated" in result.output
    assert "manifest:" in result.output and "summary:" in result.output
    manifests = list((tmp_path / "lake" / "_runs").glob("*.json"))
    assert len(manifests) == 1
    summaries = list((tmp_path / "out" / "summary").glob("*.csv"))
    summary = pl.read_csv(summaries[0], schema_overrides={"billed_cost": pl.Decimal(38, 18)})
    assert summary["billed_cost"].sum() == Decimal("20.52022672899")


def test_a_source_with_no_rows_makes_the_night_incomplete(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config = config_file()
    result = runner.invoke(app, ["nightly", "--config", str(config), "--date", "2023-01-05"])
    assert result.exit_code == 1
    assert "source finance-focus: returned no rows for the window" in result.output


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (
            lambda t: t.replace("out_dir =", 'out_dirr = "x"\nout_dir ='),
            "store.out_dirr: unknown key",
        ),
        (lambda t: t.replace("[store]", "[store"), "malformed TOML"),
    ],
)
def test_config_errors_exit_2_with_one_line(  # type: ignore[no-untyped-def]
    tmp_path: Path, config_file: Callable[..., Path], mutation, message: str
) -> None:
    config = config_file()
    config.write_text(mutation(config.read_text()))
    result = subprocess.run(
        [sys.executable, "-m", "gpucost.cli", "collect", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0] and str(config) in lines[0]


def test_a_missing_file_is_found_by_the_probe_and_fails_its_source_when_it_runs(
    config_file: Callable[..., Path],
) -> None:
    config = config_file(source_path=Path("/nonexistent/*.csv"))
    # Validation reads the config only: where it runs and what exists there do not matter.
    checked = run_cli("config", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    probed = run_cli("config", "check", "--config", str(config), "--probe")
    assert probed.returncode == 2
    lines = [line for line in probed.stderr.splitlines() if line.strip()]
    assert lines == ["probe failed: source finance-focus: /nonexistent/*.csv matches no file"]
    collected = run_cli("collect", "--config", str(config), "--since", "2024-09-01")
    assert collected.returncode == 1
    assert "incomplete: source finance-focus:" in collected.stderr
    assert "/nonexistent/*.csv matches no file" in collected.stderr


def test_config_check_probe_passes_when_every_file_is_there(
    config_file: Callable[..., Path],
) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(config_file()), "--probe"])
    assert result.exit_code == 0, result.output
    assert "probed 1 enabled sources, no problem found" in result.output


def test_config_check_masks_nothing_secret_and_reports(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(config_file())])
    assert result.exit_code == 0, result.output
    assert '"kind": "focus-files"' in result.output and "is valid (1 sources" in result.output


def test_json_logs(tmp_path: Path, config_file: Callable[..., Path]) -> None:
    config = config_file()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpucost.cli",
            "collect",
            "--config",
            str(config),
            "--since",
            "2024-09-01",
            "--until",
            "2024-09-02",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    import json

    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_sigkill_mid_write_keeps_the_previous_day_readable(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    first = tmp_path / "first.csv"
    lines = SAMPLE.read_text().splitlines()
    first.write_text("\n".join(lines[:400]) + "\n")
    config = config_file(source_path=first)
    args = ["collect", "--config", str(config), "--since", "2024-09-01", "--until", "2024-09-30"]
    assert runner.invoke(app, args).exit_code == 0
    lake = Lake(LocalStorage(tmp_path / "lake"))
    before = lake.read(BILLING)

    # Now the full file: the writer is killed while writing its first new part.
    config.write_text(config.read_text().replace(str(first), str(SAMPLE)))
    kill_mid_write(tmp_path / "ready", args, prefix="billing/")
    assert list((tmp_path / "lake").rglob(".*.tmp")), "the kill should leave a temporary file"
    after_kill = lake.read(BILLING)
    assert after_kill.equals(before)

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert lake.read(BILLING).height == 1000
    assert not list((tmp_path / "lake").rglob(".*.tmp"))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpucost.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )


def test_operational_mistakes_are_one_line_with_the_right_status(
    tmp_path: Path, config_file: Callable[..., Path]
) -> None:
    config = config_file()
    # A future night has nothing to read: a usage error.
    future = run_cli("nightly", "--config", str(config), "--date", "2999-01-01")
    assert future.returncode == 2 and "is in the future" in future.stderr
    # An unsupported lake scheme is a configuration error, found before anything runs.
    gcs = tmp_path / "gcs.toml"
    gcs.write_text(
        config.read_text().replace(f'data_dir = "{tmp_path / "lake"}"', 'data_dir = "gs://b/x"')
    )
    wrong_scheme = run_cli("collect", "--config", str(gcs))
    assert wrong_scheme.returncode == 2 and "gs:// scheme is not supported" in wrong_scheme.stderr
    # A lake folder that is a file: one line naming it, exit 1, no traceback.
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    broken = tmp_path / "broken.toml"
    broken.write_text(config.read_text().replace(str(tmp_path / "lake"), str(blocker)))
    failed = run_cli("collect", "--config", str(broken), "--since", "2024-09-01")
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr and str(blocker) in failed.stderr
