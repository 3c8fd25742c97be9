"""A fake of the ``pynvml`` module (NVIDIA's ``nvidia-ml-py``) for the NVML sampler's tests.

It has the functions, constants and error class the sampler uses, with the same names,
arguments and behaviour as the real module: ``NVMLError(value)`` carries the nvml.h return
code in ``value``; MIG devices answer ``NOT_SUPPORTED`` to utilisation and power queries; empty
MIG positions answer ``NOT_FOUND``; a GPU that fell off the bus answers ``GPU_IS_LOST`` to
everything. Values come from plain dataclasses a test builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Return codes and constants, as nvml.h and pynvml define them.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15
NVML_CLOCK_SM = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    """pynvml's error: ``value`` is the NVML return code, ``str()`` its message."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML error {self.value}")


@dataclass
class Process:
    """What ``nvmlDeviceGetComputeRunningProcesses`` lists (``c_nvmlProcessInfo_t``)."""

    pid: int
    usedGpuMemory: int | None = None  # noqa: N815 - pynvml's field name


@dataclass
class ProcessUtilizationSample:
    """``c_nvmlProcessUtilizationSample_t``: one process's percent over one driver sample."""

    pid: int
    timeStamp: int  # noqa: N815 - pynvml's field name; CPU timestamp in microseconds
    smUtil: int  # noqa: N815
    memUtil: int = 0  # noqa: N815
    encUtil: int = 0  # noqa: N815
    decUtil: int = 0  # noqa: N815


@dataclass
class Utilization:
    """``c_nvmlUtilization_t``: percent over the driver's last sample period."""

    gpu: int
    memory: int


@dataclass
class Memory:
    """``c_nvmlMemory_t``: bytes."""

    total: int
    free: int
    used: int


@dataclass
class MigSlice:
    """One MIG device (a GPU instance with its compute instance)."""

    position: int
    gpu_instance_id: int
    profile: str
    mem_used: int
    mem_total: int
    processes: list[Process] = field(default_factory=list)


@dataclass
class Gpu:
    """One physical GPU."""

    uuid: str
    name: str
    util_pct: int = 0
    mem_used: int = 0
    mem_total: int = 16 << 30
    power_mw: int | None = 70_000
    sm_clock_mhz: int = 1_500
    mig_capable: bool = False
    mig_slices: list[MigSlice] | None = None
    """None: MIG disabled (or not capable); a list: MIG enabled with these slices."""
    processes: list[Process] = field(default_factory=list)
    lost: bool = False
    uuid_as_bytes: bool = False
    process_samples: list[ProcessUtilizationSample] | None = None
    """What ``nvmlDeviceGetProcessUtilization`` keeps; None: the board does not support it."""


class FakeNvml:
    """An object that reads like the ``pynvml`` module over the given GPUs."""

    NVMLError = NVMLError
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NOT_FOUND = NVML_ERROR_NOT_FOUND
    MAX_MIG_DEVICES = 7  # A100/H100: up to 7 GPU instances

    def __init__(self, gpus: list[Gpu], *, init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialised = 0
        self.calls: list[str] = []

    # ---- library ----
    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    def _ready(self) -> None:
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    # ---- devices ----
    def nvmlDeviceGetCount(self) -> int:
        self._ready()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[str, int]:
        self._ready()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return ("gpu", index)

    def _gpu(self, handle: Any) -> Gpu:
        self._ready()
        gpu: Gpu = self.gpus[handle[1]]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _slice(self, handle: Any) -> MigSlice | None:
        if handle[0] != "mig":
            return None
        gpu = self._gpu(handle)
        for mig in gpu.mig_slices or []:
            if mig.position == handle[2]:
                return mig
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        gpu = self._gpu(handle)
        mig = self._slice(handle)
        value = gpu.uuid if mig is None else f"MIG-{gpu.uuid[4:]}-{mig.gpu_instance_id}"
        return value.encode() if gpu.uuid_as_bytes else value

    def nvmlDeviceGetName(self, handle: Any) -> str:
        gpu = self._gpu(handle)
        mig = self._slice(handle)
        return gpu.name if mig is None else f"{gpu.name} MIG {mig.profile}"

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Utilization:
        gpu = self._gpu(handle)
        if self._slice(handle) is not None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # no utilisation in MIG mode
        return Utilization(gpu.util_pct, 0)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Memory:
        gpu = self._gpu(handle)
        mig = self._slice(handle)
        if mig is not None:
            return Memory(mig.mem_total, mig.mem_total - mig.mem_used, mig.mem_used)
        return Memory(gpu.mem_total, gpu.mem_total - gpu.mem_used, gpu.mem_used)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._gpu(handle)
        if gpu.power_mw is None or self._slice(handle) is not None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.power_mw

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:
        gpu = self._gpu(handle)
        if clock_type != NVML_CLOCK_SM:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return gpu.sm_clock_mhz

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Process]:
        gpu = self._gpu(handle)
        mig = self._slice(handle)
        return list(gpu.processes if mig is None else mig.processes)

    def nvmlDeviceGetProcessUtilization(
        self, handle: Any, last_seen_time_stamp: int
    ) -> list[ProcessUtilizationSample]:
        """Samples newer than ``last_seen_time_stamp``; NOT_FOUND when there are none (as the
        driver answers), NOT_SUPPORTED on boards and MIG devices without it."""
        gpu = self._gpu(handle)
        if gpu.process_samples is None or self._slice(handle) is not None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        newer = [item for item in gpu.process_samples if item.timeStamp > last_seen_time_stamp]
        if not newer:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return newer

    # ---- MIG ----
    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        gpu = self._gpu(handle)
        if not gpu.mig_capable:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        mode = NVML_DEVICE_MIG_ENABLE if gpu.mig_slices is not None else NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        gpu = self._gpu(handle)
        if not gpu.mig_capable:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return self.MAX_MIG_DEVICES

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> tuple[str, int, int]:
        gpu = self._gpu(handle)
        if not any(mig.position == index for mig in gpu.mig_slices or []):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return ("mig", handle[1], index)

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        mig = self._slice(handle)
        if mig is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return mig.gpu_instance_id
