"""Real servers for the GPU metric tests: a dcgm-exporter stand-in and a real Prometheus.

* :class:`ExporterServer` serves recorded dcgm-exporter pages on 127.0.0.1, port 0, one path
  per page, plus the faults a scraper meets: a target that never answers, a 500, a body cut
  short of its Content-Length, a body cut mid-line.
* :class:`PrometheusServer` runs Debian's ``prometheus`` binary on a free port with a temporary
  config and TSDB, scraping such an exporter; :func:`prometheus_binary` finds the binary, or
  says why not so that the test skips naming it (tests never install packages).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

Fault = Literal["hang", "error", "truncated", "cut"]


@dataclass
class Route:
    """What one path answers."""

    body: bytes = b""
    fault: Fault | None = None
    hang_s: float = 30.0


@dataclass
class ExporterServer:
    """Serves ``routes`` (path -> :class:`Route`); counts requests per path."""

    routes: dict[str, Route] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    _release: threading.Event = field(default_factory=threading.Event)

    def page(self, path: str, body: bytes | str) -> None:
        """Serve ``body`` (text/plain; version=0.0.4) at ``path``."""
        self.routes[path] = Route(body.encode() if isinstance(body, str) else body)

    def fault(self, path: str, fault: Fault, body: bytes = b"", hang_s: float = 30.0) -> None:
        """Answer ``path`` with a fault (``body`` is what a cut answer is cut from)."""
        self.routes[path] = Route(body, fault, hang_s)

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve in a daemon thread; yields ``http://127.0.0.1:PORT``."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests read the outcome, not the access log."""

            def do_GET(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                server.hits[path] = server.hits.get(path, 0) + 1
                route = server.routes.get(path)
                if route is None:
                    self._answer(404, b"not found\n")
                elif route.fault == "hang":
                    server._release.wait(route.hang_s)
                    self._answer(200, route.body)
                elif route.fault == "error":
                    self._answer(500, b"An error has occurred while serving metrics\n")
                elif route.fault == "truncated":
                    # Promise the whole body, send half, hang up: an IncompleteRead.
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body[: len(route.body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif route.fault == "cut":
                    self._answer(200, route.body[: len(route.body) // 2])
                else:
                    self._answer(200, route.body)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            self._release.set()
            httpd.shutdown()
            httpd.server_close()


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to port 0, read it, close)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def closed_url() -> str:
    """An http URL on a loopback port nobody listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/metrics"


def prometheus_binary() -> tuple[str | None, str]:
    """The ``prometheus`` binary on PATH, or (None, why not) for the test to skip with.

    Tests never install system packages: ``.ci/run`` installs Debian's ``prometheus`` package
    before the tests, and a developer without it sees the test skip, naming the binary.
    """
    found = shutil.which("prometheus")
    if found:
        return found, ""
    return None, (
        "the prometheus binary is not on PATH; install the Debian package prometheus (.ci/run does)"
    )


@dataclass
class PrometheusServer:
    """A real Prometheus on a free loopback port, scraping ``targets`` every second."""

    binary: str
    directory: Path
    targets: list[str]
    """``host:port`` of the exporters (path ``/metrics``)."""
    target_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels added to every target: give it ``pod``/``namespace`` to see ``exported_*``."""
    honor_labels: bool = False
    """Keep the page's labels over the target's (no ``exported_*`` renaming)."""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start Prometheus and wait until it is ready."""
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "dcgm",
                    "honor_labels": self.honor_labels,
                    "static_configs": [
                        {"targets": self.targets, "labels": dict(self.target_labels)}
                    ],
                }
            ],
        }
        config_path = self.directory / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write the config.
        config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")
        log = (self.directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready after {timeout_s} s: {self.log_tail()}")

    def wait_for_samples(self, query: str, at_least: int, timeout_s: float = 30.0) -> None:
        """Wait until ``query`` (an instant query) returns a value >= ``at_least``."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            last = self.api("query", {"query": query})
            result = last.get("data", {}).get("result", [])
            if result and float(result[0]["value"][1]) >= at_least:
                return
            time.sleep(0.25)
        raise RuntimeError(f"{query} did not reach {at_least} in {timeout_s} s: {last}")

    def api(self, endpoint: str, params: Mapping[str, str]) -> Any:
        """GET ``/api/v1/<endpoint>``; the decoded JSON."""
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """Terminate Prometheus (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_tail(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"
