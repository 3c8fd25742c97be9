"""A ``gpucost synth`` fleet read the way the night reads it: through the collectors' readers.

Shared by the allocator's and the reports' tests; each subclasses :class:`SynthFleet` with the
helpers it needs and builds it with :meth:`SynthFleet.generate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Self

import polars as pl

from gpucost.collector.focus_files import read_focus_file
from gpucost.collector.inventory_file import read_inventory
from gpucost.collector.roster import read_roster
from gpucost.core.contracts import HOST_METRICS
from gpucost.core.window import Window
from gpucost.synth import SynthSummary, generate

INGESTED_AT = datetime(2024, 10, 2, tzinfo=UTC)


@dataclass(frozen=True)
class SynthFleet:
    """A synth fleet's tables for its whole window, and its truth.json."""

    summary: SynthSummary
    truth: dict[str, Any]
    window: Window
    billing: pl.DataFrame
    usage: pl.DataFrame
    inventory: pl.DataFrame
    headcount: pl.DataFrame
    host_metrics: pl.DataFrame

    @classmethod
    def generate(
        cls,
        folder: Path,
        *,
        seed: int,
        days: int = 2,
        gpus: int = 16,
        start: date = date(2024, 9, 24),
    ) -> Self:
        """Generate a fleet (Parquet usage) under ``folder`` and read every file back; a reader
        that rejects a row fails the test."""
        summary = generate(
            folder,
            gpus=gpus,
            days=days,
            projects=4,
            seed=seed,
            start=start,
            usage_format="parquet",
        )
        truth: dict[str, Any] = json.loads(summary.truth_json.read_text())
        window = Window(
            date.fromisoformat(truth["window"]["start"][:10]),
            date.fromisoformat(truth["window"]["end"][:10]),
        )
        billing = read_focus_file(
            str(summary.billing_csv), summary.billing_csv.read_bytes(), "synth", INGESTED_AT
        )
        assert billing.rejects.height == 0
        inventory, rejects = read_inventory(
            str(summary.inventory_csv), summary.inventory_csv.read_bytes(), "inventory", window
        )
        assert rejects.height == 0
        headcount, rejects = read_roster(
            str(summary.roster_csv), summary.roster_csv.read_bytes(), "roster", window
        )
        assert rejects.height == 0
        host_metrics = HOST_METRICS.conform(
            pl.read_csv(summary.host_metrics_csv).with_columns(
                pl.col("hour").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
            ),
            "synth",
        )
        return cls(
            summary=summary,
            truth=truth,
            window=window,
            billing=billing.frame,
            usage=pl.read_parquet(summary.usage_path),
            inventory=inventory,
            headcount=headcount,
            host_metrics=host_metrics,
        )
