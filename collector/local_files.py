"""Local files, found and read one way for every source that reads them.

Glob rules are Python's :func:`glob.glob` with ``recursive=True``, the same in every source:
``*``, ``?`` and ``[...]`` match within one folder, ``**`` matches any number of folders
(``exports/**/*.csv``), names starting with a dot are matched only by a pattern that says so,
and only files count (not folders). A path without wildcards names one file.

Settings never look at the disk, so a config is valid wherever it is checked: a pattern that
matches nothing fails its source when the source runs (a CollectorError naming the source and
the pattern, which the shell records as a failed source) and :func:`probe_files` reports the
same problem without collecting (``config check --probe``).
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
from pydantic import Field

from gpucost.collector.base import SourceSettings
from gpucost.core.errors import CollectorError


class LocalFileSettings(SourceSettings):
    """A source read from local files: ``path`` is a file or a glob (see the module's rules)."""

    path: str = Field(
        description="Local file or glob (** matches any depth), relative to the working directory."
    )


class LocalFileSource:
    """Mixin for a collector whose ``path`` setting globs local files: its probe and its files.

    The collector sets ``name`` and ``path`` (resolved against the working directory) in its
    own ``__init__``.
    """

    name: str
    path: str

    def probe(self) -> str | None:
        """What would fail the source now: no file matches ``path``."""
        return probe_files(self.path)

    def files(self) -> list[str]:
        """The files ``path`` matches; a CollectorError naming the source when there is none."""
        return matching_files(self.name, self.path)


def glob_files(pattern: str) -> list[str]:
    """The files ``pattern`` matches, sorted (``**`` matches any number of folders)."""
    return sorted(path for path in glob.glob(pattern, recursive=True) if Path(path).is_file())


def matching_files(source: str, *patterns: str) -> list[str]:
    """The files any of ``patterns`` match, sorted, each once; a CollectorError naming the
    source and the patterns when there is none."""
    files = sorted({file for pattern in patterns for file in glob_files(pattern)})
    if not files:
        raise CollectorError(source, _no_match(patterns))
    return files


def probe_files(*patterns: str) -> str | None:
    """The problem a run would meet (no file matches), or None: for ``config check --probe``."""
    if any(glob_files(pattern) for pattern in patterns):
        return None
    return _no_match(patterns)


def read_file(source: str, path: str) -> bytes:
    """A file's bytes; a CollectorError naming the file when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise CollectorError(source, f"cannot read {path}: {error.strerror}") from None


def read_all(
    source: str,
    files: Sequence[str],
    parse: Callable[[str, bytes], tuple[pl.DataFrame, pl.DataFrame]],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each file's bytes through ``parse(file, data)`` -> (rows, rejects), each concatenated."""
    rows, rejects = [], []
    for file in files:
        frame, bad = parse(file, read_file(source, file))
        rows.append(frame)
        rejects.append(bad)
    return pl.concat(rows), pl.concat(rejects)


def _no_match(patterns: Sequence[str]) -> str:
    if len(patterns) == 1:
        return f"{patterns[0]} matches no file"
    return f"{', '.join(patterns)} match no file"
