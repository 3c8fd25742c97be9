"""Prometheus metrics of ``gpucost serve``: how each source and night went, and what it cost.

:class:`ServeMetrics` is a prometheus_client custom collector (one class with ``collect()``)
registered in its own :class:`~prometheus_client.CollectorRegistry`, so nothing else in the
process (library default collectors, other registries) leaks into ``/metrics``.

Labels are only source names, table names, job ids, project and cost-center names, currencies,
finding kinds and severities: never an error message, a path or a setting's value, so no secret
can reach a scrape. Money is exported as float gauges: these are dashboard figures; the exact
Decimal amounts stay in the lake and the exports.

Metric names (every one is documented in ``docs/operations.md``):

* ``gpucost_source_last_success_timestamp_seconds{source}``, ``..._last_run_timestamp_seconds``,
  ``gpucost_source_last_run_success{source}``, ``gpucost_source_rows{source,table}``,
  ``gpucost_source_rejected_rows{source}``, ``gpucost_source_duration_seconds{source}``,
  ``gpucost_source_runs_total{source,status}``, ``gpucost_source_errors_total{source}``
* ``gpucost_nightly_last_success_timestamp_seconds``, ``..._last_run_timestamp_seconds``,
  ``gpucost_nightly_duration_seconds``, ``gpucost_nightly_runs_total{status}``
* ``gpucost_job_next_run_timestamp_seconds{job}``
* ``gpucost_project_billed_cost{project,cost_center,currency,period}``,
  ``gpucost_project_effective_cost{...}`` (period ``yesterday`` or ``month_to_date``),
  ``gpucost_project_gpu_hours{project,state,period}`` (state ``used`` or ``idle``),
  ``gpucost_estimated_monthly_waste{kind,project,currency}``, ``gpucost_findings{kind,severity}``,
  ``gpucost_business_metrics_day_timestamp_seconds``
* ``gpucost_build_info{version}``
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import polars as pl
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gpucost.core.contracts import ALLOCATION, FINDINGS
from gpucost.core.errors import GpucostError
from gpucost.core.lake import Lake
from gpucost.core.manifest import RunManifest, SourceRun, read_manifest, run_ids
from gpucost.core.window import Window
from gpucost.pipeline import Runtime

logger = logging.getLogger(__name__)

SEED_MANIFESTS = 500
"""How many of the newest run manifests seed the per-source gauges at start-up."""

PERIODS = ("yesterday", "month_to_date")


@dataclass
class SourceState:
    """The latest facts about one source."""

    last_run: float | None = None
    last_success: float | None = None
    last_ok: bool | None = None
    rows: dict[str, int] = field(default_factory=dict)
    rejected_rows: int = 0
    duration_s: float | None = None
    runs: dict[str, int] = field(default_factory=dict)
    errors: int = 0


@dataclass
class NightlyState:
    """The latest facts about the nightly pipeline."""

    last_run: float | None = None
    last_success: float | None = None
    duration_s: float | None = None
    runs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BusinessFigures:
    """Cost, GPU hours and waste for the dashboard, as of ``day`` (yesterday)."""

    day: date
    costs: list[tuple[str, str, str, str, float, float]]
    """(period, project, cost_center, currency, billed, effective)."""
    gpu_hours: list[tuple[str, str, str, float]] = field(default_factory=list)
    """(period, project, state, hours)."""
    waste: list[tuple[str, str, str, float]] = field(default_factory=list)
    """(kind, project, currency, estimated monthly waste)."""
    findings: list[tuple[str, str, int]] = field(default_factory=list)
    """(kind, severity, count)."""


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class ServeMetrics(Collector):
    """The collector behind ``/metrics``; jobs call the ``record_*`` methods (thread-safe)."""

    def __init__(
        self,
        jobs: Callable[[], list[tuple[str, datetime | None]]] | None = None,
        *,
        configured_sources: Iterable[str] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._recorded: set[str] = set()
        self.sources: dict[str, SourceState] = {}
        self.configured_sources: frozenset[str] | None = (
            None if configured_sources is None else frozenset(configured_sources)
        )
        """Sources the config enables: only theirs are exposed (None: every source seen)."""
        self.nightly = NightlyState()
        self.business: BusinessFigures | None = None
        self.jobs = jobs
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # --- recording ---------------------------------------------------------------------

    def record_manifest(self, manifest: RunManifest, *, count: bool = True) -> None:
        """Fold one finished run into the per-source (and, for nights, nightly) state."""
        finished = _timestamp(manifest.finished_at) or _timestamp(manifest.started_at)
        with self._lock:
            if manifest.run_id in self._recorded:
                return
            self._recorded.add(manifest.run_id)
            for source in manifest.sources:
                self._record_source(source, finished, count=count)
            if manifest.command == "nightly":
                started = _timestamp(manifest.started_at)
                self._record_nightly(
                    manifest.status,
                    finished,
                    None if started is None or finished is None else finished - started,
                    count=count,
                )

    def record_nightly_outcome(self, status: str) -> None:
        """Count a night that produced no manifest (``skipped_locked``, ``error``)."""
        with self._lock:
            self.nightly.runs[status] = self.nightly.runs.get(status, 0) + 1

    def record_source_error(self, source: str) -> None:
        """Count a source job that failed before its run could be recorded."""
        with self._lock:
            state = self.sources.setdefault(source, SourceState())
            state.errors += 1
            state.runs["error"] = state.runs.get("error", 0) + 1
            state.last_ok = False

    def _record_source(self, run: SourceRun, finished: float | None, *, count: bool) -> None:
        state = self.sources.setdefault(run.name, SourceState())
        if run.status == "disabled":
            return
        if count:
            state.runs[run.status] = state.runs.get(run.status, 0) + 1
            if run.status == "failed":
                state.errors += 1
        if finished is not None and (state.last_run is None or finished >= state.last_run):
            state.last_run = finished
            state.last_ok = run.status == "ok"
            state.duration_s = run.duration_s
            if run.status == "ok":
                state.last_success = finished
                state.rows = dict(run.rows)
                state.rejected_rows = run.rejected_rows

    def _record_nightly(
        self, status: str, finished: float | None, duration_s: float | None, *, count: bool
    ) -> None:
        if count:
            self.nightly.runs[status] = self.nightly.runs.get(status, 0) + 1
        if finished is None or (
            self.nightly.last_run is not None and finished < self.nightly.last_run
        ):
            return
        self.nightly.last_run = finished
        self.nightly.duration_s = duration_s
        if status == "complete":
            self.nightly.last_success = finished

    def seed_from_lake(self, lake: Lake, limit: int = SEED_MANIFESTS) -> int:
        """Fold in the newest finished manifests not recorded yet; returns how many.

        At start-up this keeps the gauges across a restart; run periodically it picks up runs
        other processes made (``gpucost nightly`` from cron, a Kubernetes CronJob). Runs found
        this way set the gauges but are not counted in the ``*_runs_total`` counters.
        """
        newest = run_ids(lake)[-limit:]
        with self._lock:
            # Older runs can never be read again: forgetting them keeps this set bounded.
            self._recorded &= set(newest)
        seeded = 0
        for run_id in newest:
            with self._lock:
                if run_id in self._recorded:
                    continue
            try:
                manifest = read_manifest(lake, run_id)
            except (GpucostError, ValueError):  # a damaged manifest must not hide the others
                continue
            if manifest.finished_at is None:
                continue
            self.record_manifest(manifest, count=False)
            seeded += 1
        return seeded

    def set_configured_sources(self, names: Iterable[str]) -> None:
        """Expose only these sources from now on (the config was reloaded).

        A source renamed or removed from the config keeps its history in the lake's manifests,
        but a gauge for it would keep an alert such as ``GpucostSourceFailing`` firing for a
        source nobody runs any more.
        """
        with self._lock:
            self.configured_sources = frozenset(names)

    def set_business(self, figures: BusinessFigures) -> None:
        """Replace the business gauges."""
        with self._lock:
            self.business = figures

    # --- exposition --------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """Every metric family, from the current state (prometheus_client Collector API)."""
        with self._lock:
            yield from self._source_families()
            yield from self._nightly_families()
            yield from self._business_families()
        yield from self._job_families()
        info = GaugeMetricFamily("gpucost_build_info", "gpucost version.", labels=["version"])
        info.add_metric([_version()], 1)
        yield info

    def _source_families(self) -> Iterator[Any]:
        labels = ["source"]
        last_success = GaugeMetricFamily(
            "gpucost_source_last_success_timestamp_seconds",
            "Unix time a source last landed rows successfully.",
            labels=labels,
        )
        last_run = GaugeMetricFamily(
            "gpucost_source_last_run_timestamp_seconds",
            "Unix time a source last finished a run, successful or not.",
            labels=labels,
        )
        last_ok = GaugeMetricFamily(
            "gpucost_source_last_run_success",
            "1 when the source's last run landed rows, else 0.",
            labels=labels,
        )
        rows = GaugeMetricFamily(
            "gpucost_source_rows",
            "Rows the source's last successful run landed, per table.",
            labels=["source", "table"],
        )
        rejected = GaugeMetricFamily(
            "gpucost_source_rejected_rows",
            "Rows the source's last successful run rejected into quarantine.",
            labels=labels,
        )
        duration = GaugeMetricFamily(
            "gpucost_source_duration_seconds",
            "Seconds the source's last run took.",
            labels=labels,
        )
        runs = CounterMetricFamily(
            "gpucost_source_runs",
            "Source runs by outcome (ok, empty, failed, error) since the process started.",
            labels=["source", "status"],
        )
        errors = CounterMetricFamily(
            "gpucost_source_errors",
            "Source runs that failed since the process started.",
            labels=labels,
        )
        for name, state in sorted(self.sources.items()):
            if self.configured_sources is not None and name not in self.configured_sources:
                continue
            if state.last_success is not None:
                last_success.add_metric([name], state.last_success)
            if state.last_run is not None:
                last_run.add_metric([name], state.last_run)
            if state.last_ok is not None:
                last_ok.add_metric([name], 1.0 if state.last_ok else 0.0)
            for table, count in sorted(state.rows.items()):
                rows.add_metric([name, table], count)
            rejected.add_metric([name], state.rejected_rows)
            if state.duration_s is not None:
                duration.add_metric([name], state.duration_s)
            for status, count in sorted(state.runs.items()):
                runs.add_metric([name, status], count)
            errors.add_metric([name], state.errors)
        yield from (last_success, last_run, last_ok, rows, rejected, duration, runs, errors)

    def _nightly_families(self) -> Iterator[Any]:
        state = self.nightly
        last_success = GaugeMetricFamily(
            "gpucost_nightly_last_success_timestamp_seconds",
            "Unix time the nightly pipeline last finished complete.",
        )
        last_run = GaugeMetricFamily(
            "gpucost_nightly_last_run_timestamp_seconds",
            "Unix time the nightly pipeline last finished, complete or not.",
        )
        duration = GaugeMetricFamily(
            "gpucost_nightly_duration_seconds", "Seconds the last nightly run took."
        )
        runs = CounterMetricFamily(
            "gpucost_nightly_runs",
            "Nightly runs by outcome (complete, incomplete, failed, skipped_locked, error).",
            labels=["status"],
        )
        if state.last_success is not None:
            last_success.add_metric([], state.last_success)
        if state.last_run is not None:
            last_run.add_metric([], state.last_run)
        if state.duration_s is not None:
            duration.add_metric([], state.duration_s)
        for status, count in sorted(state.runs.items()):
            runs.add_metric([status], count)
        yield from (last_success, last_run, duration, runs)

    def _business_families(self) -> Iterator[Any]:
        cost_labels = ["project", "cost_center", "currency", "period"]
        billed = GaugeMetricFamily(
            "gpucost_project_billed_cost",
            "Allocated BilledCost (invoiced) per project in the period (allocation table).",
            labels=cost_labels,
        )
        effective = GaugeMetricFamily(
            "gpucost_project_effective_cost",
            "Allocated EffectiveCost (amortised) per project in the period: the figure every "
            "gpucost surface shows (allocation table).",
            labels=cost_labels,
        )
        gpu_hours = GaugeMetricFamily(
            "gpucost_project_gpu_hours",
            "GPU hours per project in the period, used or idle (from allocation).",
            labels=["project", "state", "period"],
        )
        waste = GaugeMetricFamily(
            "gpucost_estimated_monthly_waste",
            "Estimated monthly waste of yesterday's findings, per kind and project.",
            labels=["kind", "project", "currency"],
        )
        findings = GaugeMetricFamily(
            "gpucost_findings",
            "Yesterday's findings per kind and severity.",
            labels=["kind", "severity"],
        )
        as_of = GaugeMetricFamily(
            "gpucost_business_metrics_day_timestamp_seconds",
            "Unix time (00:00 UTC) of the day the business gauges describe (yesterday).",
        )
        figures = self.business
        if figures is not None:
            as_of.add_metric([], datetime.combine(figures.day, time(), UTC).timestamp())
            for (
                period,
                project,
                cost_center,
                currency,
                billed_cost,
                effective_cost,
            ) in figures.costs:
                billed.add_metric([project, cost_center, currency, period], billed_cost)
                effective.add_metric([project, cost_center, currency, period], effective_cost)
            for period, project, state, hours in figures.gpu_hours:
                gpu_hours.add_metric([project, state, period], hours)
            for kind, project, currency, amount in figures.waste:
                waste.add_metric([kind, project, currency], amount)
            for kind, severity, count in figures.findings:
                findings.add_metric([kind, severity], count)
        yield from (billed, effective, gpu_hours, waste, findings, as_of)

    def _job_families(self) -> Iterator[Any]:
        next_run = GaugeMetricFamily(
            "gpucost_job_next_run_timestamp_seconds",
            "Unix time a scheduled job runs next.",
            labels=["job"],
        )
        if self.jobs is not None:
            try:
                jobs = self.jobs()
            except Exception:  # a scrape must not fail because the job store is busy
                logger.debug("could not list jobs for /metrics", exc_info=True)
                jobs = []
            for job_id, moment in sorted(jobs, key=lambda item: item[0]):
                if moment is not None:
                    next_run.add_metric([job_id], moment.timestamp())
        yield next_run


def _version() -> str:
    try:
        return version("gpucost")
    except PackageNotFoundError:
        return "unknown"


# --- business figures ---------------------------------------------------------------------


def business_windows(today: date) -> dict[str, Window]:
    """``yesterday`` and ``month_to_date`` (the month of yesterday, up to today) for ``today``.

    The same periods as the digest's and the HTML report's "day" and "month to date", and the
    summary CSV's ``cost_day`` and ``cost_month_to_date``.
    """
    yesterday = today - timedelta(days=1)
    return {
        "yesterday": Window(yesterday, today),
        "month_to_date": Window(yesterday.replace(day=1), today),
    }


def business_figures(runtime: Runtime, today: date) -> BusinessFigures:
    """Cost per project, GPU hours and waste from the lake (empty tables give no series).

    Every cost is the ``allocation`` table's: ``effective`` is the allocated EffectiveCost (the
    figure the CLI, summary, report, digest and exports show), ``billed`` the allocated
    BilledCost beside it.
    """
    windows = business_windows(today)
    costs: list[tuple[str, str, str, str, float, float]] = []
    gpu_hours: list[tuple[str, str, str, float]] = []
    for period, window in windows.items():
        allocation = runtime.lake.scan(ALLOCATION, window).filter(pl.col("category") != "headcount")
        per_project = (
            allocation.group_by("project", "currency")
            .agg(
                pl.col("cost_center").drop_nulls().min(),
                pl.col("amount").sum(),
                pl.col("billed_amount").sum(),
            )
            .sort("project", "currency")
            .collect()
        )
        for row in per_project.iter_rows(named=True):
            costs.append(
                (
                    period,
                    row["project"],
                    row["cost_center"] or "",
                    row["currency"],
                    float(row["billed_amount"] or 0),
                    float(row["amount"] or 0),
                )
            )
        hours = (
            allocation.group_by("project")
            .agg(
                pl.col("gpu_hours_used").sum().alias("used"),
                pl.col("gpu_hours_idle").sum().alias("idle"),
            )
            .sort("project")
            .collect()
        )
        for row in hours.iter_rows(named=True):
            for state in ("used", "idle"):
                gpu_hours.append((period, row["project"], state, float(row[state] or 0.0)))
    findings = runtime.lake.scan(FINDINGS, windows["yesterday"]).collect()
    waste_rows = (
        findings.filter(pl.col("est_monthly_waste").is_not_null())
        .group_by("kind", "project", "currency")
        .agg(pl.col("est_monthly_waste").sum())
        .sort("kind", "project", "currency", nulls_last=True)
    )
    waste = [
        (row["kind"], row["project"] or "", row["currency"] or "", float(row["est_monthly_waste"]))
        for row in waste_rows.iter_rows(named=True)
    ]
    counts = findings.group_by("kind", "severity").len().sort("kind", "severity", nulls_last=True)
    finding_counts = [
        (row["kind"], row["severity"] or "", int(row["len"]))
        for row in counts.iter_rows(named=True)
    ]
    return BusinessFigures(today - timedelta(days=1), costs, gpu_hours, waste, finding_counts)


__all__ = [
    "BusinessFigures",
    "ServeMetrics",
    "business_figures",
    "business_windows",
]
