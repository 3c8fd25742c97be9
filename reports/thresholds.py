"""The findings' thresholds: one typed model, the config's ``[reports] thresholds`` table as is.

```toml
[reports]
thresholds = { idle_min_hours = 12, severity_high = 500, model_server_roles = ["api"] }
```

``gpucost.config`` validates that table with :class:`FindingThresholds` and the findings read the
validated object: an unknown key or a value of the wrong type is refused, naming the key
(``reports.thresholds.idle_hours_min: unknown key``). Numbers are checked strictly (``12`` is an
hour count, ``"12"`` or ``true`` is not); money thresholds are Decimal (TOML ``500`` or ``"500"``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from gpucost.reports.catalog import GIB, MIB

Fraction = Annotated[float, Field(ge=0, le=1, strict=True)]
"""A utilisation or a share, 0..1."""
Hours = Annotated[int, Field(ge=1, strict=True)]
"""A number of hours, at least one."""
Bytes = Annotated[int, Field(ge=0, strict=True)]
"""A size in bytes."""
Share = Annotated[float, Field(ge=0, strict=True)]
"""A share that may pass 1 (a headroom of 150 %)."""
Amount = Annotated[Decimal, Field(ge=0)]
"""An amount in the finding's currency (from a TOML integer, float or string, kept exact)."""


class FindingThresholds(BaseModel):
    """Every number and pattern the rules use; the defaults are those of ``docs/reports.md``.

    Utilisations are fractions 0..1 (``gpu_usage.util_avg``, ``host_metrics.cpu_util_p95``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_util: Fraction = 0.05
    """A GPU-hour is idle below this mean utilisation (5 %)..."""
    idle_memory_bytes: Bytes = GIB
    """...and below this much memory used (1 GiB: a CUDA context alone takes a few hundred MiB,
    a loaded model more)."""
    idle_min_hours: Hours = 24
    """``idle_gpu_server`` needs this many consecutive idle hours in the window."""
    cpu_busy_p95: Fraction = 0.70
    """An hour's CPU is busy when its p95 utilisation is above this."""
    cpu_busy_min_fraction: Fraction = 0.5
    """``cpu_misplaced_model_server`` needs busy CPU in at least this share of observed hours
    (the CPU *stays* saturated; a burst does not count)."""
    cpu_min_hours: Hours = 12
    """Fewer hours of CPU metrics than this are too few to judge a CPU-only model server."""
    on_cpu_gpu_util: Fraction = 0.01
    """``model_on_cpu_in_gpu_host``: the GPUs show ~0 % (under 1 %)..."""
    on_cpu_gpu_memory_bytes: Bytes = 256 * MIB
    """...and ~0 memory (under 256 MiB: no model weights on the card)..."""
    on_cpu_min_hours: Hours = 12
    """...while the CPU is busy, for at least this many hours of the window."""
    oversized_memory_fraction: Fraction = 0.5
    """``oversized_gpu``: peak memory under this share of the card's..."""
    oversized_util: Fraction = 0.30
    """...and mean utilisation under this (30 %)..."""
    oversized_min_hours: Hours = 24
    """...over at least this many observed hours."""
    oversized_headroom: Share = 0.20
    """A replacement must hold the peak memory plus this share (20 %)."""
    misplaced_min_gpu_memory_bytes: Bytes = 16 * GIB
    """The GPU recommended for a CPU-bound model server has at least this much memory."""
    severity_high: Amount = Decimal(1000)
    """``est_monthly_waste`` from this amount (in the finding's currency) is ``high``..."""
    severity_medium: Amount = Decimal(100)
    """...from this amount ``medium``, below it ``low``; unknown money is ``medium``."""
    model_server_roles: tuple[str, ...] = ("model-server",)
    """Inventory ``role`` values that make a host a model server."""
    model_server_workloads: tuple[str, ...] = (
        "*predictor*",
        "*inference*",
        "*serving*",
        "*server*",
        "*triton*",
        "*vllm*",
        "*tgi*",
    )
    """Workload (``gpu_usage.workload``) globs that make a GPU host a model server too."""
    owner_tag_keys: tuple[str, ...] = ("project", "owner")
    """Tag keys naming a host's owner, first found wins."""
