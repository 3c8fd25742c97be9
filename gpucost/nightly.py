"""The nightly pipeline: collect every enabled source, then run the stages after collection.

A stage is a plain function of a :class:`StageContext` that returns the locations it wrote;
:data:`NIGHTLY_STAGES` lists them in order: ``allocate`` (the allocator: every cost and FTE
attributed, GPU cost split by use), ``summarise`` (cost per project, day and month to date, from
the allocation), ``report`` (findings and the HTML report), ``export`` (finance exports) and
``digest`` (Slack), each naming the stages whose results it ``needs``::

    NightlyStage("export", export_stage, label="export", needs=("allocate",)),

Each stage's outcome (status, duration, error, outputs) is recorded in the run manifest's
``stages``. A stage that fails does not stop the others, except those that need it, which are
``skipped``; any failed stage makes the run ``failed``. The manifest is rewritten with status
``running`` before the stages start, so a night that dies during a stage never reads as
complete.

This module is what ``gpucost nightly``, ``gpucost backfill`` and ``gpucost serve`` share. The
stages that the CLI also runs on their own (``gpucost allocate``, ``export``, ``digest``) are thin
wrappers over one function each (:func:`allocate_window`, :func:`export_month`,
:func:`digest_payloads`), which those commands call too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from gpucost.allocator.summary import summarise
from gpucost.core.contracts import (
    ALLOCATION,
    BILLING,
    FINDINGS,
    GPU_USAGE,
    HOST_METRICS,
    INVENTORY,
)
from gpucost.core.errors import ConfigError, GpucostError
from gpucost.core.manifest import (
    RunManifest,
    StageRun,
    latest_night,
    read_manifests,
    write_manifest,
)
from gpucost.core.window import Window
from gpucost.logs import log_context
from gpucost.pipeline import Runtime, collect, run_allocation
from gpucost.reports.digest import build_digest, payloads_json
from gpucost.reports.exports import build_exports, month_bounds, write_exports
from gpucost.reports.findings import FleetData, find_all
from gpucost.reports.html_report import render_html_report, write_html_report
from gpucost.reports.slack import DeliveryReport, send_digest

logger = logging.getLogger(__name__)


@dataclass
class StageContext:
    """What a stage gets: the runtime, the night's window, the manifest so far, and frames."""

    runtime: Runtime
    window: Window
    manifest: RunManifest
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    """Results a stage hands to later ones and to the command that prints them, by name."""


StageFunction = Callable[[StageContext], list[str]]
"""A stage: reads the lake (and earlier stages' frames), writes outputs, returns their URLs."""


@dataclass(frozen=True)
class NightlyStage:
    """One step after collection."""

    name: str
    run: StageFunction
    label: str
    """What the stage's outputs are, as ``gpucost nightly`` lists them (``summary``)."""
    needs: tuple[str, ...] = ()
    """Stages that must have succeeded first; otherwise this one is skipped."""


def summarise_stage(context: StageContext) -> list[str]:
    """Cost per project, the night's last day and its month to date, as CSV under ``out_dir``.

    The figures are the allocation's (:func:`month_overview`), the same every other surface
    shows; the file is ``summary/cost_by_project_{first of month}_{night's end}.csv``.
    """
    runtime, day = context.runtime, _last_day(context)
    overview = context.frames.get("allocation_overview")
    if overview is None:
        overview = month_overview(runtime, day)
    first = day.replace(day=1)
    relative = f"summary/cost_by_project_{first}_{day + timedelta(days=1)}.csv"
    runtime.out.storage.put_atomic(relative, summary_csv(overview, day).encode())
    return [runtime.out.storage.url(relative)]


def summary_csv(overview: pl.DataFrame, day: date) -> str:
    """The cost-by-project CSV: money as exact decimal text, one row per project and currency.

    Columns: ``project``, ``cost_center``, ``currency``, ``day`` (the night's last day),
    ``cost_day`` and ``cost_month_to_date`` (allocated EffectiveCost), ``billed_month_to_date``
    (allocated BilledCost), ``gpu_used_month_to_date`` and ``gpu_idle_month_to_date`` (money),
    ``gpu_hours_used``, ``gpu_hours_idle`` and ``fte`` (month to date).
    """
    return summary_table(overview, day).write_csv(
        float_precision=6, float_scientific=False, line_terminator="\n"
    )


def summary_table(overview: pl.DataFrame, day: date) -> pl.DataFrame:
    """:func:`project_overview` as :func:`summary_csv` (and ``nightly --output json``) name it."""
    return overview.select(
        "project",
        "cost_center",
        "currency",
        pl.lit(day).alias("day"),
        pl.col("day_amount").fill_null(Decimal(0)).alias("cost_day"),
        pl.col("amount").alias("cost_month_to_date"),
        pl.col("billed_amount").alias("billed_month_to_date"),
        pl.col("gpu_used").alias("gpu_used_month_to_date"),
        pl.col("gpu_idle").alias("gpu_idle_month_to_date"),
        pl.col("gpu_hours_used").round(6),
        pl.col("gpu_hours_idle").round(6),
        pl.col("fte").round(6),
    )


@dataclass(frozen=True)
class Allocated:
    """A window's allocation as landed in the lake, and its reconciliation with billing."""

    allocation: pl.DataFrame
    reconciliation: pl.DataFrame
    """Billed minus allocated, per day and currency: every difference is 0."""

    @property
    def overview(self) -> pl.DataFrame:
        """Per project and currency, as :func:`project_overview` sums it."""
        return project_overview(self.allocation)

    @property
    def unbalanced(self) -> pl.DataFrame:
        """Reconciliation rows with a difference (none, unless the allocator has a bug)."""
        return self.reconciliation.filter(
            (pl.col("difference") != 0) | (pl.col("billed_difference") != 0)
        )


def allocate_window(runtime: Runtime, window: Window) -> Allocated:
    """Attribute the window's costs and headcount to projects; land the allocation table."""
    result = run_allocation(runtime, window)
    return Allocated(result.allocation, result.reconciliation)


def allocate_stage(context: StageContext) -> list[str]:
    """:func:`allocate_window`, and its reconciliation as CSV under ``out_dir/summary``."""
    runtime, window = context.runtime, context.window
    allocated = allocate_window(runtime, window)
    context.frames["allocation"] = allocated.allocation
    context.frames["allocation_overview"] = month_overview(runtime, _last_day(context))
    relative = f"summary/reconciliation_{window.start}_{window.end}.csv"
    runtime.out.storage.put_atomic(relative, allocated.reconciliation.write_csv().encode())
    return [
        runtime.lake.storage.url(f"{ALLOCATION.name}/"),
        runtime.out.storage.url(relative),
    ]


def project_overview(allocation: pl.DataFrame, day: date | None = None) -> pl.DataFrame:
    """Per project and currency: allocated cost, its GPU-used and GPU-idle parts, GPU-hours, FTE.

    With ``day``, ``day_amount`` is the allocated cost of that day alone. ``cost_center`` is the
    project's (the allocation carries it per row). Money stays Decimal; ``cost_per_fte`` is a
    float ratio for reading, not money to book.
    """
    money = allocation.filter(pl.col("category") != "headcount")
    is_day = pl.col("day") == day if day is not None else pl.lit(False)
    by_category = money.group_by("project", "currency").agg(
        pl.col("amount").filter(pl.col("category") == "gpu_used").sum().alias("gpu_used"),
        pl.col("amount").filter(pl.col("category") == "gpu_idle").sum().alias("gpu_idle"),
        pl.col("amount").filter(is_day).sum().alias("day_amount"),
    )
    centers = allocation.group_by("project").agg(
        pl.col("cost_center").drop_nulls().min().alias("cost_center")
    )
    return (
        summarise(allocation)
        .join(by_category, on=["project", "currency"], how="left")
        .join(centers, on="project", how="left")
        .sort("currency", "amount", "project", descending=[False, True, False], nulls_last=True)
    )


def month_to_date(runtime: Runtime, day: date) -> pl.DataFrame:
    """The allocation from the first of ``day``'s month through ``day``, as the lake has it.

    Every month-to-date figure (CLI, summary, HTML report, digest, exports, ``/metrics``) is read
    this way, whatever window the night collected: a night with ``lookback_days = 3`` still
    shows the whole month.
    """
    return _allocation(runtime, day.replace(day=1), day + timedelta(days=1))


def month_overview(runtime: Runtime, day: date) -> pl.DataFrame:
    """:func:`project_overview` of :func:`month_to_date`, with ``day``'s own cost beside it."""
    return project_overview(month_to_date(runtime, day), day)


def _last_day(context: StageContext) -> date:
    return context.window.end - timedelta(days=1)


def _allocation(runtime: Runtime, first: date, end: date) -> pl.DataFrame:
    """Allocation rows from ``first`` to ``end`` (exports and digests span months)."""
    return runtime.lake.scan(ALLOCATION, Window(first, end)).collect()


REPORT_DAYS_SHOWN = 31
"""Days of cost the HTML report charts (and reads from the lake, with the month to date)."""


def report_stage(context: StageContext) -> list[str]:
    """Findings into the lake (for the window's last day), and the night's HTML report."""
    lake, window, day = context.runtime.lake, context.window, _last_day(context)
    data = FleetData(
        gpu_usage=lake.scan(GPU_USAGE, window),
        inventory=lake.scan(INVENTORY, window),
        billing=lake.scan(BILLING, window),
        host_metrics=lake.scan(HOST_METRICS, window),
        start=window.start_time,
        end=window.end_time,
    )
    settings = context.runtime.config.reports
    findings = find_all(data, settings.thresholds)
    context.frames["findings"] = findings
    lake.write_window(FINDINGS, "reports", Window(day, window.end), findings)
    # The report's month to date and its 31-day chart read the lake, not the night's window.
    shown_from = min(day.replace(day=1), day - timedelta(days=REPORT_DAYS_SHOWN - 1))
    html = render_html_report(
        day=day,
        allocation=_allocation(context.runtime, shown_from, window.end),
        days_shown=REPORT_DAYS_SHOWN,
        gpu_usage=lake.scan(GPU_USAGE, window),
        findings=findings,
        manifest=context.manifest.to_dict(),
    )
    out = context.runtime.out.storage
    return [out.url(write_html_report(html, out.put_atomic, f"reports/{day}.html"))]


@dataclass(frozen=True)
class Exported:
    """A month's exports as written."""

    locations: list[str]
    """URLs (or paths) of the files and the export manifest."""
    allocation_rows: int
    """Allocation rows the month had: 0 means the exports are empty."""


def export_month(runtime: Runtime, month: date, end: date | None = None) -> Exported:
    """The finance exports (CSV, Parquet, manifest with SHA-256) of the month of ``month``.

    ``end`` (exclusive) stops a month still running at the night's last day; by default the
    whole month is read. A month without allocation rows writes nothing (``allocation_rows``
    is 0): empty files would read as a month that cost nothing.
    """
    first, following = month_bounds(month)
    allocation = _allocation(runtime, first, end or following)
    if allocation.height == 0:
        return Exported([], 0)
    out = runtime.out.storage
    written = write_exports(build_exports(allocation, month), out.put_atomic)
    return Exported([out.url(path) for path in written], allocation.height)


def export_stage(context: StageContext) -> list[str]:
    """The month-to-date finance exports (:func:`export_month`)."""
    return export_month(context.runtime, _last_day(context), context.window.end).locations


def digest_payloads(
    runtime: Runtime,
    day: date,
    findings: pl.DataFrame,
    night: RunManifest | None,
    *,
    links: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The Slack digest of ``day``: its findings, and ``night`` for the completeness line.

    The allocation is read from the first day of the previous month: the digest compares the
    day with the same days of that month.
    """
    previous_month = (day.replace(day=1) - timedelta(days=1)).replace(day=1)
    return build_digest(
        _allocation(runtime, previous_month, day + timedelta(days=1)),
        findings,
        None if night is None else night.to_dict(),
        day=day,
        top_findings=runtime.config.reports.top_findings,
        links=links,
    )


def send_payloads(runtime: Runtime, payloads: list[dict[str, Any]]) -> DeliveryReport:
    """Post the payloads to ``[reports] slack_webhook``; ConfigError when it is not set."""
    webhook = runtime.config.reports.slack_webhook
    if webhook is None:
        raise ConfigError("[reports] slack_webhook is not set", path=runtime.config.path)
    return send_digest(payloads, webhook.resolve())


@dataclass(frozen=True)
class Digest:
    """A digest built from the lake, and its delivery when it was sent."""

    payloads: list[dict[str, Any]]
    delivery: DeliveryReport | None = None


def digest_day(runtime: Runtime, day: date, *, send: bool) -> Digest:
    """The digest of ``day`` as the lake has it, sent to Slack when ``send``.

    The findings are those the night landed for ``day``; the completeness line speaks of the
    latest finished night that reported ``day`` (:func:`~gpucost.core.manifest.latest_night`).
    """
    after = day + timedelta(days=1)
    payloads = digest_payloads(
        runtime,
        day,
        runtime.lake.scan(FINDINGS, Window(day, after)).collect(),
        latest_night(read_manifests(runtime.lake), after),
    )
    return Digest(payloads, send_payloads(runtime, payloads) if send else None)


def digest_stage(context: StageContext) -> list[str]:
    """The Slack digest: its payloads kept under ``out_dir/digest/``, sent when a webhook is set.

    The kept copy is what was (or would have been) sent, so a night without Slack still shows
    its digest, and a failed delivery can be read afterwards.
    """
    runtime, day = context.runtime, _last_day(context)
    report_url = runtime.config.reports.report_url
    links = {"HTML report": f"{report_url}/{day}.html"} if report_url else None
    payloads = digest_payloads(
        runtime, day, context.frames["findings"], context.manifest, links=links
    )
    out = runtime.out.storage
    relative = f"digest/{day}.json"
    out.put_atomic(relative, payloads_json(payloads).encode())
    written = [out.url(relative)]
    if runtime.config.reports.slack_webhook is None:
        return written
    delivery = send_payloads(runtime, payloads)
    if not delivery.ok:
        failure = delivery.failures[0]
        raise GpucostError(
            f"digest message {failure.message} not delivered to {delivery.destination}: "
            f"status {failure.status}, {failure.reason}"
        )
    return [*written, delivery.destination]


NIGHTLY_STAGES: tuple[NightlyStage, ...] = (
    NightlyStage("allocate", allocate_stage, label="allocation"),
    NightlyStage("summarise", summarise_stage, label="summary", needs=("allocate",)),
    NightlyStage("report", report_stage, label="report"),
    NightlyStage("export", export_stage, label="export", needs=("allocate",)),
    NightlyStage("digest", digest_stage, label="digest", needs=("allocate", "report")),
)
"""The stages every night runs after collection, in order."""


@dataclass
class NightlyResult:
    """A finished night: its manifest, window, the frames stages produced, and config errors."""

    manifest: RunManifest
    window: Window
    frames: dict[str, pl.DataFrame]
    config_errors: list[str] = field(default_factory=list)
    """Stages that failed because the configuration is wrong (the CLI exits 2 for these)."""
    stages: Sequence[NightlyStage] = ()
    """The stages the night ran, in order."""

    def outputs(self, stage: str) -> list[str]:
        """What ``stage`` wrote."""
        for record in self.manifest.stages:
            if record.name == stage:
                return list(record.outputs)
        return []

    def written(self) -> list[tuple[str, str]]:
        """``(label, location)`` of everything the stages wrote, in the stages' order."""
        return [
            (stage.label, output) for stage in self.stages for output in self.outputs(stage.name)
        ]


def run_nightly(
    runtime: Runtime,
    window: Window,
    *,
    stages: Sequence[NightlyStage] = NIGHTLY_STAGES,
    command: str = "nightly",
) -> NightlyResult:
    """Collect every enabled source for ``window``, then run ``stages``; record it all.

    Raises only what :func:`gpucost.pipeline.collect` raises (the manifest cannot be written);
    a source's or a stage's own failure is recorded in the manifest instead.
    """
    manifest = collect(runtime, window, command=command)
    context = StageContext(runtime, window, manifest)
    result = NightlyResult(manifest, window, context.frames, stages=stages)
    if not stages:
        return result
    manifest.status, manifest.finished_at = "running", None
    write_manifest(runtime.lake, manifest)
    with log_context(run_id=manifest.run_id, command=command):
        _run_stages(context, result, stages)
    manifest.finish(runtime.clock())
    write_manifest(runtime.lake, manifest)
    return result


def _run_stages(
    context: StageContext, result: NightlyResult, stages: Sequence[NightlyStage]
) -> None:
    manifest = context.manifest
    succeeded: set[str] = set()
    for stage in stages:
        record = StageRun(stage.name)
        missing = [name for name in stage.needs if name not in succeeded]
        if missing:
            record.status = "skipped"
            record.error = f"needs {', '.join(missing)}, which did not succeed"
            logger.warning(
                "stage %s skipped: %s",
                stage.name,
                record.error,
                extra={"stage": stage.name, "status": "skipped"},
            )
            manifest.stages.append(record)
            continue
        started = time.perf_counter()
        try:
            record.outputs = stage.run(context)
            succeeded.add(stage.name)
        except ConfigError as error:
            record.status, record.error = "failed", str(error)
            result.config_errors.append(f"stage {stage.name}: {error}")
            logger.error(
                "stage %s failed: %s",
                stage.name,
                error,
                extra={"stage": stage.name, "status": "failed"},
            )
        except Exception as error:  # one stage's bug must not hide the others' results
            record.status, record.error = "failed", f"{type(error).__name__}: {error}"
            logger.exception(
                "stage %s failed", stage.name, extra={"stage": stage.name, "status": "failed"}
            )
        record.duration_s = round(time.perf_counter() - started, 3)
        manifest.stages.append(record)
