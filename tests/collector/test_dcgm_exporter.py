"""Tests for dcgm_exporter: real recorded pages served on loopback, faults, synth fleet.

The scraper talks HTTP to a real server on port 0 (tests/fakes/prometheus_server.py) serving
the dcgm-exporter scrapes of tests/data/dcgm/; the recorded-file path is checked end to end
through ``gpucost collect`` against a synthetic fleet's dcgm files and its ground truth.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_series_equal
from typer.testing import CliRunner

from gpucost.cli import app
from gpucost.collector.base import CollectorContext
from gpucost.collector.dcgm_exporter import (
    DcgmExporter,
    DcgmExporterSettings,
    Page,
    _parse_one_by_one,
    normalise_target,
    parse_pages,
    read_file_sd,
)
from gpucost.core.contracts import GPU_USAGE
from gpucost.core.errors import CollectorError
from gpucost.core.lake import Lake
from gpucost.core.storage import LocalStorage
from gpucost.core.window import Window
from gpucost.synth import generate
from tests.collector.builders import build_collector
from tests.fakes.prometheus_server import ExporterServer, closed_url

DATA = Path(__file__).resolve().parents[1] / "data" / "dcgm"
PAGES = sorted(DATA.glob("*.prom"))
T0 = datetime(2024, 9, 24, 10, 0, tzinfo=UTC)
DAY = Window(date(2024, 9, 24), date(2024, 9, 25))
T4 = DATA / "ericsson_baremetal_Tesla-T4_under_load.prom"
L4 = DATA / "kops_aws_NVIDIA-L4_scrape1.prom"
H100 = DATA / "nvidia_aicr_eks_p5_H100x8_sampled_with_pod_labels.prom"


def exporter(now: datetime = T0, **keys: object) -> DcgmExporter:
    """A dcgm-exporter source named ``dcgm`` with these settings, its clock at ``now``."""
    return build_collector(DcgmExporter, CollectorContext(clock=lambda: now), name="dcgm", **keys)


def test_normalise_target() -> None:
    assert normalise_target("gpu-node-1:9400") == "http://gpu-node-1:9400/metrics"
    assert normalise_target("http://gpu-node-1:9400/") == "http://gpu-node-1:9400/metrics"
    assert normalise_target("https://x:9400/custom") == "https://x:9400/custom"
    with pytest.raises(ValueError, match="not an http"):
        normalise_target("ftp://x/metrics")


def test_settings_need_an_input() -> None:
    with pytest.raises(ValueError, match="needs targets, file_sd or paths"):
        DcgmExporterSettings(name="dcgm", kind="dcgm-exporter")


def test_ten_targets_one_down_the_others_land() -> None:
    server = ExporterServer()
    for number, page in enumerate(PAGES):
        server.page(f"/node{number}/metrics", page.read_bytes())
    with server.serve() as base:
        down = closed_url()
        targets = [f"{base}/node{number}/metrics" for number in range(len(PAGES))] + [down]
        assert len(targets) == 10
        collected = exporter(targets=targets, scrape_interval_s=30).collect(DAY)
    notes = collected.notes
    assert notes["targets"] == 10 and notes["targets_ok"] == 9 and notes["targets_failed"] == 1
    (failure,) = notes["failed_targets"]
    assert failure["url"] == down and "ConnectionError" in failure["error"]
    assert failure["time"] == T0.isoformat()
    assert collected.rejects.height == 0
    rows = collected.frames["gpu_usage"]
    assert set(rows.get_column("hour")) == {T0}
    assert set(rows.get_column("seconds_observed")) == {30.0}  # one scrape: one interval
    t4 = rows.filter(pl.col("host") == "cp-bm14r7").row(0, named=True)
    # GR_ENGINE_ACTIVE (0.156205) wins over GPU_UTIL (91 %) when the exporter has both.
    assert t4["util_avg"] == pytest.approx(0.156205)
    assert t4["mem_used_max_bytes"] == 5120 << 20
    assert t4["mem_total_bytes"] == (5120 + 9791) << 20
    assert t4["power_avg_w"] == pytest.approx(68.244) and t4["sm_clock_avg_mhz"] == 660.0
    h100 = rows.filter(pl.col("host") == "gpu-node-1")
    assert h100.height == 8
    busy = h100.filter(pl.col("pod").is_not_null()).row(0, named=True)
    assert busy["namespace"] == "dynamo-workload"
    assert busy["workload"] == "vllm-agg-0-vllmdecodeworker"
    # The README excerpt has no Hostname label: the target's host names it.
    assert "127.0.0.1" in set(rows.get_column("host"))
    GPU_USAGE.validate(rows, "dcgm")


def test_faults_are_recorded_and_bounded_in_time() -> None:
    body = T4.read_bytes()
    server = ExporterServer()
    server.page("/good/metrics", body)
    server.fault("/hang/metrics", "hang", body, hang_s=20)
    server.fault("/error/metrics", "error")
    server.fault("/truncated/metrics", "truncated", body)
    server.fault("/cut/metrics", "cut", body)
    server.page("/garbage/metrics", body + b"this is not a sample\nDCGM_FI_DEV_GPU_UTIL{gpu=\n")
    with server.serve() as base:
        names = ["good", "hang", "error", "truncated", "cut", "garbage"]
        source = exporter(targets=[f"{base}/{name}/metrics" for name in names], timeout_s=1)
        started = time.monotonic()
        collected = source.collect(DAY)
        elapsed = time.monotonic() - started
    assert elapsed < 5, "a hanging target must not hold the round past its timeout"
    failed = {
        item["url"].split("/")[3]: item["error"] for item in collected.notes["failed_targets"]
    }
    assert set(failed) == {"hang", "error", "truncated"}
    assert "timed out" in failed["hang"]
    assert failed["error"] == "HTTP 500 Internal Server Error"
    assert "ChunkedEncodingError" in failed["truncated"] or "ConnectionError" in failed["truncated"]
    assert collected.notes["targets_ok"] == 3
    rejects = collected.rejects
    by_target = defaultdict(list)
    for row in rejects.iter_rows(named=True):
        by_target[row["file"].split("/")[3]].append(row)
    assert set(by_target) == {"cut", "garbage"}
    lines = body.decode().splitlines()
    garbage_rows = sorted(row["row"] for row in by_target["garbage"])
    assert garbage_rows == [len(lines) + 1, len(lines) + 2]  # numbered within the page
    (cut,) = by_target["cut"]
    assert cut["raw"] == body[: len(body) // 2].decode().splitlines()[-1]
    # The good lines of the cut and garbage pages still land (same GPU, same instant).
    rows = collected.frames["gpu_usage"]
    assert rows.height == 1 and rows.row(0, named=True)["host"] == "cp-bm14r7"


def test_all_targets_failing_fails_the_source() -> None:
    with pytest.raises(CollectorError, match="all 2 targets failed"):
        exporter(targets=[closed_url(), closed_url()]).collect(DAY)


def test_file_sd_targets(tmp_path: Path) -> None:
    server = ExporterServer()
    server.page("/custom/path", L4.read_bytes())
    server.page("/metrics", T4.read_bytes())
    with server.serve() as base:
        host = base.removeprefix("http://")
        file_sd = tmp_path / "dcgm.json"
        file_sd.write_text(
            json.dumps(
                [
                    {"targets": [host], "labels": {"job": "dcgm"}},
                    {"targets": [host], "labels": {"__metrics_path__": "/custom/path"}},
                ]
            )
        )
        assert read_file_sd(file_sd) == [f"{base}/metrics", f"{base}/custom/path"]
        collected = exporter(file_sd=str(file_sd), timeout_s=5).collect(DAY)
    assert collected.notes["file_sd_targets"] == 2
    assert set(collected.frames["gpu_usage"].get_column("host")) == {
        "cp-bm14r7",
        "i-030791dc5a37cd257",
    }
    file_sd.write_text('{"targets": []}')
    with pytest.raises(CollectorError, match="list of target groups"):
        read_file_sd(file_sd)


def test_spool_fills_the_hour_across_runs(tmp_path: Path) -> None:
    server = ExporterServer()
    server.page("/metrics", L4.read_bytes())
    with server.serve() as base:
        for minute in range(0, 60, 5):
            if minute == 25:
                continue  # a missed scrape
            source = exporter(
                targets=[base],
                scrape_interval_s=300,
                spool_dir=str(tmp_path / "spool"),
                now=T0 + timedelta(minutes=minute),
            )
            collected = source.collect(DAY)
    (row,) = collected.frames["gpu_usage"].iter_rows(named=True)
    assert row["seconds_observed"] == 11 * 300  # the gap is not filled in
    assert collected.notes["spool_samples"] == 11


def test_batched_parse_equals_page_by_page() -> None:
    pages = [
        Page(str(path), path.read_text(), T0 + timedelta(seconds=number), path.stem)
        for number, path in enumerate(PAGES)
    ]
    pages.append(Page("garbage", '\ufeffnot a sample\nDCGM_FI_DEV_GPU_UTIL{gpu="0"} x\n', T0))
    pages.append(Page("cut-no-newline", T4.read_text()[:-40], T0, "cut"))
    batched = parse_pages(pages)
    single = _parse_one_by_one(pages)
    keys = ["time", "host", "gpu_uuid", "namespace", "pod", "container"]
    assert batched.samples.sort(keys).equals(single.samples.sort(keys))
    assert batched.rejects.sort("file", "row").equals(single.rejects.sort("file", "row"))
    assert batched.rejects.height == 3


def test_recorded_files_without_timestamps_use_their_modification_time(tmp_path: Path) -> None:
    folder = tmp_path / "dcgm" / "node-a"
    folder.mkdir(parents=True)
    for number, moment in enumerate((T0, T0 + timedelta(seconds=30))):
        path = folder / f"scrape{number}.prom"
        path.write_bytes(L4.read_bytes())
        stamp = moment.timestamp()
        os.utime(path, (stamp, stamp))
    collected = exporter(paths=[str(tmp_path / "dcgm" / "*" / "*.prom")]).collect(DAY)
    (row,) = collected.frames["gpu_usage"].iter_rows(named=True)
    assert row["seconds_observed"] == 60.0 and collected.notes["files"] == 2


@pytest.fixture(scope="module")
def synth_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fleet")
    generate(out, gpus=8, days=1, projects=3, seed=1, usage_format="dcgm")
    return out


def _config(tmp_path: Path, fleet: Path) -> Path:
    config = tmp_path / "gpucost.toml"
    config.write_text(
        f"""
[store]
data_dir = "{tmp_path / "lake"}"
out_dir = "{tmp_path / "out"}"

[[sources]]
name = "dcgm"
kind = "dcgm-exporter"
paths = ["{fleet / "dcgm" / "*" / "*.prom"}"]
scrape_interval_s = 300
"""
    )
    return config


def test_gpucost_collect_matches_the_synthetic_truth(tmp_path: Path, synth_fleet: Path) -> None:
    runner = CliRunner()
    args = ["collect", "--config", str(_config(tmp_path, synth_fleet)), "--since", "2024-09-24"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = Lake(LocalStorage(tmp_path / "lake")).read(GPU_USAGE)
    truth = json.loads((synth_fleet / "truth.json").read_text())
    assert rows.height == truth["fleet"]["usage_rows"] == 288
    assert set(rows.get_column("seconds_observed")) == {3600.0}

    # GPU-seconds per project from the rollup's share columns, against truth.json's own
    # definitions (see its "definitions"): the columns are seconds of the GPU or MIG slice.
    fraction = (
        pl.col("mig_profile").str.extract(r"^(\d)g", 1).cast(pl.Float64).truediv(7).fill_null(1.0)
    )
    prefixes = {name: project["namespace_prefix"] for name, project in truth["projects"].items()}
    project = pl.lit(None, dtype=pl.String)
    for name, prefix in prefixes.items():
        project = (
            pl.when(pl.col("namespace").str.starts_with(prefix))
            .then(pl.lit(name))
            .otherwise(project)
        )
    per_project = (
        rows.with_columns(
            project.alias("p"),
            (pl.col("gpu_seconds_busy") * fraction).alias("used"),
            (pl.col("gpu_seconds_held") * fraction).alias("held"),
        )
        .filter(pl.col("p").is_not_null())
        .group_by("p")
        .agg(pl.col("used").sum(), pl.col("held").sum())
    )
    for name, used, held in per_project.iter_rows():
        assert used == pytest.approx(truth["projects"][name]["gpu_seconds_used"], rel=1e-12)
        assert held == pytest.approx(truth["projects"][name]["gpu_seconds_held"], rel=1e-12)
    assert per_project.height == len(prefixes)

    # MIG slices are named <GPU uuid>/<GPU_I_ID> and keep their profile.
    (mig,) = [gpu for gpu in truth["shared_gpus"] if gpu["kind"] == "mig"]
    expected = {
        (f"{mig['gpu_uuid']}/{item['gpu_instance_id']}", item["mig_profile"])
        for item in mig["slices"]
    }
    landed = set(
        rows.filter(pl.col("mig_profile").is_not_null())
        .select("gpu_uuid", "mig_profile")
        .unique()
        .iter_rows()
    )
    assert landed == expected

    again = runner.invoke(app, args)  # idempotent: the same rows, byte for byte
    assert again.exit_code == 0, again.output
    assert Lake(LocalStorage(tmp_path / "lake")).read(GPU_USAGE).equals(rows)


def test_recorded_rollup_equals_synths_own_rollup(tmp_path: Path, synth_fleet: Path) -> None:
    """Same seed, parquet output: synth's rollup of the same samples, row for row."""
    reference_dir = tmp_path / "parquet"
    generate(reference_dir, gpus=8, days=1, projects=3, seed=1, usage_format="parquet")
    reference = pl.read_parquet(reference_dir / "gpu_usage.parquet")
    source = exporter(paths=[str(synth_fleet / "dcgm" / "*" / "*.prom")], scrape_interval_s=300)
    landed = source.collect(DAY).frames["gpu_usage"]
    # synth names a MIG slice by its MIG-... uuid; dcgm-exporter pages only carry the GPU's
    # uuid and GPU_I_ID, so the join is on everything else.
    keys = ["hour", "host", "gpu_index", "mig_profile", "namespace", "pod", "container"]
    joined = reference.join(landed, on=keys, how="full", nulls_equal=True, suffix="_landed")
    assert joined.height == reference.height == landed.height
    for column in (
        "seconds_observed",
        "gpu_seconds_held",
        "gpu_seconds_busy",
        "util_avg",
        "util_max",
        "mem_used_max_bytes",
        "mem_total_bytes",
        "power_avg_w",
        "sm_clock_avg_mhz",
        "workload",
        "gpu_model",
    ):
        assert_series_equal(
            joined.get_column(column),
            joined.get_column(f"{column}_landed"),
            check_names=False,
            check_exact=False,
            rel_tol=1e-12,
        )


def test_a_missed_scrape_leaves_the_hour_short(tmp_path: Path, synth_fleet: Path) -> None:
    source_file = synth_fleet / "dcgm" / "gpu-t4-01" / "2024-09-24T10.prom"
    dropped_ms = str(int((T0 + timedelta(minutes=25)).timestamp() * 1000))
    kept = [line for line in source_file.read_text().splitlines() if not line.endswith(dropped_ms)]
    target = tmp_path / "dcgm" / "gpu-t4-01" / source_file.name
    target.parent.mkdir(parents=True)
    target.write_text("\n".join(kept) + "\n")
    rows = exporter(paths=[str(target)], scrape_interval_s=300).collect(DAY).frames["gpu_usage"]
    assert set(rows.get_column("seconds_observed")) == {3300.0}
    assert rows.height == 2  # the two time-sliced pods
