"""``nvml``: sample this host's GPUs through NVML, map processes to pods, roll up hourly.

:class:`NvmlSampler` reads every GPU (and every MIG slice) through the ``pynvml`` module of
NVIDIA's ``nvidia-ml-py`` package, handed in by the caller (tests hand in a fake with the same
interface), and finds who runs on it: each compute process's ``/proc/PID/cgroup`` names its
container and Kubernetes pod. :func:`run_agent` samples at an interval and hands each finished
hour's rows to a sink (``gpucost agent``); the registered ``nvml`` collector samples once per
collection and rolls up a spool of samples (``gpucost collect`` on a schedule).

Units: NVML reports power in milliwatts (``nvmlDeviceGetPowerUsage``: "power usage in
milliwatts"), memory in bytes, clocks in MHz and utilisation in percent over the driver's last
sample period; ``gpu_usage`` wants W, bytes, MHz and fractions.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Final

import polars as pl
from pydantic import Field

from gpucost.collector.base import Collected, CollectorContext, SourceSettings, register
from gpucost.collector.gpu_rollup import (
    SampleSpool,
    conform_samples,
    empty_samples,
    mig_slice_uuid,
    rollup_hourly,
)
from gpucost.core.errors import CollectorError, MissingDependencyError
from gpucost.core.window import Window

logger = logging.getLogger(__name__)

__all__ = [
    "AgentStats",
    "ContainerRef",
    "NvmlCollector",
    "NvmlSampler",
    "NvmlSettings",
    "Workload",
    "load_pynvml",
    "parse_cgroup",
    "run_agent",
    "workload_of_pid",
]

NVML_CLOCK_SM: Final = 1
"""``NVML_CLOCK_SM`` in nvml.h's ``nvmlClockType_t`` (used when the module lacks the name)."""
NVML_DEVICE_MIG_ENABLE: Final = 1
NVML_ERROR_NOT_SUPPORTED: Final = 3
NVML_ERROR_NOT_FOUND: Final = 6
SERVICE_ACCOUNT_NAMESPACE: Final = "var/run/secrets/kubernetes.io/serviceaccount/namespace"
"""Kubernetes mounts the pod's namespace here in every container that automounts its service
account token (the default): "Accessing the Kubernetes API from a Pod"."""
_CONTAINER_ID: Final = r"[0-9a-f]{64}"
# cgroup paths of containers, as /proc/PID/cgroup shows them (one "id:controllers:path" line
# per hierarchy; cgroup v2 has the single line "0::path"):
#   systemd driver:  .../kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
#                    (also crio-<id>.scope, docker-<id>.scope)
#   cgroupfs driver: /kubepods/besteffort/pod<uid>/<id>   (/kubepods/pod<uid>/<id>: Guaranteed)
#   plain Docker:    /docker/<id>, or /system.slice/docker-<id>.scope under systemd
_SYSTEMD_POD_RE: Final = re.compile(r"kubepods(?:-[a-z]+)?-pod([0-9a-f_]+)\.slice")
_SYSTEMD_CONTAINER_RE: Final = re.compile(
    rf"(?:cri-containerd|crio|docker|libpod)-({_CONTAINER_ID})\.scope"
)
_CGROUPFS_RE: Final = re.compile(
    rf"/kubepods(?:/[a-z]+)?/pod([0-9a-f-]+)/(?:[a-z-]+-)?({_CONTAINER_ID})"
)
_DOCKER_RE: Final = re.compile(rf"/docker/({_CONTAINER_ID})")
_MIG_NAME_RE: Final = re.compile(r"MIG\s+(\d+g\.\d+gb)")


def load_pynvml() -> ModuleType:
    """Import ``pynvml`` (NVIDIA's ``nvidia-ml-py``), or say in one line how to install it."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise MissingDependencyError(
            "nvidia-ml-py", "the nvml source and `gpucost agent`"
        ) from None


@dataclass(frozen=True)
class ContainerRef:
    """What a process's cgroup says about it."""

    container_id: str
    pod_uid: str | None = None


@dataclass(frozen=True)
class Workload:
    """Who runs on a GPU: Kubernetes namespace, pod and container (each may be unknown)."""

    namespace: str | None = None
    pod: str | None = None
    container: str | None = None


def parse_cgroup(text: str) -> ContainerRef | None:
    """The container (and pod) of a ``/proc/PID/cgroup`` text; None for a host process."""
    found: ContainerRef | None = None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        match = _CGROUPFS_RE.search(path)
        if match:
            return ContainerRef(match.group(2), match.group(1))
        container = _SYSTEMD_CONTAINER_RE.search(path)
        if container:
            pod = _SYSTEMD_POD_RE.search(path)
            if pod:
                # The systemd driver writes the pod UID with "_" for "-" (unit names).
                return ContainerRef(container.group(1), pod.group(1).replace("_", "-"))
            found = found or ContainerRef(container.group(1))
            continue
        docker = _DOCKER_RE.search(path)
        if docker:
            found = found or ContainerRef(docker.group(1))
    return found


def workload_of_pid(proc_root: Path, pid: int) -> Workload | None:
    """The pod and container of a process, from its cgroup, environment and mounts.

    The pod's name is the container's ``HOSTNAME`` (Kubernetes sets a pod's hostname to its
    name), its namespace the service-account file. Reading another process's environment and
    root needs the agent to share the host's PID namespace with CAP_SYS_PTRACE; where it
    cannot, the pod is named by its UID and the namespace stays unknown. The container is its
    runtime ID cut to 12 characters (as ``docker ps`` and ``crictl ps`` print it): the cgroup
    does not know container names.
    """
    process = proc_root / str(pid)
    try:
        cgroup = (process / "cgroup").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    ref = parse_cgroup(cgroup)
    if ref is None:
        return None
    container = ref.container_id[:12]
    if ref.pod_uid is None:
        return Workload(container=container)
    pod = _hostname_of(process) or ref.pod_uid
    namespace = _read_text(process / "root" / SERVICE_ACCOUNT_NAMESPACE)
    return Workload(namespace=namespace, pod=pod, container=container)


def _hostname_of(process: Path) -> str | None:
    try:
        environ = (process / "environ").read_bytes()
    except OSError:
        environ = b""
    for entry in environ.split(b"\0"):
        if entry.startswith(b"HOSTNAME="):
            value = entry.removeprefix(b"HOSTNAME=").decode("utf-8", errors="replace").strip()
            if value:
                return value
    return _read_text(process / "root" / "etc" / "hostname")


def _read_text(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return text or None


def _text(value: Any) -> str:
    """NVML strings come back as bytes from older nvidia-ml-py releases, str from newer."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class _Target:
    """One thing that gets rows: a whole GPU or a MIG slice."""

    handle: Any
    gpu_uuid: str
    gpu_index: int
    gpu_model: str | None
    mig_profile: str | None
    power_w: float | None
    sm_clock_mhz: float | None
    is_mig: bool


class NvmlSampler:
    """Samples every GPU and MIG slice of this host through a ``pynvml``-like module.

    One :meth:`sample` gives one raw-sample row per GPU (or slice) x workload, with the GPU's
    values repeated on each workload's row as dcgm-exporter does; a workload's memory is its
    processes' own when NVML reports it, and so is its utilisation (``process_util``: the sum
    over its processes of their mean SM utilisation since the previous sample, from
    ``nvmlDeviceGetProcessUtilization``) where the board supports it. MIG slices have no
    utilisation in NVML (it answers NOT_SUPPORTED in MIG mode) and no power of their own: those
    stay null.
    """

    def __init__(
        self,
        nvml: Any,
        *,
        host: str | None = None,
        proc_root: Path = Path("/proc"),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        source: str = "nvml",
    ) -> None:
        self.nvml = nvml
        self.host = host or socket.gethostname()
        self.proc_root = proc_root
        self.clock = clock
        self.source = source
        self.errors: list[str] = []
        """Distinct NVML failures met while sampling (other than NOT_SUPPORTED)."""
        self._initialised = False
        self._last_seen_us: dict[str, int] = {}
        """Per GPU uuid, the newest per-process utilisation sample read (NVML's timestamp)."""

    def __enter__(self) -> NvmlSampler:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def open(self) -> None:
        """``nvmlInit``; a failure (no driver, no library) is a CollectorError saying so."""
        if self._initialised:
            return
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as error:
            raise CollectorError(
                self.source, f"NVML could not start on {self.host}: {_text(error)}"
            ) from None
        self._initialised = True

    def close(self) -> None:
        """``nvmlShutdown`` (errors ignored: nothing useful can follow them)."""
        if self._initialised:
            self._initialised = False
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlShutdown()

    def sample(self) -> pl.DataFrame:
        """One raw-sample row per GPU or MIG slice and workload, stamped now."""
        self.open()
        now = self.clock()
        rows: list[dict[str, Any]] = []
        count = self._call("nvmlDeviceGetCount") or 0
        for index in range(count):
            handle = self._call("nvmlDeviceGetHandleByIndex", index)
            if handle is None:
                continue
            for target in self._targets(handle, index):
                rows.extend(self._rows(target, now))
        if not rows:
            return empty_samples()
        return conform_samples(pl.DataFrame(rows, infer_schema_length=None))

    def _targets(self, handle: Any, index: int) -> list[_Target]:
        uuid_value = self._call("nvmlDeviceGetUUID", handle)
        if uuid_value is None:
            return []
        gpu_uuid = _text(uuid_value)
        name = self._call("nvmlDeviceGetName", handle)
        model = _text(name) if name is not None else None
        power_mw = self._call("nvmlDeviceGetPowerUsage", handle)
        clock_type = getattr(self.nvml, "NVML_CLOCK_SM", NVML_CLOCK_SM)
        sm_clock = self._call("nvmlDeviceGetClockInfo", handle, clock_type)
        power_w = power_mw / 1000.0 if power_mw is not None else None
        sm_clock_mhz = float(sm_clock) if sm_clock is not None else None
        mig_mode = self._call("nvmlDeviceGetMigMode", handle)
        enabled = getattr(self.nvml, "NVML_DEVICE_MIG_ENABLE", NVML_DEVICE_MIG_ENABLE)
        if not mig_mode or mig_mode[0] != enabled:
            return [_Target(handle, gpu_uuid, index, model, None, power_w, sm_clock_mhz, False)]
        slices: list[_Target] = []
        for position in range(self._call("nvmlDeviceGetMaxMigDeviceCount", handle) or 0):
            # Empty positions answer NOT_FOUND; they are not errors.
            mig = self._call("nvmlDeviceGetMigDeviceHandleByIndex", handle, position)
            if mig is None:
                continue
            instance_id = self._call("nvmlDeviceGetGpuInstanceId", mig)
            if instance_id is None:
                continue
            slices.append(
                _Target(
                    mig,
                    mig_slice_uuid(gpu_uuid, instance_id),
                    index,
                    model,
                    self._mig_profile(mig),
                    None,
                    sm_clock_mhz,
                    True,
                )
            )
        return slices

    def _mig_profile(self, mig: Any) -> str | None:
        """``1g.10gb`` from a MIG device's name (``NVIDIA H100 80GB HBM3 MIG 1g.10gb``)."""
        name = self._call("nvmlDeviceGetName", mig)
        match = _MIG_NAME_RE.search(_text(name)) if name is not None else None
        return match.group(1) if match else None

    def _rows(self, target: _Target, now: datetime) -> list[dict[str, Any]]:
        util = None
        if not target.is_mig:
            rates = self._call("nvmlDeviceGetUtilizationRates", target.handle)
            util = rates.gpu / 100.0 if rates is not None else None
        memory = self._call("nvmlDeviceGetMemoryInfo", target.handle)
        base: dict[str, Any] = {
            "time": now,
            "host": self.host,
            "gpu_uuid": target.gpu_uuid,
            "gpu_index": target.gpu_index,
            "gpu_model": target.gpu_model,
            "mig_profile": target.mig_profile,
            "util": util,
            "mem_used_bytes": int(memory.used) if memory is not None else None,
            "mem_total_bytes": int(memory.total) if memory is not None else None,
            "power_w": target.power_w,
            "sm_clock_mhz": target.sm_clock_mhz,
        }
        processes = self._call("nvmlDeviceGetComputeRunningProcesses", target.handle) or []
        by_workload: dict[Workload, list[int | None]] = {}
        pids: dict[Workload, list[int]] = {}
        for process in processes:
            workload = workload_of_pid(self.proc_root, int(process.pid)) or Workload()
            used = getattr(process, "usedGpuMemory", None)
            by_workload.setdefault(workload, []).append(int(used) if used is not None else None)
            pids.setdefault(workload, []).append(int(process.pid))
        if not by_workload:
            return [base]
        own = self._process_util(target) if not target.is_mig else None
        rows = []
        for workload, memories in sorted(by_workload.items(), key=lambda item: repr(item[0])):
            row = dict(base)
            row.update(
                {
                    "namespace": workload.namespace,
                    "pod": workload.pod,
                    "container": workload.container,
                }
            )
            if len(by_workload) > 1 and all(value is not None for value in memories):
                row["mem_used_bytes"] = sum(value for value in memories if value is not None)
            if own is not None:
                percent = sum(own.get(pid, 0.0) for pid in pids[workload])
                row["process_util"] = min(percent, 100.0) / 100.0
            rows.append(row)
        return rows

    def _process_util(self, target: _Target) -> dict[int, float] | None:
        """Mean SM utilisation (percent) per PID since the previous call for this GPU, from
        ``nvmlDeviceGetProcessUtilization(handle, lastSeenTimeStamp)``: the driver keeps a
        buffer of per-process samples and returns those newer than the timestamp given (NVML
        API reference, "nvmlDeviceGetProcessUtilization"). None when the board does not
        support it or has no new sample (NOT_FOUND): the rollup then splits the device's
        utilisation equally among the pods present."""
        last_seen = self._last_seen_us.get(target.gpu_uuid, 0)
        samples = self._call("nvmlDeviceGetProcessUtilization", target.handle, last_seen)
        if not samples:
            return None
        sums: dict[int, list[float]] = {}
        for item in samples:
            sums.setdefault(int(item.pid), []).append(float(item.smUtil))
            last_seen = max(last_seen, int(item.timeStamp))
        self._last_seen_us[target.gpu_uuid] = last_seen
        return {pid: sum(values) / len(values) for pid, values in sums.items()}

    def _call(self, function: str, *args: Any) -> Any:
        """Call an NVML function; None when it fails (noted unless NOT_SUPPORTED/NOT_FOUND)."""
        try:
            return getattr(self.nvml, function)(*args)
        except self.nvml.NVMLError as error:
            code = getattr(error, "value", None)
            if code not in (NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NOT_FOUND):
                message = f"{function}: {_text(error)}"
                if message not in self.errors:
                    self.errors.append(message)
                    logger.warning("NVML on %s: %s", self.host, message)
            return None


@dataclass
class AgentStats:
    """What :func:`run_agent` did."""

    samples: int = 0
    rounds: int = 0
    rows_written: int = 0
    flushes: int = 0
    errors: list[str] = field(default_factory=list)


def run_agent(
    sampler: NvmlSampler,
    interval_s: float,
    duration_s: float | None,
    sink: Callable[[pl.DataFrame], None],
    *,
    source: str = "nvml",
    spool: SampleSpool | None = None,
    stop: threading.Event | None = None,
    wait: Callable[[float], bool] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> AgentStats:
    """Sample every ``interval_s`` seconds; give each finished hour's rows to ``sink``.

    Runs for ``duration_s`` seconds (at least one round; ``0`` samples once), or until ``stop``
    is set when ``duration_s`` is None. When it ends, the current, unfinished hour is flushed
    too: its ``seconds_observed`` says how much of it was seen, and a later flush of the same
    hour must be merged (:func:`gpucost.collector.gpu_rollup.merge_rollups`), not replace it. Each
    flush's raw samples also go to ``spool`` when one is given. ``wait(seconds)`` pauses between
    rounds and returns True to stop (default: ``stop.wait``; tests pass a fake clock's).
    """
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    stop = stop or threading.Event()
    wait = wait or stop.wait
    stats = AgentStats()
    buffered: list[pl.DataFrame] = []
    started = monotonic()

    def flush(before: datetime | None) -> None:
        if not buffered:
            return
        samples = pl.concat(buffered)
        if before is not None and not (samples.get_column("time") < before).any():
            buffered[:] = [samples]
            return
        # Roll up everything buffered, so the last sample of a finished hour sees the first
        # of the next one (its interval ends there), then keep only the finished hours.
        rows = rollup_hourly(samples, interval_s=interval_s, source=source)
        done_samples = samples
        if before is not None:
            rows = rows.filter(pl.col("hour") < before)
            done_samples = samples.filter(pl.col("time") < before)
            buffered[:] = [samples.filter(pl.col("time") >= before)]
        else:
            buffered.clear()
        if rows.height:
            sink(rows)
            stats.rows_written += rows.height
            stats.flushes += 1
            if spool is not None:
                spool.append(done_samples, now=sampler.clock())

    with sampler:
        while True:
            round_started = monotonic()
            frame = sampler.sample()
            stats.rounds += 1
            stats.samples += frame.height
            buffered.append(frame)
            hour = sampler.clock().replace(minute=0, second=0, microsecond=0)
            flush(hour)
            elapsed = monotonic() - started
            if duration_s is not None and elapsed + interval_s >= duration_s:
                break
            if wait(max(0.0, interval_s - (monotonic() - round_started))):
                break
        flush(None)
    stats.errors = list(sampler.errors)
    return stats


class NvmlSettings(SourceSettings):
    """Settings of an ``nvml`` source (and of ``gpucost agent``)."""

    interval_s: float = Field(
        default=10.0, gt=0, le=3600, description="Agent sampling interval; what a sample covers."
    )
    host: str | None = Field(default=None, description="Host name; default: this machine's.")
    proc_root: str = Field(default="/proc", description="The host's /proc (hostPID containers).")
    spool_dir: str | None = Field(
        default=None, description="Raw samples kept here between runs (and by the agent)."
    )
    spool_retention_days: int = Field(default=7, ge=1)


@register("nvml")
class NvmlCollector:
    """Samples this host's GPUs through NVML (``nvidia-ml-py``) into ``gpu_usage``.

    Each collection takes one sample of every GPU and MIG slice (utilisation, memory, power,
    SM clock, compute processes mapped to pods through ``/proc/PID/cgroup``), adds it to the
    spool and rolls the window's spooled samples up hourly. ``gpucost agent`` samples every
    ``interval_s`` instead and writes each finished hour. Needs ``pip install nvidia-ml-py``
    and an NVIDIA driver on the host.

    ```toml
    [[sources]]
    name = "gpu-agent"
    kind = "nvml"
    interval_s = 10
    proc_root = "/host/proc"              # the host's /proc when running in a container
    spool_dir = "/var/lib/gpucost/nvml-spool"
    spool_retention_days = 7
    schedule = "* * * * *"
    ```
    """

    output_tables: ClassVar[tuple[str, ...]] = ("gpu_usage",)
    Settings: ClassVar[type[SourceSettings]] = NvmlSettings

    def __init__(self, settings: NvmlSettings, context: CollectorContext) -> None:
        """Imports pynvml now (through ``context.nvml_loader``), so a missing one fails early."""
        self.settings, self.name = settings, settings.name
        self.sampler = sampler_from_settings(settings, context)
        self.spool = spool_from_settings(settings, context)

    def collect(self, window: Window) -> Collected:
        """Sample once, keep it in the spool, roll the window's samples up."""
        with self.sampler:
            now_samples = self.sampler.sample()
        notes: dict[str, Any] = {"host": self.sampler.host, "sampled": now_samples.height}
        if self.sampler.errors:
            notes["nvml_errors"] = list(self.sampler.errors)
        if self.spool is not None:
            self.spool.append(now_samples, now=self.sampler.clock())
            self.spool.prune(self.sampler.clock().date())
            samples = self.spool.read(window)
        else:
            samples = now_samples
            notes["warning"] = "no spool_dir: each run lands only its own sample"
        rows = rollup_hourly(
            samples, interval_s=self.settings.interval_s, source=self.name, window=window
        )
        notes["samples"] = samples.height
        return Collected({"gpu_usage": rows}, notes=notes)


def sampler_from_settings(settings: NvmlSettings, context: CollectorContext) -> NvmlSampler:
    """An :class:`NvmlSampler` for a source's settings (``context.nvml_loader`` or pynvml)."""
    return NvmlSampler(
        context.nvml_loader() if context.nvml_loader is not None else load_pynvml(),
        host=settings.host,
        proc_root=Path(settings.proc_root),
        clock=context.clock,
        source=settings.name,
    )


def spool_from_settings(settings: NvmlSettings, context: CollectorContext) -> SampleSpool | None:
    """The source's spool, or None when it has no ``spool_dir``."""
    return SampleSpool.configured(settings.spool_dir, settings.spool_retention_days, context)
