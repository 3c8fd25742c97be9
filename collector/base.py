"""The collector plugin API: a small Protocol, the settings base class and the registry.

A collector is one module with one class. Its settings are a pydantic model, stated once; the
class receives the validated settings and the :class:`CollectorContext` and reads from them::

    class FocusFilesSettings(SourceSettings):
        path: str = Field(description="Local glob or s3://bucket/prefix/glob.")

    @register("focus-files")
    class FocusFiles:
        '''Reads FOCUS files. ... ```toml [[sources]] ... ``` '''

        output_tables: ClassVar[tuple[str, ...]] = ("billing",)
        Settings: ClassVar[type[SourceSettings]] = FocusFilesSettings

        def __init__(self, settings: FocusFilesSettings, context: CollectorContext) -> None:
            self.settings, self.context, self.name = settings, context, settings.name

        def collect(self, window: Window) -> Collected:
            ...  # reads self.settings.path; the world (clock, clients) from self.context

Values derived from settings (paths resolved against the working directory, clients) are
computed in ``__init__`` or when first needed. The outside world a test replaces (boto3
sessions, Google credentials, the NVML module, the clock, sleeping) comes in the context.

``collect`` returns the rows it read for the window, as frames keyed by table, and the rows it
could not read (file, row, field, reason), which the shell quarantines; it never writes.
A source that reads files may also offer ``probe()`` (:class:`Probe`): what would fail it now.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

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
    sleep: Callable[[float], None] = time.sleep
    """Waits between retries and polls; tests record the pauses instead."""
    table_reader: Callable[[str, Window], pl.LazyFrame] | None = None
    """Reads a lake table for a window, for collectors that build on landed data (onprem
    costs power from measured GPU watts). None outside the shell."""
    google_credentials_factory: Callable[[], Any] | None = None
    """Builds Google credentials (tests: anonymous ones); None means Application Default
    Credentials."""
    nvml_loader: Callable[[], Any] | None = None
    """Returns the ``pynvml`` module (tests: a fake with its interface); None imports it."""

    def boto3_session(self) -> Any:
        """A boto3 Session from the factory, else from boto3's default credential chain."""
        if self.boto3_session_factory is not None:
            return self.boto3_session_factory()
        import boto3

        return boto3.Session()

    def google_credentials(self) -> Any:
        """Credentials from the factory, else None (the client finds Application Default)."""
        if self.google_credentials_factory is not None:
            return self.google_credentials_factory()
        return None

    def resolve(self, path: str) -> str:
        """A local path from the settings made absolute against :attr:`working_dir`; URLs
        (``s3://...``) and absolute paths are returned as they are."""
        if "://" in path or Path(path).is_absolute():
            return path
        return str(self.working_dir / path)


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


SettingsT = TypeVar("SettingsT", bound=SourceSettings)
SettingsT_co = TypeVar("SettingsT_co", bound=SourceSettings, covariant=True)


@runtime_checkable
class Collector(Protocol[SettingsT_co]):
    """What every collector satisfies: built from its settings and the context, it collects."""

    output_tables: ClassVar[tuple[str, ...]]
    """The tables ``collect`` may return rows for (contract names)."""
    Settings: ClassVar[type[SourceSettings]]
    """The pydantic model of the kind's ``[[sources]]`` entries."""

    def __init__(self, settings: SettingsT_co, context: CollectorContext) -> None:
        """Keep the settings and the context; derive what comes from them (no I/O needed)."""

    @property
    def settings(self) -> SettingsT_co:
        """The validated ``[[sources]]`` entry."""
        ...

    @property
    def name(self) -> str:
        """The source's name (``settings.name``), for messages and rows."""
        ...

    def collect(self, window: Window) -> Collected:
        """Read the source for ``window``; return rows per table and rejected rows."""
        ...


@runtime_checkable
class Probe(Protocol):
    """A collector that can say, without collecting, what would fail it now.

    File sources implement it (a glob that matches no file, a folder that does not exist);
    ``config check --probe`` calls it for each configured source. Validation of the settings
    themselves never touches the file system, so a config is valid wherever it is checked.
    """

    def probe(self) -> str | None:
        """One line naming what would fail the source now, or None when nothing would."""
        ...


def probe(collector: Collector[SourceSettings]) -> str | None:
    """What would fail a built source now (see :class:`Probe`); None for kinds without a probe."""
    return collector.probe() if isinstance(collector, Probe) else None


@dataclass(frozen=True)
class CollectorSpec(Generic[SettingsT]):
    """A registered collector kind."""

    kind: str
    cls: type[Collector[SettingsT]]
    settings_model: type[SettingsT]
    output_tables: tuple[str, ...]

    @property
    def doc(self) -> str:
        """The class docstring, which carries the TOML example."""
        return inspect.getdoc(self.cls) or ""

    def build(self, settings: SourceSettings, context: CollectorContext) -> Collector[SettingsT]:
        """Construct the collector for one configured source (settings of this kind's model)."""
        if not isinstance(settings, self.settings_model):
            raise TypeError(
                f"a {self.kind} source needs {self.settings_model.__name__}, "
                f"not {type(settings).__name__}"
            )
        return self.cls(settings, context)


_REGISTRY: dict[str, CollectorSpec[SourceSettings]] = {}
_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

CollectorClass = TypeVar("CollectorClass", bound=type[Collector[SourceSettings]])


def register(kind: str) -> Callable[[CollectorClass], CollectorClass]:
    """Class decorator: register a collector under a kebab-case ``kind``."""
    if not _KIND_PATTERN.match(kind):
        raise ValueError(f"collector kind {kind!r} must be kebab-case")

    def decorate(cls: CollectorClass) -> CollectorClass:
        if kind in _REGISTRY and _REGISTRY[kind].cls is not cls:
            raise ValueError(f"collector kind {kind!r} is registered twice")
        # Checked here too: a class is only type-checked where mypy runs, and a plugin that
        # forgot these would otherwise fail at the first config naming it.
        settings_model = getattr(cls, "Settings", None)
        if not (isinstance(settings_model, type) and issubclass(settings_model, SourceSettings)):
            raise TypeError(f"{cls!r} must declare Settings, a subclass of SourceSettings")
        output_tables = tuple(getattr(cls, "output_tables", ()))
        if not output_tables:
            raise TypeError(f"{cls!r} must declare output_tables")
        _REGISTRY[kind] = CollectorSpec(kind, cls, settings_model, output_tables)
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


def registry() -> Mapping[str, CollectorSpec[SourceSettings]]:
    """Every collector kind there is (the collector modules are imported first)."""
    load_collectors()
    return dict(_REGISTRY)


def get_spec(kind: str) -> CollectorSpec[SourceSettings]:
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
