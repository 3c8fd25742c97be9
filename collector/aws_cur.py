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

FOCUS mapping of CUR columns (snake_case names; legacy ``lineItem/UsageType`` is
``line_item_usage_type``), after the FinOps Foundation's focus_converters ``aws-cur`` rules:

============================  ======================================================
FOCUS column                  CUR column
============================  ======================================================
BilledCost                    line_item_unblended_cost
EffectiveCost                 amortized: SP/RI effective cost by line item type
                              (:data:`gpucost.collector.aws_common.EFFECTIVE_COST_RULES`)
ListCost / ListUnitPrice      pricing_public_on_demand_cost / _rate
ConsumedQuantity / Unit       line_item_usage_amount / pricing_unit (usage rows only)
PricingQuantity / Unit        line_item_usage_amount / pricing_unit
ChargePeriodStart / End       line_item_usage_start_date / _end_date
BillingPeriodStart / End      bill_billing_period_start_date / _end_date
ChargeCategory                line_item_line_item_type (mapped; unknown -> rejected)
BillingAccountId / Name       bill_payer_account_id / _name
SubAccountId / Name           line_item_usage_account_id / _name
ResourceId                    line_item_resource_id
ServiceName                   product_product_name, else product_servicename
RegionId / RegionName         product_region_code (or product_region) / product_location
SkuId / SkuPriceId            product_sku / pricing_rate_code (or pricing_rate_id)
CommitmentDiscountId          savings_plan_savings_plan_arn, else reservation ARN
Tags                          resourceTags/user:* columns or the resource_tags map
x_UsageType / x_InstanceType  line_item_usage_type / product_instance_type
============================  ======================================================
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import Field

from gpucost.collector.aws_common import (
    EFFECTIVE_COST_RULES,
    LINE_ITEM_CHARGE_CATEGORY,
    LINE_ITEM_CHARGE_FREQUENCY,
    RESERVATION_ARN_COLUMN,
    AwsClients,
    AwsSourceSettings,
    cur_column_name,
    cur_tag_key,
    error_code,
    split_s3_url,
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
    blank_to_null,
    parse_money,
    parse_timestamp,
    rejects_from,
    tags_to_json,
)
from gpucost.core.contracts import BILLING, MONEY, UTC_TIME
from gpucost.core.errors import CollectorError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

REQUIRED = (
    "line_item_unblended_cost",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_currency_code",
    "line_item_line_item_type",
)
"""CUR columns without which a line cannot become a billing row."""

NOT_NULL = (
    "line_item_unblended_cost",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_currency_code",
)
"""Values a billing row cannot do without (BilledCost, ChargePeriodStart/End, BillingCurrency)."""

LEGACY_NAMES = {
    "line_item_unblended_cost": "lineItem/UnblendedCost",
    "line_item_usage_start_date": "lineItem/UsageStartDate",
    "line_item_usage_end_date": "lineItem/UsageEndDate",
    "line_item_currency_code": "lineItem/CurrencyCode",
    "line_item_line_item_type": "lineItem/LineItemType",
}

TEXT_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "BillingAccountId": ("bill_payer_account_id",),
    "BillingAccountName": ("bill_payer_account_name",),
    "InvoiceId": ("bill_invoice_id",),
    "InvoiceIssuerName": ("bill_invoicing_entity",),
    "SubAccountId": ("line_item_usage_account_id",),
    "SubAccountName": ("line_item_usage_account_name",),
    "ChargeDescription": ("line_item_line_item_description",),
    "BillingCurrency": ("line_item_currency_code",),
    "ResourceId": ("line_item_resource_id",),
    "AvailabilityZone": ("line_item_availability_zone",),
    "PublisherName": ("line_item_legal_entity",),
    "ServiceName": ("product_product_name", "product_servicename", "line_item_product_code"),
    "RegionId": ("product_region_code", "product_region"),
    "RegionName": ("product_location",),
    "SkuId": ("product_sku",),
    "SkuPriceId": ("pricing_rate_code", "pricing_rate_id"),
    "PricingUnit": ("pricing_unit",),
    "x_UsageType": ("line_item_usage_type",),
    "x_InstanceType": ("product_instance_type",),
}
"""FOCUS text column <- the first non-null of these CUR columns."""

MONEY_COLUMNS: Mapping[str, str] = {
    "BilledCost": "line_item_unblended_cost",
    "ListCost": "pricing_public_on_demand_cost",
    "ListUnitPrice": "pricing_public_on_demand_rate",
    "PricingQuantity": "line_item_usage_amount",
}
TIME_COLUMNS: Mapping[str, str] = {
    "ChargePeriodStart": "line_item_usage_start_date",
    "ChargePeriodEnd": "line_item_usage_end_date",
    "BillingPeriodStart": "bill_billing_period_start_date",
    "BillingPeriodEnd": "bill_billing_period_end_date",
}
PRODUCT_MAP_KEYS: Mapping[str, str] = {
    "product_name": "product_product_name",
    "servicename": "product_servicename",
    "instance_type": "product_instance_type",
    "region_code": "product_region_code",
    "region": "product_region",
    "location": "product_location",
    "sku": "product_sku",
}
"""CUR 2.0 nests most ``product/*`` columns in the ``product`` map; these keys are lifted out
when the file does not carry the flattened column."""

SPLIT_PREFIX = "split_line_item_"
SPLIT_TO_CONTRACT: Mapping[str, str] = {
    "x_SplitParentResourceId": "split_line_item_parent_resource_id",
    "x_SplitCost": "split_line_item_split_cost",
    "x_SplitUnusedCost": "split_line_item_unused_cost",
    "x_SplitNetCost": "split_line_item_net_split_cost",
    "x_SplitNetUnusedCost": "split_line_item_net_unused_cost",
    "x_SplitUsageRatio": "split_line_item_split_usage_ratio",
}
"""Split cost allocation data (ECS tasks, EKS pods on shared EC2 instances; CUR user guide,
"Split line item details"), kept in these billing columns once the contract declares them
(proposed; until then their presence is recorded in the notes)."""

OTHER_COLUMNS = (
    "line_item_line_item_type",
    "line_item_usage_amount",
    "pricing_term",
    "savings_plan_savings_plan_arn",
    RESERVATION_ARN_COLUMN,
)

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


@dataclass(frozen=True)
class CurReadResult:
    """Billing rows, rejects and facts of one file."""

    frame: pl.DataFrame
    rejects: pl.DataFrame
    notes: dict[str, Any] = field(default_factory=dict)


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
            "billing_periods": sorted(
                f"{d.period.start}..{d.period.end}" for d in wanted if d.period is not None
            ),
            "manifests": sorted(d.manifest for d in wanted if d.manifest is not None),
            "files": file_notes,
            "rows_read": rows.height,
            "replace_window": {
                "start": replace.start.isoformat(),
                "end_exclusive": replace.end.isoformat(),
            },
        }
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
            frame = raw.select(_needed(raw.collect_schema().names())).collect()
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
            columns=_needed(header),
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


def read_cur_frame(
    file: str, raw: pl.DataFrame, source: str, ingested_at: datetime
) -> CurReadResult:
    """Map one CUR file's columns (legacy or 2.0 names, text or typed) to billing rows (pure)."""
    names = {original: cur_column_name(original) for original in raw.columns}
    spelled = {snake: original for original, snake in names.items()}
    legacy = any("/" in original for original in raw.columns)
    missing = [snake for snake in REQUIRED if snake not in spelled]
    if missing:
        shown = [LEGACY_NAMES.get(name, name) if legacy else name for name in missing]
        raise CollectorError(source, f"{file}: required CUR column(s) missing: {', '.join(shown)}")
    tags, tag_reasons = _tags(raw, names)
    text = _as_text(raw, names)
    text = _lift_product_map(raw, names, text)
    present = set(text.columns)
    text = text.with_columns(blank_to_null(name) for name in text.columns).with_row_index(
        "__row", offset=1
    )
    text = text.with_columns(
        pl.Series("__tags", tags, dtype=pl.String),
        pl.Series("__reason_tags", tag_reasons, dtype=pl.String),
    )

    money_sources = set(MONEY_COLUMNS.values()) | {
        column for terms in EFFECTIVE_COST_RULES.values() for _, column in terms
    }
    split_kept = {
        target: column
        for target, column in SPLIT_TO_CONTRACT.items()
        if target in BILLING.schema and column in present
    }
    money_sources |= {
        column
        for target, column in split_kept.items()
        if isinstance(BILLING.schema[target], pl.Decimal)
    }
    conversions: list[pl.Expr] = []
    reason_columns: dict[str, str] = {}
    for column in sorted(money_sources & present):
        value, reason = parse_money(column)
        conversions += [value.alias(f"__value_{column}"), reason.alias(f"__reason_{column}")]
        reason_columns[column] = f"__reason_{column}"
    for column in sorted(set(TIME_COLUMNS.values()) & present):
        value, reason = parse_timestamp(column)
        conversions += [value.alias(f"__value_{column}"), reason.alias(f"__reason_{column}")]
        reason_columns[column] = f"__reason_{column}"
    converted = text.with_columns(conversions)

    checks: list[pl.Expr] = []
    for column in NOT_NULL:
        missing_value = pl.when(pl.col(column).is_null()).then(
            pl.lit("missing value in a mandatory column")
        )
        parse_reason = reason_columns.get(column)
        checks.append(
            (
                pl.coalesce(missing_value, pl.col(parse_reason)) if parse_reason else missing_value
            ).alias(f"__check_{column}")
        )
        reason_columns[column] = f"__check_{column}"
    known_types = sorted(LINE_ITEM_CHARGE_CATEGORY)
    checks.append(
        pl.when(
            pl.col("line_item_line_item_type").is_null()
            | ~pl.col("line_item_line_item_type").is_in(known_types)
        )
        .then(pl.lit(f"not a known CUR line item type ({', '.join(known_types)})"))
        .alias("__check_line_item_line_item_type")
    )
    reason_columns["line_item_line_item_type"] = "__check_line_item_line_item_type"
    converted = converted.with_columns(checks)
    map_column = next((o for o, s in names.items() if s == "resource_tags"), None)
    if map_column is not None and raw.schema[map_column] == pl.String:
        # CUR 2.0 as CSV writes the resource_tags map as JSON text, which can be malformed.
        converted = converted.with_columns(pl.Series(map_column, raw[map_column]))
        reason_columns[map_column] = "__reason_tags"

    rejects = rejects_from(converted, reason_columns, file=file, row_column="__row")
    if rejects.height:
        rejects = rejects.with_columns(pl.col("field").replace(spelled))
    good = converted.filter(~pl.col("__row").is_in(rejects["row"].unique().implode()))
    billing = good.select(_billing_expressions(present, split_kept)).with_columns(
        pl.lit(source).alias("x_Source"),
        pl.lit(ingested_at).cast(UTC_TIME).alias("x_IngestedAt"),
    )
    notes: dict[str, Any] = {
        "format": "cur-legacy" if legacy else "cur2",
        "rows": raw.height,
        "rejected_rows": rejects["row"].n_unique() if rejects.height else 0,
    }
    split_present = sorted(spelled[s] for s in spelled if s.startswith(SPLIT_PREFIX))
    if split_present:
        notes["split_cost_allocation_columns"] = split_present
        notes["split_cost_allocation_kept"] = sorted(split_kept)
        if set(SPLIT_TO_CONTRACT.values()) & set(spelled) - set(split_kept.values()):
            logger.info(
                "%s: split cost allocation columns present; the billing contract does not "
                "declare x_Split* columns yet, so they are only noted",
                file,
            )
    # A reservation or Savings Plans line whose amortization columns the file lacks gets a null
    # EffectiveCost; say which columns were missing rather than guess.
    types_present = set(good["line_item_line_item_type"].unique().to_list())
    missing_rule_columns = {
        column
        for line_item_type in set(EFFECTIVE_COST_RULES) & types_present
        for _, column in EFFECTIVE_COST_RULES[line_item_type]
    } - present
    if missing_rule_columns:
        notes["effective_cost_columns_missing"] = sorted(missing_rule_columns)
    return CurReadResult(BILLING.conform(billing, source), rejects, notes)


def _billing_expressions(present: set[str], split_kept: Mapping[str, str]) -> list[pl.Expr]:
    def text(*candidates: str) -> pl.Expr:
        found = [pl.col(c) for c in candidates if c in present]
        return pl.coalesce(found) if found else pl.lit(None, pl.String)

    def money(column: str) -> pl.Expr:
        return pl.col(f"__value_{column}") if column in present else pl.lit(None, MONEY)

    line_type = pl.col("line_item_line_item_type")
    category = line_type.replace_strict(LINE_ITEM_CHARGE_CATEGORY, default=None)
    is_usage = category == "Usage"
    usage_type = text("line_item_usage_type")
    sp_arn, ri_arn = text("savings_plan_savings_plan_arn"), text(RESERVATION_ARN_COLUMN)
    expressions = [
        *(text(*candidates).alias(name) for name, candidates in TEXT_COLUMNS.items()),
        *(money(column).alias(name) for name, column in MONEY_COLUMNS.items()),
        *(
            (pl.col(f"__value_{column}") if column in present else pl.lit(None, UTC_TIME)).alias(
                name
            )
            for name, column in TIME_COLUMNS.items()
        ),
        category.alias("ChargeCategory"),
        line_type.replace_strict(LINE_ITEM_CHARGE_FREQUENCY, default=None)
        .fill_null(pl.when(is_usage).then(pl.lit("Usage-Based")))
        .alias("ChargeFrequency"),
        pl.when(is_usage).then(money("line_item_usage_amount")).alias("ConsumedQuantity"),
        pl.when(is_usage).then(text("pricing_unit")).alias("ConsumedUnit"),
        _effective_cost(present).alias("EffectiveCost"),
        pl.coalesce(sp_arn, ri_arn).alias("CommitmentDiscountId"),
        pl.when(sp_arn.is_not_null())
        .then(pl.lit("Spend"))
        .when(ri_arn.is_not_null())
        .then(pl.lit("Usage"))
        .alias("CommitmentDiscountCategory"),
        pl.when(sp_arn.is_not_null())
        .then(pl.lit("Savings Plan"))
        .when(ri_arn.is_not_null())
        .then(pl.lit("Reserved Instance"))
        .alias("CommitmentDiscountType"),
        # FOCUS PricingCategory from CUR pricing/term; Spot usage types say "SpotUsage".
        pl.when(usage_type.str.contains("SpotUsage"))
        .then(pl.lit("Dynamic"))
        .when((line_type == "SavingsPlanCoveredUsage") | (text("pricing_term") == "Reserved"))
        .then(pl.lit("Committed"))
        .when(text("pricing_term") == "OnDemand")
        .then(pl.lit("Standard"))
        .otherwise(pl.lit(None, pl.String))
        .alias("PricingCategory"),
        pl.lit("AWS").alias("ProviderName"),
        pl.lit("AWS").alias("ServiceProviderName"),
        pl.col("__tags").alias("Tags"),
    ]
    for target, column in split_kept.items():
        if isinstance(BILLING.schema[target], pl.Decimal):
            expressions.append(money(column).alias(target))
        else:
            expressions.append(text(column).alias(target))
    return expressions


def _effective_cost(present: set[str]) -> pl.Expr:
    """EffectiveCost per :data:`EFFECTIVE_COST_RULES`; a rule whose column is absent gives null."""
    line_type = pl.col("line_item_line_item_type")
    unblended = pl.col("__value_line_item_unblended_cost")
    zero = pl.lit(0).cast(MONEY)
    expression: Any = pl.when(
        (line_type == "Fee")
        & (
            pl.col(RESERVATION_ARN_COLUMN).is_not_null()
            if RESERVATION_ARN_COLUMN in present
            else pl.lit(value=False)
        )
    ).then(zero)
    for line_item_type, terms in EFFECTIVE_COST_RULES.items():
        total: pl.Expr = zero
        for sign, column in terms:
            if column not in present:
                total = pl.lit(None, MONEY)
                break
            value = pl.col(f"__value_{column}")
            total = total + value if sign > 0 else total - value
        expression = expression.when(line_type == line_item_type).then(total.cast(MONEY))
    result: pl.Expr = expression.otherwise(unblended).cast(MONEY)
    return result


def _as_text(raw: pl.DataFrame, names: Mapping[str, str]) -> pl.DataFrame:
    """The needed scalar columns as text under snake_case names (parsing stays ours)."""
    expressions: list[pl.Expr] = []
    seen: set[str] = set()
    for original, snake in names.items():
        dtype = raw.schema[original]
        if snake in seen or snake == "product" or _is_tag_column(original, snake):
            continue
        if isinstance(dtype, pl.Datetime):
            zoned = (
                pl.col(original).dt.replace_time_zone("UTC")
                if dtype.time_zone is None
                else pl.col(original).dt.convert_time_zone("UTC")
            )
            expressions.append(zoned.dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ").alias(snake))
        elif dtype.is_nested():
            continue
        else:
            # Floats print as their shortest round-trip decimal (CUR 2.0 Parquet types costs as
            # double), which is the decimal AWS wrote; parse_money then reads it exactly.
            expressions.append(pl.col(original).cast(pl.String).alias(snake))
        seen.add(snake)
    return raw.select(expressions)


def _lift_product_map(
    raw: pl.DataFrame, names: Mapping[str, str], text: pl.DataFrame
) -> pl.DataFrame:
    product = next((o for o, s in names.items() if s == "product"), None)
    wanted = {k: c for k, c in PRODUCT_MAP_KEYS.items() if c not in text.columns}
    if product is None or not wanted:
        return text
    maps, _ = _maps(raw[product])
    lifted = [
        pl.Series(column, [m.get(key) if m else None for m in maps], dtype=pl.String)
        for key, column in wanted.items()
    ]
    return text.with_columns(lifted)


def _is_tag_column(original: str, snake: str) -> bool:
    return original.startswith("resourceTags/") or snake.startswith("resource_tags")


def _tags(raw: pl.DataFrame, names: Mapping[str, str]) -> tuple[list[str | None], list[str | None]]:
    """Canonical tag JSON per row, and a reason per row whose tags cannot be read."""
    height = raw.height
    map_column = next((o for o, s in names.items() if s == "resource_tags"), None)
    if map_column is not None:
        maps, reasons = _maps(raw[map_column])
        renamed = [
            {cur_tag_key(str(k)): v for k, v in m.items() if v not in (None, "")} if m else None
            for m in maps
        ]
        return [tags_to_json(m) if m else None for m in renamed], reasons
    wide = {
        original: cur_tag_key(
            original.removeprefix("resourceTags/")
            if original.startswith("resourceTags/")
            else snake.removeprefix("resource_tags_")
        )
        for original, snake in names.items()
        if _is_tag_column(original, snake)
    }
    if not wide:
        return [None] * height, [None] * height
    keys = list(dict.fromkeys(wide.values()))
    first = {key: next(o for o, k in wide.items() if k == key) for key in keys}
    columns = [f"__tag{i}" for i in range(len(keys))]
    frame = raw.select(
        blank_to_null(first[key]).cast(pl.String).alias(column)
        for key, column in zip(keys, columns, strict=True)
    )
    # Bills repeat the same tag set on many rows: build each distinct set's JSON once.
    distinct = frame.unique(maintain_order=True)
    documents = [
        tags_to_json({keys[i]: value for i, value in enumerate(row) if value is not None}) or None
        for row in distinct.iter_rows()
    ]
    lookup = distinct.with_columns(pl.Series("__json", documents, dtype=pl.String))
    joined = frame.join(lookup, on=columns, how="left", nulls_equal=True, maintain_order="left")
    values = [None if v == "{}" else v for v in joined["__json"].to_list()]
    return values, [None] * height


def _maps(series: pl.Series) -> tuple[list[dict[str, Any] | None], list[str | None]]:
    """A map column (Parquet MAP, a list of key/value structs, or JSON text) as dicts."""
    values = series.to_list()
    maps: list[dict[str, Any] | None] = []
    reasons: list[str | None] = []
    parsed: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    for value in values:
        if value is None or value == "":
            maps.append(None)
            reasons.append(None)
        elif isinstance(value, dict):
            maps.append(value)
            reasons.append(None)
        elif isinstance(value, list):
            maps.append({item["key"]: item["value"] for item in value})
            reasons.append(None)
        else:
            if value not in parsed:
                try:
                    document = json.loads(value)
                    parsed[value] = (
                        (document, None)
                        if isinstance(document, dict)
                        else (None, "tags must be a JSON object")
                    )
                except json.JSONDecodeError as error:
                    parsed[value] = (None, f"tags are not valid JSON: {error.msg}")
            document, reason = parsed[value]
            maps.append(document)
            reasons.append(reason)
    return maps, reasons


def _needed(columns: Iterable[str]) -> list[str]:
    """The columns of a file that the mapping reads (CUR files carry 100+ columns)."""
    wanted = set(REQUIRED) | set(OTHER_COLUMNS) | set(MONEY_COLUMNS.values())
    wanted |= set(TIME_COLUMNS.values()) | {c for cs in TEXT_COLUMNS.values() for c in cs}
    wanted |= {c for terms in EFFECTIVE_COST_RULES.values() for _, c in terms}
    wanted |= {"product", "resource_tags"}
    selected = []
    for original in columns:
        snake = cur_column_name(original)
        if snake in wanted or snake.startswith(SPLIT_PREFIX) or _is_tag_column(original, snake):
            selected.append(original)
    return selected


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
        maps, _ = _maps(frame["Tags"])
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
