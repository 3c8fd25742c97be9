"""The run lock: one nightly (or backfill) at a time per lake.

It is an advisory ``flock(2)`` on a lock file, ``{data_dir}/_locks/nightly.lock`` when the lake is
a local directory. The kernel drops the lock when the holding process exits, however it exits
(SIGKILL and OOM kills included), so there is never a stale lock to clean up by hand. The holder
writes who it is and since when into the file, and a run that finds the lock taken says so.

When ``data_dir`` is ``s3://``, a file lock can only exclude runs on the same host: the default
lock file then lives in the system temporary directory (one per lake URL), and overlapping runs
on different hosts are prevented by the deployment instead (a Kubernetes CronJob with
``concurrencyPolicy: Forbid``, one ``gpucost serve`` replica). ``[lock] path`` on a shared
filesystem (NFS, EFS: Linux maps ``flock`` to POSIX byte-range locks there) extends the lock to
every host that mounts it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from gpucost.config import GpucostConfig
from gpucost.core.errors import GpucostError


class LockHeldError(GpucostError):
    """Another process holds the run lock; ``holder`` is what it wrote about itself."""

    def __init__(self, path: str, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        since = holder.get("since", "an unknown time")
        who = ", ".join(
            f"{key} {holder[key]}" for key in ("command", "pid", "host") if key in holder
        )
        detail = f" ({who})" if who else ""
        super().__init__(f"another nightly run holds the lock since {since}{detail}: {path}")


def lock_path(config: GpucostConfig) -> Path:
    """Where the run lock of ``config``'s lake lives (see the module docstring)."""
    if config.lock.path is not None:
        return Path(config.lock.path)
    data_dir = config.store.data_dir
    if "://" not in data_dir:
        return Path(data_dir, "_locks", "nightly.lock")
    digest = hashlib.sha256(data_dir.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir(), f"gpucost-{digest}.lock")


class RunLock:
    """A non-blocking exclusive lock on a file; a context manager.

    ``acquire`` raises :class:`LockHeldError` at once when another process (or another open
    of the same file in this process) holds it: a nightly that finds one running skips, it does
    not queue behind it.
    """

    def __init__(self, path: Path | str, command: str = "nightly") -> None:
        self.path = Path(path)
        self.command = command
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._descriptor is not None

    def acquire(self, now: datetime | None = None) -> None:
        """Take the lock or raise :class:`LockHeldError` naming the holder."""
        if self._descriptor is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise LockHeldError(str(self.path), holder) from None
        except BaseException:
            os.close(descriptor)
            raise
        holder = {
            "command": self.command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode() + b"\n", 0)
        self._descriptor = descriptor

    def release(self) -> None:
        """Give the lock back (the file stays: removing it would race with a new holder)."""
        if self._descriptor is None:
            return
        descriptor, self._descriptor = self._descriptor, None
        try:
            os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def take_run_lock(config: GpucostConfig, command: str) -> RunLock:
    """The run lock of ``config``'s lake, taken for ``command``; LockHeldError when it is not free.

    Use the returned lock as a context manager to give it back.
    """
    lock = RunLock(lock_path(config), command=command)
    lock.acquire()
    return lock


def _read_holder(descriptor: int) -> dict[str, Any]:
    try:
        text = os.pread(descriptor, 4096, 0).decode("utf-8", "replace").strip()
        document = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}
