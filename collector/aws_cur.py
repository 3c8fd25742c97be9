"""``aws-cur``: AWS Cost and Usage Reports where AWS delivers them, in S3 (or downloaded).

Reads three formats, told apart by their columns:

* legacy CUR, CSV or gzip CSV with ``category/Column`` headers (``lineItem/UnblendedCost``);
* CUR 2.0 (Data Exports), Parquet or gzip CSV with snake_case columns
  (``line_item_unblended_cost``) and ``resource_tags``/``product`` maps;
* FOCUS 1.x exports from Data Exports, parsed by :func:`.focus_files.read_focus_file`.

**Current files only.** AWS rewrites a billing period's report at least daily until the bill is
final, and may restate it after the month ends (CUR user guide, "Understanding your report
versions"; Data Exports user guide, "Export delivery": up to two weeks after the period ends).
Each delivery writes a manifest listing that period's current files (legacy CUR:
``<report>/<yyyymmdd-yyyymmdd>/<report>-Manifest.json`` with ``reportKeys``; Data Exports:
``<export>/metadata/BILLING_PERIOD=YYYY-MM/<export>-Manifest.json`` with ``dataFiles``). Older
assemblies stay in the bucket when the report keeps versions, so globbing data files would count
a restated month twice: the collector reads, per billing period, the newest manifest's files.

**Whole periods.** A restatement can change any day of its period, so the collector returns every
row of each billing period that overlaps the window and returns the widened window in
``Collected.windows["billing"]`` (also in ``notes["replace_window"]``): the shell then replaces
those whole periods, so every nightly run replaces a restated month whole.

How a line item becomes a FOCUS billing row (which CUR column feeds which FOCUS column) is in
:mod:`gpucost.collector.aws_cur_mapping`; this module finds and reads the files.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import Field

from gpucost.collector.aws_common import (
    AwsClients,
    AwsSourceSettings,
    cur_column_name,
    error_code,
    split_s3_url,
)
from gpucost.collector.aws_cur_mapping import (
    CurReadResult,
    map_values,
    needed_columns,
    read_cur_frame,
)
from gpucost.collector.base import (
    REJECT_SCHEMA,
    Collected,
    CollectorContext,
    SourceSettings,
    register,
)
from gpucost.collector.focus_files import read_focus_file
from gpucost.collector.parsing import (
    tags_to_json,
)
from gpucost.core.contracts import BILLING
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

MANIFEST_SUFFIX = "Manifest.json"
DATA_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".gz", ".zip", ".parquet", ".pq")

FileFormat = Literal["auto", "cur", "focus"]


class AwsCurSettings(AwsSourceSettings):
    """Settings of an ``aws-cur`` source."""

    path: str = Field(
        description=(
            "s3://bucket/prefix of a CUR report or Data Export (its manifests are found below "
            "it), a local folder holding a downloaded copy, or one data file."
        )
    )
    format: FileFormat = Field(
        default="auto", description="auto (by columns) | cur (legacy or 2.0) | focus."
    )
    region: str | None = Field(default=None, description="Region of the bucket.")


@dataclass(frozen=True)
class Delivery:
    """A billing period's current data files, as the newest manifest lists them."""

    name: str
    period: Window | None
    manifest: str | None
    files: tuple[str, ...]


@register("aws-cur")
class AwsCur:
    """Reads AWS Cost and Usage Reports (legacy CUR CSV, CUR 2.0 Parquet, FOCUS exports).

    Finds each billing period's current files from the report's manifests, reads only the
    columns it maps (Parquet lazily, through Polars' object store), parses money exactly
    (``1.81E-8`` included) and keeps resource ids, usage and line item types, instance types,
    tags, reservation and Savings Plans effective cost. A billing period overlapping the window
    is returned whole (restatements rewrite whole months). Rows it cannot read are rejected
    with file, row and field; a file without a required column fails the source, naming both.

    ```toml
    [[sources]]
    name = "aws-cur"
    kind = "aws-cur"
    path = "s3://billing-bucket/cur/gpucost-cur2"   # or a local folder, or one file
    format = "auto"                                 # auto | cur | focus
    region = "us-east-1"                            # the bucket's region
    role_arn = "arn:aws:iam::123456789012:role/gpucost-billing-read"   # optional
    schedule = "0 6 * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("billing",)
    Settings: ClassVar[type[SourceSettings]] = AwsCurSettings

    def __init__(self, settings: AwsCurSettings, context: CollectorContext) -> None:
        self.settings, self.context, self.name = settings, context, settings.name
        self.path = context.resolve(settings.path)
        """The s3:// URL, or the local folder or file made absolute."""
        self.clients = (
            AwsClients.for_source(settings, context) if self.path.startswith("s3://") else None
        )
        self.region = settings.region or context.storage_options.get("aws_region")
        self._s3_client: Any | None = None

    def probe(self) -> str | None:
        """What would fail the source now: a local ``path`` that does not exist (an s3://
        report is not listed: that is what a run does)."""
        if "://" in self.path or Path(self.path).exists():
            return None
        return f"{self.path} does not exist"

    def collect(self, window: Window) -> Collected:
        """Read every billing period overlapping ``window``, whole."""
        if self.path.startswith("s3://") or "://" not in self.path:
            deliveries = self._deliveries()
        else:
            raise CollectorError(self.name, f"{self.path}: only s3:// and local paths are read")
        wanted = [d for d in deliveries if d.period is None or _overlaps(d.period, window)]
        ingested_at = self.context.clock()
        frames: list[pl.DataFrame] = []
        rejects: list[pl.DataFrame] = []
        file_notes: dict[str, Any] = {}
        for delivery in wanted:
            for file in delivery.files:
                result = self._read_file(file, delivery, ingested_at)
                frames.append(result.frame)
                rejects.append(result.rejects)
                file_notes[file] = result.notes
        rows = pl.concat(frames) if frames else BILLING.empty()
        replace = _covering_window(window, wanted, rows)
        notes: dict[str, Any] = {
            "billing_periods": _billing_periods(wanted, rows),
            "manifests": sorted(d.manifest for d in wanted if d.manifest is not None),
            "files": file_notes,
            "rows_read": rows.height,
            "replace_window": {
                "start": replace.start.isoformat(),
                "end_exclusive": replace.end.isoformat(),
            },
        }
        unmapped = _sum_counts(n.get("service_category_unmapped", {}) for n in file_notes.values())
        if unmapped:
            # Rows whose service the FOCUS ServiceCategory tables do not know (left null).
            notes["service_category_unmapped"] = unmapped
        if self.clients is not None:
            notes.update(self.clients.counter.as_notes())
        if replace != window:
            logger.info(
                "source %s: billing periods %s cover %s, wider than the window %s",
                self.name,
                notes["billing_periods"],
                replace,
                window,
            )
        all_rejects = pl.concat(rejects) if rejects else pl.DataFrame(schema=REJECT_SCHEMA)
        return Collected({"billing": rows}, all_rejects, notes, windows={"billing": replace})

    # --- discovery ----------------------------------------------------------------------

    def _deliveries(self) -> list[Delivery]:
        if _is_data_file(self.path):
            return [Delivery(Path(self.path).name, None, None, (self.path,))]
        entries = self._list()
        manifests = [(path, modified) for path, modified in entries if _is_manifest(path)]
        if not manifests:
            data = [path for path, _ in entries if _is_data_file(path)]
            hint = f" ({len(data)} data files without one)" if data else ""
            raise CollectorError(
                self.name,
                f"{self.path}: no *-{MANIFEST_SUFFIX} below it{hint}; point `path` at the "
                "report's prefix (the folder above its yyyymmdd-yyyymmdd or metadata/ folders) "
                "or at one data file",
            )
        newest: dict[tuple[str, date], tuple[tuple[float, int], Delivery]] = {}
        for manifest, modified in manifests:
            delivery = self._read_manifest(manifest)
            assert delivery.period is not None
            # Newest first; of equally new ones the shallowest (the period's top-level manifest
            # rather than an assembly folder's copy).
            rank = (modified, -manifest.count("/"))
            key = (delivery.name, delivery.period.start)
            if key not in newest or rank > newest[key][0]:
                newest[key] = (rank, delivery)
        by_period: dict[date, list[str]] = {}
        for name, start in newest:
            by_period.setdefault(start, []).append(name)
        for start, names in by_period.items():
            if len(names) > 1:
                raise CollectorError(
                    self.name,
                    f"{self.path}: several reports deliver billing period {start} "
                    f"({', '.join(sorted(names))}); point `path` at one of them",
                )
        return [delivery for _, delivery in sorted(newest.values(), key=lambda item: item[1].name)]

    def _list(self) -> list[tuple[str, float]]:
        if self.path.startswith("s3://"):
            bucket, prefix = split_s3_url(self.path)
            assert self.clients is not None
            entries: list[tuple[str, float]] = []
            for page in self.clients.pages(
                self._s3(), "list_objects_v2", Bucket=bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    entries.append(
                        (f"s3://{bucket}/{item['Key']}", item["LastModified"].timestamp())
                    )
            return entries
        root = Path(self.path)
        if not root.exists():
            raise CollectorError(self.name, f"{self.path} does not exist")
        return [(str(p), p.stat().st_mtime) for p in sorted(root.rglob("*")) if p.is_file()]

    def _read_manifest(self, manifest: str) -> Delivery:
        try:
            document = json.loads(self._read_bytes(manifest))
        except json.JSONDecodeError as error:
            raise CollectorError(self.name, f"{manifest}: not JSON: {error.msg}") from error
        references = document.get("reportKeys", document.get("dataFiles"))
        if not isinstance(references, list):
            raise CollectorError(
                self.name, f"{manifest}: a manifest lists `reportKeys` or `dataFiles`; neither"
            )
        period = document.get("billingPeriod") or {}
        start, end = _period_day(period.get("start")), _period_day(period.get("end"))
        if start is None or end is None or end <= start:
            raise CollectorError(self.name, f"{manifest}: no valid billingPeriod start/end")
        name = manifest.rsplit("/", 1)[-1].removesuffix(MANIFEST_SUFFIX).rstrip("-") or "report"
        bucket = document.get("bucket")
        files = tuple(self._resolve(str(ref), manifest, bucket) for ref in references)
        return Delivery(name, Window(start, end), manifest, files)

    def _resolve(self, reference: str, manifest: str, bucket: str | None) -> str:
        """A manifest's file reference as a readable location.

        Legacy CUR manifests list keys in the manifest's ``bucket``; Data Exports list
        ``s3://`` URLs. For a local copy, the key's longest suffix that exists below ``path``
        is used (a download usually drops the bucket prefix).
        """
        if self.path.startswith("s3://"):
            if reference.startswith("s3://"):
                return reference
            own_bucket, _ = split_s3_url(self.path)
            return f"s3://{bucket or own_bucket}/{reference.lstrip('/')}"
        key = split_s3_url(reference)[1] if reference.startswith("s3://") else reference
        parts = [part for part in key.split("/") if part]
        for start in range(len(parts)):
            candidate = Path(self.path, *parts[start:])
            if candidate.is_file():
                return str(candidate)
        return str(Path(self.path, *parts))

    # --- reading ------------------------------------------------------------------------

    def _read_file(self, file: str, delivery: Delivery, ingested_at: datetime) -> CurReadResult:
        where = f" (listed in {delivery.manifest})" if delivery.manifest else ""
        if _is_parquet(file):
            raw = self._scan_parquet(file, where)
            kind = _detect(file, raw.collect_schema().names(), self.settings.format)
            if kind == "focus":
                return _focus_result(
                    file, _parquet_for_focus(raw.collect()), self.name, ingested_at, "parquet"
                )
            frame = raw.select(needed_columns(raw.collect_schema().names())).collect()
            return read_cur_frame(file, frame, self.name, ingested_at)
        data = self._read_bytes(file, where)
        try:
            data = _decompress(file, data)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise CollectorError(self.name, f"{file}{where}: cannot decompress: {error}") from error
        if not data.strip():
            return CurReadResult(BILLING.empty(), pl.DataFrame(schema=REJECT_SCHEMA), {"rows": 0})
        header = pl.read_csv(io.BytesIO(data), n_rows=0, infer_schema=False).columns
        kind = _detect(file, header, self.settings.format)
        if kind == "focus":
            return _focus_result(file, data, self.name, ingested_at, "csv")
        frame = pl.read_csv(
            io.BytesIO(data),
            columns=needed_columns(header),
            infer_schema=False,
            encoding="utf8-lossy",
        )
        return read_cur_frame(file, frame, self.name, ingested_at)

    def _scan_parquet(self, file: str, where: str) -> pl.LazyFrame:
        if file.startswith("s3://"):
            self._head(file, where)
            return pl.scan_parquet(file, storage_options=self._polars_options())
        if not Path(file).is_file():
            raise CollectorError(self.name, f"{file}{where} does not exist")
        return pl.scan_parquet(file)

    def _read_bytes(self, file: str, where: str = "") -> bytes:
        if file.startswith("s3://"):
            bucket, key = split_s3_url(file)
            assert self.clients is not None
            try:
                response = self.clients.call(self._s3(), "get_object", Bucket=bucket, Key=key)
            except CollectorError as error:
                if error_code(error) in {"NoSuchKey", "404", "NotFound"}:
                    raise CollectorError(self.name, f"{file}{where} does not exist") from error
                raise
            body: bytes = response["Body"].read()
            return body
        try:
            return Path(file).read_bytes()
        except OSError as error:
            raise CollectorError(
                self.name, f"cannot read {file}{where}: {error.strerror}"
            ) from error

    def _head(self, file: str, where: str) -> None:
        bucket, key = split_s3_url(file)
        assert self.clients is not None
        try:
            self.clients.call(self._s3(), "head_object", Bucket=bucket, Key=key)
        except CollectorError as error:
            if error_code(error) in {"NoSuchKey", "404", "NotFound"}:
                raise CollectorError(self.name, f"{file}{where} does not exist") from error
            raise

    def _s3(self) -> Any:
        if self._s3_client is None:
            assert self.clients is not None
            self._s3_client = self.clients.client("s3", region=self.region)
        return self._s3_client

    def _polars_options(self) -> dict[str, str]:
        """Polars' object-store options: the store's or the source's endpoint, the bucket's
        region and the boto3 chain's keys."""
        assert self.clients is not None
        options = dict(self.context.storage_options)
        if self.clients.endpoint_url:
            options["aws_endpoint_url"] = self.clients.endpoint_url
            if self.clients.endpoint_url.startswith("http://"):
                options["aws_allow_http"] = "true"
        if self.region:
            options.setdefault("aws_region", self.region)
        credentials = self.clients.session().get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            options["aws_access_key_id"] = frozen.access_key
            options["aws_secret_access_key"] = frozen.secret_key
            if frozen.token:
                options["aws_session_token"] = frozen.token
        return options


def _detect(file: str, columns: list[str], file_format: FileFormat) -> Literal["cur", "focus"]:
    if file_format != "auto":
        return file_format
    snake = {cur_column_name(c) for c in columns}
    if "line_item_unblended_cost" in snake:
        return "cur"
    if "BilledCost" in {c.strip() for c in columns}:
        return "focus"
    return "cur"  # read_cur_frame then names the required columns it lacks


def _focus_result(
    file: str,
    data: bytes,
    source: str,
    ingested_at: datetime,
    file_format: Literal["csv", "parquet"],
) -> CurReadResult:
    result = read_focus_file(file, data, source, ingested_at, file_format=file_format)
    notes: dict[str, Any] = {"format": "focus", "rows": result.frame.height + _rows(result.rejects)}
    if result.dropped_columns:
        notes["columns_not_kept"] = result.dropped_columns
    return CurReadResult(result.frame, result.rejects, notes)


def _decompress(file: str, data: bytes) -> bytes:
    """CUR CSV comes plain, gzip (``.csv.gz``) or ZIP (``.csv.zip``) compressed."""
    if data[:2] == b"\x1f\x8b":  # gzip magic number (RFC 1952)
        return gzip.decompress(data)
    if data[:4] == b"PK\x03\x04":  # ZIP local file header signature (PKWARE APPNOTE 4.3.7)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise ValueError(f"{file}: a CUR ZIP holds one CSV; this one holds {members}")
            return archive.read(members[0])
    return data


def _rows(rejects: pl.DataFrame) -> int:
    return rejects["row"].n_unique() if rejects.height else 0


def _parquet_for_focus(frame: pl.DataFrame) -> bytes:
    """AWS FOCUS exports type Tags as a map: write it as JSON for the FOCUS reader."""
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    if "Tags" in nested:
        maps, _ = map_values(frame["Tags"])
        frame = frame.with_columns(
            pl.Series("Tags", [tags_to_json(m) if m else None for m in maps], dtype=pl.String)
        )
    frame = frame.drop([name for name in nested if name != "Tags"])
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _covering_window(window: Window, deliveries: list[Delivery], rows: pl.DataFrame) -> Window:
    """The requested window widened to whole billing periods."""
    start, end = window.start, window.end
    for delivery in deliveries:
        if delivery.period is not None:
            start, end = min(start, delivery.period.start), max(end, delivery.period.end)
    if any(d.period is None for d in deliveries) and rows.height:
        # One file without a manifest: its own billing period columns say what it covers.
        first, last = rows.select(
            pl.coalesce("BillingPeriodStart", "ChargePeriodStart").min(),
            pl.coalesce("BillingPeriodEnd", "ChargePeriodEnd").max(),
        ).row(0)
        if first is not None and last is not None:
            last_day = last.date() if last.time() == time() else last.date() + timedelta(days=1)
            start, end = min(start, first.date()), max(end, last_day)
    return Window(start, end)


def _billing_periods(deliveries: list[Delivery], rows: pl.DataFrame) -> list[str]:
    """``start..end`` of every billing period read: a manifest's, or for a file read without
    one, the periods its rows name (``BillingPeriodStart``/``End``, CUR
    ``bill_billing_period_start_date``/``_end_date``)."""
    periods = {f"{d.period.start}..{d.period.end}" for d in deliveries if d.period is not None}
    if any(d.period is None for d in deliveries) and rows.height:
        named = (
            rows.select(
                pl.col("BillingPeriodStart").dt.date().alias("start"),
                pl.col("BillingPeriodEnd").dt.date().alias("end"),
            )
            .drop_nulls()
            .unique()
        )
        periods |= {f"{start}..{end}" for start, end in named.iter_rows()}
    return sorted(periods)


def _sum_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))


def _overlaps(period: Window, window: Window) -> bool:
    return period.start < window.end and window.start < period.end


_PERIOD_DAY = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})")


def _period_day(value: object) -> date | None:
    """``20231101T000000.000Z`` (legacy CUR) or ``2023-11-01T00:00:00.000Z`` (Data Exports)."""
    match = _PERIOD_DAY.match(str(value or ""))
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def _is_manifest(path: str) -> bool:
    return path.rsplit("/", 1)[-1].endswith(MANIFEST_SUFFIX)


def _is_data_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1].lower()
    return name.endswith(DATA_SUFFIXES) and not name.endswith(".json")


def _is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))
