"""The ``gpucost`` command line.

Exit status: 0 when the run is complete, 1 when a source failed or returned nothing (named on
stderr and in the run manifest), a stage failed, or another nightly run holds the lock; 2 for
configuration and usage errors.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
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

from gpucost import cli_tables
from gpucost.config import GpucostConfig, load_config, permission_warnings
from gpucost.core.errors import ConfigError, GpucostError
from gpucost.core.manifest import RunManifest
from gpucost.core.window import Window
from gpucost.lock import take_run_lock
from gpucost.logs import setup_logging
from gpucost.nightly import (
    NightlyResult,
    allocate_window,
    digest_day,
    export_month,
    run_nightly,
    summary_table,
)
from gpucost.pipeline import Runtime, collect, nightly_window, probe_sources, run_gpu_agent

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

UNLIMITED_WIDTH = 100_000
"""Columns given to output that is not a terminal (cron mail, a file, a pipe): Rich would
otherwise assume 80 and cut money to ``13,…``; a table is as wide as its content."""


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


class OutputOption(StrEnum):
    """How a command prints its results on stdout."""

    text = "text"
    json = "json"


OutputArg = Annotated[
    OutputOption,
    typer.Option(
        "--output",
        "-o",
        help="Tables for people, or one JSON document on stdout (exact money as strings).",
    ),
]


def _fit_consoles() -> None:
    """No width limit on output that is not a terminal (see :data:`UNLIMITED_WIDTH`)."""
    for target in (console, errors):
        target.width = None if target.is_terminal else UNLIMITED_WIDTH  # type: ignore[assignment]


def _load(config_path: Path, log_format: LogFormatOption, log_level: str) -> GpucostConfig:
    setup_logging(log_format.value, log_level)
    _fit_consoles()
    with _exit_on_errors():
        settings = load_config(config_path)
    for warning in permission_warnings(settings):
        logger.warning(warning)
    return settings


def _fail_config(message: str) -> None:
    _complain("config error", message)
    raise typer.Exit(EXIT_CONFIG)


def _fail_usage(message: str) -> None:
    """A command-line argument is wrong: one line on stderr, exit 2."""
    _complain("usage error", message)
    raise typer.Exit(EXIT_CONFIG)


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")  # exact: money never goes through a float
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _print_json(document: Mapping[str, Any]) -> None:
    """One JSON document on stdout (``--output json``)."""
    sys.stdout.write(json.dumps(document, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _complain(label: str, message: object) -> None:
    """One line on stderr: the label in red, then the message as it is (never read as markup)."""
    errors.print(f"[bold red]{label}:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


@contextmanager
def _exit_on_errors(*usage_errors: type[Exception]) -> Iterator[None]:
    """Turn errors into exit statuses: configuration (and ``usage_errors``) 2, others 1."""
    configuration: tuple[type[Exception], ...] = (ConfigError, *usage_errors)
    try:
        yield
    except configuration as error:
        _fail_config(str(error))
    # OSError: the lake's folder is a file, a disk is full, a permission is missing.
    except (GpucostError, OSError) as error:
        _complain("error", error)
        raise typer.Exit(EXIT_INCOMPLETE) from None


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail_usage(f"{option} {value!r} is not a date (YYYY-MM-DD)")
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
    output: OutputArg = OutputOption.text,
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
        _fail_usage("--until needs --since")
    with _exit_on_errors(ValueError):
        window = Window.days_inclusive(first, last or first) if first else nightly_window(settings)
        runtime = Runtime.from_config(settings)
        manifest = collect(runtime, window, source_names=source or None)
    status = _exit_status(manifest)
    location = runtime.lake.storage.url(manifest.path)
    if output is OutputOption.json:
        _print_json(
            {
                "command": "collect",
                "status": manifest.status,
                "exit_status": status,
                "run_id": manifest.run_id,
                "window": {"start": window.start, "end_exclusive": window.end},
                "sources": manifest.to_dict()["sources"],
                "manifest": location,
            }
        )
        raise typer.Exit(status)
    cli_tables.print_sources(console, manifest)
    console.print(f"manifest: {location}", soft_wrap=True, highlight=False)
    raise typer.Exit(status)


@app.command("nightly")
def nightly_command(
    config: ConfigOption,
    day: Annotated[
        str | None,
        typer.Option("--date", help="Re-run the night of this date (YYYY-MM-DD) instead of today."),
    ] = None,
    output: OutputArg = OutputOption.text,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Run the nightly job: collect every enabled source, allocate, report, export, digest.

    Prints the sources, the allocated cost per project (the night's last day and its month to
    date, read from the lake) and the findings on stdout; logs go to stderr. Holds the run lock
    while it runs: a second nightly (or backfill) started meanwhile exits 1 at once, naming the
    run that holds it.
    """
    settings = _load(config, log_format, log_level)
    as_of = _parse_day(day, "--date")
    today = datetime.now(UTC).date()
    if as_of is not None and as_of > today:
        # The night of D collects the days before D: a future night has nothing to read yet.
        _fail_usage(f"--date {as_of} is in the future (today is {today}, UTC)")
    window = nightly_window(settings, night=as_of)
    with _exit_on_errors():
        runtime = Runtime.from_config(settings)
        with take_run_lock(settings, "nightly"):
            result = run_nightly(runtime, window, command="nightly")
    manifest = result.manifest
    status = _night_exit_status(result)
    last_day = window.end - timedelta(days=1)
    overview = result.frames.get("allocation_overview")
    findings = result.frames.get("findings")
    written = [
        ("lake", runtime.lake.storage.root),
        *[(f"quarantine ({s.name})", s.quarantine) for s in manifest.sources if s.quarantine],
        *result.written(),
        ("manifest", runtime.lake.storage.url(manifest.path)),
    ]
    if output is OutputOption.json:
        _print_json(
            {
                "command": "nightly",
                "status": manifest.status,
                "exit_status": status,
                "run_id": manifest.run_id,
                "window": {"start": window.start, "end_exclusive": window.end},
                "day": last_day,
                "month_to_date": {"start": last_day.replace(day=1), "through": last_day},
                "sources": manifest.to_dict()["sources"],
                "stages": manifest.to_dict()["stages"],
                "projects": []
                if overview is None
                else summary_table(overview, last_day).to_dicts(),
                "findings": [] if findings is None else _finding_rows(findings),
                "written": [{"label": label, "location": where} for label, where in written],
            }
        )
        raise typer.Exit(status)
    cli_tables.print_sources(console, manifest)
    if overview is not None:
        cli_tables.print_month_overview(console, overview, last_day)
    if findings is not None:
        cli_tables.print_findings(console, findings)
    console.print("[bold]Written[/]")
    for label, location in written:
        console.print(f"  {label + ':':<11} {location}", soft_wrap=True, highlight=False)
    raise typer.Exit(status)


def _finding_rows(findings: pl.DataFrame) -> list[dict[str, Any]]:
    columns = ["kind", "severity", "host", "resource_id", "project", "est_monthly_waste"]
    ranked = findings.sort("est_monthly_waste", descending=True, nulls_last=True)
    return ranked.select(*columns, "currency", "recommendation").to_dicts()


def _night_exit_status(result: NightlyResult) -> int:
    status = _exit_status(result.manifest)
    for stage in result.manifest.stages:
        if stage.status == "failed":
            _complain("failed", f"stage {stage.name}: {stage.error}")
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
    digest: Annotated[
        bool,
        typer.Option("--digest", help="Also send (or keep) each day's Slack digest."),
    ] = False,
    output: OutputArg = OutputOption.text,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "WARNING",
) -> None:
    """Run the nightly pipeline day by day over a range, with a progress bar; resumable.

    Each day D collects the window [D, D+1), allocates, summarises and reports; no Slack
    digest unless --digest. At the end the finance exports of every month the range touches
    are rebuilt once, from the whole month in the lake. Days already covered by a complete
    nightly or backfill run manifest are skipped unless --force, so an interrupted backfill
    picks up where it stopped. Holds the run lock throughout. Exit 0 when every day is
    complete, 1 when some day (or a month's export) is not (listed), 2 for usage errors.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from gpucost.backfill import (
        BackfillResult,
        DayOutcome,
        backfill_stages,
        days_between,
        run_backfill,
    )

    settings = _load(config, log_format, log_level)
    first, last = _parse_day(since, "--since"), _parse_day(until, "--until")
    assert first is not None and last is not None
    if last < first:
        _fail_usage(f"--until {last} is before --since {first}")
    total = len(days_between(first, last))
    outcomes: list[DayOutcome] = []
    result = BackfillResult()
    with _exit_on_errors():
        runtime = Runtime.from_config(settings)
        with (
            take_run_lock(settings, "backfill"),
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

            result = run_backfill(
                runtime,
                first,
                last,
                force=force,
                stages=backfill_stages(digest=digest),
                on_start=on_start,
                on_day=on_day,
            )
    counts = {
        status: sum(1 for outcome in outcomes if outcome.status == status)
        for status in ("complete", "skipped", "incomplete", "failed")
    }
    bad = [outcome for outcome in outcomes if outcome.status in ("incomplete", "failed")]
    for outcome in bad:
        for problem in outcome.problems or ["not complete"]:
            _complain(outcome.status, f"{outcome.day}: {problem} (run {outcome.run_id})")
    for month, error in result.export_errors.items():
        _complain("export failed", f"{month}: {error}")
    exit_status = EXIT_INCOMPLETE if bad or result.export_errors else EXIT_OK
    if output is OutputOption.json:
        _print_json(
            {
                "command": "backfill",
                "since": first,
                "until": last,
                "exit_status": exit_status,
                "counts": counts,
                "days": [
                    {
                        "day": outcome.day,
                        "status": outcome.status,
                        "run_id": outcome.run_id,
                        "problems": outcome.problems,
                    }
                    for outcome in outcomes
                ],
                "exports": {
                    month: {"allocation_rows": done.allocation_rows, "written": done.locations}
                    for month, done in result.exports.items()
                },
            }
        )
        raise typer.Exit(exit_status)
    console.print(
        f"backfill {first}..{last}: "
        + ", ".join(f"{count} {status}" for status, count in counts.items()),
        soft_wrap=True,
    )
    for month, done in result.exports.items():
        if not done.allocation_rows:
            console.print(f"export {month}: no allocation rows, nothing written", soft_wrap=True)
        for location in done.locations:
            console.print(f"export {month}: {location}", soft_wrap=True, highlight=False)
    raise typer.Exit(exit_status)


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
    with _exit_on_errors():  # OSError: the port is taken, the job store's folder is not writable
        status = serve(settings, stop)
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
    with _exit_on_errors(ValueError):
        summary = generate(
            out_dir,
            gpus=gpus,
            days=days,
            projects=projects,
            seed=seed,
            start=first,
            usage_format=usage_format.value,
        )
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
    output: OutputArg = OutputOption.text,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Allocate the lake's costs and headcount to projects for a window of days.

    Replaces the window's days of the allocation table and prints cost per project and the
    reconciliation with billing (billed minus allocated, per day and currency: always 0).
    """
    settings = _load(config, log_format, log_level)
    first, last = _parse_day(since, "--since"), _parse_day(until, "--until")
    assert first is not None
    with _exit_on_errors(ValueError):
        window = Window.days_inclusive(first, last or first)
        runtime = Runtime.from_config(settings)
        result = allocate_window(runtime, window)
    status = EXIT_OK
    if result.allocation.height == 0:
        _complain("incomplete", f"nothing to allocate in {window}")
        status = EXIT_INCOMPLETE
    if output is OutputOption.json:
        _print_json(
            {
                "command": "allocate",
                "exit_status": status,
                "window": {"start": window.start, "end_exclusive": window.end},
                "projects": result.overview.to_dicts(),
                "reconciliation_rows": result.reconciliation.height,
                "unbalanced_rows": result.unbalanced.height,
            }
        )
        raise typer.Exit(status)
    cli_tables.print_overview(console, result.overview, window)
    console.print(
        f"reconciliation: {result.reconciliation.height} day x currency rows, "
        f"{result.unbalanced.height} with a difference",
        highlight=False,
    )
    raise typer.Exit(status)


@app.command("export")
def export_command(
    config: ConfigOption,
    month: Annotated[str, typer.Option("--month", help="The month to export, YYYY-MM.")],
    output: OutputArg = OutputOption.text,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Write a month's chargeback exports (CSV, Parquet, manifest) under out_dir/exports.

    The whole month as the lake's allocation has it. A month without allocation rows writes
    nothing and exits 0 with a note; a month that is not YYYY-MM is a usage error (exit 2).
    """
    from gpucost.reports.exports import month_bounds

    settings = _load(config, log_format, log_level)
    try:
        first, _ = month_bounds(month)
    except ValueError as error:
        _fail_usage(f"--month: {error}")
        raise
    with _exit_on_errors():
        runtime = Runtime.from_config(settings)
        exported = export_month(runtime, first)
    note = (
        None
        if exported.allocation_rows
        else f"no allocation rows for {first:%Y-%m}: nothing exported (allocate its days first: "
        "gpucost allocate, nightly or backfill)"
    )
    if output is OutputOption.json:
        _print_json(
            {
                "command": "export",
                "month": f"{first:%Y-%m}",
                "allocation_rows": exported.allocation_rows,
                "written": exported.locations,
                "note": note,
            }
        )
        return
    if note is not None:
        console.print(f"note: {note}", soft_wrap=True, highlight=False)
    for location in exported.locations:
        console.print(location, soft_wrap=True, highlight=False)


@app.command("digest")
def digest_command(
    config: ConfigOption,
    day: Annotated[
        str | None, typer.Option("--date", help="Day reported, YYYY-MM-DD (default: yesterday).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the Slack JSON payloads; send nothing.")
    ] = False,
    output: OutputArg = OutputOption.text,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "INFO",
) -> None:
    """Send (or print) the Slack digest of a day, from the lake."""
    from gpucost.reports.digest import payloads_json

    settings = _load(config, log_format, log_level)
    last = _parse_day(day, "--date") or nightly_window(settings).end - timedelta(days=1)
    if not dry_run and settings.reports.slack_webhook is None:
        _fail_config("[reports] slack_webhook is not set (use --dry-run to print the payloads)")
        return
    with _exit_on_errors():
        runtime = Runtime.from_config(settings)
        digest = digest_day(runtime, last, send=not dry_run)
    delivery = digest.delivery
    if delivery is None:
        sys.stdout.write(payloads_json(digest.payloads))
        return
    for failure in delivery.failures:
        _complain(
            "not delivered",
            f"message {failure.message} to {delivery.destination}: "
            f"status {failure.status}, {failure.reason}",
        )
    status = EXIT_OK if delivery.ok else EXIT_INCOMPLETE
    if output is OutputOption.json:
        _print_json(
            {
                "command": "digest",
                "day": last,
                "exit_status": status,
                "delivered": delivery.delivered,
                "failed": len(delivery.failures),
                "destination": delivery.destination,
            }
        )
        raise typer.Exit(status)
    console.print(f"{delivery.delivered} digest messages delivered to {delivery.destination}")
    raise typer.Exit(status)


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
    from gpucost.collector.nvml import NvmlSettings

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
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with _exit_on_errors():
        runtime = Runtime.from_config(settings)
        stats = run_gpu_agent(runtime, found[0], interval_s=interval, once=once, stop=stop)
    console.print(f"{stats.rounds} rounds, {stats.rows_written} rows landed")
    raise typer.Exit(EXIT_OK if stats.rows_written else EXIT_INCOMPLETE)


@config_app.command("check")
def config_check_command(
    config: ConfigOption,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Also look for each enabled source's files (or bucket) now; exit 2 if one fails.",
        ),
    ] = False,
    output: OutputArg = OutputOption.text,
    log_format: LogFormatArg = LogFormatOption.text,
    log_level: LogLevelArg = "WARNING",
) -> None:
    """Validate a config file and print it as gpucost understood it (secrets masked).

    Also prints the next three runs (UTC) of every schedule, read as crontab reads it (a day
    of month and a day of week both restricted: either matches). Validation reads only the
    config: whether a source's files exist is known when it runs, or with --probe, which asks
    every enabled source that can say what would fail it now.
    """
    from gpucost.scheduler import schedule_previews

    settings = _load(config, log_format, log_level)
    with _exit_on_errors():
        previews = schedule_previews(settings, datetime.now(UTC))
    problems: list[tuple[str, str]] = []
    if probe:
        with _exit_on_errors():
            problems = probe_sources(Runtime.from_config(settings))
    for name, problem in problems:
        _complain("probe failed", f"source {name}: {problem}")
    status = EXIT_CONFIG if problems else EXIT_OK
    if output is OutputOption.json:
        _print_json(
            {
                "command": "config check",
                "config": json.loads(settings.model_dump_json()),
                "valid": True,
                "schedules": [
                    {"job": p.job, "schedule": p.expression, "next_runs": p.next_runs}
                    for p in previews
                ],
                "probe": None
                if not probe
                else [{"source": name, "problem": problem} for name, problem in problems],
                "exit_status": status,
            }
        )
        raise typer.Exit(status)
    console.print_json(settings.model_dump_json(indent=2))
    console.print("[bold]Next runs (UTC)[/]")
    for preview in previews:
        runs = ", ".join(moment.strftime("%Y-%m-%d %H:%M:%S") for moment in preview.next_runs)
        console.print(
            f"  {preview.job}  {preview.expression!r}: {runs or 'never'}",
            soft_wrap=True,
            highlight=False,
        )
    console.print(
        f"[green]ok[/]: {config} is valid ({len(settings.sources)} sources, "
        f"{len(settings.projects)} project rules)",
        soft_wrap=True,
    )
    if not probe:
        return
    if problems:
        raise typer.Exit(EXIT_CONFIG)
    enabled = sum(1 for source in settings.sources if source.enabled)
    console.print(f"[green]ok[/]: probed {enabled} enabled sources, no problem found")


def _exit_status(manifest: RunManifest) -> int:
    for gap in manifest.gaps:
        _complain("incomplete", f"source {gap.name}: {gap.problem}")
    return EXIT_INCOMPLETE if manifest.status != "complete" else EXIT_OK


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except GpucostError as error:  # anything a command did not handle itself
        _complain("error", error)
        sys.exit(EXIT_INCOMPLETE)


if __name__ == "__main__":
    main()
