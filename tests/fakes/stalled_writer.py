"""Run the gpucost CLI with one write stalled halfway, so a test can SIGKILL it there.

The child writes half of the matching object's bytes to a hidden temporary file beside it (what
a killed writer leaves behind), signals readiness by creating a file, and sleeps; the parent
kills it. Only the moment of the kill is arranged: the write path is gpucost's own.

Child usage: ``python stalled_writer.py READY PREFIX SUFFIX gpucost-args...``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__)


def kill_mid_write(
    ready: Path, args: list[str], *, prefix: str, suffix: str = "", timeout_s: float = 60
) -> None:
    """Start ``gpucost ARGS`` in a child, wait until it stalls on a matching write, SIGKILL it."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(ready), prefix, suffix, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        assert process.poll() is None, "the writer exited before reaching the write"
        assert time.monotonic() < deadline, "the writer never reached the write"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _main() -> None:
    from gpucost.core import storage

    ready, prefix, suffix = sys.argv[1:4]
    original = storage.LocalStorage.put_atomic

    def stalled_put(
        self: storage.LocalStorage, relative: str, data: bytes, content_sha256: str | None = None
    ) -> None:
        if relative.startswith(prefix) and relative.endswith(suffix):
            target = Path(self.root, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.with_name(f".{target.name}.x.tmp").open("wb") as partial:
                partial.write(data[: len(data) // 2])
                partial.flush()
            Path(ready).touch()
            time.sleep(60)
        original(self, relative, data, content_sha256)

    storage.LocalStorage.put_atomic = stalled_put  # type: ignore[method-assign]
    from gpucost.cli import main

    sys.argv = ["gpucost", *sys.argv[4:]]
    main()


if __name__ == "__main__":
    os.environ.setdefault("COLUMNS", "200")
    _main()
