"""The digest sender against a real local webhook receiver (http.server on port 0)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from gpucost.reports.slack import redact_url, send_digest

SECRET_PATH = "/services/T0000TEST/B0000TEST/s3cr3tW3bh00kT0k3n"
PAYLOADS = [
    {"text": "part 1", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "a"}}]},
    {"text": "part 2", "blocks": [{"type": "divider"}]},
]


@dataclass
class Receiver:
    """Records every POST; answers from a script of (status, headers, body), then 200 ok."""

    url: str
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            state.received.append(
                {"path": self.path, "type": self.headers["Content-Type"], "body": body}
            )
            status, headers, text = state.script.pop(0) if state.script else (200, {}, "ok")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}{SECRET_PATH}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture everything, urllib3's DEBUG lines included, and check the URL never shows."""
    caplog.set_level(logging.DEBUG)
    # gpucost's CLI (run by earlier tests) quiets urllib3 to WARNING; undo that here.
    caplog.set_level(logging.DEBUG, logger="urllib3")
    yield
    # caplog.text is per phase; this runs at teardown, so read the test's own records.
    logged = "\n".join(record.getMessage() for record in caplog.get_records("call"))
    assert "s3cr3tW3bh00kT0k3n" not in logged
    assert SECRET_PATH not in logged


class Sleeps(list[float]):
    """A fake ``sleep`` that records its waits."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_payloads_are_posted_in_order(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    sleeps = Sleeps()
    report = send_digest(PAYLOADS, SecretStr(receiver.url), sleep=sleeps)
    assert report.ok and report.delivered == 2 and report.attempts == 2
    assert [r["body"] for r in receiver.received] == PAYLOADS
    assert receiver.received[0]["path"] == SECRET_PATH
    assert receiver.received[0]["type"] == "application/json; charset=utf-8"
    assert sleeps == [1.0]  # about one message per second per webhook (Slack rate limits)
    assert "delivered to http://127.0.0.1" in caplog.text and "/***" in caplog.text
    assert '"POST /*** HTTP/1.1" 200' in caplog.text  # urllib3's DEBUG line, scrubbed
    assert report.destination == redact_url(receiver.url)


def test_429_waits_retry_after_then_succeeds(receiver: Receiver) -> None:
    receiver.script = [(429, {"Retry-After": "7"}, "rate_limited")]
    sleeps = Sleeps()
    report = send_digest(PAYLOADS[:1], receiver.url, sleep=sleeps)
    assert report.ok and report.delivered == 1 and report.attempts == 2
    assert sleeps == [7.0]
    assert len(receiver.received) == 2


def test_5xx_is_retried_with_backoff_then_reported(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script = [(500, {}, "internal_error")] * 3
    sleeps = Sleeps()
    report = send_digest(PAYLOADS, receiver.url, sleep=sleeps, max_attempts=3, backoff_s=0.5)
    assert not report.ok and report.delivered == 0
    assert len(report.failures) == 1
    failure = report.failures[0]
    assert (failure.message, failure.status, failure.attempts) == (1, 500, 3)
    assert failure.reason == "internal_error"
    assert sleeps == [0.5, 1.0]  # exponential backoff between the 3 attempts
    assert len(receiver.received) == 3  # the second message is not sent after a failure
    assert "not delivered" in caplog.text and "1 later messages not sent" in caplog.text


def test_5xx_then_success(receiver: Receiver) -> None:
    receiver.script = [(503, {}, "service_unavailable")]
    report = send_digest(PAYLOADS[:1], receiver.url, sleep=Sleeps())
    assert report.ok and report.attempts == 2


def test_other_errors_are_not_retried(receiver: Receiver) -> None:
    receiver.script = [(400, {}, "invalid_blocks")]
    report = send_digest(PAYLOADS, receiver.url, sleep=Sleeps())
    assert [(f.status, f.reason, f.attempts) for f in report.failures] == [
        (400, "invalid_blocks", 1)
    ]
    assert len(receiver.received) == 1


def test_an_unreachable_webhook_is_reported() -> None:
    url = f"http://127.0.0.1:9{SECRET_PATH}"  # port 9 (discard) is closed on test machines
    sleeps = Sleeps()
    report = send_digest(PAYLOADS[:1], url, sleep=sleeps, max_attempts=2, timeout_s=2)
    assert not report.ok
    assert report.failures[0].status is None
    assert report.failures[0].reason == "ConnectionError"
    assert sleeps == [1.0]


def test_dry_run_sends_nothing(receiver: Receiver) -> None:
    report = send_digest(PAYLOADS, receiver.url, dry_run=True)
    assert report.ok and report.dry_run and report.payloads == PAYLOADS
    assert receiver.received == []


def test_redact_url() -> None:
    assert redact_url("https://hooks.slack.com/services/T1/B2/xyz") == "https://hooks.slack.com/***"
    assert redact_url("http://127.0.0.1:8080/a?b=c") == "http://127.0.0.1:8080/***"
