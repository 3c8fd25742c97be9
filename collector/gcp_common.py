"""Helpers shared by the Google Cloud collectors: GPU SKUs, exact Money, labels, Arrow, errors.

Pure functions only; the Google client libraries are imported inside the functions that need
them, so this module (and the collectors) import without the optional ``google-cloud-*``
packages installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import polars as pl

from gpucost.collector.parsing import tags_to_json
from gpucost.core.errors import MissingDependencyError

PROVIDER_NAME = "Google Cloud"
"""FOCUS ProviderName/ServiceProviderName for Google Cloud, as the FOCUS converters write it
(finopsfoundation/focus_converters, conversion rule ``Provider``: static value "Google Cloud")."""

COMPUTE_ENGINE_DISPLAY_NAME = "Compute Engine"
"""``Service.display_name`` of Compute Engine in the Cloud Billing catalog (its service id is
``6F81-5844-456A``, but the id is looked up by name rather than trusted as a constant)."""

SECONDS_PER_HOUR = Decimal(3600)

# Compute Engine names the GPU in the SKU description: "Nvidia Tesla T4 GPU running in
# Americas", "Nvidia Tesla A100 80GB GPU running in Americas", "Nvidia L4 GPU running in
# Netherlands", "Nvidia H100 80GB Mega GPU running in ...", "Spot Preemptible Nvidia ...",
# "Nvidia Tesla T4 GPU attached to Spot Preemptible VMs running in ...". The memory size keeps
# the 40 GB and 80 GB A100 apart: they are different SKUs at different prices.
_GPU_DESCRIPTION = re.compile(
    r"\bNvidia\s+(?:Tesla\s+)?"
    r"(?P<model>RTX\s+PRO\s+\d{4}|[A-Z]{1,3}\d{1,4}[A-Z]?)"
    r"(?:\s+(?P<memory>\d+\s?GB))?"
    r"\b.*\bGPUs?\b",
    re.IGNORECASE,
)
# SKUs that name a GPU but do not meter GPU time: a commitment fee (its usage is billed again
# under the on-demand SKU with a commitment credit) and sole-tenancy premiums (charged on top
# of the GPU SKU itself). Counting their seconds would count the same GPU-hour twice.
_NOT_GPU_TIME = re.compile(r"\bcommitment\b|\bpremium\b|\bsole\s+tenancy\b", re.IGNORECASE)
# GPU machine families: A2 (A100), A3 (H100/H200), A4 (B200), G2 (L4), G4 (RTX PRO 6000); their
# vCPU and memory SKUs read "A2 Instance Core running in Americas".
_GPU_MACHINE_FAMILY = re.compile(
    r"^(?:(?:Spot\s+)?Preemptible\s+)?(?P<family>A2|A3|A4|G2|G4)(?:\s?(?:Ultra|Mega|High|Edge))?"
    r"\s+.*\b(?:Instance|Core|Ram)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class GpuSku:
    """What a SKU description says about GPUs."""

    model: str | None
    """Canonical model, e.g. ``T4``, ``A100``, ``A100-80GB``, ``H100-80GB``; None if no GPU."""
    meters_gpu_time: bool
    """True when the SKU's usage is GPU time (seconds of one GPU), so it yields GPU-hours."""
    machine_family: str | None
    """``a2``, ``a3``, ``g2``... for vCPU/RAM SKUs of GPU machine types; None otherwise."""


def gpu_sku(description: str | None) -> GpuSku:
    """Read the GPU model (and whether usage is GPU time) from a Compute Engine SKU description."""
    if not description:
        return GpuSku(None, False, None)
    match = _GPU_DESCRIPTION.search(description)
    if match is not None:
        model = re.sub(r"\s+", "-", match.group("model").upper())
        if match.group("memory"):
            model += "-" + match.group("memory").replace(" ", "").upper()
        return GpuSku(model, _NOT_GPU_TIME.search(description) is None, None)
    family = _GPU_MACHINE_FAMILY.search(description)
    if family is not None:
        return GpuSku(None, False, family.group("family").lower())
    return GpuSku(None, False, None)


def money_to_decimal(units: int | str, nanos: int) -> Decimal:
    """A ``google.type.Money`` amount as an exact Decimal: ``units + nanos / 10**9``.

    google/type/money.proto: ``nanos`` is in [-999999999, 999999999] and has the sign of
    ``units`` (or either sign when ``units`` is zero). ``units=2, nanos=933908000`` is 2.933908.
    """
    whole = int(units)
    if not -999_999_999 <= nanos <= 999_999_999:
        raise ValueError(f"Money nanos {nanos} outside [-999999999, 999999999]")
    if (whole > 0 and nanos < 0) or (whole < 0 and nanos > 0):
        raise ValueError(f"Money units {whole} and nanos {nanos} have different signs")
    # scaleb shifts the decimal point exactly; no division and no float is involved.
    return Decimal(whole) + Decimal(nanos).scaleb(-9)


def labels_to_tags(*label_sets: Iterable[Mapping[str, Any]] | None) -> str | None:
    """Canonical Tags JSON from BigQuery ``ARRAY<STRUCT<key, value>>`` label sets.

    Later sets override earlier ones on the same key (callers pass project labels first, so a
    resource's own label wins). None when there is no label at all.
    """
    merged: dict[str, object] = {}
    for labels in label_sets:
        for label in labels or ():
            key = label.get("key")
            if key is not None:
                merged[str(key)] = label.get("value") if label.get("value") is not None else ""
    return tags_to_json(merged) if merged else None


def parse_label_json(text: str | None) -> list[dict[str, Any]]:
    """The JSON array that ``TO_JSON_STRING(ARRAY_AGG(STRUCT(key, value)))`` writes.

    ``ARRAY_AGG`` over no labels is NULL, which ``TO_JSON_STRING`` writes as ``null``.
    Raises ValueError for text that is not such an array.
    """
    if text is None or text in ("", "null"):
        return []
    document = json.loads(text)
    if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
        raise ValueError("labels are not a JSON array of {key, value} objects")
    return document


def frame_from_arrow(table: Any) -> pl.DataFrame:
    """A Polars frame from a pyarrow Table, with Extension columns reduced to their storage.

    google-cloud-bigquery tags DATETIME, JSON and GEOGRAPHY columns with Arrow extension
    metadata (``google:sqlType:datetime``...); Polars 2.x keeps those as ``pl.Extension``
    dtypes, which contracts and expressions do not accept, so they are unwrapped.
    """
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    extension_columns = [
        name for name, dtype in frame.schema.items() if isinstance(dtype, pl.Extension)
    ]
    if extension_columns:
        frame = frame.with_columns(pl.col(name).ext.storage() for name in extension_columns)
    return frame


def client_options(api_endpoint: str | None) -> dict[str, str] | None:
    """A Google client's ``client_options``: the endpoint override, or None for the default."""
    return {"api_endpoint": api_endpoint} if api_endpoint else None


def describe_google_error(error: BaseException) -> str:
    """One line for an operator: HTTP status, Google's error reason and message.

    A ``RetryError`` (retries ran out of time) is described by its last underlying error.
    """
    cause = getattr(error, "cause", None)
    if type(error).__name__ == "RetryError" and isinstance(cause, BaseException):
        return f"{describe_google_error(cause)} (still failing when retries ran out)"
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or str(error)
    reason = getattr(error, "reason", None)
    errors = getattr(error, "errors", None) or []
    if reason is None and errors and isinstance(errors[0], Mapping):
        reason = errors[0].get("reason")
    prefix = " ".join(str(part) for part in (code, reason) if part)
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else ""
    return f"{prefix}: {first_line}" if prefix else first_line


def transient_retry(deadline_s: float, initial_delay_s: float = 1.0) -> Any:
    """A bounded google-api-core Retry for transient failures only (429, 500, 502, 503, 504).

    Delays grow 1 s, 2 s, 4 s... with api-core's jitter, capped at 32 s, and stop once
    ``deadline_s`` has passed; errors such as 400 or 403 are raised at once.
    """
    try:
        from google.api_core import exceptions, retry
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("google-api-core", "Google Cloud collectors") from error
    return retry.Retry(
        predicate=retry.if_exception_type(
            exceptions.TooManyRequests,
            exceptions.InternalServerError,
            exceptions.BadGateway,
            exceptions.ServiceUnavailable,
            exceptions.GatewayTimeout,
        ),
        initial=initial_delay_s,
        maximum=32.0,
        multiplier=2.0,
        timeout=deadline_s,
    )
