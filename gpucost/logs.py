"""Logging set-up: stdlib logging, configured once at the entry point.

Human lines by default; ``--log-format json`` gives one JSON object per line for log shippers:
``time``, ``level``, ``logger``, ``message`` and, where the line is about one, the structured
fields of :data:`LOG_FIELDS` (``run_id``, ``source``, ``table``, ``rows``, ...), so a log query
never has to parse the message. Fields come from ``extra=`` on the call and from
:func:`log_context`, which every line inside its block carries (a run's id, the source being
collected). Logs always go to stderr; results go to stdout.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

LogFormat = Literal["text", "json"]

LOG_FIELDS: Final = (
    "run_id",
    "command",
    "source",
    "table",
    "rows",
    "rejected_rows",
    "stage",
    "status",
    "day",
    "month",
    "window",
    "duration_s",
)
"""Structured fields a JSON log line carries when the line is about one of them."""

_CONTEXT: ContextVar[dict[str, Any]] = ContextVar("gpucost_log_context", default={})  # noqa: B039


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every log line inside the block carries ``fields`` (nested blocks add to them)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, structured fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = {
            **_CONTEXT.get(),
            **{n: getattr(record, n) for n in LOG_FIELDS if hasattr(record, n)},
        }
        for name in LOG_FIELDS:
            if name in fields:
                document[name] = _plain(fields[name])
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time.

    A handler that kept the stream it was created with would write to a closed file once a
    test runner (or a daemon re-opening its stdio) replaced ``sys.stderr``.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(log_format: LogFormat = "text", level: str = "INFO") -> None:
    """Configure the root logger to write to stderr in the chosen format."""
    handler = CurrentStderrHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log request details (URLs with presigned tokens among them) at DEBUG.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
