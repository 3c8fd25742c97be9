"""Benchmark one ``dcgm-exporter`` scrape round over 1,000 exporter targets on loopback.

    python benchmarks/bench_dcgm_scrape.py [--targets 1000] [--servers 2] [--workers 32]

Each target is an 8-GPU node's ``/metrics`` page: the metric families (HELP/TYPE, order) of a
recorded dcgm-exporter scrape (tests/data/dcgm/upcloud_NVIDIA-L40S.prom) over the label sets of
a recorded p5.48xlarge scrape, one host name and eight GPU uuids per target, every other GPU
with pod labels. ``--servers`` separate processes serve them (threaded HTTP/1.1 servers, one
path per target), so the servers do not share the scraper's interpreter lock. The round is
``DcgmExporter.collect``: scrape every target with a bounded pool, parse every page, roll up.
Goal: at most 10 s on 2 cores. Prints wall time, pages and samples per second.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpucost.collector.base import CollectorContext  # noqa: E402
from gpucost.collector.dcgm_exporter import DcgmExporter, DcgmExporterSettings  # noqa: E402
from gpucost.collector.dcgm_text import iter_samples  # noqa: E402
from gpucost.core.window import Window  # noqa: E402

DATA = REPO / "tests" / "data" / "dcgm"
FAMILIES_FROM = DATA / "upcloud_NVIDIA-L40S.prom"
LABELS_FROM = DATA / "nvidia_aicr_eks_p5_H100x8_sampled_with_pod_labels.prom"
GPUS_PER_HOST = 8


def page(target: int) -> bytes:
    """The /metrics page of target ``target``: every family x 8 GPUs."""
    families: list[tuple[str, str, str]] = []
    helps: dict[str, str] = {}
    for line in FAMILIES_FROM.read_text().splitlines():
        if line.startswith("# HELP "):
            name, _, text = line[len("# HELP ") :].partition(" ")
            helps[name] = text
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            families.append((name, helps.get(name, ""), kind))
    first = next(iter_samples(LABELS_FROM.read_text()))
    template = ",".join(f'{name}="{value}"' for name, value in first.labels.items())
    host = f"gpu-node-{target:04d}"
    lines: list[str] = []
    for rank, (name, text, kind) in enumerate(families):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for gpu in range(GPUS_PER_HOST):
            labels = (
                template.replace('gpu="0"', f'gpu="{gpu}"')
                .replace('device="nvidia0"', f'device="nvidia{gpu}"')
                .replace("GPU-c4529c8d-69c4-b61d-e0bc", f"GPU-{target:08x}-{gpu:04x}-e0bc")
                .replace('Hostname="gpu-node-1"', f'Hostname="{host}"')
            )
            if gpu % 2:
                labels = labels.split(',container="', 1)[0]
            value = f"{(target * 7 + gpu * 13 + rank) % 100}"
            lines.append(f"{name}{{{labels}}} {value}")
    return ("\n".join(lines) + "\n").encode()


def serve(first: int, count: int, port_file: Path) -> None:
    """Serve targets ``first`` .. ``first + count - 1`` at ``/t{n}/metrics`` until killed."""
    pages = {f"/t{n}/metrics": page(n) for n in range(first, first + count)}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024  # the default backlog of 5 refuses bursts of connections
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--serve", nargs=3, metavar=("FIRST", "COUNT", "PORT_FILE"))
    arguments = parser.parse_args()
    if arguments.serve:
        first, count, port_file = arguments.serve
        serve(int(first), int(count), Path(port_file))
        return

    per_server = -(-arguments.targets // arguments.servers)
    processes: list[subprocess.Popen[bytes]] = []
    targets: list[str] = []
    run_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-dcgm-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        for index in range(arguments.servers):
            first = index * per_server
            count = min(per_server, arguments.targets - first)
            if count <= 0:
                break
            port_file = run_dir / f"port{index}"
            processes.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve", str(first), str(count), str(port_file)]
                )
            )
            deadline = time.monotonic() + 60
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline:
                    raise SystemExit("a page server did not start")
                time.sleep(0.05)
            port = int(port_file.read_text())
            targets += [
                f"http://127.0.0.1:{port}/t{n}/metrics" for n in range(first, first + count)
            ]

        sample = page(0)
        lines_per_page = sum(
            1 for line in sample.decode().splitlines() if line and not line.startswith("#")
        )
        now = datetime.now(UTC)
        settings = DcgmExporterSettings(
            name="bench",
            kind="dcgm-exporter",
            targets=targets,
            timeout_s=arguments.timeout,
            max_workers=arguments.workers,
        )
        source = DcgmExporter(settings, CollectorContext(clock=lambda: now))
        window = Window(now.date(), now.date().fromordinal(now.date().toordinal() + 1))
        started = time.perf_counter()
        collected = source.collect(window)
        wall = time.perf_counter() - started
    finally:
        for process in processes:
            process.kill()
            process.wait()
        for leftover in run_dir.glob("*"):
            leftover.unlink()
        run_dir.rmdir()

    notes = collected.notes
    samples = notes["targets_ok"] * lines_per_page
    rows = collected.frames["gpu_usage"].height
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    print(
        f"targets: {notes['targets']} ({notes['targets_ok']} ok, "
        f"{notes.get('targets_failed', 0)} failed), {arguments.servers} server processes, "
        f"{arguments.workers} scrape workers"
    )
    print(f"page: {len(sample) / 1024:.0f} KiB, {lines_per_page} samples")
    print(f"round wall time: {wall:.2f} s (goal <= 10 s)")
    print(f"samples/s: {samples / wall:,.0f}  ({samples:,} exposition samples)")
    print(f"pages/s: {notes['targets_ok'] / wall:,.0f}; gpu_usage rows: {rows:,}")
    if notes.get("failed_targets"):
        print(f"first failure: {notes['failed_targets'][0]}")


if __name__ == "__main__":
    main()
