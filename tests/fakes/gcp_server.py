"""A tiny JSON-over-HTTP server on a free loopback port, the base of the GCP REST fakes.

The real google clients (``google-cloud-bigquery``, ``google-cloud-billing`` with
``transport="rest"``) talk to it through ``client_options={"api_endpoint": url}``: their
request building, pagination, retries and response parsing all run for real; only Google's
servers are replaced by recorded-shape JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    """One request the fake received, kept for assertions."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class Response:
    """What a route answers: a status and a JSON body."""

    status: int
    body: Any


Route = Callable[[Request], Response]


@dataclass
class JsonFake:
    """Routes ``(method, path)`` to handlers; records every request in ``requests``."""

    requests: list[Request] = field(default_factory=list)

    def route(self, request: Request) -> Response:  # pragma: no cover - overridden
        """Answer one request (subclasses override)."""
        raise NotImplementedError

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1, port 0 (a free port), in a daemon thread; yields the base URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                request = Request(self.command, parts.path, parse_qs(parts.query), body)
                fake.requests.append(request)
                try:
                    response = fake.route(request)
                except Exception as error:  # a fake bug must show up as a 500, not a hang
                    response = Response(500, {"error": {"code": 500, "message": repr(error)}})
                payload = json.dumps(response.body).encode()
                self.send_response(response.status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def google_error(status: int, reason: str, message: str) -> Response:
    """An error body shaped like Google's JSON errors (``error.errors[].reason``)."""
    status_names = {
        400: "INVALID_ARGUMENT",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }
    return Response(
        status,
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
                "status": status_names.get(status, "UNKNOWN"),
            }
        },
    )
