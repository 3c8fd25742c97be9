"""The run manifest: one type, read back exactly as written, and the queries over the runs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gpucost.core.lake import Lake
from gpucost.core.manifest import (
    RunManifest,
    SourceRun,
    StageRun,
    latest_night,
    read_manifests,
    run_ids,
    write_manifest,
)
from gpucost.core.storage import LocalStorage


def manifest(
    run_id: str,
    command: str = "nightly",
    *,
    end: str = "2024-10-01",
    started_at: str = "2024-10-01T02:00:00+00:00",
    finish: bool = True,
) -> RunManifest:
    run = RunManifest(
        run_id=run_id,
        command=command,
        window_start="2024-09-30",
        window_end_exclusive=end,
        config_path="/etc/gpucost.toml",
        started_at=started_at,
        sources=[
            SourceRun(
                "bill",
                "focus-files",
                rows={"billing": 12},
                parts=[{"table": "billing", "day": "2024-09-30", "rows": 12}],
                duration_s=0.25,
                notes={"billing_rows_outside_window": 3},
            ),
            SourceRun("cpu", "host-metrics-file", status="empty"),
        ],
        stages=[StageRun("summarise", outputs=["/out/summary.csv"]), StageRun("export")],
    )
    if finish:
        run.finish(datetime(2024, 10, 1, 2, 5, tzinfo=UTC))
    return run


def test_a_written_manifest_reads_back_to_the_same_bytes(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    written = manifest("20241001T020000Z-abcdef")
    write_manifest(lake, written)
    path = tmp_path / "_runs" / "20241001T020000Z-abcdef.json"
    before = path.read_bytes()
    document = json.loads(before)
    again = RunManifest.from_dict(document)
    assert again == written
    assert again.to_dict() == document
    write_manifest(lake, again)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "document",
    [[], "text", {"run_id": "x"}, {**manifest("x").to_dict(), "sources": [{"bogus": 1}]}],
)
def test_what_is_not_a_manifest_is_a_value_error(document: object) -> None:
    with pytest.raises(ValueError, match="manifest"):
        RunManifest.from_dict(document)


def test_read_manifests_passes_over_damaged_ones(tmp_path: Path) -> None:
    lake = Lake(LocalStorage(tmp_path))
    write_manifest(lake, manifest("20241001T020000Z-000001"))
    (tmp_path / "_runs" / "20241001T030000Z-000002.json").write_text("{not json")
    (tmp_path / "_runs" / "notes.txt").write_text("not a run")
    write_manifest(lake, manifest("20241001T040000Z-000003"))
    assert run_ids(lake) == [
        "20241001T020000Z-000001",
        "20241001T030000Z-000002",
        "20241001T040000Z-000003",
    ]
    assert [run.run_id for run in read_manifests(lake)] == [
        "20241001T020000Z-000001",
        "20241001T040000Z-000003",
    ]


def test_the_latest_night_is_the_one_of_that_window_that_finished() -> None:
    runs = [
        manifest("a", started_at="2024-10-01T02:00:00+00:00"),
        manifest("b", "backfill", started_at="2024-10-01T03:00:00+00:00"),
        manifest("c", "collect", started_at="2024-10-01T04:00:00+00:00"),  # one source: no night
        manifest("d", started_at="2024-10-01T05:00:00+00:00", finish=False),  # still running
        manifest("e", started_at="2024-10-01T06:00:00+00:00", end="2024-10-02"),  # another night
    ]
    night = latest_night(runs, date(2024, 10, 1))
    assert night is not None and night.run_id == "b"
    assert latest_night(runs, date(2024, 9, 1)) is None
