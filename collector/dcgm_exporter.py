"""``dcgm-exporter``: scrape NVIDIA dcgm-exporter ``/metrics`` pages, or read saved ones.

Two inputs, either or both:

* **Live targets**, a static list of URLs and/or a Prometheus ``file_sd`` JSON file, scraped
  concurrently by a bounded thread pool (one :class:`requests.Session`, a total time limit per
  target). A target that fails is recorded in the run's notes (URL, error, time) and never
  stops the others; only when every target fails is the source failed. A live scrape is one
  sample per GPU and workload: give the source a ``spool_dir`` and run it often (``schedule``)
  so that hours fill up from many scrapes.
* **Recorded scrapes**, a glob of saved exposition files (``dcgm/*/*.prom``): how backfills and
  the demo feed it. Lines carry millisecond timestamps; a file without them counts as scraped
  at its modification time.

Pages are parsed in batches by :func:`.dcgm_text.parse_dcgm_exposition` (one call for
many pages, each page fenced by a marker line), turned into raw samples and rolled up hourly by
:func:`gpucost.collector.gpu_rollup.rollup_hourly`.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import polars as pl
import requests
import requests.adapters
from pydantic import Field, field_validator, model_validator

from gpucost.collector.base import (
    REJECT_SCHEMA,
    Collected,
    CollectorContext,
    SourceSettings,
    register,
)
from gpucost.collector.dcgm_text import SAMPLE_SCHEMA, parse_dcgm_exposition
from gpucost.collector.gpu_rollup import (
    DEFAULT_EXPORTER_PODS,
    SampleSpool,
    clear_exporter_identity,
    conform_samples,
    empty_samples,
    mib_to_bytes,
    rollup_hourly,
    samples_by_instant,
    slice_uuid_expr,
)
from gpucost.collector.local_files import matching_files, probe_files
from gpucost.core.contracts import UTC_TIME
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

__all__ = [
    "DcgmExporter",
    "DcgmExporterSettings",
    "Page",
    "ParsedPages",
    "ScrapeOutcome",
    "make_session",
    "normalise_target",
    "parse_pages",
    "read_file_sd",
    "samples_from_dcgm",
    "scrape_targets",
]

DEFAULT_SCRAPE_INTERVAL_S: Final = 30.0
"""dcgm-exporter collects every 30 s unless told otherwise (``-c``/``DCGM_EXPORTER_INTERVAL``,
default 30000 ms), so a sample stands for at most 30 s by default."""
MAX_BODY_BYTES: Final = 64 << 20
"""A metrics page over 64 MiB is refused: real pages of 8-GPU nodes are well under 1 MiB."""
PARSE_BATCH_CHARS: Final = 32 << 20
"""Pages are parsed together up to this much text per call (bounded memory, few calls)."""
MAX_FAILED_TARGETS_NOTED: Final = 100
ACCEPT: Final = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
"""Ask for the classic text format (Prometheus exposition 0.0.4), not OpenMetrics."""

# DCGM field names (dcgm_fields.h) read into gpu_usage, and their units as dcgm-exporter
# documents them in default-counters.csv.
GR_ENGINE_ACTIVE: Final = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"  # ratio 0..1
GPU_UTIL: Final = "DCGM_FI_DEV_GPU_UTIL"  # percent 0..100
FB_USED: Final = "DCGM_FI_DEV_FB_USED"  # MiB
FB_FREE: Final = "DCGM_FI_DEV_FB_FREE"  # MiB
POWER_USAGE: Final = "DCGM_FI_DEV_POWER_USAGE"  # W
SM_CLOCK: Final = "DCGM_FI_DEV_SM_CLOCK"  # MHz
METRICS: Final = (GR_ENGINE_ACTIVE, GPU_UTIL, FB_USED, FB_FREE, POWER_USAGE, SM_CLOCK)

_HOUR_STAMP_RE: Final = re.compile(r"^(\d{4}-\d{2}-\d{2})")


class DcgmExporterSettings(SourceSettings):
    """Settings of a ``dcgm-exporter`` source."""

    targets: list[str] = Field(
        default_factory=list,
        description="Exporter URLs, or host:port (http://host:port/metrics).",
    )
    file_sd: str | None = Field(
        default=None, description="A Prometheus file_sd JSON file listing targets."
    )
    paths: list[str] = Field(
        default_factory=list, description="Globs of saved exposition files (recorded scrapes)."
    )
    scrape_interval_s: float = Field(
        default=DEFAULT_SCRAPE_INTERVAL_S,
        gt=0,
        le=3600,
        description="Time one sample stands for at most (the scrape or recording interval).",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Total time limit per target.")
    max_workers: int = Field(default=32, ge=1, le=512, description="Concurrent scrapes.")
    spool_dir: str | None = Field(
        default=None, description="Keep live samples here so hours fill up across runs."
    )
    spool_retention_days: int = Field(default=7, ge=1, description="Days of spooled samples.")
    exporter_pods: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXPORTER_PODS),
        description="Globs of the exporter's own pod names: such series have no workload.",
    )

    @field_validator("targets")
    @classmethod
    def _valid_targets(cls, targets: list[str]) -> list[str]:
        for target in targets:
            normalise_target(target)  # raises ValueError naming the target
        return targets

    @model_validator(mode="after")
    def _has_input(self) -> DcgmExporterSettings:
        if not (self.targets or self.file_sd or self.paths):
            raise ValueError("a dcgm-exporter source needs targets, file_sd or paths")
        return self


@dataclass(frozen=True)
class ScrapeOutcome:
    """One target's scrape: its page, or why there is none."""

    url: str
    started: datetime
    duration_s: float
    text: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Page:
    """One exposition page to parse, and what to assume where its lines say nothing."""

    origin: str
    """URL or file path, named in rejects."""
    text: str
    scrape_time: datetime | None
    """Time of samples without their own timestamp."""
    fallback_host: str | None = None
    """Host of samples without a ``Hostname``/``hostname`` label."""


@dataclass(frozen=True)
class ParsedPages:
    """Raw samples of some pages and the lines that did not parse."""

    samples: pl.DataFrame
    rejects: pl.DataFrame
    unusable_samples: int = 0
    """Wanted samples without a GPU uuid or host, or without any time."""


@register("dcgm-exporter")
class DcgmExporter:
    """Scrapes NVIDIA dcgm-exporter pages (or reads saved ones) into hourly ``gpu_usage`` rows.

    Utilisation is ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` when the exporter exports it, else
    ``DCGM_FI_DEV_GPU_UTIL`` / 100; memory is ``DCGM_FI_DEV_FB_USED`` (+ ``FB_FREE`` for the
    total), MiB to bytes; power ``DCGM_FI_DEV_POWER_USAGE`` (W); SM clock
    ``DCGM_FI_DEV_SM_CLOCK`` (MHz). Pod labels (``pod``/``namespace``/``container``, also
    ``pod_name``... and ``exported_*``) name the workload; labels that name the exporter itself
    (its container ``nvidia-dcgm-exporter``/``exporter``, or a pod matching ``exporter_pods``)
    mean a GPU with no workload. A failed target is noted and the
    others go on; the source fails only when every target fails.

    ```toml
    [[sources]]
    name = "dcgm"
    kind = "dcgm-exporter"
    targets = ["http://gpu-node-1:9400/metrics", "gpu-node-2:9400"]
    file_sd = "/etc/prometheus/file_sd/dcgm.json"   # optional, re-read at every run
    paths = ["dcgm/*/*.prom"]                       # optional: recorded scrapes
    scrape_interval_s = 30                          # what one sample stands for at most
    timeout_s = 10
    max_workers = 32
    spool_dir = "/var/lib/gpucost/dcgm-spool"       # keeps live samples between runs
    spool_retention_days = 7
    exporter_pods = ["nvidia-dcgm-exporter-*", "dcgm-exporter-*"]   # the exporter's own pods
    schedule = "* * * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("gpu_usage",)
    Settings: ClassVar[type[SourceSettings]] = DcgmExporterSettings

    def __init__(self, settings: DcgmExporterSettings, context: CollectorContext) -> None:
        self.settings, self.context, self.name = settings, context, settings.name
        self.targets = [normalise_target(target) for target in settings.targets]
        self.file_sd = Path(context.resolve(settings.file_sd)) if settings.file_sd else None
        self.paths = [context.resolve(path) for path in settings.paths]
        self.spool = SampleSpool.configured(
            settings.spool_dir, settings.spool_retention_days, context
        )

    def probe(self) -> str | None:
        """What would fail the source now: a missing ``file_sd`` file, or recorded ``paths``
        that match no file. Live targets are not scraped (a run tolerates some down)."""
        if self.file_sd is not None and not self.file_sd.is_file():
            return f"file_sd {self.file_sd} does not exist"
        return probe_files(*self.paths) if self.paths else None

    def collect(self, window: Window) -> Collected:
        """Scrape the live targets, read recorded files and spool, roll the window up hourly."""
        notes: dict[str, Any] = {}
        samples: list[pl.DataFrame] = []
        rejects: list[pl.DataFrame] = []
        unusable = 0
        targets = self._live_targets(notes)
        if targets:
            live = self._scrape(targets, notes)
            rejects.append(live.rejects)
            unusable += live.unusable_samples
            if self.spool is not None:
                now = self.context.clock()
                self.spool.append(live.samples, now=now)
                pruned = self.spool.prune(now.date())
                if pruned:
                    notes["spool_days_removed"] = pruned
            else:
                samples.append(live.samples)
                notes["warning"] = (
                    "live targets without spool_dir: each run lands only its own scrape"
                )
        if self.spool is not None:
            spooled = self.spool.read(window)
            notes["spool_samples"] = spooled.height
            samples.append(spooled)
        if self.paths:
            recorded = self._read_recorded(window, notes)
            rejects.append(recorded.rejects)
            unusable += recorded.unusable_samples
            samples.append(recorded.samples)
        everything = pl.concat(samples) if samples else empty_samples()
        # Pages read through Prometheus (federation, recorded answers) carry the scrape
        # target's own pod on GPUs nobody uses: that is not a workload.
        everything, cleared = clear_exporter_identity(everything, self.settings.exporter_pods)
        if cleared:
            notes["exporter_own_samples"] = cleared
        rows = rollup_hourly(
            everything, interval_s=self.settings.scrape_interval_s, source=self.name, window=window
        )
        notes["samples"] = everything.height
        if unusable:
            notes["samples_without_gpu_or_host"] = unusable
        all_rejects = pl.concat(rejects) if rejects else pl.DataFrame(schema=REJECT_SCHEMA)
        return Collected({"gpu_usage": rows}, all_rejects, notes)

    # ---- live targets ----

    def _live_targets(self, notes: dict[str, Any]) -> list[str]:
        targets = list(self.targets)
        if self.file_sd is not None:
            discovered = read_file_sd(self.file_sd, source=self.name)
            notes["file_sd_targets"] = len(discovered)
            targets.extend(discovered)
        return list(dict.fromkeys(targets))

    def _scrape(self, targets: Sequence[str], notes: dict[str, Any]) -> ParsedPages:
        with make_session(self.settings.max_workers) as session:
            outcomes = list(
                scrape_targets(
                    targets,
                    session=session,
                    timeout_s=self.settings.timeout_s,
                    max_workers=self.settings.max_workers,
                    clock=self.context.clock,
                )
            )
        failed: list[dict[str, str]] = []
        pages: list[Page] = []
        for outcome in outcomes:
            if outcome.text is None:
                failed.append(
                    {
                        "url": outcome.url,
                        "error": outcome.error or "unknown error",
                        "time": outcome.started.isoformat(),
                    }
                )
                logger.warning("source %s: %s failed: %s", self.name, outcome.url, outcome.error)
                continue
            pages.append(
                Page(outcome.url, outcome.text, outcome.started, urlsplit(outcome.url).hostname)
            )
        notes["targets"] = len(targets)
        notes["targets_ok"] = len(pages)
        if failed:
            failed.sort(key=lambda item: item["url"])
            notes["targets_failed"] = len(failed)
            notes["failed_targets"] = failed[:MAX_FAILED_TARGETS_NOTED]
        if not pages:
            first = "; ".join(f"{item['url']}: {item['error']}" for item in failed[:3])
            raise CollectorError(self.name, f"all {len(targets)} targets failed ({first})")
        return parse_pages(pages)

    # ---- recorded scrapes ----

    def _read_recorded(self, window: Window, notes: dict[str, Any]) -> ParsedPages:
        files = matching_files(self.name, *self.paths)
        selected = [file for file in files if _may_hold(file, window)]
        notes["files"] = len(selected)
        if len(selected) < len(files):
            notes["files_skipped_by_name"] = len(files) - len(selected)
        pages: list[Page] = []
        for file in selected:
            path = Path(file)
            try:
                text = path.read_bytes().decode("utf-8", errors="replace")
                modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except OSError as error:
                raise CollectorError(self.name, f"cannot read {file}: {error.strerror}") from error
            pages.append(Page(file, text, modified, path.parent.name))
        return parse_pages(pages)


def _may_hold(file: str, window: Window) -> bool:
    """False for a file named after a day (``2024-09-24T10.prom``) too far from the window."""
    match = _HOUR_STAMP_RE.match(Path(file).name)
    if match is None:
        return True
    try:
        day = date.fromisoformat(match.group(1))
    except ValueError:
        return True
    # A file named after an hour holds that hour's scrapes; a day of margin on each side
    # keeps files whose name is the local date or the time the recording started.
    return window.start - timedelta(days=1) <= day <= window.end


def normalise_target(target: str) -> str:
    """A scrape URL: ``host:port`` -> ``http://host:port/metrics``; a bare URL gets ``/metrics``."""
    text = target.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"target {target!r} is not an http(s) URL or host:port")
    if parts.path in ("", "/"):
        text = text.rstrip("/") + "/metrics"
    return text


def read_file_sd(path: Path, *, source: str = "dcgm-exporter") -> list[str]:
    """Target URLs of a Prometheus ``file_sd`` JSON file.

    The format (Prometheus docs, ``<file_sd_config>``) is a list of target groups
    ``{"targets": ["host:port", ...], "labels": {...}}``; the labels ``__scheme__`` and
    ``__metrics_path__`` change the URL as they do in Prometheus. Other labels are ignored.
    """
    try:
        groups = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CollectorError(source, f"cannot read file_sd {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise CollectorError(source, f"file_sd {path} is not JSON: {error}") from error
    if not isinstance(groups, list):
        raise CollectorError(source, f"file_sd {path}: expected a list of target groups")
    urls: list[str] = []
    for number, group in enumerate(groups, start=1):
        if not isinstance(group, dict) or not isinstance(group.get("targets"), list):
            raise CollectorError(source, f"file_sd {path}: group {number} has no targets list")
        labels = group.get("labels") or {}
        scheme = str(labels.get("__scheme__", "http"))
        metrics_path = str(labels.get("__metrics_path__", "/metrics"))
        for target in group["targets"]:
            urls.append(normalise_target(f"{scheme}://{target}{metrics_path}"))
    return urls


def make_session(max_workers: int) -> requests.Session:
    """A Session whose connection pools hold one connection per worker, no urllib3 retries."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=max(10, max_workers), pool_maxsize=max(10, max_workers), max_retries=0
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"Accept": ACCEPT, "User-Agent": "gpucost"})
    return session


def scrape_targets(
    urls: Sequence[str],
    *,
    session: requests.Session,
    timeout_s: float,
    max_workers: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[ScrapeOutcome]:
    """Scrape every URL with at most ``max_workers`` at once; yields outcomes as they finish.

    Never raises for a target: its error is in the outcome.
    """
    if not urls:
        return
    with ThreadPoolExecutor(
        max_workers=min(max_workers, len(urls)), thread_name_prefix="dcgm-scrape"
    ) as pool:
        futures = [pool.submit(_fetch, session, url, timeout_s, clock) for url in urls]
        for future in as_completed(futures):
            yield future.result()


def _fetch(
    session: requests.Session, url: str, timeout_s: float, clock: Callable[[], datetime]
) -> ScrapeOutcome:
    """GET one page within ``timeout_s`` in total (connect, headers and body)."""
    started = clock()
    began = time.monotonic()

    def outcome(text: str | None = None, error: str | None = None) -> ScrapeOutcome:
        return ScrapeOutcome(url, started, round(time.monotonic() - began, 3), text, error)

    try:
        # requests' timeout bounds the connect and each read, not the whole body: the deadline
        # check below bounds a server that trickles bytes.
        with session.get(url, timeout=(timeout_s, timeout_s), stream=True) as response:
            if response.status_code != 200:
                return outcome(error=f"HTTP {response.status_code} {response.reason}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(chunk_size=1 << 16):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return outcome(error=f"page larger than {MAX_BODY_BYTES} bytes")
                if time.monotonic() - began > timeout_s:
                    return outcome(error=f"timed out after {timeout_s:g} s (body incomplete)")
                chunks.append(chunk)
            return outcome(text=b"".join(chunks).decode("utf-8", errors="replace"))
    except requests.Timeout:
        return outcome(error=f"timed out after {timeout_s:g} s")
    except requests.RequestException as error:
        return outcome(error=f"{type(error).__name__}: {_short(error)}")


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:297] + "..."


def parse_pages(pages: Sequence[Page]) -> ParsedPages:
    """Parse pages into raw samples (:data:`.gpu_rollup.RAW_SAMPLE_SCHEMA`) and rejects.

    Pages are parsed together, up to :data:`PARSE_BATCH_CHARS` of text per call: a marker
    line ``gpucost_page_<random> <page number>`` before each page tells, in the parser's
    page-ordered output, which page a sample came from (one call for a thousand pages is
    tens of times faster than a thousand calls).
    """
    samples: list[pl.DataFrame] = []
    rejects: list[pl.DataFrame] = []
    unusable = 0
    batch: list[Page] = []
    size = 0
    for page in pages:
        batch.append(page)
        size += len(page.text)
        if size >= PARSE_BATCH_CHARS:
            result = _parse_batch(batch)
            samples.append(result.samples)
            rejects.append(result.rejects)
            unusable += result.unusable_samples
            batch, size = [], 0
    if batch or not samples:
        result = _parse_batch(batch)
        samples.append(result.samples)
        rejects.append(result.rejects)
        unusable += result.unusable_samples
    return ParsedPages(pl.concat(samples), pl.concat(rejects), unusable)


def _parse_batch(pages: Sequence[Page]) -> ParsedPages:
    marker = f"gpucost_page_{uuid.uuid4().hex}"
    pieces: list[str] = []
    first_lines: list[int] = []
    line = 1
    for number, page in enumerate(pages):
        text = page.text.removeprefix("\ufeff")
        if text and not text.endswith("\n"):
            text += "\n"
        pieces.append(f"{marker} {number}\n")
        first_lines.append(line + 1)
        pieces.append(text)
        line += 1 + text.count("\n")
    result = parse_dcgm_exposition("".join(pieces))
    frame = result.frame
    is_marker = pl.col("metric") == marker
    markers = frame.filter(is_marker).get_column("value").to_list()
    if markers != [float(number) for number in range(len(pages))]:
        # The parser promises page order; should that ever break, parse page by page.
        return _parse_one_by_one(pages)
    frame = frame.with_columns(
        pl.when(is_marker).then(pl.col("value")).forward_fill().cast(pl.Int32()).alias("page")
    ).filter(~is_marker)
    page_table = pl.DataFrame(
        {
            "page": pl.Series(range(len(pages)), dtype=pl.Int32()),
            "page_time": pl.Series([page.scrape_time for page in pages], dtype=UTC_TIME),
            "fallback_host": pl.Series([page.fallback_host for page in pages], dtype=pl.String()),
        }
    )
    frame = frame.join(page_table, on="page", how="left").with_columns(
        pl.col("page_time").alias("scrape_time")
    )
    samples, unusable = samples_from_dcgm(frame)
    rows = []
    for error in result.errors:
        number = bisect.bisect_right(first_lines, error.line_number) - 1
        rows.append(
            {
                "file": pages[number].origin,
                "row": error.line_number - first_lines[number] + 1,
                "field": "line",
                "reason": error.reason,
                "raw": error.line,
            }
        )
    return ParsedPages(samples, pl.DataFrame(rows, schema=REJECT_SCHEMA), unusable)


def _parse_one_by_one(pages: Sequence[Page]) -> ParsedPages:
    samples: list[pl.DataFrame] = []
    rejects: list[pl.DataFrame] = []
    unusable = 0
    for page in pages:
        result = parse_dcgm_exposition(page.text, scrape_time=page.scrape_time)
        frame = result.frame.with_columns(
            pl.lit(page.fallback_host, dtype=pl.String()).alias("fallback_host")
        )
        page_samples, page_unusable = samples_from_dcgm(frame)
        samples.append(page_samples)
        rejects.append(result.rejects(page.origin))
        unusable += page_unusable
    if not samples:
        return ParsedPages(empty_samples(), pl.DataFrame(schema=REJECT_SCHEMA))
    return ParsedPages(pl.concat(samples), pl.concat(rejects), unusable)


def samples_from_dcgm(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Raw GPU samples from parsed exposition rows (:data:`.dcgm_text.SAMPLE_SCHEMA`).

    A sample's time is its line's timestamp, else ``scrape_time``; its host the ``Hostname``
    label, else the optional ``fallback_host`` column. Returns the samples and the number of
    wanted rows that could not be placed (no GPU uuid, host or time).
    """
    missing = [name for name in SAMPLE_SCHEMA if name not in frame.columns]
    if missing:
        raise ValueError(f"not parsed exposition rows; missing {', '.join(missing)}")
    if "fallback_host" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String()).alias("fallback_host"))
    stamped = pl.from_epoch(pl.col("timestamp_ms"), time_unit="ms").dt.replace_time_zone("UTC")
    wanted = (
        frame.lazy()
        .filter(pl.col("metric").is_in(METRICS))
        .with_columns(
            pl.coalesce(stamped.cast(UTC_TIME), pl.col("scrape_time")).alias("time"),
            pl.coalesce("host", "fallback_host").alias("host"),
            slice_uuid_expr(pl.col("gpu_uuid"), pl.col("mig_instance_id")).alias("gpu_uuid"),
        )
    )
    placeable = (
        pl.col("time").is_not_null()
        & pl.col("host").is_not_null()
        & pl.col("gpu_uuid").is_not_null()
    )
    counted = wanted.select(placeable.alias("ok")).collect().get_column("ok")
    unusable = counted.len() - counted.sum()

    def metric(name: str) -> pl.Expr:
        return pl.col("value").filter(pl.col("metric") == name).first()

    by_instant = (
        samples_by_instant(wanted.filter(placeable), {name: metric(name) for name in METRICS})
        .select(
            pl.exclude(METRICS),
            pl.coalesce(pl.col(GR_ENGINE_ACTIVE), pl.col(GPU_UTIL) / 100.0).alias("util"),
            mib_to_bytes(pl.col(FB_USED)).alias("mem_used_bytes"),
            mib_to_bytes(pl.col(FB_USED) + pl.col(FB_FREE)).alias("mem_total_bytes"),
            pl.col(POWER_USAGE).alias("power_w"),
            pl.col(SM_CLOCK).alias("sm_clock_mhz"),
        )
        .collect()
    )
    return conform_samples(by_instant), int(unusable)
