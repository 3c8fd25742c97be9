"""The collector plugin API: a small Protocol, the settings base class and the registry.

A collector is one module with one class::

    @register("focus-files")
    class FocusFiles:
        '''Reads FOCUS files. ... ```toml [[sources]] ... ``` '''

        output_tables = ("billing",)
        Settings = FocusFilesSettings          # pydantic model, extends SourceSettings

        @classmethod
        def from_settings(cls, settings, context) -> FocusFiles: ...
        def collect(self, window: Window) -> Collected: ...

``collect`` returns the rows it read for the window, as frames keyed by table, and the rows it
could not read (file, row, field, reason), which the shell quarantines; it never writes.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from gpucost.core.window import Window

SOURCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

REJECT_SCHEMA = pl.Schema(
    {
        "file": pl.String(),
        "row": pl.Int64(),
        "field": pl.String(),
        "reason": pl.String(),
        "raw": pl.String(),
    }
)
"""Rows a collector could not read: where (file, 1-based data row), which field and why."""


class SourceSettings(BaseModel):
    """Keys every ``[[sources]]`` entry has; each kind extends this with its own keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SOURCE_NAME_PATTERN, description="Unique name of the source.")
    kind: str = Field(description="Registry key of the collector, e.g. 'focus-files'.")
    schedule: str | None = Field(
        default=None, description="Cron expression for `gpucost serve` (UTC)."
    )
    enabled: bool = Field(default=True, description="Disabled sources are skipped, visibly.")


@dataclass(frozen=True)
class CollectorContext:
    """What the shell hands every collector: the world it may touch."""

    storage_options: Mapping[str, str] = field(default_factory=dict)
    """Object-store options for Polars readers (endpoint, region) from ``[store]``."""
    boto3_session_factory: Callable[[], Any] | None = None
    """Builds a boto3 Session (tests point it at moto); None means boto3's default chain."""
    working_dir: Path = field(default_factory=Path.cwd)
    """Relative paths in source settings are resolved against this directory."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """Current time (ingestion timestamps); tests pin it."""
    table_reader: Callable[[str, Window], pl.LazyFrame] | None = None
    """Reads a lake table for a window, for collectors that build on landed data (onprem
    costs power from measured GPU watts). None outside the shell."""

    def boto3_session(self) -> Any:
        """A boto3 Session from the factory, else from boto3's default credential chain."""
        if self.boto3_session_factory is not None:
            return self.boto3_session_factory()
        import boto3

        return boto3.Session()


@dataclass
class Collected:
    """What one collection returns: rows per table, rows it rejected, notes for the manifest."""

    frames: dict[str, pl.DataFrame]
    rejects: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=REJECT_SCHEMA))
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts worth keeping in the run manifest: files read, API requests made, bytes scanned."""
    windows: dict[str, Window] = field(default_factory=dict)
    """Per table, a wider window the rows replace (it must contain the requested one): a
    restated CUR month replaces the whole billing period, not only the requested days."""


@runtime_checkable
class Collector(Protocol):
    """What every collector satisfies."""

    name: str
    output_tables: ClassVar[tuple[str, ...]]

    def collect(self, window: Window) -> Collected:
        """Read the source for ``window``; return rows per table and rejected rows."""
        ...


class _CollectorClass(Protocol):
    output_tables: ClassVar[tuple[str, ...]]
    Settings: ClassVar[type[SourceSettings]]

    @classmethod
    def from_settings(cls, settings: Any, context: CollectorContext) -> Collector: ...


@dataclass(frozen=True)
class CollectorSpec:
    """A registered collector kind."""

    kind: str
    cls: type[Any]
    settings_model: type[SourceSettings]
    output_tables: tuple[str, ...]

    @property
    def doc(self) -> str:
        """The class docstring, which carries the TOML example."""
        return inspect.getdoc(self.cls) or ""

    def build(self, settings: SourceSettings, context: CollectorContext) -> Collector:
        """Construct the collector for one configured source."""
        collector: Collector = self.cls.from_settings(settings, context)
        return collector


_REGISTRY: dict[str, CollectorSpec] = {}
_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

C = TypeVar("C")


def register(kind: str) -> Callable[[C], C]:
    """Class decorator: register a collector under a kebab-case ``kind``."""
    if not _KIND_PATTERN.match(kind):
        raise ValueError(f"collector kind {kind!r} must be kebab-case")

    def decorate(cls: C) -> C:
        if kind in _REGISTRY and _REGISTRY[kind].cls is not cls:
            raise ValueError(f"collector kind {kind!r} is registered twice")
        settings_model = getattr(cls, "Settings", None)
        if not (isinstance(settings_model, type) and issubclass(settings_model, SourceSettings)):
            raise TypeError(f"{cls!r} must declare Settings, a subclass of SourceSettings")
        output_tables = tuple(getattr(cls, "output_tables", ()))
        if not output_tables:
            raise TypeError(f"{cls!r} must declare output_tables")
        _REGISTRY[kind] = CollectorSpec(kind, cls, settings_model, output_tables)  # type: ignore[arg-type]
        return cls

    return decorate


def load_collectors() -> None:
    """Import every module of this package, so that each collector registers its kind.

    Lookups call it, so no caller has to: importing a module that is already imported costs
    a dictionary lookup, and a module only registers when first imported.
    """
    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")


def registry() -> Mapping[str, CollectorSpec]:
    """Every collector kind there is (the collector modules are imported first)."""
    load_collectors()
    return dict(_REGISTRY)


def get_spec(kind: str) -> CollectorSpec:
    """The spec of ``kind``, or KeyError listing the known kinds.

    A kind not registered yet makes the collector modules load, then is looked up again.
    """
    if kind not in _REGISTRY:
        load_collectors()
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown source kind {kind!r}; known kinds: {known}") from None
