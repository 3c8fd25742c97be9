"""``inventory-file``: hosts declared in a CSV (on-prem racks, clouds without an inventory API)."""

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
from gpucost.collector.parsing import (
    blank_to_null,
    canonical_tags,
    parse_money,
    parse_timestamp,
    rejects_from,
)
from gpucost.core.contracts import INVENTORY
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

INTEGER_COLUMNS = ("gpu_count", "vcpus", "gpu_mem_bytes")
REQUIRED = ("resource_id", "provider")


class InventoryFileSettings(LocalFileSettings):
    """Settings of an ``inventory-file`` source: ``path`` names the hosts CSV (or a glob of
    several, read together)."""


@register("inventory-file")
class InventoryFile(LocalFileSource):
    """Reads hosts from a CSV into ``inventory``, one snapshot row per host and day.

    Columns are the inventory table's (``resource_id`` and ``provider`` required; ``host``,
    ``instance_type``, ``gpu_count``, ``gpu_model``, ``gpu_mem_bytes``, ``vcpus``, ``role``,
    ``tags`` as a JSON object, ``region``, ``hourly_list_price``, ``currency``, ``first_seen``,
    ``last_seen``). A host is listed on each day of the window between its ``first_seen`` and
    ``last_seen`` (open ends mean always). Unknown columns are an error naming them.

    ```toml
    [[sources]]
    name = "racks"
    kind = "inventory-file"
    path = "inventory/onprem-hosts.csv"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("inventory",)
    Settings: ClassVar[type[SourceSettings]] = InventoryFileSettings

    def __init__(self, settings: InventoryFileSettings, context: CollectorContext) -> None:
        self.settings, self.name = settings, settings.name
        self.path = context.resolve(settings.path)

    def collect(self, window: Window) -> Collected:
        """One inventory row per host and day of the window on which the host existed."""
        files = self.files()
        inventory, rejects = read_all(
            self.name, files, lambda file, data: read_inventory(file, data, self.name, window)
        )
        return Collected({"inventory": inventory}, rejects, {"files": files})


def read_inventory(
    file: str, data: bytes, source: str, window: Window
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse inventory CSV bytes into snapshot rows for ``window`` and rejects (pure)."""
    raw = pl.read_csv(io.BytesIO(data), infer_schema=False)
    raw = raw.rename({name: name.strip() for name in raw.columns})
    allowed = set(INVENTORY.column_names) - {"day", "source"}
    unknown = [name for name in raw.columns if name not in allowed]
    if unknown:
        raise CollectorError(
            source, f"{file}: columns not in the inventory table: {', '.join(unknown)}"
        )
    missing = [name for name in REQUIRED if name not in raw.columns]
    if missing:
        raise CollectorError(source, f"{file}: inventory columns missing: {', '.join(missing)}")
    rows = raw.select([blank_to_null(name) for name in raw.columns]).with_row_index(
        "__row", offset=1
    )
    conversions: list[pl.Expr] = []
    reasons: dict[str, str] = {}
    for name in rows.columns:
        value: pl.Expr
        reason: pl.Expr
        if name in INTEGER_COLUMNS:
            value = pl.col(name).cast(INVENTORY.schema[name], strict=False)
            reason = (
                pl.when(pl.col(name).is_not_null() & value.is_null())
                .then(pl.lit("not an integer"))
                .otherwise(None)
            )
        elif name == "hourly_list_price":
            value, reason = parse_money(name)
        elif name in ("first_seen", "last_seen"):
            value, reason = parse_timestamp(name)
        elif name in REQUIRED:
            value = pl.col(name)
            reason = pl.when(value.is_null()).then(pl.lit("missing value")).otherwise(None)
        else:
            continue
        conversions += [value.alias(f"__v_{name}"), reason.alias(f"__r_{name}")]
        reasons[name] = f"__r_{name}"
    checked = rows.with_columns(conversions)
    if "tags" in checked.columns:
        tags, tag_reasons = canonical_tags(checked["tags"])
        checked = checked.with_columns(tags.alias("__v_tags"), tag_reasons.alias("__r_tags"))
        reasons["tags"] = "__r_tags"
    rejects = rejects_from(checked, reasons, file=file, row_column="__row")
    good = checked.filter(~pl.col("__row").is_in(rejects["row"].implode()))
    hosts = good.select(
        [
            pl.col(f"__v_{name}").alias(name) if f"__v_{name}" in good.columns else pl.col(name)
            for name in raw.columns
        ]
    )
    days = pl.DataFrame(
        {"day": pl.date_range(window.start, window.end, "1d", closed="left", eager=True)}
    )
    snapshot = hosts.join(days, how="cross")
    if "first_seen" in snapshot.columns:
        snapshot = snapshot.filter(
            pl.col("first_seen").is_null() | (pl.col("first_seen").dt.date() <= pl.col("day"))
        )
    if "last_seen" in snapshot.columns:
        snapshot = snapshot.filter(
            pl.col("last_seen").is_null() | (pl.col("last_seen").dt.date() >= pl.col("day"))
        )
    snapshot = snapshot.with_columns(pl.lit(source).alias("source"))
    return INVENTORY.conform(snapshot, source), rejects
