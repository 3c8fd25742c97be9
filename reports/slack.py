"""Deliver digest payloads to a Slack incoming webhook: the only I/O of the digest.

* The webhook URL is a secret (it alone lets anyone post to the channel): it is never logged,
  only :func:`redact_url`'s ``https://hooks.slack.com/***``. While sending, a filter on
  urllib3's connection-pool logger scrubs the URL's path from its DEBUG lines too.
* ``429 Too Many Requests`` is retried after the ``Retry-After`` seconds Slack sends (Slack
  rate limits: incoming webhooks allow about one message per second per channel, with short
  bursts); ``5xx``, timeouts and connection errors are retried with exponential backoff; other
  answers (``400 invalid_blocks``, ``403``, ``404 no_service``, ``410``) are final. Attempts
  per message are bounded.
* Messages go out in order, at least ``min_interval_s`` apart; after a message fails for good
  the rest are not sent (a digest missing its first part would mislead), and every failure is
  in the returned :class:`DeliveryReport` for the caller's exit status.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

logger = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class SecretValue(Protocol):
    """A secret whose value must be asked for (``pydantic.SecretStr``)."""

    def get_secret_value(self) -> str:
        """The secret in clear."""
        ...


@dataclass(frozen=True)
class DeliveryFailure:
    """A message Slack did not take."""

    message: int
    """1-based index of the message."""
    status: int | None
    """HTTP status of the last answer, None when no answer came (timeout, refused)."""
    reason: str
    """Slack's answer body (``invalid_blocks``...) or the error's class, shortened."""
    attempts: int


@dataclass
class DeliveryReport:
    """What :func:`send_digest` did."""

    messages: int
    destination: str
    """The redacted webhook URL."""
    dry_run: bool = False
    delivered: int = 0
    attempts: int = 0
    failures: list[DeliveryFailure] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    """The payloads (filled on a dry run)."""

    @property
    def ok(self) -> bool:
        """Every message was delivered (or, on a dry run, would be sent)."""
        return not self.failures and (self.dry_run or self.delivered == self.messages)


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/***``: scheme and host only."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or '?'}://{host}{port}/***"


def send_digest(
    payloads: Sequence[Mapping[str, Any]],
    webhook_url: str | SecretValue,
    *,
    dry_run: bool = False,
    session: requests.Session | None = None,
    max_attempts: int = 5,
    backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
    max_retry_after_s: float = 300.0,
    timeout_s: float = 10.0,
    min_interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryReport:
    """POST each payload to the webhook; see the module docstring for retries and logging.

    ``dry_run`` posts nothing and returns the payloads in the report.
    """
    url = webhook_url if isinstance(webhook_url, str) else webhook_url.get_secret_value()
    report = DeliveryReport(messages=len(payloads), destination=redact_url(url), dry_run=dry_run)
    if dry_run:
        report.payloads = [dict(payload) for payload in payloads]
        logger.info("digest dry run: %d messages not sent", len(payloads))
        return report
    http = session or requests.Session()
    with _scrubbed_urllib3_logs(url):
        for index, payload in enumerate(payloads, start=1):
            if index > 1 and min_interval_s > 0:
                sleep(min_interval_s)
            failure = _deliver(
                http,
                url,
                payload,
                index,
                report,
                max_attempts=max_attempts,
                backoff_s=backoff_s,
                max_backoff_s=max_backoff_s,
                max_retry_after_s=max_retry_after_s,
                timeout_s=timeout_s,
                sleep=sleep,
            )
            if failure is not None:
                report.failures.append(failure)
                logger.error(
                    "digest message %d/%d not delivered to %s: status %s, %s; %d later "
                    "messages not sent",
                    index,
                    len(payloads),
                    report.destination,
                    failure.status,
                    failure.reason,
                    len(payloads) - index,
                )
                break
            report.delivered += 1
            logger.info(
                "digest message %d/%d delivered to %s", index, len(payloads), report.destination
            )
    return report


def _deliver(
    http: requests.Session,
    url: str,
    payload: Mapping[str, Any],
    index: int,
    report: DeliveryReport,
    *,
    max_attempts: int,
    backoff_s: float,
    max_backoff_s: float,
    max_retry_after_s: float,
    timeout_s: float,
    sleep: Callable[[float], None],
) -> DeliveryFailure | None:
    """One message, with retries; None when delivered."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    status: int | None = None
    reason = ""
    for attempt in range(1, max_attempts + 1):
        report.attempts += 1
        wait: float
        try:
            response = http.post(
                url,
                data=body,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=timeout_s,
            )
        except requests.RequestException as error:
            status, reason = None, type(error).__name__
            wait = _backoff(attempt, backoff_s, max_backoff_s)
        else:
            status = response.status_code
            reason = _scrub(response.text.strip()[:200], url) or response.reason or ""
            if 200 <= status < 300:
                return None
            if status not in TRANSIENT_STATUSES:
                return DeliveryFailure(index, status, reason, attempt)
            retry_after = _retry_after(response.headers.get("Retry-After"))
            if status == 429 and retry_after is not None:
                wait = min(retry_after, max_retry_after_s)
            else:
                wait = _backoff(attempt, backoff_s, max_backoff_s)
        if attempt == max_attempts:
            break
        logger.warning(
            "digest message %d to %s: %s (attempt %d of %d), retrying in %.1f s",
            index,
            report.destination,
            status if status is not None else reason,
            attempt,
            max_attempts,
            wait,
        )
        sleep(wait)
    return DeliveryFailure(index, status, reason, max_attempts)


def _backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """Exponential: base, 2 x base, 4 x base... capped."""
    return float(min(cap_s, base_s * 2 ** (attempt - 1)))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _secret_parts(url: str) -> list[str]:
    parts = urlsplit(url)
    secret = [url]
    if parts.path and parts.path != "/":
        secret.append(parts.path)
    if parts.query:
        secret.append(parts.query)
    return sorted(secret, key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    for part in _secret_parts(url):
        text = text.replace(part, "/***")
    return text


class _ScrubFilter(logging.Filter):
    """Rewrites a record's message without the webhook URL's secret parts."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = _scrub(message, self.url)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


@contextmanager
def _scrubbed_urllib3_logs(url: str) -> Iterator[None]:
    """urllib3 logs ``"POST /services/T…/B…/secret HTTP/1.1" 200`` at DEBUG: scrub it."""
    loggers = [logging.getLogger(name) for name in ("urllib3.connectionpool", "urllib3")]
    scrubber = _ScrubFilter(url)
    for item in loggers:
        item.addFilter(scrubber)
    try:
        yield
    finally:
        for item in loggers:
            item.removeFilter(scrubber)
