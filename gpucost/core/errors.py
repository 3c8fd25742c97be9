"""One root error class and the errors each stage raises, with their context as attributes.

Every message is meant to be read by an operator at 3 a.m.: it names the file, the source, the
table, the column or the key that is wrong, and what would make it right.
"""

from __future__ import annotations

from collections.abc import Sequence


class GpucostError(Exception):
    """Root of every error gpucost raises on purpose."""


class ConfigError(GpucostError):
    """The configuration file or an environment override is wrong (exit status 2)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ContractError(GpucostError):
    """A frame does not satisfy its table contract."""

    def __init__(self, table: str, source: str, problem: str, columns: Sequence[str] = ()) -> None:
        self.table = table
        self.source = source
        self.columns = tuple(columns)
        named = f": {', '.join(self.columns)}" if self.columns else ""
        super().__init__(f"table {table!r} from source {source!r}: {problem}{named}")


class CollectorError(GpucostError):
    """A collector could not produce its rows; names the source that failed."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"source {source!r}: {message}")


class LakeError(GpucostError):
    """Reading or writing the lake failed."""


class MissingDependencyError(GpucostError):
    """An optional dependency is not installed; the message carries the install line."""

    def __init__(self, package: str, feature: str) -> None:
        self.package = package
        super().__init__(f"{feature} needs the package {package!r}: pip install '{package}'")
