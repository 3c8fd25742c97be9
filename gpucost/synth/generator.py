""":func:`generate`: build the fleet, simulate it, bill it and write every file and the truth."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final, Literal

from gpucost.synth.billing import Billing, build_billing
from gpucost.synth.fleet import MIN_GPUS, Fleet, build_fleet, make_projects
from gpucost.synth.roster import RosterRow, draw_roster, write_roster
from gpucost.synth.scenarios import write_scenarios
from gpucost.synth.simulate import Simulation, simulate
from gpucost.synth.truth import truth
from gpucost.synth.write_dcgm import write_dcgm
from gpucost.synth.write_focus import write_focus
from gpucost.synth.write_gpu_usage import write_gpu_usage
from gpucost.synth.write_inventory import write_host_metrics, write_inventory

AUTO_DCGM_MAX_GPUS: Final = 64
"""``usage_format="auto"`` writes dcgm-exporter text up to this many GPUs, Parquet above."""

UsageFormat = Literal["auto", "dcgm", "parquet"]


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote and the headline numbers of the fleet."""

    out_dir: Path
    billing_csv: Path
    inventory_csv: Path
    host_metrics_csv: Path
    roster_csv: Path
    truth_json: Path
    usage_format: Literal["dcgm", "parquet"]
    usage_path: Path
    """``gpu_usage.parquet`` or the ``dcgm/`` folder."""
    scenarios_dir: Path
    """``scenarios/``: hosts with minute-level truth (:mod:`gpucost.synth.scenarios`)."""
    files: tuple[Path, ...] = field(repr=False)
    """Every file written, sorted (dcgm files included)."""
    hosts: int
    gpu_hosts: int
    gpus: int
    projects: int
    people: int
    billing_rows: int
    usage_rows: int
    """Hourly GPU rows (GPU, MIG slice or time-sliced pod x hour), whatever the format."""
    dcgm_files: int
    billed_cost_total: Decimal
    effective_cost_total: Decimal
    anomalies: int


@dataclass(frozen=True)
class _Paths:
    """Where each output goes under ``out_dir``."""

    out_dir: Path
    billing_csv: Path
    inventory_csv: Path
    host_metrics_csv: Path
    roster_csv: Path
    truth_json: Path
    usage_parquet: Path
    dcgm_dir: Path
    scenarios_dir: Path

    @classmethod
    def under(cls, out_dir: Path) -> _Paths:
        return cls(
            out_dir=out_dir,
            billing_csv=out_dir / "billing" / "synth-focus.csv",
            inventory_csv=out_dir / "inventory.csv",
            host_metrics_csv=out_dir / "host_metrics.csv",
            roster_csv=out_dir / "roster.csv",
            truth_json=out_dir / "truth.json",
            usage_parquet=out_dir / "gpu_usage.parquet",
            dcgm_dir=out_dir / "dcgm",
            scenarios_dir=out_dir / "scenarios",
        )

    def clear(self) -> None:
        """Remove what an earlier run wrote here (only synth's own paths)."""
        for folder in (self.dcgm_dir, self.scenarios_dir):
            if folder.is_dir():
                shutil.rmtree(folder)
        for path in (
            self.billing_csv,
            self.inventory_csv,
            self.host_metrics_csv,
            self.roster_csv,
            self.truth_json,
            self.usage_parquet,
        ):
            path.unlink(missing_ok=True)
        self.billing_csv.parent.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class _World:
    """The fleet, its activity, its bill and its people: everything the files are written from."""

    fleet: Fleet
    simulation: Simulation
    billing: Billing
    roster: list[RosterRow]
    window_start: datetime
    hours: int
    usage_format: Literal["dcgm", "parquet"]


def _random(seed: int, stream: str) -> random.Random:
    """An independent, reproducible stream per purpose (string seeds hash with SHA-512)."""
    return random.Random(f"gpucost-synth:{seed}:{stream}")


def _resolve_usage_format(
    gpus: int, days: int, projects: int, seed: int, usage_format: UsageFormat
) -> Literal["dcgm", "parquet"]:
    """Check the arguments; the usage format ``"auto"`` stands for at this size."""
    if gpus < MIN_GPUS:
        raise ValueError(f"gpus must be at least {MIN_GPUS} (one of each planted scenario)")
    if days < 1:
        raise ValueError("days must be at least 1")
    if projects < 2:
        raise ValueError("projects must be at least 2 (shared GPUs need two projects)")
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    if usage_format not in ("auto", "dcgm", "parquet"):
        raise ValueError(f"usage_format must be auto, dcgm or parquet, not {usage_format!r}")
    if usage_format == "auto":
        return "dcgm" if gpus <= AUTO_DCGM_MAX_GPUS else "parquet"
    return usage_format


def generate(
    out_dir: Path,
    *,
    gpus: int,
    days: int,
    projects: int,
    seed: int,
    start: date = date(2024, 9, 24),
    usage_format: UsageFormat = "auto",
) -> SynthSummary:
    """Write a synthetic fleet of about ``gpus`` GPUs over ``days`` days under ``out_dir``.

    Writes ``billing/synth-focus.csv`` (FOCUS 1.0), ``inventory.csv``, ``host_metrics.csv``,
    ``roster.csv``, ``truth.json`` and GPU usage: dcgm-exporter text files
    ``dcgm/{host}/{YYYY-MM-DDTHH}.prom`` (one per host and hour, 12 timestamped scrapes) when
    ``usage_format`` is ``"dcgm"`` or ``"auto"`` with ``gpus <= 64``, else
    ``gpu_usage.parquet`` in the ``gpu_usage`` contract. The fleet has exactly ``gpus`` GPUs.
    ``scenarios/`` holds a few more hosts with minute-level truth, apart from the fleet
    (:mod:`gpucost.synth.scenarios`).
    Outputs of an earlier run in the same folder are replaced. Same arguments, same bytes.
    """
    resolved = _resolve_usage_format(gpus, days, projects, seed, usage_format)
    hours = days * 24
    window_start = datetime(start.year, start.month, start.day, tzinfo=UTC)
    project_list = make_projects(projects)
    fleet = build_fleet(gpus, project_list, hours, _random(seed, "fleet"))
    world = _World(
        fleet=fleet,
        simulation=simulate(fleet, window_start, hours, seed, keep_samples=resolved == "dcgm"),
        billing=build_billing(fleet, window_start, hours, gpus, _random(seed, "billing")),
        roster=draw_roster(project_list, window_start.date(), days, _random(seed, "roster")),
        window_start=window_start,
        hours=hours,
        usage_format=resolved,
    )
    paths = _Paths.under(Path(out_dir))
    paths.out_dir.mkdir(parents=True, exist_ok=True)
    paths.clear()
    billing_rows, usage_files = _write_files(paths, world, seed)
    usage_files += write_scenarios(
        paths.scenarios_dir, project_list, window_start, _random(seed, "scenarios")
    )
    arguments = {
        "gpus": gpus,
        "days": days,
        "projects": projects,
        "seed": seed,
        "start": start.isoformat(),
        "usage_format": resolved,
    }
    document = truth(
        fleet, world.simulation, world.billing, world.roster, window_start, hours, arguments
    )
    paths.truth_json.write_text(
        json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return _summary(paths, world, billing_rows, usage_files)


def _write_files(paths: _Paths, world: _World, seed: int) -> tuple[int, list[Path]]:
    """Every file but the truth; the FOCUS file's rows and the dcgm files written."""
    fleet, window_start, hours = world.fleet, world.window_start, world.hours
    billing = world.billing
    billing_rows = write_focus(
        paths.billing_csv, billing.segments, billing.period_sets, window_start
    )
    write_inventory(paths.inventory_csv, fleet, window_start, hours)
    write_host_metrics(paths.host_metrics_csv, fleet, window_start, hours, seed)
    write_roster(paths.roster_csv, world.roster)
    if world.usage_format == "dcgm":
        return billing_rows, write_dcgm(
            paths.dcgm_dir, fleet, world.simulation, window_start, hours
        )
    write_gpu_usage(paths.usage_parquet, fleet, world.simulation, window_start, hours)
    return billing_rows, []


def _summary(
    paths: _Paths, world: _World, billing_rows: int, usage_files: list[Path]
) -> SynthSummary:
    fleet, billing, dcgm = world.fleet, world.billing, world.usage_format == "dcgm"
    files = [
        paths.billing_csv,
        paths.inventory_csv,
        paths.host_metrics_csv,
        paths.roster_csv,
        paths.truth_json,
        *usage_files,
    ]
    if not dcgm:
        files.append(paths.usage_parquet)
    return SynthSummary(
        out_dir=paths.out_dir,
        billing_csv=paths.billing_csv,
        inventory_csv=paths.inventory_csv,
        host_metrics_csv=paths.host_metrics_csv,
        roster_csv=paths.roster_csv,
        truth_json=paths.truth_json,
        usage_format=world.usage_format,
        usage_path=paths.dcgm_dir if dcgm else paths.usage_parquet,
        scenarios_dir=paths.scenarios_dir,
        files=tuple(sorted(files)),
        hosts=len(fleet.hosts),
        gpu_hosts=sum(1 for host in fleet.hosts if host.itype.gpu_count),
        gpus=fleet.gpu_count,
        projects=len(fleet.projects),
        people=len({row.person_id for row in world.roster}),
        billing_rows=billing_rows,
        usage_rows=len(fleet.units) * world.hours,
        dcgm_files=sum(1 for path in usage_files if path.is_relative_to(paths.dcgm_dir)),
        billed_cost_total=billing.billed_total,
        effective_cost_total=billing.effective_total,
        anomalies=len(fleet.anomalies),
    )
