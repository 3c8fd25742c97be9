"""Tests for the nvml collector: a fake pynvml (MIG, time-slicing, errors) and a fake /proc tree."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from gpucost.collector.base import CollectorContext
from gpucost.collector.gpu_rollup import SampleSpool, merge_rollups, rollup_hourly
from gpucost.collector.nvml import (
    ContainerRef,
    NvmlCollector,
    NvmlSampler,
    NvmlSettings,
    Workload,
    load_pynvml,
    parse_cgroup,
    run_agent,
    workload_of_pid,
)
from gpucost.core.errors import CollectorError, MissingDependencyError
from gpucost.core.window import Window
from tests.collector.builders import build_collector
from tests.fakes.pynvml_fake import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    FakeNvml,
    Gpu,
    MigSlice,
    Process,
    ProcessUtilizationSample,
)

GIB = 1 << 30
POD_UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CONTAINER = "3b9c0f5e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c"
OTHER_UID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
OTHER_CONTAINER = "c" * 64
DOCKER_CONTAINER = "d" * 64
T0 = datetime(2024, 9, 24, 10, 0, tzinfo=UTC)

# /proc/PID/cgroup as the kernel prints it, for the layouts gpucost must read.
CGROUP_V2_SYSTEMD = (
    "0::/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice/cri-containerd-{CONTAINER}.scope\n"
)
CGROUP_V1_CGROUPFS = (
    f"12:memory:/kubepods/besteffort/pod{OTHER_UID}/{OTHER_CONTAINER}\n"
    f"11:cpu,cpuacct:/kubepods/besteffort/pod{OTHER_UID}/{OTHER_CONTAINER}\n"
    "1:name=systemd:/system.slice/containerd.service\n"
)
CGROUP_DOCKER = f"12:devices:/docker/{DOCKER_CONTAINER}\n0::/docker/{DOCKER_CONTAINER}\n"
CGROUP_HOST = "0::/user.slice/user-1000.slice/session-3.scope\n"


def make_process(
    proc: Path,
    pid: int,
    cgroup: str,
    *,
    hostname: str | None = None,
    namespace: str | None = None,
    etc_hostname: str | None = None,
) -> None:
    """One /proc/PID entry: cgroup, environ, and the container root's files it points at."""
    entry = proc / str(pid)
    entry.mkdir(parents=True)
    (entry / "cgroup").write_text(cgroup)
    environ = [b"PATH=/usr/bin", b"CUDA_VISIBLE_DEVICES=0"]
    if hostname is not None:
        environ.append(b"HOSTNAME=" + hostname.encode())
    (entry / "environ").write_bytes(b"\0".join(environ) + b"\0")
    if namespace is not None:
        secrets = entry / "root" / "var/run/secrets/kubernetes.io/serviceaccount"
        secrets.mkdir(parents=True)
        (secrets / "namespace").write_text(namespace)
    if etc_hostname is not None:
        (entry / "root" / "etc").mkdir(parents=True, exist_ok=True)
        (entry / "root" / "etc" / "hostname").write_text(etc_hostname + "\n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    make_process(
        root, 4242, CGROUP_V2_SYSTEMD, hostname="llama-predictor-7d9f8b6c5d-x2k9p", namespace="llm"
    )
    make_process(  # a second process of the same container
        root, 4243, CGROUP_V2_SYSTEMD, hostname="llama-predictor-7d9f8b6c5d-x2k9p", namespace="llm"
    )
    make_process(root, 4244, CGROUP_V2_SYSTEMD)  # one whose environ and root are unreadable
    make_process(
        root, 5151, CGROUP_V1_CGROUPFS, etc_hostname="jupyter-ada-lovelace", namespace="research"
    )
    make_process(root, 6161, CGROUP_DOCKER)
    make_process(root, 7171, CGROUP_HOST)
    return root


def fleet() -> list[Gpu]:
    return [
        # An H100 in MIG mode: a 3g.40gb slice running a pod, an unused 1g.10gb slice.
        Gpu(
            uuid="GPU-8862a95b-4be8-c82a-13ab-39b835b079cc",
            name="NVIDIA H100 80GB HBM3",
            power_mw=312_500,
            sm_clock_mhz=1_755,
            mem_total=80 * GIB,
            mig_capable=True,
            mig_slices=[
                MigSlice(0, 2, "3g.40gb", 20 * GIB, 40 * GIB, [Process(4242, 20 * GIB)]),
                MigSlice(5, 9, "1g.10gb", 0, 10 * GIB),
            ],
        ),
        # A time-sliced A100 (MIG capable, MIG off): two pods, memory per pod from NVML.
        Gpu(
            uuid="GPU-11111111-2222-3333-4444-555555555555",
            name="NVIDIA A100-SXM4-40GB",
            util_pct=87,
            mem_used=30 * GIB,
            mem_total=40 * GIB,
            power_mw=250_000,
            sm_clock_mhz=1_410,
            mig_capable=True,
            processes=[
                Process(4242, 8 * GIB),
                Process(4243, 2 * GIB),
                Process(5151, 20 * GIB),
            ],
        ),
        # A T4 (no MIG) with a plain Docker container and a host process.
        Gpu(
            uuid="GPU-99fcd550-e861-791b-9c02-40836bd37e8c",
            name="Tesla T4",
            util_pct=5,
            mem_used=1 * GIB,
            power_mw=None,  # some boards do not report power
            processes=[Process(6161, None), Process(7171, None)],
            uuid_as_bytes=True,
        ),
    ]


def fixed_clock(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def test_parse_cgroup_reads_every_layout() -> None:
    assert parse_cgroup(CGROUP_V2_SYSTEMD) == ContainerRef(CONTAINER, POD_UID)
    assert parse_cgroup(CGROUP_V1_CGROUPFS) == ContainerRef(OTHER_CONTAINER, OTHER_UID)
    guaranteed = f"0::/kubepods/pod{OTHER_UID}/{OTHER_CONTAINER}"
    assert parse_cgroup(guaranteed) == ContainerRef(OTHER_CONTAINER, OTHER_UID)
    assert parse_cgroup(CGROUP_DOCKER) == ContainerRef(DOCKER_CONTAINER)
    systemd_docker = f"0::/system.slice/docker-{DOCKER_CONTAINER}.scope"
    assert parse_cgroup(systemd_docker) == ContainerRef(DOCKER_CONTAINER)
    crio = (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
        f"{OTHER_UID.replace('-', '_')}.slice/crio-{OTHER_CONTAINER}.scope"
    )
    assert parse_cgroup(crio) == ContainerRef(OTHER_CONTAINER, OTHER_UID)
    assert parse_cgroup(CGROUP_HOST) is None
    assert parse_cgroup("") is None


def test_workload_of_pid_names_pod_namespace_and_container(proc: Path) -> None:
    assert workload_of_pid(proc, 4242) == Workload(
        "llm", "llama-predictor-7d9f8b6c5d-x2k9p", CONTAINER[:12]
    )
    # No HOSTNAME in the environment: the container's /etc/hostname.
    assert workload_of_pid(proc, 5151) == Workload(
        "research", "jupyter-ada-lovelace", OTHER_CONTAINER[:12]
    )
    # Nothing readable but the cgroup: the pod is named by its UID.
    assert workload_of_pid(proc, 4244) == Workload(None, POD_UID, CONTAINER[:12])
    assert workload_of_pid(proc, 6161) == Workload(container=DOCKER_CONTAINER[:12])
    assert workload_of_pid(proc, 7171) is None
    assert workload_of_pid(proc, 99999) is None  # exited between NVML and /proc


def test_sampler_reads_gpus_mig_slices_and_processes(proc: Path) -> None:
    nvml = FakeNvml(fleet())
    with NvmlSampler(nvml, host="gpu-node-1", proc_root=proc, clock=fixed_clock(T0)) as sampler:
        samples = sampler.sample()
    assert nvml.initialised == 0 and nvml.calls[-1] == "nvmlShutdown"
    assert sampler.errors == []
    rows = {
        (row["gpu_uuid"], row["pod"], row["container"]): row
        for row in samples.iter_rows(named=True)
    }
    h100 = "GPU-8862a95b-4be8-c82a-13ab-39b835b079cc"
    used_slice = rows[(f"{h100}/2", "llama-predictor-7d9f8b6c5d-x2k9p", CONTAINER[:12])]
    assert used_slice["mig_profile"] == "3g.40gb"
    assert used_slice["namespace"] == "llm"
    assert used_slice["util"] is None  # NVML has no utilisation in MIG mode
    assert used_slice["power_w"] is None  # a slice has no power of its own
    assert used_slice["sm_clock_mhz"] == 1755.0
    assert used_slice["mem_used_bytes"] == 20 * GIB
    assert used_slice["mem_total_bytes"] == 40 * GIB
    idle_slice = rows[(f"{h100}/9", None, None)]
    assert idle_slice["mig_profile"] == "1g.10gb" and idle_slice["mem_total_bytes"] == 10 * GIB
    assert not any(key[0] == h100 for key in rows)  # in MIG mode only slices get rows

    a100 = "GPU-11111111-2222-3333-4444-555555555555"
    llama = rows[(a100, "llama-predictor-7d9f8b6c5d-x2k9p", CONTAINER[:12])]
    jupyter = rows[(a100, "jupyter-ada-lovelace", OTHER_CONTAINER[:12])]
    assert llama["util"] == pytest.approx(0.87) and jupyter["util"] == pytest.approx(0.87)
    assert llama["power_w"] == 250.0  # mW -> W
    assert llama["mem_used_bytes"] == 10 * GIB  # its two processes
    assert jupyter["mem_used_bytes"] == 20 * GIB
    assert llama["mig_profile"] is None and llama["gpu_index"] == 1

    t4 = "GPU-99fcd550-e861-791b-9c02-40836bd37e8c"  # NVML gave the uuid as bytes
    docker = rows[(t4, None, DOCKER_CONTAINER[:12])]
    host_process = rows[(t4, None, None)]
    assert docker["power_w"] is None and docker["util"] == pytest.approx(0.05)
    assert docker["mem_used_bytes"] == 1 * GIB  # NVML did not say per process: the device's
    assert host_process["gpu_model"] == "Tesla T4"
    assert samples.get_column("time").unique().to_list() == [T0]
    assert samples.height == 6


def test_init_failure_is_one_clear_error() -> None:
    sampler = NvmlSampler(FakeNvml([], init_error=NVML_ERROR_DRIVER_NOT_LOADED), host="gpu-node-1")
    with pytest.raises(
        CollectorError, match="NVML could not start on gpu-node-1: Driver Not Loaded"
    ):
        sampler.sample()


def test_a_lost_gpu_is_noted_and_the_others_sampled(proc: Path) -> None:
    gpus = fleet()
    gpus[1].lost = True
    sampler = NvmlSampler(FakeNvml(gpus), host="h", proc_root=proc, clock=fixed_clock(T0))
    samples = sampler.sample()
    sampler.close()
    assert "GPU-11111111-2222-3333-4444-555555555555" not in samples.get_column("gpu_uuid")
    assert samples.height == 4
    assert sampler.errors == ["nvmlDeviceGetUUID: GPU is lost"]


def test_missing_nvidia_ml_py_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    with pytest.raises(MissingDependencyError) as raised:
        load_pynvml()
    message = str(raised.value)
    assert "\n" not in message and "pip install 'nvidia-ml-py'" in message
    settings = NvmlSettings(name="gpu-agent", kind="nvml")
    with pytest.raises(MissingDependencyError):
        NvmlCollector(settings, CollectorContext())


class FakeTime:
    """A clock and a wait() that advance together, so the agent runs hours in milliseconds."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.elapsed = 0.0

    def clock(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.elapsed

    def wait(self, seconds: float) -> bool:
        self.now += timedelta(seconds=seconds)
        self.elapsed += seconds
        return False


def test_agent_writes_each_finished_hour_then_the_partial_one(proc: Path, tmp_path: Path) -> None:
    fake = FakeTime(T0 + timedelta(minutes=30))
    sampler = NvmlSampler(FakeNvml(fleet()), host="h", proc_root=proc, clock=fake.clock)
    written: list[pl.DataFrame] = []
    spool = SampleSpool(tmp_path / "spool")
    # 90 minutes at one sample per 10 minutes: 10:30 ... 11:50 (nine samples, last at 11:50).
    stats = run_agent(
        sampler,
        600,
        90 * 60,
        written.append,
        source="gpu-agent",
        spool=spool,
        wait=fake.wait,
        monotonic=fake.monotonic,
    )
    assert stats.rounds == 9 and stats.flushes == 2 and stats.errors == []
    first, last = written
    assert first.get_column("hour").unique().to_list() == [T0]
    assert last.get_column("hour").unique().to_list() == [T0 + timedelta(hours=1)]
    # 10:30, 10:40, 10:50 -> 3 x 600 s; 11:00 ... 11:50 -> 6 x 600 s.
    assert first.get_column("seconds_observed").unique().to_list() == [1800.0]
    assert last.get_column("seconds_observed").unique().to_list() == [3600.0]
    assert set(first.get_column("source")) == {"gpu-agent"}
    assert stats.rows_written == first.height + last.height == 12
    spooled = spool.read(Window(date(2024, 9, 24), date(2024, 9, 25)))
    assert spooled.height == stats.samples == 9 * 6


def test_agent_once_samples_a_single_round(proc: Path) -> None:
    fake = FakeTime(T0)
    sampler = NvmlSampler(FakeNvml(fleet()), host="h", proc_root=proc, clock=fake.clock)
    written: list[pl.DataFrame] = []
    stats = run_agent(sampler, 10, 0, written.append, wait=fake.wait, monotonic=fake.monotonic)
    assert stats.rounds == 1 and len(written) == 1
    assert written[0].get_column("seconds_observed").unique().to_list() == [10.0]


def test_two_partial_flushes_of_an_hour_merge(proc: Path) -> None:
    written: list[pl.DataFrame] = []
    for start in (T0, T0 + timedelta(minutes=30)):  # the agent restarted at 10:30
        fake = FakeTime(start)
        sampler = NvmlSampler(FakeNvml(fleet()), host="h", proc_root=proc, clock=fake.clock)
        run_agent(sampler, 60, 10 * 60, written.append, wait=fake.wait, monotonic=fake.monotonic)
    merged = merge_rollups(written, "nvml")
    assert merged.height == 6
    assert merged.get_column("seconds_observed").unique().to_list() == [1200.0]


def nvml_source(proc: Path, clock: Callable[[], datetime], **keys: object) -> NvmlCollector:
    """An nvml source on host ``h`` over the fake fleet and /proc tree."""
    nvml = FakeNvml(fleet())
    context = CollectorContext(clock=clock, nvml_loader=lambda: nvml)
    return build_collector(
        NvmlCollector, context, name="gpu-agent", host="h", proc_root=str(proc), **keys
    )


def test_nvml_collector_rolls_up_its_spool(proc: Path, tmp_path: Path) -> None:
    fake = FakeTime(T0)
    source = nvml_source(proc, fake.clock, interval_s=60, spool_dir=str(tmp_path / "spool"))
    window = Window(date(2024, 9, 24), date(2024, 9, 25))
    for _ in range(3):
        collected = source.collect(window)
        fake.wait(60)
    rows = collected.frames["gpu_usage"]
    assert collected.notes["samples"] == 18 and collected.notes["sampled"] == 6
    assert rows.height == 6
    assert rows.get_column("seconds_observed").unique().to_list() == [180.0]
    a100 = rows.filter(pl.col("gpu_uuid") == "GPU-11111111-2222-3333-4444-555555555555")
    assert sorted(a100.get_column("workload").to_list()) == [
        "jupyter-ada-lovelace",
        "llama-predictor",
    ]


def test_nvml_collector_without_spool_lands_one_sample(proc: Path) -> None:
    collected = nvml_source(proc, fixed_clock(T0), interval_s=10).collect(
        Window(date(2024, 9, 24), date(2024, 9, 25))
    )
    assert collected.frames["gpu_usage"].get_column("seconds_observed").max() == 10.0
    assert "no spool_dir" in collected.notes["warning"]


def test_real_pynvml_module_has_the_functions_the_sampler_calls() -> None:
    """The fake mirrors nvidia-ml-py: every NVML name the sampler uses exists in the real one."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py not installed (optional)")
    used = [
        "nvmlInit",
        "nvmlShutdown",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetName",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetGpuInstanceId",
    ]
    assert [name for name in used if not callable(getattr(pynvml, name, None))] == []
    assert pynvml.NVML_CLOCK_SM == 1 and pynvml.NVML_DEVICE_MIG_ENABLE == 1
    assert pynvml.NVML_ERROR_NOT_SUPPORTED == 3 and pynvml.NVML_ERROR_NOT_FOUND == 6
    assert pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND).value == 6
    # Without a driver, real NVML fails to start with a clear error, not a crash.
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - only on a machine with an NVIDIA driver
        pynvml.nvmlShutdown()
    sampler = NvmlSampler(pynvml, host="this-host")
    try:
        sampler.sample()
    except CollectorError as error:
        assert "NVML could not start on this-host" in str(error)
    else:  # pragma: no cover - only on a machine with an NVIDIA driver
        sampler.close()


def agent_config(tmp_path: Path, proc: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[store]\ndata_dir = "{tmp_path / "lake"}"\nout_dir = "{tmp_path / "out"}"\n\n'
        f'[[sources]]\nname = "gpu-agent"\nkind = "nvml"\nhost = "gpu-node-1"\n'
        f'proc_root = "{proc}"\n'
    )
    return config


def test_agent_command_lands_rows_and_merges_runs(
    proc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gpucost agent --once` twice: the second round's seconds add to the first's hour."""
    from typer.testing import CliRunner

    import gpucost.collector.nvml
    from gpucost.cli import app
    from gpucost.core.contracts import GPU_USAGE
    from gpucost.core.lake import Lake
    from gpucost.core.storage import LocalStorage

    nvml = FakeNvml(fleet())
    monkeypatch.setattr(gpucost.collector.nvml, "load_pynvml", lambda: nvml)
    config = agent_config(tmp_path, proc)
    runner = CliRunner()
    args = ["agent", "--config", str(config), "--once", "--interval", "10"]
    for _ in range(2):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "rows landed" in result.output
    usage = Lake(LocalStorage(tmp_path / "lake")).read(GPU_USAGE)
    assert usage.height > 0
    assert set(usage["source"]) == {"gpu-agent"}
    assert usage["seconds_observed"].max() == 20.0


def test_agent_without_nvml_fails_in_one_line(
    proc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import gpucost.collector.nvml
    from gpucost.cli import app

    monkeypatch.setattr(
        gpucost.collector.nvml,
        "load_pynvml",
        lambda: FakeNvml([], init_error=NVML_ERROR_DRIVER_NOT_LOADED),
    )
    result = CliRunner().invoke(
        app, ["agent", "--config", str(agent_config(tmp_path, proc)), "--once"]
    )
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "NVML" in error_lines[0], result.output
    unknown = CliRunner().invoke(
        app, ["agent", "--config", str(agent_config(tmp_path, proc)), "--source", "nope"]
    )
    assert unknown.exit_code == 2


def test_per_process_utilisation_splits_a_time_sliced_gpu_by_use(proc: Path) -> None:
    # The A100 is time-sliced by llama (PIDs 4242 and 4243) and jupyter (PID 5151) at 87 %
    # device utilisation; NVML's per-process samples say llama used 60 + 10 % and jupyter 17 %.
    gpus = fleet()
    gpus[1].process_samples = [
        ProcessUtilizationSample(4242, 1_000, 50),
        ProcessUtilizationSample(4242, 2_000, 70),
        ProcessUtilizationSample(4243, 2_000, 10),
        ProcessUtilizationSample(5151, 2_000, 17),
    ]
    moments = iter([T0, T0 + timedelta(seconds=10)])
    sampler = NvmlSampler(FakeNvml(gpus), host="h", proc_root=proc, clock=lambda: next(moments))
    first = sampler.sample()
    # No sample newer than the last one read: NVML answers NOT_FOUND, nothing is known per
    # process, and the rollup splits the device's utilisation equally.
    second = sampler.sample()
    sampler.close()
    a100 = "GPU-11111111-2222-3333-4444-555555555555"
    own = dict(first.filter(pl.col("gpu_uuid") == a100).select("pod", "process_util").iter_rows())
    assert own == {
        "llama-predictor-7d9f8b6c5d-x2k9p": pytest.approx(0.70),
        "jupyter-ada-lovelace": pytest.approx(0.17),
    }
    assert second.get_column("process_util").null_count() == second.height
    assert sampler.errors == []
    rows = rollup_hourly(pl.concat([first, second]), interval_s=10, source="nvml")
    busy = dict(
        rows.filter(pl.col("gpu_uuid") == a100).select("pod", "gpu_seconds_busy").iter_rows()
    )
    assert busy["llama-predictor-7d9f8b6c5d-x2k9p"] == pytest.approx(10 * 0.70 + 10 * 0.87 / 2)
    assert busy["jupyter-ada-lovelace"] == pytest.approx(10 * 0.17 + 10 * 0.87 / 2)
    held = rows.filter(pl.col("gpu_uuid") == a100).get_column("gpu_seconds_held").to_list()
    assert held == [10.0, 10.0]  # two 10-s samples, the GPU shared by two pods
