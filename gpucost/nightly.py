"""The nightly pipeline: collect every enabled source, then run the stages after collection.

A stage is a plain function of a :class:`StageContext` that returns the locations it wrote;
:data:`NIGHTLY_STAGES` lists them in order. Today there is one, ``summarise`` (cost per
project); allocation, findings, exports and the digest plug in as further
:class:`NightlyStage` entries, each naming the stages whose results it ``needs``::

    NightlyStage("allocate", allocate_stage),
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

import polars as pl

from gpucost.errors import ConfigError
from gpucost.manifest import RunManifest, StageRun
from gpucost.pipeline import Runtime, collect, summarise_costs, write_summary
from gpucost.window import Window

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


NIGHTLY_STAGES: tuple[NightlyStage, ...] = (NightlyStage("summarise", summarise_stage),)
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
    manifest_path = f"_runs/{manifest.run_id}.json"
    context = StageContext(runtime, window, manifest)
    result = NightlyResult(manifest, window, context.frames)
    if not stages:
        return result
    manifest.status, manifest.finished_at = "running", None
    runtime.lake.write_json(manifest_path, manifest.to_dict())
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
    runtime.lake.write_json(manifest_path, manifest.to_dict())
    return result
