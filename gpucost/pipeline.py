"""Pipeline wiring: run collectors into the lake and allocate, recording a run manifest.

Each source runs on its own: one that fails is recorded (error, duration) and the others go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from gpucost.allocator.allocate import SOURCE as ALLOCATOR_SOURCE
from gpucost.allocator.allocate import AllocationResult, allocate, gpu_resources
from gpucost.allocator.days import separable_runs
from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.projects import ProjectRule
from gpucost.collector.base import CollectorContext, SourceSettings, get_spec, probe
from gpucost.config import GpucostConfig
from gpucost.core.contracts import (
    ALLOCATION,
    BILLING,
    GPU_USAGE,
    HEADCOUNT,
    INVENTORY,
    contract_for,
)
from gpucost.core.errors import ContractError, GpucostError
from gpucost.core.lake import Lake, day_of, part_as_dict
from gpucost.core.manifest import RunManifest, SourceRun, new_run_id, write_manifest
from gpucost.core.storage import open_storage
from gpucost.core.window import Window
from gpucost.logs import log_context

if TYPE_CHECKING:  # the agent's module imports NVML helpers only a GPU host needs
    from gpucost.collector.nvml import AgentStats, NvmlSettings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The world a run touches, built once from the config (tests build their own)."""

    config: GpucostConfig
    lake: Lake
    out: Lake
    context: CollectorContext
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @classmethod
    def from_config(
        cls, config: GpucostConfig, *, boto3_session_factory: Callable[[], Any] | None = None
    ) -> Runtime:
        """Open the lake and outputs the config names."""
        options = config.storage_options()
        s3_client = None
        if boto3_session_factory is not None and (
            config.store.data_dir.startswith("s3://") or config.store.out_dir.startswith("s3://")
        ):
            s3_client = boto3_session_factory().client(
                "s3", endpoint_url=options.get("aws_endpoint_url")
            )
        lake = Lake(
            open_storage(config.store.data_dir, storage_options=options, s3_client=s3_client),
            options,
        )
        out = Lake(
            open_storage(config.store.out_dir, storage_options=options, s3_client=s3_client),
            options,
        )
        context = CollectorContext(
            storage_options=options,
            boto3_session_factory=boto3_session_factory,
            working_dir=Path.cwd(),
            table_reader=lambda table, window: lake.scan(contract_for(table), window),
        )
        return cls(config=config, lake=lake, out=out, context=context)


def nightly_window(
    config: GpucostConfig, today: date | None = None, *, night: date | None = None
) -> Window:
    """The days a night collects: ``lookback_days`` before its date.

    The night's date is ``night`` (``gpucost nightly --date``), else ``[nightly] as_of``, else
    ``today`` (default: today, UTC).
    """
    as_of = night or config.nightly.as_of or today or datetime.now(UTC).date()
    return Window.trailing(as_of, config.nightly.lookback_days)


def collect(
    runtime: Runtime,
    window: Window,
    *,
    source_names: Sequence[str] | None = None,
    command: str = "collect",
) -> RunManifest:
    """Run the selected sources (all enabled ones by default) for ``window`` into the lake."""
    config = runtime.config
    selected = [config.source(name) for name in source_names] if source_names else config.sources
    manifest = RunManifest(
        run_id=new_run_id(runtime.clock()),
        command=command,
        window_start=window.start.isoformat(),
        window_end_exclusive=window.end.isoformat(),
        config_path=config.path,
        started_at=runtime.clock().isoformat(),
    )
    write_manifest(runtime.lake, manifest)
    with log_context(run_id=manifest.run_id, command=command):
        for settings in selected:
            if not settings.enabled and not source_names:
                manifest.sources.append(SourceRun(settings.name, settings.kind, status="disabled"))
                continue
            with log_context(source=settings.name):
                manifest.sources.append(collect_source(runtime, settings, window, manifest.run_id))
    manifest.finish(runtime.clock())
    write_manifest(runtime.lake, manifest)
    return manifest


def collect_source(
    runtime: Runtime, settings: SourceSettings, window: Window, run_id: str
) -> SourceRun:
    """Run one source and land its rows; never raises for the source's own failures."""
    record = SourceRun(settings.name, settings.kind)
    started = time.perf_counter()
    try:
        spec = get_spec(settings.kind)
        source = spec.build(settings, runtime.context)
        collected = source.collect(window)
        record.notes.update(collected.notes)
        record.rejected_rows = collected.rejects.height
        record.quarantine = runtime.lake.quarantine(settings.name, run_id, collected.rejects)
        for table, frame in collected.frames.items():
            if table not in spec.output_tables:
                raise ContractError(table, settings.name, "the collector does not declare table")
            contract = contract_for(table)
            target = collected.windows.get(table, window)
            if not (target.start <= window.start and window.end <= target.end):
                raise ContractError(
                    table, settings.name, f"replacement window {target} does not contain {window}"
                )
            if target != window:
                record.notes[f"{table}_replaced_window"] = str(target)
            conformed = contract.conform(frame, settings.name)
            in_window = conformed.filter(target.contains(day_of(contract)))
            outside = conformed.height - in_window.height
            if outside:
                record.notes[f"{table}_rows_outside_window"] = outside
            parts = runtime.lake.write_window(contract, settings.name, target, in_window)
            record.rows[table] = in_window.height
            record.parts.extend(part_as_dict(part) for part in parts)
        if collected.rejects.height:
            logger.warning(
                "source %s: %d rows rejected, kept in %s (first: %s)",
                settings.name,
                collected.rejects.height,
                record.quarantine,
                _first_reject(collected.rejects),
                extra={"rejected_rows": collected.rejects.height},
            )
        if sum(record.rows.values()) == 0:
            record.status = "empty"
            logger.warning(
                "source %s returned no rows for %s",
                settings.name,
                window,
                extra={"status": "empty", "rows": 0, "window": str(window)},
            )
        for table, rows in record.rows.items():
            logger.info(
                "source %s: %d %s rows landed for %s",
                settings.name,
                rows,
                table,
                window,
                extra={"table": table, "rows": rows, "window": str(window)},
            )
    except GpucostError as error:
        record.status, record.error = "failed", str(error)
        logger.error("source %s failed: %s", settings.name, error, extra={"status": "failed"})
    except Exception as error:  # a bug or an unexpected library error must not stop others
        record.status, record.error = "failed", f"{type(error).__name__}: {error}"
        logger.exception("source %s failed unexpectedly", settings.name)
    record.duration_s = round(time.perf_counter() - started, 3)
    return record


def probe_sources(runtime: Runtime) -> list[tuple[str, str]]:
    """``(source, problem)`` for each enabled source that would fail if it ran now.

    Kinds that offer a probe (the file sources: a path that matches no file, a bucket that
    cannot be listed) are asked; a source that cannot even be built (a missing optional
    dependency) is reported with the reason. Nothing is collected or written.
    """
    problems: list[tuple[str, str]] = []
    for settings in runtime.config.sources:
        if not settings.enabled:
            continue
        try:
            problem = probe(get_spec(settings.kind).build(settings, runtime.context))
        except GpucostError as error:
            problem = str(error)
        if problem:
            problems.append((settings.name, problem))
    return problems


def land_gpu_usage(runtime: Runtime, source: str, rows: pl.DataFrame) -> None:
    """Merge an agent's hourly rollups into the lake, day by day.

    An agent lands partial hours as it goes; each day's existing rows of the source are read
    back and merged (seconds add, maxima take the max), so restarts never double-count.
    """
    from gpucost.collector.gpu_rollup import merge_rollups

    days = rows.with_columns(pl.col("hour").dt.date().alias("__day")).partition_by(
        "__day", as_dict=True, include_key=False
    )
    for (day,), part in sorted(days.items()):
        window = Window(day, day + timedelta(days=1))
        landed = runtime.lake.read(GPU_USAGE, window, sources=[source])
        merged = merge_rollups([landed, part], source)
        runtime.lake.write_window(GPU_USAGE, source, window, merged)


def run_gpu_agent(
    runtime: Runtime,
    source: NvmlSettings,
    *,
    interval_s: float | None = None,
    once: bool = False,
    stop: threading.Event | None = None,
) -> AgentStats:
    """Sample this host's GPUs for an ``nvml`` source; land each hour's rows as it completes.

    Samples every ``interval_s`` seconds (default: the source's ``interval_s``) until ``stop``
    is set, or one round when ``once``; rows are merged into the lake by
    :func:`land_gpu_usage`.
    """
    from gpucost.collector.nvml import run_agent, sampler_from_settings, spool_from_settings

    return run_agent(
        sampler_from_settings(source, runtime.context),
        interval_s or source.interval_s,
        0 if once else None,
        lambda rows: land_gpu_usage(runtime, source.name, rows),
        source=source.name,
        spool=spool_from_settings(source, runtime.context),
        stop=stop,
    )


def _first_reject(rejects: pl.DataFrame) -> str:
    row = rejects.row(0, named=True)
    return f"{row['file']} row {row['row']} field {row['field']}: {row['reason']}"


def project_rules(config: GpucostConfig) -> list[ProjectRule]:
    """The config's ``[[projects]]``: already the allocator's rules (one schema)."""
    return list(config.projects)


def allocation_policy(config: GpucostConfig) -> AllocationPolicy:
    """The ``[allocation]`` section: already the allocator's policy, validated with the config."""
    return config.allocation


def run_allocation(runtime: Runtime, window: Window) -> AllocationResult:
    """Allocate the window's billing and headcount to projects and land the allocation table.

    The allocation replaces the window's days of the ``allocator`` source, so a re-run after a
    late bill or a changed rule rewrites exactly those days. It runs one day at a time (one
    :func:`~gpucost.allocator.allocate.allocate` call over that day's partitions), or a few days
    together where a charge's period or a resource's refund ties them
    (:func:`~gpucost.allocator.days.separable_runs`): the rows are those of one call over the
    window, with one day of ``gpu_usage`` in memory at a time.
    """
    lake = runtime.lake
    rules = project_rules(runtime.config)
    policy = allocation_policy(runtime.config)
    inventory = lake.scan(INVENTORY, window)
    runs = [
        Window(first, stop)
        for first, stop in separable_runs(
            lambda first, stop: lake.scan(BILLING, Window(first, stop)),
            window.start,
            window.end,
            rules,
            gpu_resources(inventory, rules),
        )
    ]
    allocations: list[pl.DataFrame] = []
    reconciliations: list[pl.DataFrame] = []
    for days in runs:
        result = allocate(
            lake.scan(BILLING, days),
            lake.scan(GPU_USAGE, days),
            inventory,
            lake.scan(HEADCOUNT, days),
            rules,
            policy,
        )
        lake.write_window(ALLOCATION, ALLOCATOR_SOURCE, days, result.allocation)
        allocations.append(result.allocation)
        reconciliations.append(result.reconciliation)
    return AllocationResult(pl.concat(allocations), pl.concat(reconciliations))
