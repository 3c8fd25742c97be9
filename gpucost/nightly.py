"""The nightly pipeline: collect every enabled source, then run the stages after collection.

A stage is a plain function of a :class:`StageContext` that returns the locations it wrote;
:data:`NIGHTLY_STAGES` lists them in order: ``summarise`` (billing per project by the first
matching rule), ``allocate`` (the allocator: every cost and FTE attributed, GPU cost split by
use), ``report`` (findings and the HTML report), ``export`` (finance exports) and ``digest``
(Slack), each naming the stages whose results it ``needs``::

    NightlyStage("export", export_stage, needs=("allocate",)),

Each stage's outcome (status, duration, error, outputs) is recorded in the run manifest's
``stages``. A stage that fails does not stop the others, except those that need it, which are
``skipped``; any failed stage makes the run ``failed``. The manifest is rewritten with status
``running`` before the stages start, so a night that dies during a stage never reads as
complete.

This module is what ``gpucost nightly``, ``gpucost backfill`` and ``gpucost serve`` share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

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
from gpucost.core.manifest import RunManifest, StageRun, write_manifest
from gpucost.core.window import Window
from gpucost.pipeline import Runtime, collect, run_allocation, summarise_costs, write_summary
from gpucost.reports.digest import build_digest, payloads_json
from gpucost.reports.exports import build_exports, write_exports
from gpucost.reports.findings import FleetData, find_all
from gpucost.reports.html_report import render_html_report, write_html_report
from gpucost.reports.slack import send_digest

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
    needs: tuple[str, ...] = ()
    """Stages that must have succeeded first; otherwise this one is skipped."""


def summarise_stage(context: StageContext) -> list[str]:
    """Cost per project for the window, written as CSV under ``out_dir``."""
    summary = summarise_costs(context.runtime, context.window)
    context.frames["cost_by_project"] = summary
    return [write_summary(context.runtime, context.window, summary)]


def allocate_stage(context: StageContext) -> list[str]:
    """Attribute the window's costs and headcount to projects; land the allocation table.

    Also writes the reconciliation (billed vs allocated per day and currency; the differences
    are always 0) as CSV under ``out_dir/summary``.
    """
    runtime, window = context.runtime, context.window
    result = run_allocation(runtime, window)
    context.frames["allocation"] = result.allocation
    context.frames["allocation_overview"] = project_overview(result.allocation)
    relative = f"summary/reconciliation_{window.start}_{window.end}.csv"
    runtime.out.storage.put_atomic(relative, result.reconciliation.write_csv().encode())
    return [
        runtime.lake.storage.url(f"{ALLOCATION.name}/"),
        runtime.out.storage.url(relative),
    ]


def project_overview(allocation: pl.DataFrame) -> pl.DataFrame:
    """Per project and currency: allocated cost, its GPU-used and GPU-idle parts, GPU-hours, FTE.

    Money stays Decimal; ``cost_per_fte`` is a float ratio for reading, not money to book.
    """
    by_category = (
        allocation.filter(pl.col("category").is_in(["gpu_used", "gpu_idle"]))
        .group_by("project", "currency")
        .agg(
            pl.col("amount").filter(pl.col("category") == "gpu_used").sum().alias("gpu_used"),
            pl.col("amount").filter(pl.col("category") == "gpu_idle").sum().alias("gpu_idle"),
        )
    )
    return (
        summarise(allocation)
        .join(by_category, on=["project", "currency"], how="left")
        .sort("currency", "amount", "project", descending=[False, True, False], nulls_last=True)
    )


def _last_day(context: StageContext) -> date:
    return context.window.end - timedelta(days=1)


def _allocation(context: StageContext, first: date) -> pl.DataFrame:
    """Allocation rows from ``first`` to the window's end (exports and digests span months)."""
    return context.runtime.lake.scan(ALLOCATION, Window(first, context.window.end)).collect()


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
    html = render_html_report(
        day=day,
        allocation=_allocation(context, window.start),
        gpu_usage=lake.scan(GPU_USAGE, window),
        findings=findings,
        manifest=context.manifest.to_dict(),
    )
    out = context.runtime.out.storage
    return [out.url(write_html_report(html, out.put_atomic, f"reports/{day}.html"))]


def export_stage(context: StageContext) -> list[str]:
    """The month-to-date finance exports (CSV, Parquet, manifest with SHA-256)."""
    day, out = _last_day(context), context.runtime.out.storage
    bundle = build_exports(_allocation(context, day.replace(day=1)), day)
    return [out.url(path) for path in write_exports(bundle, out.put_atomic)]


def digest_stage(context: StageContext) -> list[str]:
    """The Slack digest: its payloads kept under ``out_dir/digest/``, sent when a webhook is set.

    The kept copy is what was (or would have been) sent, so a night without Slack still shows
    its digest, and a failed delivery can be read afterwards.
    """
    settings, day = context.runtime.config.reports, _last_day(context)
    previous_month = (day.replace(day=1) - timedelta(days=1)).replace(day=1)
    links = {"HTML report": f"{settings.report_url}/{day}.html"} if settings.report_url else None
    payloads = build_digest(
        _allocation(context, previous_month),
        context.frames["findings"],
        context.manifest.to_dict(),
        day=day,
        top_findings=settings.top_findings,
        links=links,
    )
    out = context.runtime.out.storage
    relative = f"digest/{day}.json"
    out.put_atomic(relative, payloads_json(payloads).encode())
    written = [out.url(relative)]
    if settings.slack_webhook is None:
        return written
    delivery = send_digest(payloads, settings.slack_webhook.resolve())
    if not delivery.ok:
        failure = delivery.failures[0]
        raise GpucostError(
            f"digest message {failure.message} not delivered to {delivery.destination}: "
            f"status {failure.status}, {failure.reason}"
        )
    return [*written, delivery.destination]


NIGHTLY_STAGES: tuple[NightlyStage, ...] = (
    NightlyStage("summarise", summarise_stage),
    NightlyStage("allocate", allocate_stage),
    NightlyStage("report", report_stage),
    NightlyStage("export", export_stage, needs=("allocate",)),
    NightlyStage("digest", digest_stage, needs=("allocate", "report")),
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

    @property
    def summary(self) -> pl.DataFrame | None:
        """Cost per project, when the summarise stage ran."""
        return self.frames.get("cost_by_project")

    def outputs(self, stage: str) -> list[str]:
        """What ``stage`` wrote."""
        for record in self.manifest.stages:
            if record.name == stage:
                return list(record.outputs)
        return []


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
    result = NightlyResult(manifest, window, context.frames)
    if not stages:
        return result
    manifest.status, manifest.finished_at = "running", None
    write_manifest(runtime.lake, manifest)
    succeeded: set[str] = set()
    for stage in stages:
        record = StageRun(stage.name)
        missing = [name for name in stage.needs if name not in succeeded]
        if missing:
            record.status = "skipped"
            record.error = f"needs {', '.join(missing)}, which did not succeed"
            logger.warning("stage %s skipped: %s", stage.name, record.error)
            manifest.stages.append(record)
            continue
        started = time.perf_counter()
        try:
            record.outputs = stage.run(context)
            succeeded.add(stage.name)
        except ConfigError as error:
            record.status, record.error = "failed", str(error)
            result.config_errors.append(f"stage {stage.name}: {error}")
            logger.error("stage %s failed: %s", stage.name, error)
        except Exception as error:  # one stage's bug must not hide the others' results
            record.status, record.error = "failed", f"{type(error).__name__}: {error}"
            logger.exception("stage %s failed", stage.name)
        record.duration_s = round(time.perf_counter() - started, 3)
        manifest.stages.append(record)
    manifest.finish(runtime.clock())
    write_manifest(runtime.lake, manifest)
    return result
