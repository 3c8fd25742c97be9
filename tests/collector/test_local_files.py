"""Local file sources: one glob rule everywhere (``**`` too), no disk access when validating.

A pattern is checked when its source runs (a CollectorError naming source and pattern) or
when asked through ``probe()``, never while a config is validated.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from gpucost.collector.base import Collector, CollectorContext, probe
from gpucost.collector.dcgm_exporter import DcgmExporter
from gpucost.collector.focus_files import FocusFiles
from gpucost.collector.host_metrics_file import HostMetricsFile
from gpucost.collector.inventory_file import InventoryFile
from gpucost.collector.local_files import glob_files, matching_files, probe_files
from gpucost.collector.prometheus import PrometheusGpuMetrics
from gpucost.collector.roster import Roster
from gpucost.config import validate_config
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window
from tests.collector.builders import build_collector, kind_of

DATA = Path(__file__).parent.parent / "data"
FOCUS_SAMPLE = DATA / "focus" / "focus_1.0_sample_1000.csv"
DCGM_PAGE = DATA / "dcgm" / "kops_aws_NVIDIA-L4_scrape1.prom"
SEPTEMBER = Window(date(2024, 9, 1), date(2024, 10, 1))
DAY = Window(date(2024, 9, 24), date(2024, 9, 25))
NOW = datetime(2024, 9, 25, tzinfo=UTC)
HOST_METRICS = (
    "hour,resource_id,host,cpu_util_avg,cpu_util_max,cpu_util_p95\n"
    "2024-09-24T0{hour}:00:00Z,i-{host},{host},0.5,0.9,0.8\n"
)
INVENTORY = "resource_id,provider,host,gpu_count\ni-{host},onprem,{host},8\n"
ROSTER = "person_id,project,fraction,start,end\np1,llm,1,2024-01-01,\n"


def nested(root: Path, text: str, names: list[str]) -> None:
    """``text`` (with ``{host}`` and ``{hour}`` filled in) at several depths below ``root``."""
    for number, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(host=f"h{number}", hour=number))


def context() -> CollectorContext:
    """A context whose clock is pinned."""
    return CollectorContext(clock=lambda: NOW)


def test_double_star_reaches_every_depth_in_focus_files(tmp_path: Path) -> None:
    for name in ("top.csv", "2024/09/deep.csv", "2024/other.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FOCUS_SAMPLE, tmp_path / name)
    (tmp_path / "2024" / "readme.txt").write_text("not billing")
    source = build_collector(FocusFiles, context(), path=str(tmp_path / "**" / "*.csv"))
    collected = source.collect(SEPTEMBER)
    assert collected.notes["files"] == [
        str(tmp_path / "2024" / "09" / "deep.csv"),
        str(tmp_path / "2024" / "other.csv"),
        str(tmp_path / "top.csv"),
    ]
    assert collected.notes["rows_read"] == 3000


def test_double_star_reaches_every_depth_in_host_metrics_file(tmp_path: Path) -> None:
    nested(tmp_path, HOST_METRICS, ["a.csv", "x/b.csv", "x/y/c.csv"])
    source = build_collector(HostMetricsFile, context(), path=str(tmp_path / "**" / "*.csv"))
    collected = source.collect(DAY)
    assert len(collected.notes["files"]) == 3
    assert sorted(collected.frames["host_metrics"]["host"]) == ["h0", "h1", "h2"]


def test_double_star_reaches_every_depth_in_inventory_file(tmp_path: Path) -> None:
    nested(tmp_path, INVENTORY, ["racks/a.csv", "racks/fra/b.csv"])
    source = build_collector(
        InventoryFile, context(), path=str(tmp_path / "racks" / "**" / "*.csv")
    )
    inventory = source.collect(DAY).frames["inventory"]
    assert sorted(inventory["host"]) == ["h0", "h1"]


def test_double_star_reaches_every_depth_in_dcgm_recordings(tmp_path: Path) -> None:
    for name in ("node-a/scrape.prom", "2024/node-b/scrape.prom"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DCGM_PAGE, tmp_path / name)
    source = build_collector(DcgmExporter, context(), paths=[str(tmp_path / "**" / "*.prom")])
    assert source.collect(DAY).notes["files"] == 2


def test_relative_patterns_resolve_against_the_working_directory(tmp_path: Path) -> None:
    nested(tmp_path, HOST_METRICS, ["exports/cpu/a.csv"])
    in_tmp = CollectorContext(working_dir=tmp_path, clock=lambda: NOW)
    source = build_collector(HostMetricsFile, in_tmp, path="exports/**/*.csv")
    assert source.collect(DAY).notes["files"] == [str(tmp_path / "exports" / "cpu" / "a.csv")]


def test_folders_never_count_as_matches(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "file.csv").write_text("x\n")
    assert glob_files(str(tmp_path / "*.csv")) == [str(tmp_path / "file.csv")]
    assert glob_files(str(tmp_path / "**")) == [str(tmp_path / "file.csv")]


FILE_SOURCES: list[tuple[type[Collector[Any]], dict[str, Any]]] = [
    (FocusFiles, {"path": "{missing}/*.csv"}),
    (HostMetricsFile, {"path": "{missing}/**/*.csv"}),
    (InventoryFile, {"path": "{missing}/hosts.csv"}),
    (Roster, {"path": "{missing}/roster.csv"}),
    (DcgmExporter, {"paths": ["{missing}/*/*.prom"]}),
]


def _keys(template: dict[str, Any], missing: Path) -> dict[str, Any]:
    def fill(value: Any) -> Any:
        return (
            [fill(v) for v in value] if isinstance(value, list) else value.format(missing=missing)
        )

    return {key: fill(value) for key, value in template.items()}


@pytest.mark.parametrize(("cls", "template"), FILE_SOURCES)
def test_validation_never_looks_at_the_disk(
    cls: type[Collector[Any]], template: dict[str, Any], tmp_path: Path
) -> None:
    """A config naming files that do not exist (yet) is valid wherever it is checked."""
    source = {"name": "files", "kind": kind_of(cls), **_keys(template, tmp_path / "nowhere")}
    config = validate_config({"store": {"data_dir": "d", "out_dir": "o"}, "sources": [source]})
    assert config.sources[0].name == "files"


@pytest.mark.parametrize(("cls", "template"), FILE_SOURCES)
def test_a_pattern_matching_nothing_fails_the_source_when_it_runs(
    cls: type[Collector[Any]], template: dict[str, Any], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    source = build_collector(cls, context(), name="files", **_keys(template, missing))
    problem = probe(source)
    assert problem is not None and str(missing) in problem and "matches no file" in problem
    with pytest.raises(CollectorError) as raised:
        source.collect(DAY)
    assert "source 'files'" in str(raised.value) and str(missing) in str(raised.value)
    assert "matches no file" in str(raised.value)


def test_probe_is_quiet_when_the_files_are_there(tmp_path: Path) -> None:
    nested(tmp_path, HOST_METRICS, ["a.csv"])
    source = build_collector(HostMetricsFile, context(), path=str(tmp_path / "*.csv"))
    assert probe(source) is None
    assert probe_files(str(tmp_path / "*.csv")) is None
    # Kinds without files to look at have nothing to probe.
    prometheus = build_collector(PrometheusGpuMetrics, url="http://prometheus.invalid:9090")
    assert probe(prometheus) is None


def test_a_roster_glob_must_match_one_file(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text(ROSTER)
    source = build_collector(Roster, context(), name="roster", path=str(tmp_path / "*.csv"))
    assert "matches 2 files; a roster is one file" in (probe(source) or "")
    with pytest.raises(CollectorError, match="matches 2 files; a roster is one file"):
        source.collect(DAY)
    single = build_collector(Roster, context(), path=str(tmp_path / "a*.csv"))
    assert single.collect(DAY).frames["headcount"].height == 1


def test_matching_files_names_every_pattern(tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match=r"a/\*, b/\* match no file"):
        matching_files("src", "a/*", "b/*")
