"""The one typed configuration object, loaded once from TOML with environment overrides.

This is the only module that reads the environment. Overrides are named
``GPUCOST__<SECTION>__<KEY>`` (``GPUCOST__STORE__DATA_DIR=s3://lake/gpucost``); a source's key is
``GPUCOST__SOURCES__<SOURCE_NAME>__<KEY>`` with the source name upper-cased and ``-`` as ``_``.
Override values are read as TOML scalars when they parse as one (``true``, ``3``), else as text.

Secrets never sit in the file: a secret field is ``{ env = "VAR" }`` or ``{ file = "/path" }``
and resolves to a :class:`pydantic.SecretStr`, whose repr and str are masked.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    model_validator,
)

from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.projects import ProjectRule
from gpucost.collector.base import SourceSettings, get_spec
from gpucost.core.errors import ConfigError
from gpucost.core.secrets import SecretRef
from gpucost.reports.thresholds import FindingThresholds

logger = logging.getLogger(__name__)

ENV_PREFIX = "GPUCOST__"


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(StrictModel):
    """``[store]``: where the lake and the outputs live."""

    data_dir: str = Field(default="data", description="Local path, or s3://bucket/prefix.")
    out_dir: str = Field(default="out", description="Exports and reports.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto); AWS when unset."
    )
    s3_region: str | None = Field(default=None, description="Region of the lake's bucket.")

    @model_validator(mode="after")
    def _supported_schemes(self) -> StoreSettings:
        for key, value in (("data_dir", self.data_dir), ("out_dir", self.out_dir)):
            if "://" in value and not value.startswith("s3://"):
                scheme = value.split("://", 1)[0]
                raise ValueError(
                    f"{key} {value!r}: the {scheme}:// scheme is not supported yet; "
                    "use a local path or s3://"
                )
        return self


class NightlySettings(StrictModel):
    """``[nightly]``: which days a night collects."""

    lookback_days: int = Field(
        default=3,
        ge=1,
        le=400,
        description="Days before `as_of` re-collected each night (bills restate for days).",
    )
    as_of: date | None = Field(
        default=None, description="Pin the night's date (demos, tests); today (UTC) when unset."
    )


class ServeSettings(StrictModel):
    """``[serve]``: the long-running scheduler (``gpucost serve``) and its HTTP endpoints."""

    jobstore: str | None = Field(
        default=None,
        description=(
            "SQLite file (or SQLAlchemy URL) keeping the schedule across restarts; default "
            "`{data_dir}/_scheduler.sqlite` when data_dir is local (required when it is s3://)."
        ),
    )
    run_nightly: bool = Field(
        default=True,
        description="Run the nightly pipeline too; false when cron or a CronJob runs it.",
    )
    nightly_schedule: str = Field(
        default="0 2 * * *",
        description="Cron (UTC) of the nightly pipeline; 6 fields means seconds first.",
    )
    misfire_grace_s: int = Field(
        default=6 * 3600,
        ge=1,
        description="A run missed by at most this much (restart, long job) still runs, once.",
    )
    max_workers: int = Field(
        default=1, ge=1, le=16, description="Jobs running at once (1: one lake writer at a time)."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address of /metrics and /healthz; loopback by default."
    )
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Port of /metrics and /healthz (0: any free)."
    )
    metrics_token: SecretRef | None = Field(
        default=None,
        description="Bearer token /metrics requires when set (bind beyond loopback with one).",
    )
    business_metrics: bool = Field(
        default=True,
        description="Export cost per project, idle GPU hours and waste gauges from the lake.",
    )


class LockSettings(StrictModel):
    """``[lock]``: the lock that keeps two nightly or backfill runs from overlapping."""

    path: str | None = Field(
        default=None,
        description=(
            "Lock file; default `{data_dir}/_locks/nightly.lock` when data_dir is local, else a "
            "file in the system temporary directory (it then only excludes runs on this host)."
        ),
    )


class ReportsSettings(StrictModel):
    """``[reports]``: finding thresholds (docs/reports.md) and the Slack digest."""

    thresholds: FindingThresholds = Field(
        default_factory=FindingThresholds,
        description="The findings' thresholds, e.g. { idle_min_hours = 12 } (docs/reports.md).",
    )
    slack_webhook: SecretRef | None = Field(
        default=None, description='Incoming-webhook URL: { env = "VAR" } or { file = "..." }.'
    )
    top_findings: int = Field(default=10, ge=1, le=100)
    report_url: str | None = Field(
        default=None, description="Where out_dir/reports is served, for the digest's link."
    )


class GpucostConfig(StrictModel):
    """The whole validated configuration.

    Sections a stage reads are that stage's own models, stated once there: ``[allocation]`` is
    :class:`~gpucost.allocator.policy.AllocationPolicy`, ``[[projects]]`` are
    :class:`~gpucost.allocator.projects.ProjectRule` and ``[reports] thresholds`` is
    :class:`~gpucost.reports.thresholds.FindingThresholds`; a ``[[sources]]`` entry is its
    kind's settings model.
    """

    store: StoreSettings = Field(default_factory=StoreSettings)
    nightly: NightlySettings = Field(default_factory=NightlySettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    lock: LockSettings = Field(default_factory=LockSettings)
    allocation: AllocationPolicy = Field(default_factory=AllocationPolicy)
    reports: ReportsSettings = Field(default_factory=ReportsSettings)
    sources: list[SerializeAsAny[SourceSettings]] = Field(default_factory=list)
    projects: list[ProjectRule] = Field(default_factory=list)
    path: str | None = Field(default=None, exclude=True, description="Where it was loaded from.")

    @model_validator(mode="after")
    def _some_source(self) -> GpucostConfig:
        # Without a source every night "succeeds" with empty exports, which reads as a
        # complete, zero-cost report; refuse it where the mistake is made.
        if not self.sources:
            raise ValueError(
                "no [[sources]]: gpucost needs at least one source to collect from "
                "(a [[sources]] table with a name and a kind)"
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> GpucostConfig:
        for what, names in (
            ("source", [source.name for source in self.sources]),
            ("project", [project.name for project in self.projects]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{what} name {name!r} is used twice")
                seen.add(name)
        return self

    def source(self, name: str) -> SourceSettings:
        """The source named ``name``, or a ConfigError listing the names there are."""
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(source.name for source in self.sources) or "none"
        raise ConfigError(f"no source named {name!r}; configured sources: {known}", path=self.path)

    def storage_options(self) -> dict[str, str]:
        """Object-store options for Polars (`aws_endpoint_url`, `aws_region`)."""
        options: dict[str, str] = {}
        if self.store.s3_endpoint_url:
            options["aws_endpoint_url"] = self.store.s3_endpoint_url
            if self.store.s3_endpoint_url.startswith("http://"):
                options["aws_allow_http"] = "true"
        if self.store.s3_region:
            options["aws_region"] = self.store.s3_region
        return options


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> GpucostConfig:
    """Read, override and validate a config file; every problem is one ConfigError line.

    Source sections are validated by their kind's own settings model, so an unknown key in a
    ``[[sources]]`` entry is named with the source it sits in.
    """
    environ = os.environ if environ is None else environ
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=str(path)) from None
    except OSError as error:
        raise ConfigError(f"cannot read config file: {error.strerror}", path=str(path)) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"malformed TOML: {error}", path=str(path)) from None
    raw = apply_env_overrides(raw, environ)
    return validate_config(raw, path=str(path))


def validate_config(raw: Mapping[str, Any], *, path: str | None = None) -> GpucostConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`)."""
    raw = dict(raw)
    raw_sources = raw.pop("sources", [])
    if not isinstance(raw_sources, list):
        raise ConfigError("`sources` must be an array of tables ([[sources]])", path=path)
    sources: list[SourceSettings] = []
    for index, raw_source in enumerate(raw_sources):
        where = f"sources[{index}]"
        if not isinstance(raw_source, dict):
            raise ConfigError(f"{where} must be a table", path=path)
        if isinstance(raw_source.get("name"), str):
            where = f"{where} ({raw_source['name']})"
        kind = raw_source.get("kind")
        if not isinstance(kind, str):
            raise ConfigError(f"{where}: missing key `kind`", path=path)
        try:
            model = get_spec(kind).settings_model
        except KeyError as error:
            raise ConfigError(f"{where}: {error.args[0]}", path=path) from None
        try:
            sources.append(model.model_validate(raw_source))
        except ValidationError as error:
            raise ConfigError(_describe(error, prefix=where), path=path) from None
    try:
        return GpucostConfig.model_validate({**raw, "sources": sources, "path": path})
    except ValidationError as error:
        raise ConfigError(_describe(error, prefix=""), path=path) from None


def apply_env_overrides(raw: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply ``GPUCOST__SECTION__KEY`` variables to a parsed config; unknown targets are errors."""
    result: dict[str, Any] = {key: value for key, value in raw.items()}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX):
            continue
        parts = [part.lower() for part in variable[len(ENV_PREFIX) :].split("__")]
        value = _scalar(environ[variable])
        if len(parts) == 2 and parts[0] != "sources":
            section, key = parts
            current = result.get(section, {})
            if not isinstance(current, dict):
                raise ConfigError(f"{variable}: section `{section}` is not a table")
            result[section] = {**current, key: value}
        elif len(parts) == 3 and parts[0] == "sources":
            wanted, key = parts[1], parts[2]
            sources = [dict(source) for source in result.get("sources", [])]
            matches = [
                source
                for source in sources
                if str(source.get("name", "")).replace("-", "_").lower() == wanted
            ]
            if not matches:
                raise ConfigError(f"{variable}: no source named like {wanted!r} to override")
            matches[0][key] = value
            result["sources"] = sources
        else:
            raise ConfigError(
                f"{variable}: overrides are GPUCOST__<SECTION>__<KEY> or "
                "GPUCOST__SOURCES__<SOURCE_NAME>__<KEY>"
            )
    return result


def secret_refs(value: Any) -> list[SecretRef]:
    """Every :class:`SecretRef` inside a config object (sections, sources, lists), in order."""
    found: list[SecretRef] = []
    if isinstance(value, SecretRef):
        found.append(value)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            found.extend(secret_refs(getattr(value, name)))
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(secret_refs(item))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(secret_refs(item))
    return found


def permission_warnings(config: GpucostConfig) -> list[str]:
    """Warnings for secret files others can read, and for such a config readable by others.

    A secret ``file`` whose mode lets group or others read it is readable by every account on
    the host; a config that names secret files and is itself world-readable tells them where to
    look. Both are warnings, not errors: containers often mount files with loose modes on a
    filesystem nobody else shares.
    """
    warnings: list[str] = []
    files = [ref.file for ref in secret_refs(config) if ref.file is not None]
    for file in files:
        try:
            mode = Path(file).stat().st_mode
        except OSError:
            continue  # resolving the secret reports a missing file
        if mode & 0o044:
            warnings.append(
                f"secret file {file} is readable by group or others (mode {mode & 0o777:04o}); "
                "chmod 600 it"
            )
    if files and config.path is not None:
        try:
            mode = Path(config.path).stat().st_mode
        except OSError:
            return warnings
        if mode & 0o004:
            warnings.append(
                f"config file {config.path} names secret files and is readable by others "
                f"(mode {mode & 0o777:04o}); chmod o-r it"
            )
    return warnings


def _scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _describe(error: ValidationError, *, prefix: str) -> str:
    """One line for all of a validation error's problems, naming each key."""
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        where = ".".join(part for part in (prefix, location) if part)
        if item["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key")
        elif item["type"] == "missing":
            problems.append(f"{where}: missing key")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)
