"""``gpucost serve``: APScheduler 3 with a persistent job store, and the jobs it runs.

Jobs
    One per enabled source with a ``schedule`` (id ``source:<name>``), collecting the nightly
    window for that source alone, and the nightly pipeline (id ``nightly``) at
    ``[serve] nightly_schedule``. Both are module-level functions taking plain arguments (the
    config path, the source name), because the SQLAlchemy job store pickles a reference to the
    function and its arguments. Every job loads the config afresh.

Schedules
    Cron expressions in UTC. Five fields are standard crontab (``0 3 * * *``; day of week 0 or 7
    is Sunday, translated for APScheduler 3, whose 0 is Monday); six fields put seconds first
    (``*/5 * * * * *``), for tests and demonstrations. When both the day of month and the day
    of week are restricted (neither starts with ``*``), a day matches if *either* does, as in
    Vixie cron (crontab(5): "If both fields are restricted ... the command will be run when
    either field matches the current time"): ``0 0 1 * 1`` is the 1st and every Monday.
    APScheduler 3's ``CronTrigger`` requires both, so such a schedule becomes an ``OrTrigger``
    of two cron triggers. ``gpucost config check`` prints the next three runs of every job.

Persistence and restarts
    Jobs live in a SQLite file (``[serve] jobstore``) and have stable ids. At start the stored
    jobs are reconciled with the config: an unchanged job keeps its stored next run time (so a
    run missed while the service was down still happens, once), a changed one is replaced, and
    one whose source left the config is removed; nothing is ever duplicated.

Every job has ``coalesce=True`` (a backlog of missed runs becomes one run), ``max_instances=1``
(a job never overlaps itself) and ``misfire_grace_time`` = ``[serve] misfire_grace_s`` (6 hours
by default: a night missed by a restart at 05:00 still runs; one missed by a day does not, the
next night re-collects its lookback window anyway). ``max_workers`` (default 1) makes jobs run
one at a time, so the process is the lake's only writer. The nightly job also takes the run
lock (:mod:`gpucost.lock`), so a ``gpucost nightly`` from cron cannot overlap it.

SIGTERM or SIGINT stop the scheduler: no new job starts, the job in progress finishes (its
lake writes and manifest included), then the process exits 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from apscheduler.executors.debug import DebugExecutor  # type: ignore[import-untyped]
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
from apscheduler.schedulers.background import (  # type: ignore[import-untyped]
    BackgroundScheduler,
)
from apscheduler.triggers.combining import OrTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from gpucost.config import GpucostConfig, load_config
from gpucost.core.errors import ConfigError
from gpucost.httpd import EndpointServer
from gpucost.lock import LockHeldError, take_run_lock
from gpucost.metrics import ServeMetrics, business_figures
from gpucost.nightly import run_nightly
from gpucost.pipeline import Runtime, collect, nightly_window

logger = logging.getLogger(__name__)

SOURCE_JOB_PREFIX = "source:"
NIGHTLY_JOB_ID = "nightly"
REFRESH_JOB_ID = "refresh-metrics"
REFRESH_S = 900
"""How often the metrics pick up runs made by other processes and recompute the business
gauges (which the nightly job also recomputes when it ends)."""
TRANSIENT_STORE = "transient"
"""In-memory job store for jobs that hold live objects and must not persist."""

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


# --- the state jobs report to ------------------------------------------------------------


@dataclass
class ServeState:
    """What the running service shares with its jobs: metrics and the clock."""

    metrics: ServeMetrics
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


_state: ServeState | None = None
_state_lock = threading.Lock()


@contextmanager
def active_state(state: ServeState) -> Iterator[ServeState]:
    """Make ``state`` the one jobs report to while the block runs."""
    global _state
    with _state_lock:
        previous, _state = _state, state
    try:
        yield state
    finally:
        with _state_lock:
            _state = previous


def _today() -> date:
    clock = _state.clock if _state is not None else (lambda: datetime.now(UTC))
    return clock().astimezone(UTC).date()


# --- jobs (module-level, plain arguments: the job store pickles references to them) ----------


def run_source_job(config_path: str, source_name: str) -> None:
    """Collect one source for the nightly window; failures are logged and counted, not raised."""
    state = _state
    try:
        config = load_config(config_path)
        runtime = Runtime.from_config(config)
        window = nightly_window(config, today=_today())
        manifest = collect(runtime, window, source_names=[source_name], command="serve")
    except Exception:
        logger.exception("scheduled run of source %s failed", source_name)
        if state is not None:
            state.metrics.record_source_error(source_name)
        return
    if state is not None:
        state.metrics.record_manifest(manifest)
    for source in manifest.gaps:
        logger.warning(
            "scheduled run of source %s: %s (run %s)",
            source.name,
            source.error or "no rows for the window",
            manifest.run_id,
        )


def run_nightly_job(config_path: str) -> None:
    """Run the nightly pipeline under the run lock; a night already running is skipped."""
    state = _state
    try:
        config = load_config(config_path)
        lock = take_run_lock(config, "serve nightly")
    except LockHeldError as error:
        logger.warning("nightly skipped: %s", error)
        _count_night(state, "skipped_locked")
        return
    except Exception:
        logger.exception("nightly could not start")
        _count_night(state, "error")
        return
    try:
        with lock:
            runtime = Runtime.from_config(config)
            window = nightly_window(config, today=_today())
            result = run_nightly(runtime, window)
    except Exception:
        logger.exception("nightly failed")
        _count_night(state, "error")
        return
    manifest = result.manifest
    logger.info("nightly %s for %s: %s", manifest.run_id, window, manifest.status)
    if state is not None:
        state.metrics.record_manifest(manifest)
        _refresh_business(state, runtime)


def _count_night(state: ServeState | None, outcome: str) -> None:
    """Count a night that left no manifest behind (the metrics fold in those that did)."""
    if state is not None:
        state.metrics.record_nightly_outcome(outcome)


def _refresh_business(state: ServeState, runtime: Runtime) -> None:
    if not runtime.config.serve.business_metrics:
        return
    today = runtime.config.nightly.as_of or _today()  # a pinned night pins the gauges too
    try:
        state.metrics.set_business(business_figures(runtime, today))
    except Exception:
        logger.exception("could not compute the business gauges")


def refresh_job(state: ServeState, config_path: str) -> None:
    """Fold in runs made outside this process (cron, a CronJob), recompute the business gauges.

    A transient job: it holds the live state, so it lives in the in-memory job store.
    """
    try:
        config = load_config(config_path)
        state.metrics.set_configured_sources(enabled_sources(config))
        runtime = Runtime.from_config(config)
        state.metrics.seed_from_lake(runtime.lake)
    except Exception:
        logger.exception("could not read the lake for the metrics")
        return
    _refresh_business(state, runtime)


def enabled_sources(config: GpucostConfig) -> list[str]:
    """Names of the sources the config enables: the only ones ``/metrics`` shows."""
    return [source.name for source in config.sources if source.enabled]


# --- schedules -----------------------------------------------------------------------------


def parse_schedule(expression: str) -> Any:
    """A UTC trigger for a 5-field crontab or a 6-field (seconds first) expression.

    A :class:`CronTrigger`, or an :class:`OrTrigger` of two when both day fields are restricted
    (crontab's "either matches"). Raises ValueError with a readable reason.
    """
    fields = expression.split()
    if len(fields) == 5:
        second, (minute, hour, day, month, day_of_week) = "0", fields
    elif len(fields) == 6:
        second, minute, hour, day, month, day_of_week = fields
    else:
        raise ValueError(
            f"{expression!r} has {len(fields)} fields; a schedule is a crontab expression "
            "(minute hour day month weekday), or six fields with seconds first"
        )
    try:
        weekdays = crontab_day_of_week(day_of_week)

        def cron(day_field: str, weekday_field: str) -> Any:
            return CronTrigger(
                second=second,
                minute=minute,
                hour=hour,
                day=day_field,
                month=month,
                day_of_week=weekday_field,
                timezone=UTC,
            )

        if _restricted(day) and _restricted(day_of_week):
            return OrTrigger([cron(day, "*"), cron("*", weekdays)])
        return cron(day, weekdays)
    except ValueError as error:
        raise ValueError(f"{expression!r} is not a valid schedule: {error}") from None


def _restricted(field_text: str) -> bool:
    """Vixie cron's test: a day field is unrestricted when it starts with ``*`` (or is ``?``)."""
    return not (field_text.startswith("*") or field_text == "?")


def next_runs(trigger: Any, after: datetime, count: int = 3) -> list[datetime]:
    """The next ``count`` fire times of ``trigger`` strictly after ``after`` (fewer if it ends)."""
    fires: list[datetime] = []
    previous: datetime | None = None
    moment = after + timedelta(microseconds=1)
    while len(fires) < count:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        fires.append(fire)
        previous, moment = fire, fire + timedelta(microseconds=1)
    return fires


def crontab_day_of_week(text: str) -> str:
    """Crontab weekday numbers (0 or 7 = Sunday) as names APScheduler 3 reads the same way.

    APScheduler 3 counts 0 as Monday (its ``CronTrigger.from_crontab`` warns about it), so
    numbers are translated to names; ``*``, ``?`` and names pass through.
    """
    if text in ("*", "?"):
        return "*"
    names: list[str] = []
    for token in text.split(","):
        body, _, step_text = token.partition("/")
        if not any(char.isdigit() for char in body):
            if step_text:
                start, end = (0, 6) if body == "*" else _day_range(body)
                names += _expand(start, end, int(step_text))
            else:
                names.append(body)
            continue
        start, end = _day_range(body)
        if step_text and "-" not in body:
            end = 6  # "5/2" means from 5 to the end, every 2nd (Vixie cron)
        names += _expand(start, end, int(step_text) if step_text else 1)
    unique = list(dict.fromkeys(names))
    return ",".join(unique)


def _day_number(text: str) -> int:
    lowered = text.strip().lower()
    if lowered.isdigit():
        number = int(lowered)
        if not 0 <= number <= 7:
            raise ValueError(f"weekday {text!r} is outside 0-7")
        return number
    if lowered[:3] in _CRON_DAYS:
        return _CRON_DAYS.index(lowered[:3])
    raise ValueError(f"weekday {text!r} is not a number 0-7 or a day name")


def _day_range(body: str) -> tuple[int, int]:
    if "-" in body:
        low, high = body.split("-", 1)
        return _day_number(low), _day_number(high)
    number = _day_number(body)
    return number, number


def _expand(start: int, end: int, step: int) -> list[str]:
    if step < 1:
        raise ValueError("a weekday step must be at least 1")
    return [_CRON_DAYS[number % 7] for number in range(start, end + 1, step)]


@dataclass(frozen=True)
class JobSpec:
    """A job the config asks for."""

    id: str
    func: Callable[..., None]
    args: tuple[str, ...]
    trigger: Any
    name: str


def job_specs(config: GpucostConfig, config_path: str) -> list[JobSpec]:
    """The persistent jobs ``config`` asks for; a bad schedule is a ConfigError naming it."""
    specs: list[JobSpec] = []
    for index, source in enumerate(config.sources):
        if not source.enabled or not source.schedule:
            continue
        try:
            trigger = parse_schedule(source.schedule)
        except ValueError as error:
            raise ConfigError(
                f"sources[{index}] ({source.name}).schedule: {error}", path=config.path
            ) from None
        specs.append(
            JobSpec(
                f"{SOURCE_JOB_PREFIX}{source.name}",
                run_source_job,
                (config_path, source.name),
                trigger,
                f"collect {source.name}",
            )
        )
    try:
        nightly_trigger = parse_schedule(config.serve.nightly_schedule)
    except ValueError as error:
        raise ConfigError(f"serve.nightly_schedule: {error}", path=config.path) from None
    if not config.serve.run_nightly:
        return specs
    specs.append(
        JobSpec(NIGHTLY_JOB_ID, run_nightly_job, (config_path,), nightly_trigger, "nightly")
    )
    return specs


def validate_schedules(config: GpucostConfig) -> None:
    """Raise ConfigError for the first schedule that does not parse."""
    job_specs(config, config.path or "")


@dataclass(frozen=True)
class SchedulePreview:
    """A job's schedule as written and when it would run next."""

    job: str
    expression: str
    next_runs: list[datetime]


def schedule_previews(
    config: GpucostConfig, now: datetime, count: int = 3
) -> list[SchedulePreview]:
    """Every job's next ``count`` runs after ``now`` (ConfigError for a bad schedule).

    The nightly job is listed even when ``[serve] run_nightly`` is off (cron runs it then), so
    its schedule is checked the same way.
    """
    expressions = {
        f"{SOURCE_JOB_PREFIX}{source.name}": source.schedule
        for source in config.sources
        if source.enabled and source.schedule
    }
    expressions[NIGHTLY_JOB_ID] = config.serve.nightly_schedule
    triggers = {spec.id: spec.trigger for spec in job_specs(config, config.path or "")}
    previews: list[SchedulePreview] = []
    for job, expression in expressions.items():
        trigger = triggers.get(job) or parse_schedule(expression)
        previews.append(SchedulePreview(job, expression, next_runs(trigger, now, count)))
    return previews


# --- the scheduler ---------------------------------------------------------------------------


def jobstore_url(config: GpucostConfig) -> str:
    """The SQLAlchemy URL of the job store (a path becomes ``sqlite:///<absolute path>``)."""
    configured = config.serve.jobstore
    if configured is None:
        if "://" in config.store.data_dir:
            raise ConfigError(
                "serve.jobstore: set it to a local file (e.g. a persistent volume) or a "
                "database URL when store.data_dir is an object store",
                path=config.path,
            )
        configured = str(Path(config.store.data_dir, "_scheduler.sqlite"))
    if "://" in configured:
        return configured
    path = Path(configured).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def scheduler_options(
    config: GpucostConfig, *, executor: Literal["threads", "inline"] = "threads"
) -> dict[str, Any]:
    """Keyword arguments for an APScheduler 3 scheduler serving ``config``.

    ``inline`` runs each job in the thread that finds it due (APScheduler's debug executor):
    for simulations that drive the scheduler with a fake clock.
    """
    serve = config.serve
    return {
        "jobstores": {
            "default": SQLAlchemyJobStore(url=jobstore_url(config)),
            TRANSIENT_STORE: MemoryJobStore(),
        },
        "executors": {
            "default": ThreadPoolExecutor(serve.max_workers)
            if executor == "threads"
            else DebugExecutor()
        },
        "job_defaults": {
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": serve.misfire_grace_s,
        },
        "timezone": UTC,
    }


@dataclass
class Reconciled:
    """What reconciling the stored jobs with the config did, by job id."""

    kept: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def reconcile(scheduler: Any, specs: Sequence[JobSpec], misfire_grace_s: int) -> Reconciled:
    """Make the persistent job store hold exactly ``specs``, keeping unchanged jobs as stored.

    Call it on a started (paused) scheduler, so stored jobs are visible.
    """
    report = Reconciled()
    stored = {job.id: job for job in scheduler.get_jobs(jobstore="default")}
    for spec in specs:
        job = stored.pop(spec.id, None)
        if job is not None and _unchanged(job, spec, misfire_grace_s):
            report.kept.append(spec.id)
            continue
        scheduler.add_job(
            spec.func,
            trigger=spec.trigger,
            args=list(spec.args),
            id=spec.id,
            name=spec.name,
            jobstore="default",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=misfire_grace_s,
        )
        (report.replaced if job is not None else report.added).append(spec.id)
    for job_id in stored:
        scheduler.remove_job(job_id, jobstore="default")
        report.removed.append(job_id)
    return report


def _unchanged(job: Any, spec: JobSpec, misfire_grace_s: int) -> bool:
    return (
        job.func_ref == f"{spec.func.__module__}:{spec.func.__qualname__}"
        and tuple(job.args) == spec.args
        and repr(job.trigger) == repr(spec.trigger)
        and job.misfire_grace_time == misfire_grace_s
        and job.coalesce is True
        and job.max_instances == 1
    )


def _next_runs(scheduler: Any) -> list[tuple[str, datetime | None]]:
    return [
        (job.id, getattr(job, "next_run_time", None))
        for job in scheduler.get_jobs(jobstore="default")
    ]


def serve(
    config: GpucostConfig,
    stop: threading.Event,
    *,
    on_ready: Callable[[str, int], None] | None = None,
) -> int:
    """Run the scheduler and the endpoints until ``stop`` is set; returns the exit status 0.

    Raises ConfigError for bad schedules, a job store it cannot open or a missing secret.
    """
    if config.path is None:
        raise ConfigError("serve needs a config loaded from a file (jobs reload it by path)")
    # APScheduler logs two INFO lines per run; the jobs log what they did themselves.
    # At --log-level DEBUG they are kept.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    config_path = str(Path(config.path).absolute())
    specs = job_specs(config, config_path)
    token = config.serve.metrics_token.resolve() if config.serve.metrics_token is not None else None
    runtime = Runtime.from_config(config)
    scheduler = BackgroundScheduler(**scheduler_options(config))
    metrics = ServeMetrics(
        jobs=lambda: _next_runs(scheduler), configured_sources=enabled_sources(config)
    )
    seeded = metrics.seed_from_lake(runtime.lake)
    logger.info("metrics seeded from %d run manifests", seeded)
    state = ServeState(metrics)
    stopping = threading.Event()

    def health() -> tuple[bool, dict[str, Any]]:
        running = bool(scheduler.running) and not stopping.is_set()
        return running, {"jobs": len(specs)}

    # Bind first: a taken port fails the start before any job could run.
    server = EndpointServer(
        config.serve.metrics_host, config.serve.metrics_port, metrics.registry, health, token
    )
    with active_state(state):
        scheduler.start(paused=True)
        try:
            report = reconcile(scheduler, specs, config.serve.misfire_grace_s)
            logger.info(
                "jobs: %d kept as stored, %d added, %d replaced, %d removed (%s)",
                len(report.kept),
                len(report.added),
                len(report.replaced),
                len(report.removed),
                ", ".join(spec.id for spec in specs) or "none",
            )
            for job_id, moment in _next_runs(scheduler):
                logger.info("job %s runs next at %s", job_id, moment.isoformat() if moment else "-")
            scheduler.add_job(
                refresh_job,
                trigger=IntervalTrigger(seconds=REFRESH_S, timezone=UTC),
                args=[state, config_path],
                id=REFRESH_JOB_ID,
                jobstore=TRANSIENT_STORE,
                next_run_time=datetime.now(UTC),
            )
            host, port = server.start()
            logger.info("serving /metrics and /healthz on http://%s:%d", host, port)
            if on_ready is not None:
                on_ready(host, port)
            scheduler.resume()
            while not stop.wait(0.5):
                pass
        finally:
            stopping.set()
            logger.info("stopping: no new jobs; waiting for the job in progress to finish")
            scheduler.shutdown(wait=True)
            server.stop()
            logger.info("stopped cleanly")
    return 0
