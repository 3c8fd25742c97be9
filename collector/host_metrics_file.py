"""``host-metrics-file``: hourly CPU use of hosts from a CSV (exports of any monitoring system)."""

from __future__ import annotations

import io
from typing import ClassVar

import polars as pl

from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.local_files import (
    LocalFileSettings,
    LocalFileSource,
    read_all,
)
from gpucost.collector.parsing import blank_to_null, parse_timestamp, rejects_from
from gpucost.core.contracts import HOST_METRICS
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

FRACTION_COLUMNS = ("cpu_util_avg", "cpu_util_max", "cpu_util_p95")
REQUIRED = ("hour", "resource_id")


class HostMetricsFileSettings(LocalFileSettings):
    """Settings of a ``host-metrics-file`` source: ``path`` globs the CSV files."""


@register("host-metrics-file")
class HostMetricsFile(LocalFileSource):
    """Reads hourly CPU utilisation per host from CSV files into ``host_metrics``.

    For hosts no cloud API measures (on-prem, other clouds): export node CPU per hour from the
    monitoring system at hand. Columns: ``hour`` (UTC), ``resource_id``, ``host``, and
    ``cpu_util_avg``, ``cpu_util_max``, ``cpu_util_p95`` as fractions 0..1 (a value above 1
    is rejected: percentages must be divided by 100 first). A ``source`` column, if present, is
    ignored: rows belong to this source.

    ```toml
    [[sources]]
    name = "node-cpu"
    kind = "host-metrics-file"
    path = "exports/node-cpu-*.csv"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("host_metrics",)
    Settings: ClassVar[type[SourceSettings]] = HostMetricsFileSettings

    def __init__(self, settings: HostMetricsFileSettings, context: CollectorContext) -> None:
        self.settings, self.name = settings, settings.name
        self.path = context.resolve(settings.path)

    def collect(self, window: Window) -> Collected:
        """Every file's rows; the shell keeps those of the window."""
        files = self.files()
        rows, rejects = read_all(
            self.name, files, lambda file, data: read_host_metrics(file, data, self.name)
        )
        return Collected({"host_metrics": rows}, rejects, {"files": files})


def read_host_metrics(file: str, data: bytes, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse host-metrics CSV bytes into ``host_metrics`` rows and rejects (pure)."""
    raw = pl.read_csv(io.BytesIO(data), infer_schema=False)
    raw = raw.rename({name: name.strip() for name in raw.columns}).drop("source", strict=False)
    allowed = set(HOST_METRICS.column_names)
    unknown = [name for name in raw.columns if name not in allowed]
    if unknown:
        raise CollectorError(source, f"{file}: columns not in host_metrics: {', '.join(unknown)}")
    missing = [name for name in REQUIRED if name not in raw.columns]
    if missing:
        raise CollectorError(source, f"{file}: host_metrics columns missing: {', '.join(missing)}")
    rows = raw.select([blank_to_null(name) for name in raw.columns]).with_row_index(
        "__row", offset=1
    )
    hour, hour_reason = parse_timestamp("hour")
    conversions = [hour.alias("__v_hour"), hour_reason.alias("__r_hour")]
    reasons = {"hour": "__r_hour"}
    for name in FRACTION_COLUMNS:
        if name not in rows.columns:
            continue
        value = pl.col(name).cast(pl.Float64, strict=False)
        conversions += [
            value.alias(f"__v_{name}"),
            pl.when(pl.col(name).is_not_null() & (value.is_null() | (value < 0) | (value > 1)))
            .then(pl.lit("not a fraction between 0 and 1"))
            .alias(f"__r_{name}"),
        ]
        reasons[name] = f"__r_{name}"
    conversions.append(
        pl.when(pl.col("resource_id").is_null()).then(pl.lit("missing value")).alias("__r_id")
    )
    reasons["resource_id"] = "__r_id"
    checked = rows.with_columns(conversions)
    rejects = rejects_from(checked, reasons, file=file, row_column="__row")
    good = checked.filter(~pl.col("__row").is_in(rejects["row"].implode()))
    metrics = good.select(
        [
            pl.col(f"__v_{name}").alias(name) if f"__v_{name}" in good.columns else pl.col(name)
            for name in raw.columns
        ]
    ).with_columns(pl.lit(source).alias("source"))
    return HOST_METRICS.conform(metrics, source), rejects
