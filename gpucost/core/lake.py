"""The lake: Parquet tables partitioned by day, one file per source and day.

Layout::

    {data_dir}/{table}/day=YYYY-MM-DD/part-{source}.parquet
    {data_dir}/_runs/{run_id}.json               run manifests
    {data_dir}/_quarantine/{source}/{run_id}.csv rows a collector could not read

A source's day is exactly one object, so "replace this source's rows for this day" is one
atomic object replacement (see :mod:`gpucost.core.storage`), on a local disk and on S3 alike, and a
crash mid-write leaves the previous version readable. Rows are written in a canonical order,
so the same rows give the same bytes; a rewrite whose rows are unchanged is skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Literal

import polars as pl

from gpucost.core.contracts import TableContract
from gpucost.core.errors import ContractError, LakeError
from gpucost.core.storage import LocalStorage, S3Storage
from gpucost.core.window import Window

_PART = re.compile(
    r"^(?P<table>[a-z_]+)/day=(?P<day>\d{4}-\d{2}-\d{2})/part-(?P<source>.+)\.parquet$"
)

VOLATILE_COLUMNS = frozenset({"x_IngestedAt"})
"""Columns that record when a row was written, not what it says: left out of content checks."""


@dataclass(frozen=True)
class PartWrite:
    """What happened to one source's day of one table."""

    table: str
    day: str
    path: str
    rows: int
    action: Literal["written", "unchanged", "deleted", "absent"]
    content_sha256: str | None


def day_of(contract: TableContract) -> pl.Expr:
    """The UTC date of the contract's day column (datetimes in the lake are UTC)."""
    column = contract.schema[contract.day_column]
    expression = pl.col(contract.day_column)
    return expression.dt.date() if isinstance(column, pl.Datetime) else expression


class Lake:
    """Reads and writes the lake's tables through a :class:`~gpucost.core.storage.Storage`."""

    def __init__(
        self, storage: LocalStorage | S3Storage, storage_options: Mapping[str, str] | None = None
    ) -> None:
        self.storage = storage
        self.storage_options = dict(storage_options or {})

    @staticmethod
    def part_path(table: str, day: date, source: str) -> str:
        """Relative path of one source's day of a table."""
        return f"{table}/day={day.isoformat()}/part-{source}.parquet"

    def write_window(
        self,
        contract: TableContract,
        source: str,
        window: Window,
        frame: pl.DataFrame,
    ) -> list[PartWrite]:
        """Replace ``source``'s rows of ``contract``'s table for every day of ``window``.

        Days of the window without rows lose their previous file, so a re-run that now finds
        nothing for a day does not leave stale rows behind. Every row must carry ``source`` and
        fall inside the window: filtering is the caller's decision, made visibly.
        """
        contract.validate(frame, source)
        if isinstance(self.storage, LocalStorage):
            self.storage.remove_stale_temporaries(contract.name, f"part-{source}.parquet")
        foreign = frame.filter(pl.col(contract.source_column) != source).height
        if foreign:
            raise ContractError(
                contract.name,
                source,
                f"{foreign} rows name another source in",
                [contract.source_column],
            )
        with_day = frame.with_columns(day_of(contract).alias("__day"))
        outside = with_day.filter(~window.contains(pl.col("__day"))).height
        if outside:
            raise LakeError(
                f"{contract.name} from {source!r}: {outside} rows fall outside {window}"
            )
        parts = with_day.partition_by("__day", as_dict=True, include_key=False)
        writes: list[PartWrite] = []
        for day in window.each_day():
            rows = parts.get((day,))
            writes.append(self._replace_day(contract, source, day, rows))
        return writes

    def _replace_day(
        self, contract: TableContract, source: str, day: date, rows: pl.DataFrame | None
    ) -> PartWrite:
        path = self.part_path(contract.name, day, source)
        if rows is None or rows.height == 0:
            existed = self.storage.exists(path)
            if existed:
                self.storage.delete(path)
            return PartWrite(
                contract.name, day.isoformat(), path, 0, "deleted" if existed else "absent", None
            )
        canonical = canonical_order(rows)
        content = content_sha256(canonical)
        if self.storage.content_sha256(path) == content:
            return PartWrite(
                contract.name, day.isoformat(), path, rows.height, "unchanged", content
            )
        buffer = io.BytesIO()
        canonical.write_parquet(
            buffer, compression="zstd", metadata={"gpucost.content_sha256": content}
        )
        self.storage.put_atomic(path, buffer.getvalue(), content_sha256=content)
        return PartWrite(contract.name, day.isoformat(), path, rows.height, "written", content)

    def files(
        self, table: str, window: Window | None = None, sources: Iterable[str] | None = None
    ) -> list[str]:
        """Relative paths of the table's parts, optionally limited to a window and sources."""
        wanted = set(sources) if sources is not None else None
        selected = []
        for relative in self.storage.list(f"{table}/"):
            match = _PART.match(relative)
            if match is None or match["table"] != table:
                continue
            if wanted is not None and match["source"] not in wanted:
                continue
            if window is not None:
                day = date.fromisoformat(match["day"])
                if not window.start <= day < window.end:
                    continue
            selected.append(relative)
        return selected

    def scan(
        self,
        contract: TableContract,
        window: Window | None = None,
        sources: Iterable[str] | None = None,
    ) -> pl.LazyFrame:
        """A lazy scan of a table, validated against its contract (empty if nothing landed)."""
        paths = self.files(contract.name, window, sources)
        if not paths:
            return contract.empty().lazy()
        scan = pl.scan_parquet(
            [self.storage.url(path) for path in paths],
            hive_partitioning=False,
            storage_options=self.storage_options or None,
        )
        contract.validate(scan, source=f"lake:{contract.name}")
        return scan

    def read(
        self,
        contract: TableContract,
        window: Window | None = None,
        sources: Iterable[str] | None = None,
    ) -> pl.DataFrame:
        """Read a table into memory, validated, in canonical row order."""
        frame = self.scan(contract, window, sources).collect()
        contract.validate(frame, source=f"lake:{contract.name}")
        return canonical_order(frame)

    def write_json(self, relative: str, document: Mapping[str, Any]) -> str:
        """Write a JSON document atomically; returns its URL."""
        data = json.dumps(document, indent=2, sort_keys=True, default=str).encode() + b"\n"
        self.storage.put_atomic(relative, data)
        return self.storage.url(relative)

    def read_json(self, relative: str) -> Any:
        """Read a JSON document written by :meth:`write_json`."""
        return json.loads(self.storage.read_bytes(relative))

    def quarantine(self, source: str, run_id: str, rejects: pl.DataFrame) -> str | None:
        """Keep rejected rows where an operator can read them; returns the path (or None)."""
        if rejects.height == 0:
            return None
        relative = f"_quarantine/{source}/{run_id}.csv"
        self.storage.put_atomic(relative, rejects.write_csv().encode())
        return self.storage.url(relative)


def canonical_order(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted by every column, so equal row sets always give equal bytes."""
    if frame.height < 2:
        return frame
    return frame.sort(frame.columns, nulls_last=True, maintain_order=True)


def content_sha256(frame: pl.DataFrame, volatile: Sequence[str] = tuple(VOLATILE_COLUMNS)) -> str:
    """SHA-256 of a frame's rows as CSV, leaving out columns that only record write time.

    CSV renders Decimal values exactly, so two frames hash equal iff their rows are equal.
    """
    stable = frame.drop([name for name in volatile if name in frame.columns])
    digest = hashlib.sha256(str(stable.schema).encode())
    digest.update(stable.write_csv().encode())
    return digest.hexdigest()


def part_as_dict(part: PartWrite) -> dict[str, Any]:
    """A PartWrite as a JSON-ready mapping."""
    return asdict(part)
