"""Helpers for the aws-* tests: data paths, moto's results API, a fault-injecting proxy.

The proxy is a real HTTP server on port 0 in front of the moto server. It forwards every
request, except that it can answer chosen operations (by ``X-Amz-Target``) with canned
responses first — a throttling error, an Athena FAILED state, an operation moto lacks — and
rewrite moto's JSON answers. boto3 talks to it like to AWS, so botocore's retries, parsing and
pagination run for real.
"""

from __future__ import annotations

import csv
import http.client
import json
import threading
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3

from gpucost.collector.base import CollectorContext

DATA = Path(__file__).parent.parent / "data" / "aws"
LEGACY_CUR = DATA / "aws_cur_legacy_anonymized_sample_1281rows.csv"
FOCUS_GPU = DATA / "focus_1.0_sample_AWS_gpu_instance_rows.csv"
CE_AWSCLI = DATA / "cost_explorer_GetCostAndUsage_awscli_example_SERVICE_and_TAG.json"
CE_CLOUDSCAPE = DATA / "cost_explorer_GetCostAndUsage_monthly_by_SERVICE_cloudscape_sample.json"

Canned = tuple[int, dict[str, Any]] | Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def decimal_sum(path: Path, column: str) -> Decimal:
    """A CSV column summed independently with Python's Decimal."""
    with path.open(newline="") as handle:
        return sum((Decimal(row[column]) for row in csv.DictReader(handle)), Decimal(0))


def moto_api(endpoint: str, path: str, body: dict[str, Any]) -> None:
    """POST to moto's own API (``/moto-api/static/...``) and insist it accepted."""
    request = urllib.request.Request(
        f"{endpoint}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status in (200, 201), response.status


def session_factory() -> Any:
    """boto3 sessions with the test credentials moto accepts."""
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


def aws_context(endpoint: str, now: datetime | None = None) -> CollectorContext:
    """A collector context whose AWS calls and object-store reads go to ``endpoint``."""
    clock_value = now or datetime.now(UTC)
    return CollectorContext(
        storage_options={
            "aws_endpoint_url": endpoint,
            "aws_allow_http": "true",
            "aws_region": "us-east-1",
        },
        boto3_session_factory=session_factory,
        clock=lambda: clock_value,
    )


def throttled(code: str = "ThrottlingException") -> tuple[int, dict[str, Any]]:
    """A JSON-protocol throttling error as AWS sends it (HTTP 400, ``__type``)."""
    return 400, {"__type": code, "message": "Rate exceeded"}


class FaultProxy:
    """An HTTP proxy to moto that serves canned answers for chosen operations first."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.canned: dict[str, deque[Canned]] = defaultdict(deque)
        self.rewrites: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self, operation: str, *responses: Canned) -> None:
        """Answer the next calls of ``operation`` (e.g. ``GetCostAndUsage``) with these."""
        self.canned[operation].extend(responses)

    def operations(self) -> list[str]:
        """Operations seen, in order."""
        return [operation for operation, _ in self.calls]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                self._relay("POST")

            def do_GET(self) -> None:
                self._relay("GET")

            def do_PUT(self) -> None:
                self._relay("PUT")

            def do_HEAD(self) -> None:
                self._relay("HEAD")

            def do_DELETE(self) -> None:
                self._relay("DELETE")

            def _relay(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target", "")
                operation = target.rsplit(".", 1)[-1]
                try:
                    payload = json.loads(body) if body and target else {}
                except json.JSONDecodeError:
                    payload = {}
                proxy.calls.append((operation, payload))
                queue = proxy.canned.get(operation)
                if queue:
                    canned = queue.popleft()
                    status, document = canned(payload) if callable(canned) else canned
                    self._send(status, json.dumps(document).encode(), "application/x-amz-json-1.1")
                    return
                connection = http.client.HTTPConnection(
                    proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=30
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request(method, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                if operation in proxy.rewrites and response.status == 200:
                    data = json.dumps(proxy.rewrites[operation](json.loads(data))).encode()
                self._send(
                    response.status, data, response.getheader("Content-Type") or "text/plain"
                )
                connection.close()

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A running :class:`FaultProxy` in front of ``upstream``."""
    proxy = FaultProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_fault_proxy_serves_canned_answers_then_forwards(moto_endpoint: str) -> None:
    with fault_proxy(moto_endpoint) as proxy:
        proxy.answer("ListWorkGroups", (400, {"__type": "InternalServerException"}))
        client = session_factory().client("athena", endpoint_url=proxy.endpoint)
        try:
            client.list_work_groups()
        except client.exceptions.InternalServerException:
            pass
        else:  # pragma: no cover - the canned error must surface
            raise AssertionError("canned error was not served")
        assert "WorkGroups" in client.list_work_groups()
        assert proxy.operations() == ["ListWorkGroups", "ListWorkGroups"]
