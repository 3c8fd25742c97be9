"""The HTTP endpoints of ``gpucost serve``: ``/metrics`` (Prometheus) and ``/healthz``.

A stdlib ``ThreadingHTTPServer`` on 127.0.0.1 by default. ``/healthz`` answers 200 while the
scheduler runs and 503 once it stops (liveness and readiness probes); it needs no token and
says nothing beyond the job count. ``/metrics`` serves the given registry in the Prometheus
text format and, when a token is configured, requires ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr

logger = logging.getLogger(__name__)

Health = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (healthy, details) for /healthz."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class EndpointServer:
    """Serves /metrics and /healthz on a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Health,
        token: SecretStr | None = None,
    ) -> None:
        self.registry = registry
        self.health = health
        self.token = token
        handler = self._handler_class()
        server_class: type[_Server] = _Server
        if ":" in host:  # an IPv6 literal

            class _Server6(_Server):
                address_family = socket.AF_INET6

            server_class = _Server6
        self.server = server_class((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        """Start serving in a daemon thread; returns the bound address."""
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="gpucost-http", daemon=True
        )
        self._thread.start()
        return self.address

    def stop(self) -> None:
        """Stop serving (if started) and close the socket."""
        if self._thread is not None:
            self.server.shutdown()  # waits for serve_forever: only when it runs
            self._thread.join(timeout=5)
            self._thread = None
        self.server.server_close()

    def _authorised(self, header: str | None) -> bool:
        if self.token is None:
            return True
        expected = f"Bearer {self.token.get_secret_value()}"
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "gpucost"
            sys_version = ""

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    healthy, details = endpoint.health()
                    body = json.dumps({"status": "ok" if healthy else "stopping", **details})
                    self._reply(200 if healthy else 503, body.encode(), "application/json")
                elif path == "/metrics":
                    if not endpoint._authorised(self.headers.get("Authorization")):
                        # RFC 9110 section 15.5.2: a 401 carries WWW-Authenticate naming the
                        # scheme; RFC 6750 section 3 spells the Bearer one.
                        self._reply(
                            401,
                            b"unauthorised: send Authorization: Bearer <[serve] metrics_token>\n",
                            "text/plain; charset=utf-8",
                            {"WWW-Authenticate": 'Bearer realm="gpucost metrics"'},
                        )
                        return
                    self._reply(200, generate_latest(endpoint.registry), CONTENT_TYPE_LATEST)
                else:
                    self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _reply(
                self,
                status: int,
                body: bytes,
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # Request lines are noise at INFO (a scrape every 15 s); keep them at DEBUG.
                logger.debug("%s %s", self.address_string(), format % args)

        return Handler
