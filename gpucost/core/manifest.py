"""The run manifest: what a run read, wrote, skipped and failed, as one JSON document.

Written to ``{data_dir}/_runs/{run_id}.json`` when the run starts (status ``running``) and again
when it ends, so a run that died is visible as one that never finished.

:class:`RunManifest` is the one shape of that document: :meth:`RunManifest.to_dict` writes it,
:meth:`RunManifest.from_dict` reads it back (``from_dict(d).to_dict() == d`` for every manifest
written), and the queries over the lake's runs (:func:`read_manifests`, :func:`latest_night`)
live beside it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from gpucost.core.errors import GpucostError
from gpucost.core.lake import Lake
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

SourceStatus = Literal["ok", "empty", "failed", "disabled"]
RunStatus = Literal["running", "complete", "incomplete", "failed"]

RUNS_FOLDER = "_runs/"
"""Where the manifests live in the lake, one ``{run_id}.json`` per run."""

NIGHT_COMMANDS = frozenset({"nightly", "backfill"})
"""Commands whose runs are nights: collection for every source, then every stage."""


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, unique run id: UTC time plus 6 random hex digits."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def run_path(run_id: str) -> str:
    """The manifest's path relative to the lake's root."""
    return f"{RUNS_FOLDER}{run_id}.json"


@dataclass
class SourceRun:
    """One source's part of a run."""

    name: str
    kind: str
    status: SourceStatus = "ok"
    rows: dict[str, int] = field(default_factory=dict)
    rejected_rows: int = 0
    quarantine: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0
    error: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def problem(self) -> str:
        """Why the source is a gap in its run (see :attr:`RunManifest.gaps`)."""
        return self.error or "returned no rows for the window"


@dataclass
class StageRun:
    """A pipeline stage after collection (allocate, report, export...)."""

    name: str
    status: Literal["ok", "failed", "skipped"] = "ok"
    duration_s: float = 0.0
    error: str | None = None
    outputs: list[str] = field(default_factory=list)


@dataclass
class RunManifest:
    """Everything a run did; serialised with :meth:`to_dict`, read with :meth:`from_dict`."""

    run_id: str
    command: str
    window_start: str
    window_end_exclusive: str
    config_path: str | None
    started_at: str
    finished_at: str | None = None
    status: RunStatus = "running"
    sources: list[SourceRun] = field(default_factory=list)
    stages: list[StageRun] = field(default_factory=list)

    @classmethod
    def from_dict(cls, document: Any) -> RunManifest:
        """The manifest back from its JSON form; ValueError when it is not one."""
        if not isinstance(document, Mapping):
            raise ValueError(f"a run manifest is a JSON object, not {type(document).__name__}")
        try:
            return cls(
                run_id=document["run_id"],
                command=document["command"],
                window_start=document["window_start"],
                window_end_exclusive=document["window_end_exclusive"],
                config_path=document.get("config_path"),
                started_at=document["started_at"],
                finished_at=document.get("finished_at"),
                status=document.get("status", "running"),
                sources=[SourceRun(**source) for source in document.get("sources", [])],
                stages=[StageRun(**stage) for stage in document.get("stages", [])],
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a run manifest: {type(error).__name__}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @property
    def path(self) -> str:
        """Where the manifest lives, relative to the lake's root."""
        return run_path(self.run_id)

    @property
    def window(self) -> Window:
        """The days the run covered; ValueError when the recorded dates are not dates."""
        return Window(
            date.fromisoformat(self.window_start), date.fromisoformat(self.window_end_exclusive)
        )

    @property
    def is_night(self) -> bool:
        """Whether the run was a night (``nightly`` or ``backfill``), not one source's collect."""
        return self.command in NIGHT_COMMANDS

    @property
    def gaps(self) -> list[SourceRun]:
        """Sources that failed or returned nothing: the run is not complete without them."""
        return [source for source in self.sources if source.status in ("failed", "empty")]

    def completed_stages(self) -> set[str]:
        """Names of the stages that ran ``ok``."""
        return {stage.name for stage in self.stages if stage.status == "ok"}

    def finish(self, now: datetime | None = None) -> None:
        """Set the end time and the overall status from the sources' and stages' statuses."""
        self.finished_at = (now or datetime.now(UTC)).isoformat()
        if any(stage.status == "failed" for stage in self.stages):
            self.status = "failed"
        elif self.gaps:
            self.status = "incomplete"
        else:
            self.status = "complete"


def write_manifest(lake: Lake, manifest: RunManifest) -> str:
    """Write (or rewrite) the manifest atomically under ``_runs/``; returns its URL."""
    return lake.write_json(manifest.path, manifest.to_dict())


def run_ids(lake: Lake) -> list[str]:
    """Ids of the runs the lake records, oldest first (run ids sort by time, to the second)."""
    return [
        relative.removeprefix(RUNS_FOLDER).removesuffix(".json")
        for relative in lake.storage.list(RUNS_FOLDER)
        if relative.endswith(".json")
    ]


def read_manifest(lake: Lake, run_id: str) -> RunManifest:
    """One run's manifest; GpucostError when it cannot be read, ValueError when it is not one."""
    return RunManifest.from_dict(lake.read_json(run_path(run_id)))


def read_manifests(lake: Lake, ids: Iterable[str] | None = None) -> Iterator[RunManifest]:
    """The manifests of ``ids`` (default: every run, oldest first), skipping unreadable ones.

    A manifest being replaced right now, or one a crash or a person damaged, must not stop the
    queries over the others: it is logged and passed over.
    """
    for run_id in run_ids(lake) if ids is None else ids:
        try:
            yield read_manifest(lake, run_id)
        except (GpucostError, ValueError) as error:
            logger.warning("run manifest %s is unreadable, passed over: %s", run_id, error)


def latest_night(runs: Iterable[RunManifest], window_end: date) -> RunManifest | None:
    """The latest-started finished night (nightly or backfill) whose window ends at ``window_end``.

    The digest's completeness line must speak of the night it reports, not of whatever ran
    last (a ``collect`` of one source, another day's night, a run still going). Of runs that
    started in the same instant, the first in ``runs`` wins.
    """
    best: RunManifest | None = None
    for run in runs:
        if (
            run.is_night
            and run.window_end_exclusive == window_end.isoformat()
            and run.status != "running"
            and (best is None or str(run.started_at) > str(best.started_at))
        ):
            best = run
    return best
