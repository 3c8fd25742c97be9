"""``prometheus``: GPU metrics from a Prometheus-compatible query API (the scale path).

Reads dcgm-exporter's series back from Prometheus, Thanos, Mimir, Cortex or VictoriaMetrics
through ``GET /api/v1/query_range`` (the HTTP API every one of them serves), one PromQL query
per measure, and rolls the answers up hourly with :func:`.gpu_rollup.rollup_hourly`.

Each default query aggregates over one step (``avg_over_time(X[{step}])``), so the point at
``t`` summarises the samples of ``(t - step, t]`` and stands for that interval: a step in which
the exporter was not scraped has no point and leaves the hour short, instead of being filled
in by PromQL's 5-minute lookback.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit, urlunsplit

import polars as pl
import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.dcgm_text import gpu_index_of, label_roles
from gpucost.collector.gpu_rollup import (
    DEFAULT_EXPORTER_PODS,
    clear_exporter_identity,
    conform_samples,
    mib_to_bytes,
    mig_slice_uuid,
    rollup_hourly,
    samples_by_instant,
)
from gpucost.core.contracts import UTC_TIME
from gpucost.core.errors import CollectorError
from gpucost.core.secrets import SecretRef
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_QUERIES",
    "DEFAULT_TARGET_QUERY",
    "MAX_POINTS_PER_SERIES",
    "BasicAuth",
    "PrometheusApi",
    "PrometheusGpuMetrics",
    "PrometheusSettings",
    "QueryResult",
    "chunk_range",
    "samples_from_results",
    "target_identities",
]

MAX_POINTS_PER_SERIES: Final = 11_000
"""Prometheus refuses a range query whose (end - start) / step exceeds 11,000 ("exceeded
maximum resolution of 11,000 points per timeseries", web/api/v1/api.go); Thanos and Mimir keep
the same limit."""
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
"""Transient answers: throttling and server-side failures (STYLE.md: retry only these)."""
MAX_RETRY_AFTER_S: Final = 60.0

DEFAULT_QUERIES: Final[Mapping[str, str]] = {
    # `or` keeps the left side's series and adds right-side series whose labels it lacks: the
    # profiling metric wins where the exporter has it (DCGM profiling needs datacenter GPUs).
    "util": (
        "avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE[{step}])"
        " or avg_over_time(DCGM_FI_DEV_GPU_UTIL[{step}]) / 100"
    ),
    "util_max": (
        "max_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE[{step}])"
        " or max_over_time(DCGM_FI_DEV_GPU_UTIL[{step}]) / 100"
    ),
    "mem_used_mib": "max_over_time(DCGM_FI_DEV_FB_USED[{step}])",
    # Used + free of the same scrape: both are MiB gauges written together by the exporter.
    "mem_total_mib": (
        "last_over_time(DCGM_FI_DEV_FB_USED[{step}]) + last_over_time(DCGM_FI_DEV_FB_FREE[{step}])"
    ),
    "power_w": "avg_over_time(DCGM_FI_DEV_POWER_USAGE[{step}])",
    "sm_clock_mhz": "avg_over_time(DCGM_FI_DEV_SM_CLOCK[{step}])",
}
"""Default PromQL per measure; ``{step}`` becomes the step (``60s``). Units: util fractions
0..1, memory MiB, power W, clock MHz. Each can be replaced in ``queries``."""
DEFAULT_TARGET_QUERY: Final = "group by (job, instance, namespace, pod) (last_over_time(up[1h]))"
"""The scrape targets' own labels: Prometheus writes ``up`` for every target with exactly the
target's labels (docs, "Jobs and instances": automatically generated series), so a DCGM series
whose ``pod`` is its target's pod names the exporter, not a workload. Asked an hour at a time
(``[1h]`` at a 1-hour step), so every target scraped in the window is seen."""

_MEASURE_COLUMNS: Final[Mapping[str, str]] = {
    "util": "util",
    "util_max": "util_max",
    "mem_used_mib": "mem_used_bytes",
    "mem_total_mib": "mem_total_bytes",
    "power_w": "power_w",
    "sm_clock_mhz": "sm_clock_mhz",
}
_LABEL_COLUMNS: Final = (
    "host",
    "gpu_uuid",
    "gpu_index",
    "gpu_model",
    "mig_profile",
    "namespace",
    "pod",
    "container",
)


class BasicAuth(BaseModel):
    """HTTP basic authentication: a user name and a password kept as a secret reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    password: SecretRef


class PrometheusSettings(SourceSettings):
    """Settings of a ``prometheus`` source."""

    url: str = Field(
        description="Base URL of the API (…/api/v1 is appended), e.g. Mimir's /prometheus."
    )
    step_s: int = Field(
        default=60, ge=1, le=3600, description="Query resolution; must divide an hour."
    )
    queries: dict[str, str] = Field(
        default_factory=dict, description="PromQL per measure, replacing the defaults."
    )
    bearer_token: SecretRef | None = Field(default=None, description="Authorization: Bearer …")
    basic_auth: BasicAuth | None = None
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers, e.g. X-Scope-OrgID for Mimir."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Per request.")
    max_retries: int = Field(default=4, ge=0, le=10, description="On 429, 5xx, timeouts.")
    max_points_per_series: int = Field(default=MAX_POINTS_PER_SERIES, ge=2)
    verify_tls: bool = True
    exporter_pods: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXPORTER_PODS),
        description="Globs of the exporter's own pod names: such series have no workload.",
    )
    target_query: str | None = Field(
        default=DEFAULT_TARGET_QUERY,
        description="PromQL giving each scrape target's job, instance, namespace and pod "
        "(series naming their own target's pod have no workload); empty to skip it.",
    )

    @field_validator("step_s")
    @classmethod
    def _divides_an_hour(cls, step_s: int) -> int:
        if 3600 % step_s:
            raise ValueError("step_s must divide 3600 (15, 30, 60, 300, ...) so hours align")
        return step_s

    @field_validator("queries")
    @classmethod
    def _known_measures(cls, queries: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(queries) - set(DEFAULT_QUERIES))
        if unknown:
            known = ", ".join(DEFAULT_QUERIES)
            raise ValueError(f"unknown measures {unknown}; known: {known}")
        return queries


@dataclass(frozen=True)
class QueryResult:
    """The series of one range query (all chunks), and what the server warned about."""

    measure: str
    series: list[dict[str, Any]]
    """``{"metric": {labels}, "values": [[unix seconds, "value"], ...]}`` per series."""
    warnings: list[str] = field(default_factory=list)
    partial: bool = False
    requests: int = 0


class PrometheusApi:
    """A small client of ``/api/v1/query_range`` with bounded, jittered retries."""

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        verify_tls: bool = True,
        source: str = "prometheus",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base = url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.verify_tls = verify_tls
        self.source = source
        self.sleep = sleep
        self.requests_made = 0

    @property
    def safe_url(self) -> str:
        """The base URL without user:password, for messages."""
        parts = urlsplit(self.base)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def query_range(
        self, query: str, start: datetime, end: datetime, step_s: int
    ) -> dict[str, Any]:
        """One ``query_range`` call; returns the decoded JSON body of a successful answer."""
        params = {
            "query": query,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{step_s}s",
        }
        attempt = 0
        while True:
            self.requests_made += 1
            problem: str
            retry_after: float | None = None
            try:
                response = self.session.get(
                    f"{self.base}/api/v1/query_range",
                    params=params,
                    timeout=self.timeout_s,
                    verify=self.verify_tls,
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    return self._decode(response, query)
                problem = f"HTTP {response.status_code}: {_api_error(response)}"
                if response.status_code not in RETRY_STATUSES:
                    raise CollectorError(
                        self.source, f"{self.safe_url} refused query {query!r}: {problem}"
                    )
                retry_after = _retry_after(response)
            if attempt >= self.max_retries:
                raise CollectorError(
                    self.source,
                    f"{self.safe_url} failed {attempt + 1} times for query {query!r}: {problem}",
                )
            # Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
            # and Jitter"), unless the server said when to come back.
            delay = (
                min(retry_after, MAX_RETRY_AFTER_S)
                if retry_after is not None
                else random.uniform(0, min(30.0, 0.5 * 2**attempt))
            )
            logger.warning(
                "source %s: %s (attempt %d), retrying in %.1f s",
                self.source,
                problem,
                attempt + 1,
                delay,
            )
            self.sleep(delay)
            attempt += 1

    def _decode(self, response: requests.Response, query: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as error:
            raise CollectorError(
                self.source, f"{self.safe_url} answered non-JSON to {query!r}: {error}"
            ) from error
        if not isinstance(body, dict) or body.get("status") != "success":
            raise CollectorError(
                self.source, f"{self.safe_url} query {query!r} failed: {_api_error(response)}"
            )
        data = body.get("data") or {}
        if data.get("resultType") != "matrix":
            raise CollectorError(
                self.source,
                f"query {query!r} gave a {data.get('resultType')!r}, not a range vector (matrix)",
            )
        return body


def _api_error(response: requests.Response) -> str:
    """The API's ``errorType: error`` when the body has them, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "error" in body:
        return f"{body.get('errorType', 'error')}: {body['error']}"
    return response.text[:200]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to backoff


def chunk_range(
    start: datetime, end: datetime, step_s: int, max_points: int
) -> list[tuple[datetime, datetime]]:
    """Split ``[start, end]`` (both evaluated) into ranges of at most ``max_points`` points.

    Points lie at ``start + k * step``; consecutive chunks never share a point.
    """
    if end < start:
        return []
    span = timedelta(seconds=step_s * (max_points - 1))
    chunks: list[tuple[datetime, datetime]] = []
    chunk_start = start
    while chunk_start <= end:
        chunk_end = min(end, chunk_start + span)
        chunks.append((chunk_start, chunk_end))
        chunk_start = chunk_end + timedelta(seconds=step_s)
    return chunks


@register("prometheus")
class PrometheusGpuMetrics:
    """Reads dcgm-exporter metrics back from a Prometheus-compatible API into ``gpu_usage``.

    One ``query_range`` per measure (defaults in ``DEFAULT_QUERIES``, each replaceable in
    ``queries``), chunked in time to stay under 11,000 points per series, retried with backoff
    on 429/5xx/timeouts. Where Prometheus scraped the exporter without ``honor_labels`` the
    workload's labels are ``exported_pod``/``exported_namespace``/``exported_container``: those
    win over ``pod``/``namespace``/``container``. Series that carry the scrape target's own
    identity (its pod, as ``up`` shows it; the exporter's container; a pod matching
    ``exporter_pods``) have no workload: a GPU nobody uses. Partial answers (``isPartial``,
    warnings) are flagged in the run's notes.

    ```toml
    [[sources]]
    name = "gpu-metrics"
    kind = "prometheus"
    url = "http://prometheus.monitoring:9090"      # Mimir: https://mimir/prometheus
    step_s = 60
    bearer_token = { env = "PROMETHEUS_TOKEN" }     # or, instead:
    # basic_auth = { username = "gpucost", password = { file = "/run/secrets/prom" } }
    headers = { "X-Scope-OrgID" = "ml" }
    exporter_pods = ["nvidia-dcgm-exporter-*", "dcgm-exporter-*"]   # the exporter's own pods
    target_query = "group by (job, instance, namespace, pod) (up)"  # targets' own pods
    queries = { power_w = "avg_over_time(DCGM_FI_DEV_POWER_USAGE{cluster=\\"prod\\"}[{step}])" }
    timeout_s = 60
    max_retries = 4
    schedule = "15 * * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("gpu_usage",)
    Settings: ClassVar[type[SourceSettings]] = PrometheusSettings

    def __init__(self, settings: PrometheusSettings, context: CollectorContext) -> None:
        """Secrets are read now: a missing one fails the source before any query."""
        self.settings, self.name = settings, settings.name
        self.queries = {**DEFAULT_QUERIES, **settings.queries}
        session = requests.Session()
        session.headers.update({"User-Agent": "gpucost", **settings.headers})
        if settings.bearer_token is not None:
            token = settings.bearer_token.resolve().get_secret_value()
            session.headers["Authorization"] = f"Bearer {token}"
        if settings.basic_auth is not None:
            password = settings.basic_auth.password.resolve().get_secret_value()
            session.auth = (settings.basic_auth.username, password)
        self.api = PrometheusApi(
            settings.url,
            session=session,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            verify_tls=settings.verify_tls,
            source=settings.name,
            sleep=context.sleep,
        )

    def collect(self, window: Window) -> Collected:
        """Query every measure over the window and roll the points up hourly."""
        # The point at t summarises (t - step, t]: the first is at start + step, the last at
        # end, so the points cover exactly the window.
        step_s = self.settings.step_s
        first = window.start_time + timedelta(seconds=step_s)
        chunks = chunk_range(first, window.end_time, step_s, self.settings.max_points_per_series)
        results = [self._query(measure, query, chunks) for measure, query in self.queries.items()]
        notes: dict[str, Any] = {}
        targets = self._targets(window, notes)
        samples, unplaced = samples_from_results(results, step_s, targets)
        samples, cleared = clear_exporter_identity(samples, self.settings.exporter_pods)
        if cleared:
            notes["exporter_own_samples"] = cleared
        rows = rollup_hourly(samples, interval_s=step_s, source=self.name, window=window)
        notes |= {
            "url": self.api.safe_url,
            "step_s": step_s,
            "chunks": len(chunks),
            "requests": self.api.requests_made,
            "series": {result.measure: len(result.series) for result in results},
            "samples": samples.height,
        }
        if unplaced:
            notes["series_without_gpu_or_host"] = unplaced
        partial = [result.measure for result in results if result.partial]
        if partial:
            notes["partial_answers"] = partial
            logger.warning("source %s: partial answers for %s", self.name, ", ".join(partial))
        warnings = sorted({w for result in results for w in result.warnings})
        if warnings:
            notes["warnings"] = warnings
        return Collected({"gpu_usage": rows}, notes=notes)

    def _targets(self, window: Window, notes: dict[str, Any]) -> TargetIdentities:
        """The scrape targets' own namespace and pod (:data:`DEFAULT_TARGET_QUERY`), an hour
        apart over the window; a refused or failed query is noted and identifies nothing."""
        query = self.settings.target_query
        if not query:
            return {}
        first = window.start_time + timedelta(hours=1)
        try:
            body = self.api.query_range(query, first, window.end_time, 3600)
        except CollectorError as error:
            notes["target_query_failed"] = str(error)
            logger.warning("source %s: %s", self.name, error)
            return {}
        return target_identities(body["data"].get("result") or [])

    def _query(
        self, measure: str, template: str, chunks: Sequence[tuple[datetime, datetime]]
    ) -> QueryResult:
        step_s = self.settings.step_s
        query = template.replace("{step}", f"{step_s}s")
        series: list[dict[str, Any]] = []
        warnings: list[str] = []
        partial = False
        for start, end in chunks:
            body = self.api.query_range(query, start, end, step_s)
            series.extend(body["data"].get("result") or [])
            warnings.extend(str(w) for w in body.get("warnings") or [])
            # VictoriaMetrics marks answers missing some storage nodes with isPartial; Thanos
            # and Prometheus report them (and other trouble) as warnings.
            partial = partial or bool(body.get("isPartial")) or bool(body.get("warnings"))
        return QueryResult(measure, series, warnings, partial, len(chunks))


TargetIdentities = Mapping[tuple[str, str], tuple[frozenset[str], frozenset[str]]]
"""Per scrape target (``job``, ``instance``): its own pods and namespaces."""


def target_identities(series: Sequence[Mapping[str, Any]]) -> TargetIdentities:
    """Each target's own pods and namespaces, from series of :data:`DEFAULT_TARGET_QUERY`."""
    found: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
    for item in series:
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        pods, namespaces = found.setdefault(_target_of(labels), (set(), set()))
        if labels.get("pod"):
            pods.add(labels["pod"])
        if labels.get("namespace"):
            namespaces.add(labels["namespace"])
    return {key: (frozenset(pods), frozenset(spaces)) for key, (pods, spaces) in found.items()}


def samples_from_results(
    results: Sequence[QueryResult], step_s: int, targets: TargetIdentities | None = None
) -> tuple[pl.DataFrame, int]:
    """Raw GPU samples from range-query series; returns them and the series left unplaced.

    Labels are normalised as dcgm-exporter pages are (``gpucost.collector.dcgm_text``): ``UUID`` or
    ``uuid``, ``Hostname`` or ``hostname`` (else the ``instance`` host), ``GPU_I_ID`` making the
    MIG slice's uuid, ``exported_pod`` over ``pod``; on a target where Prometheus renamed
    workload labels, a series without the ``exported_*`` label has no workload, and so has a
    series whose pod is its target's own pod (``targets``, from ``up``), or which has no pod
    and its target's own namespace. A point at ``t`` is a sample at ``t - step`` (the start of
    the interval it summarises).
    """
    targets = targets or {}
    columns: dict[str, list[Any]] = {name: [] for name in ("measure", "t", "v", *_LABEL_COLUMNS)}
    unplaced = 0
    renamed = _targets_with_workload_labels(results)
    for result in results:
        for item in result.series:
            labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
            roles = label_roles(labels)
            for role in renamed.get(_target_of(labels), ()):
                if _EXPORTED[role] not in labels:
                    # The target itself carries this label (Prometheus renamed the exporter's
                    # own to exported_* on other series): here it names the exporter's pod,
                    # not a workload on the GPU.
                    roles[role] = None
            own_pods, own_namespaces = targets.get(_target_of(labels), (frozenset(), frozenset()))
            if roles["pod"] in own_pods or (
                roles["pod"] is None and roles["namespace"] in own_namespaces
            ):
                # The target's own identity (honor_labels kept the scraped labels, and the
                # exporter added none: a GPU with no workload).
                roles["namespace"] = roles["pod"] = roles["container"] = None
            host = roles["host"] or _instance_host(labels.get("instance"))
            gpu_uuid = roles["gpu_uuid"]
            if host is None or gpu_uuid is None:
                unplaced += 1
                continue
            if roles["mig_instance_id"] is not None:
                gpu_uuid = mig_slice_uuid(gpu_uuid, roles["mig_instance_id"])
            values = item.get("values") or []
            count = len(values)
            columns["measure"].extend([result.measure] * count)
            columns["t"].extend(float(point[0]) for point in values)
            columns["v"].extend(_number(point[1]) for point in values)
            label_values = {
                "host": host,
                "gpu_uuid": gpu_uuid,
                "gpu_index": gpu_index_of(roles),
                "gpu_model": roles["gpu_model"],
                "mig_profile": roles["mig_profile"],
                "namespace": roles["namespace"],
                "pod": roles["pod"],
                "container": roles["container"],
            }
            for name in _LABEL_COLUMNS:
                columns[name].extend([label_values[name]] * count)
    schema: dict[str, pl.DataType] = {
        "measure": pl.String(),
        "t": pl.Float64(),
        "v": pl.Float64(),
        **{name: pl.String() for name in _LABEL_COLUMNS},
    }
    schema["gpu_index"] = pl.Int32()
    points = pl.DataFrame(columns, schema=schema)
    time_us = ((pl.col("t") - step_s) * 1_000_000).round().cast(pl.Int64())

    def measure(name: str) -> pl.Expr:
        return pl.col("v").filter(pl.col("measure") == name).first(ignore_nulls=True)

    timed = points.lazy().with_columns(
        pl.from_epoch(time_us, time_unit="us")
        .dt.replace_time_zone("UTC")
        .cast(UTC_TIME)
        .alias("time")
    )
    samples = (
        samples_by_instant(timed, {name: measure(name) for name in _MEASURE_COLUMNS})
        .select(
            pl.exclude("mem_used_mib", "mem_total_mib"),
            mib_to_bytes(pl.col("mem_used_mib")).alias("mem_used_bytes"),
            mib_to_bytes(pl.col("mem_total_mib")).alias("mem_total_bytes"),
        )
        .collect()
    )
    return conform_samples(samples), unplaced


_EXPORTED: Final[Mapping[str, str]] = {
    "namespace": "exported_namespace",
    "pod": "exported_pod",
    "container": "exported_container",
}


def _target_of(labels: Mapping[str, str]) -> tuple[str, str]:
    return labels.get("job", ""), labels.get("instance", "")


def _targets_with_workload_labels(
    results: Sequence[QueryResult],
) -> dict[tuple[str, str], set[str]]:
    """Per scrape target (job, instance): which workload labels Prometheus renamed.

    Without ``honor_labels``, a target label that collides with a scraped label renames the
    scraped one to ``exported_<name>`` (Prometheus docs, ``<scrape_config>``: honor_labels).
    A series of that target *without* ``exported_pod`` then carries the target's ``pod``:
    the exporter's own pod (a GPU nobody uses), not a workload.
    """
    renamed: dict[tuple[str, str], set[str]] = {}
    for result in results:
        for item in result.series:
            labels = item.get("metric") or {}
            for role, exported in _EXPORTED.items():
                if exported in labels:
                    renamed.setdefault(_target_of(labels), set()).add(role)
    return renamed


def _number(text: Any) -> float | None:
    """A sample value; NaN (a division by zero, a stale marker) is no value."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if value != value else value


def _instance_host(instance: str | None) -> str | None:
    """``gpu-node-1`` from an ``instance`` label ``gpu-node-1:9400`` (``[::1]:9400`` too)."""
    if not instance:
        return None
    parsed = urlsplit(f"//{instance}")
    return parsed.hostname or None
