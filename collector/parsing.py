"""Parsing helpers shared by billing collectors: exact money, tolerant timestamps, tags, enums.

Each helper is a pure function over Polars expressions or frames. A value that is present but
cannot be parsed exactly becomes a *reject* (file, row, field, reason, raw value) instead of a
null or a rounded number: nothing is silently dropped or changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import polars as pl

from gpucost.collector.base import REJECT_SCHEMA
from gpucost.core.contracts import MONEY, MONEY_SCALE, UTC_TIME

NULL_SPELLINGS = ("", "NULL", "null", "None")
"""What real exports write for "no value": FOCUS samples write NULL, CUR writes empty fields."""

_NUMBER = r"^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$"


def blank_to_null(column: str) -> pl.Expr:
    """Trimmed text, with the usual spellings of "no value" as null."""
    trimmed = pl.col(column).str.strip_chars()
    return pl.when(trimmed.is_in(NULL_SPELLINGS)).then(None).otherwise(trimmed).alias(column)


def decimal_scale_needed(column: str) -> pl.Expr:
    """Fractional digits a decimal text needs to be stored exactly (``1.81E-8`` needs 10).

    With digits D = integer part + fraction, F fractional digits, exponent E and Z trailing
    zeros in D, the value is int(D without Z zeros) x 10^(E - F + Z), so it needs F - Z - E
    fractional digits (none when that is negative or the value is zero).
    """
    parts = pl.col(column).str.extract_groups(_NUMBER)
    digits = pl.concat_str(
        [parts.struct.field("2").fill_null(""), parts.struct.field("3").fill_null("")]
    )
    stripped = digits.str.strip_chars_end("0")
    trailing_zeros = digits.str.len_chars() - stripped.str.len_chars()
    fraction_digits = parts.struct.field("3").fill_null("").str.len_chars()
    exponent = parts.struct.field("4").cast(pl.Int64, strict=False).fill_null(0)
    needed = fraction_digits.cast(pl.Int64) - trailing_zeros.cast(pl.Int64) - exponent
    return pl.when(stripped.str.len_chars() == 0).then(0).otherwise(needed.clip(lower_bound=0))


def parse_money(column: str) -> tuple[pl.Expr, pl.Expr]:
    """(exact Decimal value, reason-or-null) for a text column of money or quantities.

    Values that are not numbers, need more than 18 fractional digits, or overflow 38 digits
    give a reason; their value is null and the row is rejected by the caller.
    """
    text = pl.col(column)
    parsed = text.str.to_decimal(scale=MONEY_SCALE)
    too_precise = decimal_scale_needed(column) > MONEY_SCALE
    reason = (
        pl.when(text.is_null())
        .then(None)
        .when(~text.str.contains(_NUMBER) | text.str.contains(r"^[+-]?\.?$"))
        .then(pl.lit("not a number"))
        .when(too_precise)
        .then(pl.lit(f"more than {MONEY_SCALE} decimal places; cannot be stored exactly"))
        .when(parsed.is_null())
        .then(pl.lit("number out of range for Decimal(38, 18)"))
        .otherwise(None)
    )
    value = pl.when(reason.is_null()).then(parsed).otherwise(None).cast(MONEY)
    return value, reason


_TIMESTAMP_FORMATS_NAIVE = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
_TIMESTAMP_FORMATS_ZONED = ("%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M%z")


def parse_timestamp(column: str) -> tuple[pl.Expr, pl.Expr]:
    """(UTC datetime, reason-or-null) for timestamps as real exports write them.

    Accepted: ``2024-09-18 23:00:00`` (no zone: UTC, as FOCUS requires), ``2024-09-18T23:00:00Z``,
    fractional seconds, ``+00:00``/``-05:00`` offsets (converted to UTC), and a bare date.
    """
    text = (
        pl.col(column)
        .str.replace(r"^(\d{4}-\d{2}-\d{2})T", "$1 ")
        .str.replace(r"(?i)(Z| UTC)$", "")
        .str.replace(r"^(\d{4}-\d{2}-\d{2})$", "$1 00:00:00")
    )
    attempts = [
        text.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")
        for fmt in _TIMESTAMP_FORMATS_NAIVE
    ] + [
        text.str.to_datetime(fmt, strict=False, time_unit="us").dt.convert_time_zone("UTC")
        for fmt in _TIMESTAMP_FORMATS_ZONED
    ]
    parsed = pl.coalesce(attempts).cast(UTC_TIME)
    reason = (
        pl.when(pl.col(column).is_not_null() & parsed.is_null())
        .then(pl.lit("not a timestamp (expected e.g. 2024-09-18 23:00:00 or ...T23:00:00Z)"))
        .otherwise(None)
    )
    return parsed, reason


def canonical_tags(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(canonical JSON, reason-or-null) for a column of JSON-object tag strings.

    Keys are trimmed (real exports carry keys such as ``" project"``), sorted and written
    compactly, so equal tag sets compare equal. Values keep their JSON type and text
    (``{"FleetSize":500}`` stays a number, ``1.10`` keeps its digits): FOCUS' Key-Value Format
    allows a string, number, ``true``, ``false`` or ``null`` value, and no object or array, so
    a document with one of those is a reject. Distinct values are parsed once: bills repeat
    the same tag set on many rows.
    """
    canonical: dict[str, str | None] = {}
    reasons: dict[str, str | None] = {}
    for text in values.unique().drop_nulls().to_list():
        canonical[text], reasons[text] = _canonical_tag_text(text)
    mapped = values.replace_strict(canonical, default=None, return_dtype=pl.String)
    reason = values.replace_strict(reasons, default=None, return_dtype=pl.String)
    return mapped, reason


class JsonNumber(str):
    """A JSON number kept as the text it was written as (``500``, ``1.10``, ``1e3``)."""


def _reject_constant(name: str) -> object:
    # Python's json accepts NaN and Infinity, which ECMA-404 JSON does not.
    raise ValueError(f"{name} is not a JSON value")


def load_tags(text: str) -> dict[str, object]:
    """A tag document as a dict whose numbers are :class:`JsonNumber` (their text as written).

    Raises ``ValueError`` (``json.JSONDecodeError`` included) for text that is not a JSON object.
    """
    document = json.loads(
        text, parse_int=JsonNumber, parse_float=JsonNumber, parse_constant=_reject_constant
    )
    if not isinstance(document, dict):
        raise ValueError("tags must be a JSON object")
    return document


def _canonical_tag_text(text: str) -> tuple[str | None, str | None]:
    try:
        document = load_tags(text)
    except json.JSONDecodeError as error:
        return None, f"tags are not valid JSON: {error.msg}"
    except ValueError as error:
        return None, str(error)
    nested = sorted(str(k).strip() for k, v in document.items() if isinstance(v, dict | list))
    if nested:
        return None, (
            "tag values must be a string, number, true, false or null (FOCUS Key-Value "
            f"Format); not so for {', '.join(nested)}"
        )
    return tags_to_json(document), None


def tags_to_json(tags: Mapping[str, object]) -> str:
    """Canonical JSON for a tag mapping: trimmed keys, sorted, compact, values as given.

    Strings, booleans and null are written as JSON; :class:`JsonNumber` values as their own
    text; other numbers through ``json``. Writers that only have text (CUR, labels) pass text.
    """
    cleaned = {str(key).strip(): value for key, value in tags.items()}
    parts = [
        f"{json.dumps(key, ensure_ascii=False)}:{_json_value(cleaned[key])}"
        for key in sorted(cleaned)
    ]
    return "{" + ",".join(parts) + "}"


def _json_value(value: object) -> str:
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, Mapping):
        return tags_to_json(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json_value(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def canonical_enum(column: str, allowed: Iterable[str]) -> pl.Expr:
    """Map case and dash variants (``Usage-based``, ``usage_based``) to the spec's spelling."""
    allowed = list(allowed)
    key = pl.col(column).str.to_lowercase().str.replace_all(r"[\s_-]", "")
    mapping = {value.lower().replace("-", "").replace(" ", ""): value for value in allowed}
    return key.replace_strict(mapping, default=pl.col(column), return_dtype=pl.String)


def rejects_from(
    frame: pl.DataFrame, reason_columns: Mapping[str, str], *, file: str, row_column: str
) -> pl.DataFrame:
    """Reject records for every (row, field) whose reason column is set.

    ``reason_columns`` maps a field name to the column holding its reason; ``frame`` must also
    hold the raw field values (under the field names) and the 1-based ``row_column``.
    """
    pieces = []
    for field, reason_column in reason_columns.items():
        bad = frame.filter(pl.col(reason_column).is_not_null())
        if bad.height:
            pieces.append(
                bad.select(
                    pl.lit(file).alias("file"),
                    pl.col(row_column).cast(pl.Int64).alias("row"),
                    pl.lit(field).alias("field"),
                    pl.col(reason_column).alias("reason"),
                    pl.col(field).cast(pl.String).alias("raw")
                    if field in frame.columns
                    else pl.lit(None, pl.String).alias("raw"),
                )
            )
    if not pieces:
        return pl.DataFrame(schema=REJECT_SCHEMA)
    return pl.concat(pieces).sort("row", "field")
