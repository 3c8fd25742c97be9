"""The people roster: who works on which project, from when to when, and ``roster.csv``.

Only the ``"roster"`` random stream is drawn from here, in a fixed order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl

from gpucost.synth.fleet import FIRST_NAMES, LAST_NAMES, Project


@dataclass(frozen=True)
class RosterRow:
    """A person's share of a project from ``start`` to ``end`` (inclusive; None: still there)."""

    person_id: str
    name: str
    project: Project
    fraction: Decimal
    start: date
    end: date | None


def draw_roster(
    projects: list[Project], window_start: date, days: int, rnd: random.Random
) -> list[RosterRow]:
    """2-6 people per project; some split 0.5/0.5, some join or leave inside the window."""
    rows: list[RosterRow] = []
    used_names: set[str] = set()
    number = 0
    for project in projects:
        for _ in range(rnd.randint(2, 6)):
            number += 1
            name = _unused_name(used_names, rnd)
            person = f"P{number:04d}"
            start = window_start - timedelta(days=rnd.randint(30, 900))
            end: date | None = None
            draw = rnd.random()
            if draw < 0.1 and days > 1:
                start = window_start + timedelta(days=rnd.randrange(1, days))
            elif draw < 0.2 and days > 1:
                end = window_start + timedelta(days=rnd.randrange(0, days - 1))
            if rnd.random() < 0.2:
                other = rnd.choice([p for p in projects if p != project])
                rows.append(RosterRow(person, name, project, Decimal("0.5"), start, end))
                rows.append(RosterRow(person, name, other, Decimal("0.5"), start, end))
            else:
                rows.append(RosterRow(person, name, project, Decimal("1.0"), start, end))
    return sorted(rows, key=lambda r: (r.person_id, r.project.name))


def _unused_name(used_names: set[str], rnd: random.Random) -> str:
    name = f"{rnd.choice(FIRST_NAMES)} {rnd.choice(LAST_NAMES)}"
    while name in used_names:
        name = f"{rnd.choice(FIRST_NAMES)} {rnd.choice(LAST_NAMES)}"
    used_names.add(name)
    return name


def write_roster(path: Path, roster: Sequence[RosterRow]) -> None:
    """``roster.csv``: one row per person and project, with the project's cost centre."""
    frame = pl.DataFrame(
        {
            "person_id": [r.person_id for r in roster],
            "name": [r.name for r in roster],
            "project": [r.project.name for r in roster],
            "fraction": [str(r.fraction) for r in roster],
            "start": [r.start.isoformat() for r in roster],
            "end": pl.Series(
                [r.end.isoformat() if r.end else None for r in roster], dtype=pl.String
            ),
            "cost_center": [r.project.cost_center for r in roster],
        }
    )
    frame.write_csv(path)
