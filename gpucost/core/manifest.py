"""The run manifest: what a run read, wrote, skipped and failed, as one JSON document.

Written to ``{data_dir}/_runs/{run_id}.json`` when the run starts (status ``running``) and again
when it ends, so a run that died is visible as one that never finished.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

SourceStatus = Literal["ok", "empty", "failed", "disabled"]
RunStatus = Literal["running", "complete", "incomplete", "failed"]


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, unique run id: UTC time plus 6 random hex digits."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


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
    """Everything a run did; serialised with :meth:`to_dict`."""

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

    @property
    def gaps(self) -> list[SourceRun]:
        """Sources that failed or returned nothing: the run is not complete without them."""
        return [source for source in self.sources if source.status in ("failed", "empty")]

    def finish(self, now: datetime | None = None) -> None:
        """Set the end time and the overall status from the sources' and stages' statuses."""
        self.finished_at = (now or datetime.now(UTC)).isoformat()
        if any(stage.status == "failed" for stage in self.stages):
            self.status = "failed"
        elif self.gaps:
            self.status = "incomplete"
        else:
            self.status = "complete"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)
