"""Backfill: run the nightly pipeline day by day over a range, resumably.

Each day ``D`` is one run over the window ``[D, D+1)`` with command ``backfill``, running
:data:`BACKFILL_STAGES` (allocate, summarise, report): no Slack digest per day unless asked
(``--digest``; README's 120-day example would otherwise post 120 messages), and no export per
day. A day is *done* when some run manifest (``_runs/*.json``) of a ``nightly`` or ``backfill``
run is ``complete``, covers the day, and records every stage the backfill runs as ``ok``: a
night that covered September completes all of September's days, and a day finished before a
new stage existed is redone. Done days are skipped unless ``force``; an interrupted backfill
resumes where it stopped, because an interrupted day's manifest still says ``running``.

At the end, the finance exports of every month the range touches are rebuilt once, from the
whole month as the lake has it (:func:`~gpucost.nightly.export_month`): the same bytes a
nightly at the month's end writes, never a month to date that stops at the last backfilled day.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

from gpucost.core.errors import GpucostError
from gpucost.core.lake import Lake
from gpucost.core.manifest import read_manifests
from gpucost.core.window import Window
from gpucost.nightly import (
    NIGHTLY_STAGES,
    Exported,
    NightlyResult,
    NightlyStage,
    export_month,
    run_nightly,
)
from gpucost.pipeline import Runtime

logger = logging.getLogger(__name__)

DayStatus = Literal["skipped", "complete", "incomplete", "failed"]


@dataclass
class DayOutcome:
    """What happened to one day of a backfill."""

    day: date
    status: DayStatus
    run_id: str | None = None
    problems: list[str] = field(default_factory=list)
    """Sources and stages that failed or returned nothing, with the reason."""


BACKFILL_STAGES: tuple[NightlyStage, ...] = tuple(
    stage for stage in NIGHTLY_STAGES if stage.name not in ("export", "digest")
)
"""What each backfilled day runs: exports are rebuilt per month at the end, no digest."""
DIGEST_STAGE: NightlyStage = next(stage for stage in NIGHTLY_STAGES if stage.name == "digest")


def backfill_stages(*, digest: bool = False) -> tuple[NightlyStage, ...]:
    """:data:`BACKFILL_STAGES`, plus the Slack digest of each day when ``digest``."""
    return (*BACKFILL_STAGES, DIGEST_STAGE) if digest else BACKFILL_STAGES


def completed_days(lake: Lake, stage_names: Iterable[str] = ()) -> set[date]:
    """Days covered by a complete nightly/backfill manifest that ran all of ``stage_names``.

    Unreadable manifests are passed over (their days count as not done), never fatal.
    """
    required = set(stage_names)
    done: set[date] = set()
    for manifest in read_manifests(lake):
        if not (
            manifest.is_night
            and manifest.status == "complete"
            and required <= manifest.completed_stages()
        ):
            continue
        try:
            done.update(manifest.window.each_day())
        except (TypeError, ValueError):  # dates that are not dates: not a day done
            continue
    return done


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return list(Window.days_inclusive(first, last).each_day())


def plan(
    runtime: Runtime,
    first: date,
    last: date,
    *,
    force: bool = False,
    stages: Sequence[NightlyStage] = BACKFILL_STAGES,
) -> list[tuple[date, bool]]:
    """Each day of the range and whether it is to be skipped (done already, and no ``force``)."""
    days = days_between(first, last)
    done = set() if force else completed_days(runtime.lake, [stage.name for stage in stages])
    return [(day, day in done) for day in days]


def backfill_day(
    runtime: Runtime, day: date, *, stages: Sequence[NightlyStage] = BACKFILL_STAGES
) -> DayOutcome:
    """Run the pipeline for one day; failures are recorded in the outcome, not raised."""
    try:
        result = run_nightly(
            runtime, Window(day, day + timedelta(days=1)), stages=stages, command="backfill"
        )
    except GpucostError as error:
        logger.error("backfill of %s failed: %s", day, error)
        return DayOutcome(day, "failed", problems=[str(error)])
    return outcome_of(day, result)


def outcome_of(day: date, result: NightlyResult) -> DayOutcome:
    """A day's outcome from its nightly result."""
    manifest = result.manifest
    problems = [f"source {source.name}: {source.problem}" for source in manifest.gaps]
    problems += [
        f"stage {stage.name}: {stage.error}"
        for stage in manifest.stages
        if stage.status in ("failed", "skipped")
    ]
    status: DayStatus = (
        "complete"
        if manifest.status == "complete"
        else "failed"
        if manifest.status == "failed"
        else "incomplete"
    )
    return DayOutcome(day, status, manifest.run_id, problems)


@dataclass
class BackfillResult:
    """Every day's outcome, and the exports rebuilt for each month the range touches."""

    days: list[DayOutcome] = field(default_factory=list)
    exports: dict[str, Exported] = field(default_factory=dict)
    """``YYYY-MM`` -> what that month's export wrote (nothing for a month without rows)."""
    export_errors: dict[str, str] = field(default_factory=dict)
    """``YYYY-MM`` -> why that month's export failed."""


def months_between(first: date, last: date) -> list[date]:
    """The first day of every month from ``first``'s to ``last``'s, both included."""
    months: list[date] = []
    month = first.replace(day=1)
    while month <= last:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return months


def run_backfill(
    runtime: Runtime,
    first: date,
    last: date,
    *,
    force: bool = False,
    stages: Sequence[NightlyStage] = BACKFILL_STAGES,
    on_day: Callable[[DayOutcome], None] | None = None,
    on_start: Callable[[date], None] | None = None,
) -> BackfillResult:
    """Backfill ``first``..``last`` day by day, then rebuild each touched month's exports.

    ``on_start``/``on_day`` drive a progress bar. A month's export reads the whole month from
    the lake, days outside the range included, so it equals the export of a nightly run at
    the month's end.
    """
    result = BackfillResult()
    for day, skip in plan(runtime, first, last, force=force, stages=stages):
        if on_start is not None:
            on_start(day)
        outcome = DayOutcome(day, "skipped") if skip else backfill_day(runtime, day, stages=stages)
        result.days.append(outcome)
        if on_day is not None:
            on_day(outcome)
    for month in months_between(first, last):
        label = f"{month:%Y-%m}"
        try:
            result.exports[label] = export_month(runtime, month)
        except (GpucostError, OSError) as error:
            logger.error("export of %s failed: %s", label, error, extra={"month": label})
            result.export_errors[label] = str(error)
    return result
