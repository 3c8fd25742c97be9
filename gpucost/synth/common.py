"""Units and names every part of synth shares."""

from __future__ import annotations

from datetime import datetime
from typing import Final

SOURCE: Final = "synth"
"""The ``source`` column of the rows synth writes in a contract (gpu_usage, host_metrics)."""
SECONDS_PER_HOUR: Final = 3600
MIB: Final = 1 << 20


def iso_utc(moment: datetime) -> str:
    """``2024-09-24T00:00:00Z``: the timestamp form of the CSV files and ``truth.json``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
