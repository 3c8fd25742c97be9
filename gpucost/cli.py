"""The ``gpucost`` command line.

Exit status: 0 when the run is complete, 1 when a source failed or returned nothing (named on
stderr and in the run manifest), a stage failed, or another nightly run holds the lock; 2 for
configuration and usage errors.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import gpucost.collector
from gpucost.config import GpucostConfig, load_config, permission_warnings
from gpucost.core.contracts import ALLOCATION, FINDINGS
from gpucost.core.errors import ConfigError, GpucostError
from gpucost.core.manifest import RunManifest, latest_night, read_manifests
from gpucost.core.window import Window
from gpucost.lock import RunLock, lock_path
from gpucost.logs import setup_logging
from gpucost.nightly import NightlyResult, run_nightly
from gpucost.pipeline import Runtime, collect, land_gpu_usage, nightly_window

EXIT_OK, EXIT_INCOMPLETE, EXIT_CONFIG = 0, 1, 2

app = typer.Typer(
    help="GPU cost and resource accounting for ML teams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and validate configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
errors = Console(stderr=True)
logger = logging.getLogger("gpucost")


class LogFormatOption(StrEnum):
    """Log line format."""

    text = "text"
    json = "json"


ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The gpucost TOML file.", show_default=False)
]
LogFormatArg = Annotated[
    LogFormatOption, typer.Option("--log-format", help="Human lines or JSON lines on stderr.")
]
LogLevelArg = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")]


def _load(config_path: Path, log_format: LogFormatOption, log_level: str) -> GpucostConfig:
    setup_logging(log_format.value, log_level)
    gpucost.collector.load_all()
    try:
        settings = load_config(config_path)
    except ConfigError as error:
        _fail_config(str(error))
        raise  # unreachable: _fail_config exits
    for warning in permission_warnings(settings):
        logger.warning(warning)
    return settings


def _fail_config(message: str) -> None:
    errors.print(f"[bold red]config error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_CONFIG)


@contextmanager
def _exit_on_errors(*usage_errors: type[Exception]) -> Iterator[None]:
    """Turn errors into exit statuses: configuration (and ``usage_errors``) 2, others 1."""
    try:
        yield
    except ConfigError as error:
        _fail_config(str(error))
    except usage_errors as error:
        _fail_config(str(error))
    except GpucostError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INCOMPLETE) from None
    except OSError as error:  # the lake's folder is a file, a disk is full, a permission
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INCOMPLETE) from None


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail_config(f"{option} {value!r} is not a date (YYYY-MM-DD)")
        raise


@app.command("collect")
def collect_command(
    config: ConfigOption,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="Only this source (repeatable). Default: all."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="First day to collect, YYYY-MM-DD (UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Last day to collect, inclusive. Default: --since.")
    ] = None,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Collect sources into the lake for a window of days.

    Without --since/--until, collects the nightly window ([nightly] lookback_days before
    [nightly] as_of or today). Re-running a window replaces those days: never duplicates.
    """
    settings = _load(config, log_format, log_level)
    first, last = _parse_day(since, "--since"), _parse_day(until, "--until")
    if first is None and last is not None:
        _fail_config("--until needs --since")
    with _exit_on_errors(ValueError):
        window = Window.days_inclusive(first, last or first) if first else nightly_window(settings)
        runtime = Runtime.from_config(settings)
        manifest = collect(runtime, window, source_names=source or None)
    _print_sources(manifest)
    console.print(f"manifest: {runtime.lake.storage.url(f'_runs/{manifest.run_id}.json')}")
    raise typer.Exit(_exit_status(manifest))


@app.command("nightly")
def nightly_command(
    config: ConfigOption,
    day: Annotated[
        str | None,
        typer.Option("--date", help="Re-run the night of this date (YYYY-MM-DD) instead of today."),
    ] = None,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Run the nightly job: collect every enabled source, then summarise cost per project.

    Holds the run lock while it runs: a second nightly (or backfill) started meanwhile exits 1
    at once, naming the run that holds it.
    """
    settings = _load(config, log_format, log_level)
    as_of = _parse_day(day, "--date")
    today = datetime.now(UTC).date()
    if as_of is not None and as_of > today:
        # The night of D collects the days before D: a future night has nothing to read yet.
        _fail_config(f"--date {as_of} is in the future (today is {today}, UTC)")
    window = (
        nightly_window(settings, today=None)
        if as_of is None
        else Window.trailing(as_of, settings.nightly.lookback_days)
    )
    with _exit_on_errors():
        runtime = Runtime.from_config(settings)
        with _run_lock(settings, "nightly"):
            result = run_nightly(runtime, window, command="nightly")
    manifest = result.manifest
    _print_sources(manifest)
    overview = result.frames.get("allocation_overview")
    if overview is not None:
        _print_overview(overview, window)
    elif result.summary is not None:
        _print_summary(result.summary, window)
    findings = result.frames.get("findings")
    if findings is not None:
        _print_findings(findings)
    console.print("[bold]Written[/]")
    console.print(f"  lake:       {runtime.lake.storage.root}", soft_wrap=True)
    for source in manifest.sources:
        if source.quarantine:
            console.print(f"  quarantine ({source.name}): {source.quarantine}", soft_wrap=True)
    labels = {
        "summarise": "summary",
        "allocate": "allocation",
        "report": "report",
        "export": "export",
        "digest": "digest",
    }
    for stage, label in labels.items():
        for output in result.outputs(stage):
            console.print(f"  {label + ':':<11} {output}", soft_wrap=True, highlight=False)
    manifest_url = runtime.lake.storage.url(f"_runs/{manifest.run_id}.json")
    console.print(f"  manifest:   {manifest_url}", soft_wrap=True)
    raise typer.Exit(_night_exit_status(result))


def _run_lock(settings: GpucostConfig, command: str) -> RunLock:
    """The run lock, taken; LockHeldError (a GpucostError: exit 1) when another run holds it."""
    lock = RunLock(lock_path(settings), command=command)
    lock.acquire()
    return lock


def _night_document(runtime: Runtime, window_end: date) -> dict[str, Any] | None:
    night = latest_night(read_manifests(runtime.lake), window_end)
    return None if night is None else night.to_dict()


def _night_exit_status(result: NightlyResult) -> int:
    status = _exit_status(result.manifest)
    for stage in result.manifest.stages:
        if stage.status == "failed":
            errors.print(
                f"[bold red]failed:[/] stage {stage.name}: {stage.error}",
                highlight=False,
                soft_wrap=True,
            )
    if result.config_errors:
        return EXIT_CONFIG
    return status


@app.command("backfill")
def backfill_command(
    config: ConfigOption,
    since: Annotated[str, typer.Option(help="First day to backfill, YYYY-MM-DD (UTC).")],
    until: Annotated[str, typer.Option(help="Last day to backfill, inclusive.")],
    force: Annotated[
        bool, typer.Option("--force", help="Redo days whose nightly manifest is complete.")
    ] = False,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "WARNING",
) -> None:
    """Run the nightly pipeline day by day over a range, with a progress bar; resumable.

    Each day D collects the window [D, D+1) and runs the stages. Days already covered by a
    complete nightly or backfill run manifest are skipped unless --force, so an interrupted
    backfill picks up where it stopped. Holds the run lock throughout. Exit 0 when every day
    is complete, 1 when some day is not (listed), 2 for usage errors.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from gpucost.backfill import DayOutcome, days_between, run_backfill

    settings = _load(config, log_format, log_level)
    first, last = _parse_day(since, "--since"), _parse_day(until, "--until")
    assert first is not None and last is not None
    if last < first:
        _fail_config(f"--until {last} is before --since {first}")
    total = len(days_between(first, last))
    outcomes: list[DayOutcome] = []
    with _exit_on_errors():
        runtime = Runtime.from_config(settings)
        with (
            _run_lock(settings, "backfill"),
            Progress(
                TextColumn("[bold]backfill[/] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                console=errors,
                transient=False,
            ) as progress,
            _logs_above_progress(),
        ):
            task = progress.add_task("", total=total, note="")

            def on_start(day: date) -> None:
                progress.update(task, description=day.isoformat())

            def on_day(outcome: DayOutcome) -> None:
                outcomes.append(outcome)
                progress.update(task, advance=1, note=f"{outcome.day}: {outcome.status}")

            run_backfill(runtime, first, last, force=force, on_start=on_start, on_day=on_day)
    counts = {
        status: sum(1 for outcome in outcomes if outcome.status == status)
        for status in ("complete", "skipped", "incomplete", "failed")
    }
    console.print(
        f"backfill {first}..{last}: "
        + ", ".join(f"{count} {status}" for status, count in counts.items()),
        soft_wrap=True,
    )
    bad = [outcome for outcome in outcomes if outcome.status in ("incomplete", "failed")]
    for outcome in bad:
        for problem in outcome.problems or ["not complete"]:
            errors.print(
                f"[bold red]{outcome.status}:[/] {outcome.day}: {problem} (run {outcome.run_id})",
                highlight=False,
                soft_wrap=True,
            )
    raise typer.Exit(EXIT_INCOMPLETE if bad else EXIT_OK)


@contextmanager
def _logs_above_progress() -> Iterator[None]:
    """Point stderr log handlers at ``sys.stderr`` as the live progress display replaced it.

    Rich redirects ``sys.stderr`` while a progress bar is live on a terminal, so lines written
    there print above the bar; handlers made earlier still hold the original stream.
    """
    saved: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
            saved.append((handler, sys.__stderr__))
            handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler, stream in saved:
            handler.setStream(stream)


@app.command("serve")
def serve_command(
    config: ConfigOption,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Run the scheduler: every source on its `schedule`, the nightly at [serve] nightly_schedule.

    Serves /metrics (Prometheus) and /healthz on [serve] metrics_host:metrics_port, 127.0.0.1:9464
    by default. Jobs persist in [serve] jobstore (SQLite) and survive restarts. SIGTERM lets the
    job in progress finish, then exits 0.
    """
    from gpucost.scheduler import serve

    settings = _load(config, log_format, log_level)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        status = serve(settings, stop)
    except ConfigError as error:
        _fail_config(str(error))
        return
    except OSError as error:  # the port is taken, the job store's folder is not writable
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INCOMPLETE) from None
    raise typer.Exit(status)


class UsageFormatOption(StrEnum):
    """How synth writes GPU usage."""

    auto = "auto"
    dcgm = "dcgm"
    parquet = "parquet"


@app.command("synth")
def synth_command(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the fleet into.")],
    gpus: Annotated[int, typer.Option(help="GPUs in the fleet (at least 7).")] = 16,
    days: Annotated[int, typer.Option(help="Days of history.")] = 7,
    projects: Annotated[int, typer.Option(help="ML projects (at least 2).")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 42,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2024-09-24",
    usage_format: Annotated[
        UsageFormatOption,
        typer.Option(
            help="dcgm-exporter text files, gpu_usage Parquet, or auto (dcgm <= 64 GPUs)."
        ),
    ] = UsageFormatOption.auto,
) -> None:
    """Write a deterministic synthetic GPU fleet: FOCUS bill, inventory, metrics, roster, truth."""
    from gpucost.synth import generate

    setup_logging("text", "WARNING")
    first = _parse_day(start, "--start")
    assert first is not None
    try:
        summary = generate(
            out_dir,
            gpus=gpus,
            days=days,
            projects=projects,
            seed=seed,
            start=first,
            usage_format=usage_format.value,
        )
    except ValueError as error:
        _fail_config(str(error))
        return
    console.print(
        f"synthetic fleet: {summary.hosts} hosts, {summary.gpus} GPUs, {summary.projects} "
        f"projects, {summary.people} people, {summary.billing_rows} billing rows "
        f"(billed {summary.billed_cost_total} USD), {summary.usage_rows} GPU-hours of usage, "
        f"{summary.anomalies} planted anomalies",
        soft_wrap=True,
    )
    console.print(
        f"written under {summary.out_dir}: billing {summary.billing_csv.name}, "
        f"usage {summary.usage_path.name}, truth {summary.truth_json.name}",
        soft_wrap=True,
    )


@app.command("allocate")
def allocate_command(
    config: ConfigOption,
    since: Annotated[str, typer.Option(help="First day, YYYY-MM-DD (UTC).")],
    until: Annotated[
        str | None, typer.Option(help="Last day, inclusive. Default: --since.")
    ] = None,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Allocate the lake's costs and headcount to projects for a window of days.

    Replaces the window's days of the allocation table and prints cost per project and the
    reconciliation with billing (billed minus allocated, per day and currency: always 0).
    """
    from gpucost.nightly import project_overview
    from gpucost.pipeline import run_allocation

    settings = _load(config, log_format, log_level)
    first, last = _parse_day(since, "--since"), _parse_day(until, "--until")
    assert first is not None
    with _exit_on_errors(ValueError):
        window = Window.days_inclusive(first, last or first)
        runtime = Runtime.from_config(settings)
        result = run_allocation(runtime, window)
    _print_overview(project_overview(result.allocation), window)
    reconciliation = result.reconciliation
    unbalanced = reconciliation.filter(
        (pl.col("difference") != 0) | (pl.col("billed_difference") != 0)
    )
    console.print(
        f"reconciliation: {reconciliation.height} day x currency rows, "
        f"{unbalanced.height} with a difference",
        highlight=False,
    )
    if result.allocation.height == 0:
        errors.print(f"[bold red]incomplete:[/] nothing to allocate in {window}", soft_wrap=True)
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command("export")
def export_command(
    config: ConfigOption,
    month: Annotated[str, typer.Option("--month", help="The month to export, YYYY-MM.")],
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Write a month's chargeback exports (CSV, Parquet, manifest) under out_dir/exports."""
    from gpucost.reports.exports import build_exports, month_bounds, write_exports

    settings = _load(config, log_format, log_level)
    try:
        first, following = month_bounds(month)
    except ValueError as error:
        _fail_config(str(error))
        return
    try:
        runtime = Runtime.from_config(settings)
        allocation = runtime.lake.scan(ALLOCATION, Window(first, following)).collect()
        written = write_exports(build_exports(allocation, month), runtime.out.storage.put_atomic)
    except GpucostError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INCOMPLETE) from None
    if allocation.height == 0:
        errors.print(f"[bold red]incomplete:[/] no allocation rows for {month}", soft_wrap=True)
    for path in written:
        console.print(runtime.out.storage.url(path), soft_wrap=True, highlight=False)
    raise typer.Exit(EXIT_OK if allocation.height else EXIT_INCOMPLETE)


@app.command("digest")
def digest_command(
    config: ConfigOption,
    day: Annotated[
        str | None, typer.Option("--date", help="Day reported, YYYY-MM-DD (default: yesterday).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the Slack JSON payloads; send nothing.")
    ] = False,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Send (or print) the Slack digest of a day, from the lake."""
    from gpucost.reports.digest import build_digest, payloads_json
    from gpucost.reports.slack import send_digest

    settings = _load(config, log_format, log_level)
    last = _parse_day(day, "--date") or nightly_window(settings).end - timedelta(days=1)
    after = last + timedelta(days=1)
    previous_month = (last.replace(day=1) - timedelta(days=1)).replace(day=1)
    if not dry_run and settings.reports.slack_webhook is None:
        _fail_config("[reports] slack_webhook is not set (use --dry-run to print the payloads)")
        return
    with _exit_on_errors():
        runtime = Runtime.from_config(settings)
        payloads = build_digest(
            runtime.lake.scan(ALLOCATION, Window(previous_month, after)).collect(),
            runtime.lake.scan(FINDINGS, Window(last, after)).collect(),
            _night_document(runtime, after),
            day=last,
            top_findings=settings.reports.top_findings,
        )
        if dry_run:
            sys.stdout.write(payloads_json(payloads))
            return
        assert settings.reports.slack_webhook is not None
        delivery = send_digest(payloads, settings.reports.slack_webhook.resolve())
    for failure in delivery.failures:
        errors.print(
            f"[bold red]not delivered:[/] message {failure.message} to {delivery.destination}: "
            f"status {failure.status}, {failure.reason}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"{delivery.delivered} digest messages delivered to {delivery.destination}")
    raise typer.Exit(EXIT_OK if delivery.ok else EXIT_INCOMPLETE)


@app.command("agent")
def agent_command(
    config: ConfigOption,
    source: Annotated[
        str | None, typer.Option("--source", "-s", help="The nvml source (if several).")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(min=0.1, help="Seconds between samples (default: config).")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Take one round of samples and exit.")
    ] = False,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Sample this host's GPUs through NVML and land hourly gpu_usage rows (SIGTERM stops)."""
    from gpucost.collector.nvml import (
        NvmlSettings,
        run_agent,
        sampler_from_settings,
        spool_from_settings,
    )

    settings = _load(config, log_format, log_level)
    found = [
        s for s in settings.sources if isinstance(s, NvmlSettings) and source in (None, s.name)
    ]
    if len(found) != 1:
        _fail_config(
            "several nvml sources: choose one with --source"
            if found
            else f"no nvml source{f' named {source!r}' if source else ''} in the config"
        )
    chosen = found[0]
    try:
        runtime = Runtime.from_config(settings)
        sampler = sampler_from_settings(chosen, runtime.context)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        stats = run_agent(
            sampler,
            interval or chosen.interval_s,
            0 if once else None,
            lambda rows: land_gpu_usage(runtime, chosen.name, rows),
            source=chosen.name,
            spool=spool_from_settings(chosen, runtime.context),
            stop=stop,
        )
    except GpucostError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INCOMPLETE) from None
    console.print(f"{stats.rounds} rounds, {stats.rows_written} rows landed")
    raise typer.Exit(EXIT_OK if stats.rows_written else EXIT_INCOMPLETE)


@config_app.command("check")
def config_check_command(
    config: ConfigOption,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "WARNING",
) -> None:
    """Validate a config file and print it as gpucost understood it (secrets masked)."""
    from gpucost.scheduler import validate_schedules

    settings = _load(config, log_format, log_level)
    try:
        validate_schedules(settings)
    except ConfigError as error:
        _fail_config(str(error))
    console.print_json(settings.model_dump_json(indent=2))
    console.print(
        f"[green]ok[/]: {config} is valid ({len(settings.sources)} sources, "
        f"{len(settings.projects)} project rules)",
        soft_wrap=True,
    )


def _exit_status(manifest: RunManifest) -> int:
    for gap in manifest.gaps:
        reason = gap.error or "returned no rows for the window"
        errors.print(
            f"[bold red]incomplete:[/] source {gap.name}: {reason}", highlight=False, soft_wrap=True
        )
    return EXIT_INCOMPLETE if manifest.status != "complete" else EXIT_OK


def _print_sources(manifest: RunManifest) -> None:
    table = Table(
        title=f"Sources, {manifest.window_start} to {manifest.window_end_exclusive} (end exclusive)"
    )
    for column in ("source", "kind", "status", "rows", "rejected", "seconds"):
        table.add_column(
            column, justify="right" if column in {"rows", "rejected", "seconds"} else "left"
        )
    for source in manifest.sources:
        rows = ", ".join(f"{table_name}={count}" for table_name, count in source.rows.items())
        table.add_row(
            source.name,
            source.kind,
            source.status,
            rows or "0",
            str(source.rejected_rows),
            f"{source.duration_s:.2f}",
        )
    console.print(table)


def _print_summary(summary: pl.DataFrame, window: Window) -> None:
    table = Table(title=escape(f"Cost per project, {window} (first matching [[projects]] rule)"))
    for column in ("project", "cost center", "currency", "billed", "effective", "charges"):
        table.add_column(
            column, justify="right" if column in {"billed", "effective", "charges"} else "left"
        )
    for row in summary.iter_rows(named=True):
        table.add_row(
            row["project"],
            row["cost_center"] or "-",
            row["currency"],
            _money(row["billed_cost"]),
            _money(row["effective_cost"]),
            str(row["charges"]),
        )
    console.print(table)


def _print_overview(overview: pl.DataFrame, window: Window) -> None:
    title = f"Allocated cost per project, {window} ([allocation] policy; docs/allocation.md)"
    table = Table(title=escape(title))
    columns = (
        "project",
        "cur",
        "allocated",
        "billed",
        "GPU used",
        "GPU idle",
        "GPU-h used",
        "GPU-h idle",
        "FTE",
        "cost/FTE",
    )
    for column in columns:
        # Project names are never cut; the numbers give way on a narrow terminal.
        table.add_column(
            column,
            justify="left" if column in {"project", "cur"} else "right",
            no_wrap=column == "project",
        )
    for row in overview.iter_rows(named=True):
        table.add_row(
            row["project"],
            row["currency"] or "-",
            _money(row["amount"]),
            _money(row["billed_amount"]),
            _money(row["gpu_used"]),
            _money(row["gpu_idle"]),
            _number(row["gpu_hours_used"]),
            _number(row["gpu_hours_idle"]),
            _number(row["fte"], 1),
            _number(row["cost_per_fte"]),
        )
    console.print(table)


def _print_findings(findings: pl.DataFrame) -> None:
    """One line per finding; the evidence and advice are in the HTML report and the digest."""
    table = Table(title="Findings (estimated monthly waste; docs/reports.md)")
    for column in ("kind", "host", "project", "waste / month"):
        table.add_column(
            column,
            justify="right" if column == "waste / month" else "left",
            no_wrap=column != "project",
        )
    ranked = findings.sort("est_monthly_waste", descending=True, nulls_last=True)
    for row in ranked.iter_rows(named=True):
        table.add_row(
            row["kind"],
            row["host"] or row["resource_id"] or "-",
            row["project"] or "-",
            f"{_money(row['est_monthly_waste'])} {row['currency'] or ''}".strip(),
        )
    if findings.height == 0:
        table.add_row("none: no idle, misplaced or oversized GPU servers", "-", "-", "-")
    console.print(table)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _money(value: Decimal | None) -> str:
    """Rounded for display only; stored values keep every digit."""
    return "-" if value is None else f"{value:,.2f}"


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except GpucostError as error:  # anything a command did not handle itself
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_INCOMPLETE)


if __name__ == "__main__":
    main()
