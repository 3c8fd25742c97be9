"""``focus-files``: FOCUS 1.0-1.3 billing files (CSV, CSV.gz or Parquet) from any provider."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import Field

from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.local_files import matching_files, probe_files, read_file
from gpucost.collector.parsing import (
    blank_to_null,
    canonical_enum,
    canonical_tags,
    parse_money,
    parse_timestamp,
    rejects_from,
)
from gpucost.core.contracts import (
    BILLING,
)
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

# FOCUS 1.0 section 3 "Columns": the allowed values of the enumerated columns gpucost relies on.
FOCUS_ENUMS: dict[str, tuple[str, ...]] = {
    "ChargeCategory": ("Usage", "Purchase", "Tax", "Credit", "Adjustment"),
    "ChargeFrequency": ("One-Time", "Recurring", "Usage-Based"),
    "ChargeClass": ("Correction",),
    "PricingCategory": ("Standard", "Dynamic", "Committed", "Other"),
    "CommitmentDiscountStatus": ("Used", "Unused"),
    "CommitmentDiscountCategory": ("Spend", "Usage"),
    "CapacityReservationStatus": ("Used", "Unused"),
}
STRICT_ENUMS = ("ChargeCategory",)
"""Enumerations whose unknown values are rejected: the allocator decides by them."""

MANDATORY = (
    "BilledCost",
    "EffectiveCost",
    "BillingCurrency",
    "ChargeCategory",
    "ChargePeriodStart",
    "ChargePeriodEnd",
)
"""Columns without which a FOCUS file cannot be allocated (all mandatory in FOCUS 1.0)."""
NOT_NULL_VALUES = ("BilledCost", "BillingCurrency", "ChargePeriodStart", "ChargePeriodEnd")
TAG_COLUMNS = ("Tags", "AllocatedTags")
"""Key-Value Format columns read as tag sets (FOCUS 1.3 adds AllocatedTags)."""
PROVIDER_COLUMNS = ("ProviderName", "ServiceProviderName")
"""FOCUS 1.3 deprecates ProviderName for ServiceProviderName; a file must carry one of them."""


class FocusFilesSettings(SourceSettings):
    """Settings of a ``focus-files`` source."""

    path: str = Field(
        description="Local glob (relative to the working directory; ** matches any depth) "
        "or s3://bucket/prefix/glob."
    )
    format: Literal["auto", "csv", "parquet"] = Field(
        default="auto", description="File format; 'auto' decides by extension."
    )


@dataclass(frozen=True)
class FileReadResult:
    """Rows and rejects of one file."""

    frame: pl.DataFrame
    rejects: pl.DataFrame
    dropped_columns: list[str] = field(default_factory=list)


@register("focus-files")
class FocusFiles:
    """Reads FOCUS 1.0-1.3 billing exports (CSV, gzip CSV, Parquet) into the billing table.

    Tolerates what real exports contain: ``NULL`` and empty strings as null, timestamps without
    a zone (UTC) or with ``T``/``Z``, Tags as JSON with stray spaces in keys, enum spelling
    variants (``Usage-based``), negative costs (credits). Money is parsed to Decimal exactly.
    Rows that cannot be read are returned as rejects naming file, row and field.

    ```toml
    [[sources]]
    name = "finance-focus"
    kind = "focus-files"
    path = "exports/focus/*.csv"     # or "s3://billing-bucket/focus/2024-09/*.parquet"
    format = "auto"                  # auto | csv | parquet
    schedule = "0 3 * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("billing",)
    Settings: ClassVar[type[SourceSettings]] = FocusFilesSettings

    def __init__(self, settings: FocusFilesSettings, context: CollectorContext) -> None:
        self.settings, self.context, self.name = settings, context, settings.name
        self.path = context.resolve(settings.path)
        """The glob or URL, local paths made absolute against the working directory."""
        self._s3_client: Any | None = None

    def probe(self) -> str | None:
        """What would fail the source now: no file matches, or the bucket cannot be listed."""
        if not self.path.startswith("s3://"):
            return probe_files(self.path)
        try:
            found = _list_s3(self._s3(), self.path)
        except Exception as error:  # botocore raises many classes; say what was tried instead.
            return f"cannot list {self.path}: {error}"
        return None if found else f"{self.path} matches no file"

    def collect(self, window: Window) -> Collected:
        """Read every matching file; rows of the window are returned, others are counted."""
        files = self._list_files()
        ingested_at = self.context.clock()
        frames, rejects, dropped = [], [], set()
        for file in files:
            result = read_focus_file(
                file,
                self._read_bytes(file),
                self.name,
                ingested_at,
                file_format=self.settings.format,
            )
            frames.append(result.frame)
            rejects.append(result.rejects)
            dropped.update(result.dropped_columns)
        rows = pl.concat(frames) if frames else BILLING.empty()
        in_window = rows.filter(window.contains(pl.col("ChargePeriodStart").dt.date()))
        notes: dict[str, Any] = {
            "files": files,
            "rows_read": rows.height,
            "rows_outside_window": rows.height - in_window.height,
        }
        if dropped:
            notes["columns_not_kept"] = sorted(dropped)
        return Collected({"billing": in_window}, pl.concat(rejects), notes)

    def _list_files(self) -> list[str]:
        """The files to read, sorted; a CollectorError naming the pattern when none match."""
        if not self.path.startswith("s3://"):
            return matching_files(self.name, self.path)
        files = _list_s3(self._s3(), self.path)
        if not files:
            raise CollectorError(self.name, f"{self.path} matches no file")
        return files

    def _read_bytes(self, file: str) -> bytes:
        if not file.startswith("s3://"):
            return read_file(self.name, file)
        bucket, _, key = file.removeprefix("s3://").partition("/")
        try:
            body: bytes = self._s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as error:  # botocore raises many classes; name the file instead.
            raise CollectorError(self.name, f"cannot read {file}: {error}") from error
        return body

    def _s3(self) -> Any:
        if self._s3_client is None:
            self._s3_client = self.context.boto3_session().client(
                "s3", endpoint_url=self.context.storage_options.get("aws_endpoint_url")
            )
        return self._s3_client


def _list_s3(client: Any, url: str) -> list[str]:
    """Objects of an ``s3://bucket/prefix/glob`` URL (a URL without wildcards names one key)."""
    import fnmatch

    bucket, _, pattern = url.removeprefix("s3://").partition("/")
    prefix = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return [f"s3://{bucket}/{key}" for key in sorted(keys) if fnmatch.fnmatchcase(key, pattern)]


def read_focus_file(
    file: str,
    data: bytes,
    source: str,
    ingested_at: datetime,
    *,
    file_format: Literal["auto", "csv", "parquet"] = "auto",
) -> FileReadResult:
    """Parse one FOCUS file's bytes into billing rows and rejects (pure; no I/O)."""
    raw = _read_as_text(file, data, file_format, source)
    stripped = [name.strip() for name in raw.columns]
    # Polars renames a repeated CSV header to NAME_duplicated_N; two spellings of one name
    # (" BilledCost" and "BilledCost") collide once trimmed. Either way the file is ambiguous.
    repeated = sorted(
        {name for name in stripped if stripped.count(name) > 1}
        | {
            name.split("_duplicated_")[0]
            for name in stripped
            if "_duplicated_" in name and name.split("_duplicated_")[0] in stripped
        }
    )
    if repeated:
        raise CollectorError(
            source, f"{file}: columns appear more than once: {', '.join(repeated)}"
        )
    raw = raw.rename(dict(zip(raw.columns, stripped, strict=True)))
    if "ServiceProviderName" not in raw.columns and "ProviderName" in raw.columns:
        raw = raw.with_columns(pl.col("ProviderName").alias("ServiceProviderName"))
    if "ProviderName" not in raw.columns and "ServiceProviderName" in raw.columns:
        raw = raw.with_columns(pl.col("ServiceProviderName").alias("ProviderName"))
    missing = [name for name in MANDATORY if name not in raw.columns]
    if not any(name in raw.columns for name in PROVIDER_COLUMNS):
        missing.append("ProviderName or ServiceProviderName")
    if missing:
        raise CollectorError(
            source, f"{file}: mandatory FOCUS columns missing: {', '.join(missing)}"
        )
    known = set(BILLING.column_names) - {"x_Source", "x_IngestedAt"}
    dropped = sorted(name for name in raw.columns if name not in known)
    raw = raw.select([name for name in raw.columns if name in known])
    raw = raw.with_columns([blank_to_null(name) for name in raw.columns]).with_row_index(
        "__row", offset=1
    )

    conversions: list[pl.Expr] = []
    reason_columns: dict[str, str] = {}
    for name in raw.columns:
        dtype = BILLING.schema.get(name)
        if isinstance(dtype, pl.Decimal):
            value, reason = parse_money(name)
        elif isinstance(dtype, pl.Datetime):
            value, reason = parse_timestamp(name)
        else:
            continue
        conversions += [value.alias(f"__value_{name}"), reason.alias(f"__reason_{name}")]
        reason_columns[name] = f"__reason_{name}"
    for name in NOT_NULL_VALUES:
        conversions.append(
            pl.when(pl.col(name).is_null())
            .then(pl.lit("missing value in a mandatory column"))
            .alias(f"__missing_{name}")
        )
    converted = raw.with_columns(conversions)
    # A mandatory value is bad when it is absent or when it does not parse.
    converted = converted.with_columns(
        pl.coalesce(f"__missing_{name}", reason_columns.get(name, f"__missing_{name}")).alias(
            f"__check_{name}"
        )
        for name in NOT_NULL_VALUES
    )
    reason_columns.update({name: f"__check_{name}" for name in NOT_NULL_VALUES})

    enum_fixes = [
        canonical_enum(name, allowed).alias(name)
        for name, allowed in FOCUS_ENUMS.items()
        if name in converted.columns
    ]
    converted = converted.with_columns(enum_fixes)
    for name in STRICT_ENUMS:
        allowed = list(FOCUS_ENUMS[name])
        converted = converted.with_columns(
            pl.when(pl.col(name).is_not_null() & ~pl.col(name).is_in(allowed))
            .then(pl.lit(f"not a FOCUS {name} (allowed: {', '.join(allowed)})"))
            .alias(f"__enum_{name}")
        )
        reason_columns[f"{name}"] = f"__enum_{name}"

    # FOCUS 1.3 AllocatedTags follow Tags' Key-Value Format; both are kept as canonical JSON.
    for name in TAG_COLUMNS:
        if name in converted.columns:
            tags, tag_reasons = canonical_tags(converted[name])
            converted = converted.with_columns(
                tags.alias(f"__value_{name}"), tag_reasons.alias(f"__reason_{name}")
            )
            reason_columns[name] = f"__reason_{name}"

    rejects = rejects_from(converted, reason_columns, file=file, row_column="__row")
    bad_rows = rejects["row"].unique()
    good = converted.filter(~pl.col("__row").is_in(bad_rows.implode()))
    values = [
        pl.col(f"__value_{name}").alias(name) if f"__value_{name}" in good.columns else pl.col(name)
        for name in raw.columns
        if name != "__row"
    ]
    billing = good.select(values).with_columns(
        pl.lit(source).alias("x_Source"),
        pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("x_IngestedAt"),
    )
    return FileReadResult(BILLING.conform(billing, source), rejects, dropped)


def _read_as_text(file: str, data: bytes, file_format: str, source: str) -> pl.DataFrame:
    """Every column as text, so parsing (and its errors) stays in our hands."""
    kind = file_format
    if kind == "auto":
        kind = "parquet" if file.lower().endswith((".parquet", ".pq")) else "csv"
    if kind == "parquet":
        frame = pl.read_parquet(io.BytesIO(data))
        # Exports that type money as double (AWS CUR 2.0 Parquet does) are read through each
        # double's shortest round-trip decimal: the decimal the exporter wrote, as aws-cur does.
        return frame.with_columns(pl.all().cast(pl.String))
    if data[:2] == b"\x1f\x8b":  # gzip magic number (RFC 1952)
        import gzip

        data = gzip.decompress(data)
    if not data.strip():
        return pl.DataFrame()
    return pl.read_csv(
        io.BytesIO(data),
        infer_schema=False,
        null_values=None,
        encoding="utf8-lossy",
    )
