"""The nightly HTML report: self-contained, deterministic, and really drawn by a browser.

The browser test renders the file in headless Chromium (Debian package ``chromium``) and reads
the screenshot with a small PNG decoder (zlib from the standard library, PNG filters from the
PNG specification, section 9 "Filtering").
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from gpucost.core.contracts import ALLOCATION, FINDINGS, GPU_USAGE
from gpucost.reports.findings import find_all
from gpucost.reports.html_report import render_html_report, write_html_report
from tests.reports.fleet import Fleet

MANIFEST = {
    "run_id": "r1",
    "sources": [
        {"name": "finance-focus", "status": "ok"},
        {"name": "dcgm-prod", "status": "empty"},
    ],
}


@pytest.fixture(scope="module")
def report(fleet: Fleet, allocation: pl.DataFrame) -> str:
    return render_html_report(
        day=fleet.window.end - timedelta(days=1),
        allocation=allocation,
        gpu_usage=fleet.usage,
        findings=find_all(fleet.data()),
        manifest=MANIFEST,
    )


def test_report_is_self_contained(report: str) -> None:
    lowered = report.lower()
    for forbidden in ("<script", "src=", "href=", "url(", "@import", "http://", "https://"):
        assert forbidden not in lowered, forbidden
    assert report.startswith("<!DOCTYPE html>") and report.count("<svg") == 3
    assert "<style>" in report


def test_report_shows_costs_heatmap_waste_and_findings(fleet: Fleet, report: str) -> None:
    assert "Cost per project over time" in report and "GPU utilisation per host" in report
    assert "Idle waste" in report and "Findings" in report
    assert "Incomplete data: source dcgm-prod returned nothing" in report
    for anomaly in fleet.truth["anomalies"]:
        assert anomaly["host"] in report
    assert "383.98 USD" in report and "2,165.58 USD" in report and "515.99 USD" in report
    for project in ("llm-serving", "recsys-training", "vision-research", "speech-asr"):
        assert project in report


def test_report_is_deterministic_and_escapes_text(fleet: Fleet, allocation: pl.DataFrame) -> None:
    hostile = allocation.with_columns(
        pl.when(pl.col("project") == "llm-serving")
        .then(pl.lit("<b>llm</b>"))
        .otherwise(pl.col("project"))
        .alias("project")
    )
    day = fleet.window.end - timedelta(days=1)

    def render() -> str:
        return render_html_report(
            day=day, allocation=hostile, gpu_usage=fleet.usage, findings=FINDINGS.empty()
        )

    first = render()
    assert first == render()
    assert "<b>llm</b>" not in first and "&lt;b&gt;llm&lt;/b&gt;" in first
    assert "Data completeness unknown" in first and "No findings." in first


def test_an_empty_night_still_renders() -> None:
    page = render_html_report(
        day=date(2024, 9, 1),
        allocation=ALLOCATION.empty(),
        gpu_usage=GPU_USAGE.empty(),
        findings=FINDINGS.empty(),
    )
    assert "No allocated cost in this period." in page and "No GPU telemetry" in page


def test_write_goes_through_put_atomic(report: str) -> None:
    written: dict[str, bytes] = {}
    relative = write_html_report(report, written.__setitem__, "reports/2024-09-25.html")
    assert written == {relative: report.encode()}


# ---- in a real browser ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; the test skips, naming it, when it is not on PATH.

    Tests never install system packages: CI's ``.ci/run`` installs the Debian package
    ``chromium``.
    """
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "chromium (or chromium-browser) is not on PATH; install the Debian package chromium"
    )


def test_report_renders_in_headless_chromium(chromium: str, report: str, tmp_path: Path) -> None:
    page, shot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(report, encoding="utf-8")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    colours = Counter(pixels)
    _background, count = colours.most_common(1)[0]
    assert count < 0.9 * len(pixels), "the page is one colour: blank"
    assert len(colours) > 200, "too few colours for text, charts and a heatmap"
    # The heatmap and the bars are drawn: viridis' darkest purple (0 % use) and the first
    # series colour (#4e79a7) cover real areas, not a pixel here and there.
    assert _near(colours, (0x44, 0x01, 0x54)) > 500
    assert _near(colours, (0x4E, 0x79, 0xA7)) > 500


def _near(colours: Counter[tuple[int, int, int]], target: tuple[int, int, int]) -> int:
    return sum(
        count
        for colour, count in colours.items()
        if all(abs(a - b) <= 6 for a, b in zip(colour, target, strict=True))
    )


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, bytearray(), b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type)
    channels = 3 if colour_type == 2 else 4
    stride = width * channels
    raw = zlib.decompress(bytes(idat))
    previous = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, previous, channels)
        pixels.extend(zip(line[0::channels], line[1::channels], line[2::channels], strict=True))
        previous = line
    return width, height, pixels


def _unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> None:
    """Undo one scanline's filter in place (PNG spec 9.2: None, Sub, Up, Average, Paeth)."""
    if kind == 0:
        return
    if kind == 2:
        line[:] = bytes((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = previous[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
        elif kind == 4:
            corner = previous[i - bpp] if i >= bpp else 0
            estimate = left + up - corner
            distances = (abs(estimate - left), abs(estimate - up), abs(estimate - corner))
            if distances[0] <= distances[1] and distances[0] <= distances[2]:
                predictor = left
            elif distances[1] <= distances[2]:
                predictor = up
            else:
                predictor = corner
            line[i] = (line[i] + predictor) & 0xFF
        else:
            raise AssertionError(f"unknown PNG filter {kind}")


def test_png_decoder_on_a_tiny_image() -> None:
    """A 2x2 RGB PNG built here, one row Sub-filtered and one Paeth-filtered."""
    rows = [bytes([1, 10, 20, 30, 5, 5, 5]), bytes([4, 1, 2, 3, 0, 0, 0])]
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
    width, height, pixels = decode_png(png)
    assert (width, height) == (2, 2)
    # Row 0 (Sub): (10,20,30), then (10+5, 20+5, 30+5). Row 1 (Paeth): the first pixel has
    # no left neighbour, so "up" (10,20,30) + (1,2,3); for the second, left + up - corner =
    # (16,27,38) lies nearest "up" (15,25,35) in every channel, + (0,0,0).
    assert pixels == [(10, 20, 30), (15, 25, 35), (11, 22, 33), (15, 25, 35)]
