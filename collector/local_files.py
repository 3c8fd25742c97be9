"""What the collectors of files the team keeps by hand share: settings, paths and reading."""

from __future__ import annotations

import glob
from pathlib import Path

from pydantic import Field, model_validator

from gpucost.collector.base import CollectorContext, SourceSettings
from gpucost.core.errors import CollectorError


class LocalFileSettings(SourceSettings):
    """A source read from local files: ``path`` is a file or a glob that must match now."""

    path: str = Field(description="Local file or glob, relative to the working directory.")

    @model_validator(mode="after")
    def _matches_a_file(self) -> LocalFileSettings:
        if not glob.glob(self.path):
            raise ValueError(f"path {self.path!r} matches no file")
        return self


def resolve(path: str, context: CollectorContext) -> str:
    """``path`` made absolute against the context's working directory."""
    return path if Path(path).is_absolute() else str(context.working_dir / path)


def matching_files(source: str, pattern: str) -> list[str]:
    """The files a glob matches, sorted; a CollectorError naming the pattern when none."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise CollectorError(source, f"{pattern} matches no file")
    return files


def read_file(source: str, path: str) -> bytes:
    """A file's bytes; a CollectorError naming the file when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise CollectorError(source, f"cannot read {path}: {error.strerror}") from None
