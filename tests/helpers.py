"""Test helpers the fixtures in ``conftest.py`` are made of: config files written from data,
run manifests read back. Import the types from here; take the fixtures as fixtures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

FOCUS_SAMPLE = Path(__file__).parent / "data" / "focus" / "focus_1.0_sample_1000.csv"
"""The FOCUS 1.0 sample bill: 1000 charges in September 2024."""
DATA_PLATFORM = {
    "name": "data-platform",
    "cost_center": "CC-200",
    "match": {"tags": {"business_unit": "*Data*"}},
}
"""A ``[[projects]]`` rule that matches part of the sample bill."""
ROSTER = (
    "person_id,name,project,fraction,start,end,cost_center\nP1,Ada Example,p,1.0,2024-01-01,,CC\n"
)
"""A one-person roster."""


def toml_value(value: object) -> str:
    """``value`` as TOML: a string or path, number, boolean, list or (inline) table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a TOML basic string escapes as JSON does
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items())
        return f"{{ {pairs} }}" if pairs else "{}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_lines(values: Mapping[str, object]) -> list[str]:
    """``key = value`` lines; None leaves the key out (the setting's default applies)."""
    return [f"{key} = {toml_value(value)}" for key, value in values.items() if value is not None]


class ConfigWriter:
    """Writes gpucost TOML files into one folder; ``[store]`` points into it by default."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(
        self,
        *,
        sources: Sequence[Mapping[str, object]] = (),
        projects: Sequence[Mapping[str, object]] = (),
        extra: str = "",
        name: str = "gpucost.toml",
        **tables: Mapping[str, object],
    ) -> Path:
        """Write ``[store]`` (``lake`` and ``out`` here unless given), the other ``tables`` in
        order, then ``[[sources]]`` and ``[[projects]]``, then ``extra`` as it is."""
        store = {"data_dir": self.root / "lake", "out_dir": self.root / "out"}
        lines: list[str] = []
        for table, values in {"store": {**store, **tables.pop("store", {})}, **tables}.items():
            lines += [f"[{table}]", *toml_lines(values), ""]
        for array, entries in (("sources", sources), ("projects", projects)):
            for entry in entries:
                lines += [f"[[{array}]]", *toml_lines(entry), ""]
        path = self.root / name
        path.write_text("\n".join(lines) + extra)
        return path

    def sample_night(
        self,
        *,
        lookback_days: int,
        focus_path: Path = FOCUS_SAMPLE,
        focus_schedule: str | None = None,
        roster_schedule: str | None = None,
        sources: Sequence[Mapping[str, object]] = (),
        **tables: Mapping[str, object],
    ) -> Path:
        """The sample bill (``finance-focus``) and a roster (``roster``) as sources, then
        ``sources``; the :data:`DATA_PLATFORM` rule; a night pinned to 2024-10-01."""
        return self(
            nightly={"as_of": "2024-10-01", "lookback_days": lookback_days},
            **tables,
            sources=[
                {
                    "name": "finance-focus",
                    "kind": "focus-files",
                    "path": focus_path,
                    "schedule": focus_schedule,
                },
                {
                    "name": "roster",
                    "kind": "roster",
                    "path": self.roster(),
                    "schedule": roster_schedule,
                },
                *sources,
            ],
            projects=[DATA_PLATFORM],
        )

    def roster(self, text: str = ROSTER) -> Path:
        """A roster CSV in the folder (default: :data:`ROSTER`)."""
        path = self.root / "roster.csv"
        path.write_text(text)
        return path


def read_manifests(lake: Path) -> list[dict[str, Any]]:
    """The run manifests under ``lake/_runs``, as JSON, in the order the runs started."""
    documents = []
    for path in (lake / "_runs").glob("*.json"):
        try:
            documents.append(json.loads(path.read_text()))
        except json.JSONDecodeError:  # a run rewriting it now: the atomic rename makes it rare
            continue
    # Run ids sort by the second only; the start time has microseconds.
    return sorted(documents, key=lambda document: document["started_at"])


Manifests = Callable[[], list[dict[str, Any]]]
"""What the ``manifests`` fixture gives: a reader of the test lake's run manifests."""
