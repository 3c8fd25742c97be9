"""The fleet: hosts, their GPU rows (whole GPUs, MIG slices, time-sliced pods), projects and
the workloads and training jobs that run on them.

:func:`build_fleet` lays out one block of planted scenarios per ``SCENARIO_BLOCK_GPUS`` GPUs (see
:meth:`_FleetBuilder.add_scenario_block`), fills the rest with ordinary hosts in a fixed rotation
and adds CPU-only batch hosts. Only the ``"fleet"`` random stream is drawn from here, in a fixed
order, so the same seed lays out the same fleet.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from gpucost.synth.catalog import AWS, GCP, GPU_MODELS, INSTANCE_TYPES, InstanceType

MIN_GPUS: Final = 7
"""GPUs of one scenario block: the smallest fleet that holds every planted scenario."""
SCENARIO_BLOCK_GPUS: Final = 500
"""One block of planted scenarios per this many requested GPUs (at least one block)."""
MIG_COMPUTE_SLICES: Final = 7
"""A100 and H100 have 7 MIG compute slices; profile ``Ng.XXgb`` owns N of them (NVIDIA MIG user
guide, "Supported MIG profiles")."""
GCP_PROJECT_ID: Final = "acme-ml-prod"
"""The Google Cloud project of every GCP host (and the sub-account of GCP's billing rows)."""

# fmt: off
FILLER_ROTATION: Final = (
    "p5.48xlarge", "g6.xlarge", "p4d.24xlarge", "g2-standard-4", "dgx-h100", "g4dn.xlarge",
    "a2-highgpu-1g", "p5.48xlarge", "r740-t4x4", "g6.xlarge",
)
# fmt: on
"""Host types added after the scenario blocks, in turn, skipping a type that no longer fits."""
FILLER_ROLES: Final[Mapping[str, tuple[tuple[str, float], ...]]] = {
    "p5.48xlarge": (("training", 0.6), ("model-server", 0.4)),
    "p4d.24xlarge": (("training", 0.7), ("model-server", 0.3)),
    "dgx-h100": (("training", 1.0),),
    "g6.xlarge": (("model-server", 0.8), ("notebook", 0.2)),
    "g2-standard-4": (("model-server", 0.8), ("notebook", 0.2)),
    "g4dn.xlarge": (("model-server", 0.5), ("notebook", 0.5)),
    "a2-highgpu-1g": (("training", 0.5), ("notebook", 0.5)),
    "r740-t4x4": (("notebook", 0.6), ("model-server", 0.4)),
}
FILLER_UNTAGGED_PROBABILITY: Final = 0.12
FILLER_IDLE_PROBABILITY: Final = 0.03

# (slice profile, GPU instance id) of the MIG scenario's H100 80GB: 3 + 2 + 1 + 1 = 7 slices.
# Framebuffer per instance from `nvidia-smi mig -lgip` on H100 80GB (9.75, 19.62, 39.50 GiB;
# approximate).
MIG_LAYOUT: Final = (("3g.40gb", 2), ("2g.20gb", 3), ("1g.10gb", 9), ("1g.10gb", 10))
MIG_FB_MIB: Final[Mapping[str, int]] = {"1g.10gb": 9984, "2g.20gb": 20096, "3g.40gb": 40448}

# fmt: off
PROJECTS: Final = (
    ("llm-serving", "genai"), ("recsys-training", "ranking"), ("vision-research", "perception"),
    ("speech-asr", "speech"), ("search-ranking", "ranking"), ("fraud-detection", "risk"),
    ("ads-ctr", "ads"), ("nlp-platform", "ml-platform"), ("robotics-sim", "robotics"),
    ("genai-images", "genai"), ("demand-forecasting", "data-science"), ("code-assist", "devtools"),
    ("translation", "localization"), ("safety-classifiers", "trust"),
    ("embeddings-service", "ml-platform"), ("video-understanding", "perception"),
    ("ocr-pipeline", "documents"), ("chatbot-eval", "genai"), ("drug-discovery", "science"),
    ("autonomy-perception", "robotics"),
)
# fmt: on
"""No name is a prefix of another, so ``namespaces = ["<project>*"]`` rules never overlap."""
# fmt: off
MODELS: Final = (
    "llama3-8b", "mistral-7b", "bert-ranker", "clip-vit-l14", "whisper-large-v3", "resnet50",
    "t5-base", "sdxl-turbo", "e5-embedder", "yolov8",
)
FIRST_NAMES: Final = (
    "Ada", "Bruno", "Chen", "Dara", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemi",
    "Luca", "Maya", "Nikhil", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tomas", "Uma", "Viktor",
    "Wen", "Ximena", "Yusuf", "Zofia",
)
LAST_NAMES: Final = (
    "Almeida", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov", "Quist", "Rossi",
    "Silva", "Tanaka", "Usman", "Varga", "Weber", "Yilmaz", "Zhang",
)
# fmt: on
POD_HASH_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
"""Characters Kubernetes uses in generated name suffixes (k8s.io/apimachinery rand.String)."""

# Pattern codes of a GPU row's hourly activity.
P_IDLE: Final = 0
P_DIURNAL: Final = 1
P_TRAINING: Final = 2
P_NOTEBOOK: Final = 3
P_ON_CPU: Final = 4


@dataclass(frozen=True)
class Project:
    """An ML project: its name (also its namespaces' prefix), team and cost centre."""

    name: str
    team: str
    cost_center: str


@dataclass
class Host:
    """A machine of the fleet: its identity, type, role, owner and GPUs."""

    host: str
    resource_id: str
    itype: InstanceType
    role: str
    pattern: str
    owner: Project
    tagged: bool
    savings_plan: bool
    gpu_uuids: tuple[str, ...]
    ebs_gb: int = 0
    """Size of the EBS data volume of an AWS GPU host (0: none)."""
    ebs_volume_id: str | None = None

    @property
    def tags(self) -> dict[str, str] | None:
        """The provider tags of the host (its owner's), or None for an untagged host."""
        if not self.tagged:
            return None
        return {"project": self.owner.name, "role": self.role, "team": self.owner.team}


@dataclass(frozen=True)
class Workload:
    """A pod and its container, run for a project (its namespace carries the project's name)."""

    namespace: str
    pod: str
    container: str
    workload: str
    project: Project


@dataclass(frozen=True)
class Unit:
    """One row of gpu_usage per hour: a GPU, a MIG slice or one pod of a time-sliced GPU."""

    host_index: int
    gpu_index: int
    gpu_uuid: str
    usage_uuid: str
    mig_profile: str | None
    gpu_instance_id: int | None
    sevenths: int
    share_divisor: int
    pattern: int
    fb_total_mib: int
    workload: int
    base_pct: int = 0
    amp_pct: int = 0
    mem_permille: int = 0
    noise_pct: int = 3
    max_pct: int = 100


@dataclass(frozen=True)
class Job:
    """A training job: one workload on every GPU of a host for hours ``[start_h, end_h)``."""

    host_index: int
    start_h: int
    end_h: int
    workload: int
    level_pct: int
    mem_permille: int


@dataclass
class Fleet:
    """Everything :func:`build_fleet` lays out; GPU rows and jobs refer to hosts and workloads
    by index (workload 0 is "no pod")."""

    projects: list[Project]
    hosts: list[Host] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    workloads: list[Workload | None] = field(default_factory=lambda: [None])
    jobs: list[Job] = field(default_factory=list)
    anomalies: list[dict[str, object]] = field(default_factory=list)
    shared_gpus: list[dict[str, object]] = field(default_factory=list)

    @property
    def gpu_count(self) -> int:
        """GPUs of every host (a MIG or time-sliced GPU counts once)."""
        return sum(host.itype.gpu_count for host in self.hosts)

    def unit_array(self, name: str) -> npt.NDArray[np.int64]:
        """One integer attribute of every GPU row, in row order."""
        return np.array([getattr(unit, name) for unit in self.units], dtype=np.int64)


def make_projects(count: int) -> list[Project]:
    """The first ``count`` projects of :data:`PROJECTS`, then ``ml-team-NNN`` ones."""
    names = list(PROJECTS[:count])
    names += [(f"ml-team-{index:03d}", "research") for index in range(len(names), count)]
    return [Project(name, team, f"CC-{101 + index}") for index, (name, team) in enumerate(names)]


class _FleetBuilder:
    """Adds hosts, their GPU rows, workloads and jobs to a fleet, drawing from one stream."""

    def __init__(self, projects: list[Project], hours: int, rnd: random.Random) -> None:
        self.fleet = Fleet(projects)
        self.hours = hours
        self.rnd = rnd
        self._names: set[str] = set()
        self._serial: Counter[str] = Counter()
        self._jobs = 0

    # ---- identifiers ----
    def _hex(self, bits: int) -> str:
        return f"{self.rnd.getrandbits(bits):0{bits // 4}x}"

    def _uuid(self, prefix: str) -> str:
        text = self._hex(128)
        return f"{prefix}-{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def _pod_suffix(self, length: int) -> str:
        return "".join(self.rnd.choice(POD_HASH_ALPHABET) for _ in range(length))

    def _unique(self, make: Callable[[], str]) -> str:
        while True:
            name = make()
            if name not in self._names:
                self._names.add(name)
                return name

    def _host_identity(self, itype: InstanceType) -> tuple[str, str]:
        if itype.provider == AWS:
            host = self._unique(
                lambda: (
                    f"ip-10-{self.rnd.randrange(16, 32)}-{self.rnd.randrange(256)}"
                    f"-{self.rnd.randrange(1, 255)}.ec2.internal"
                )
            )
            return host, self._unique(lambda: f"i-0{self._hex(64)}")
        if itype.provider == GCP:
            pool = itype.name.split("-")[0]
            host = self._unique(
                lambda: f"gke-ml-prod-{pool}-pool-{self._hex(32)}-{self._pod_suffix(4)}"
            )
            return host, f"projects/{GCP_PROJECT_ID}/zones/{itype.zone}/instances/{host}"
        prefix = {
            "dgx-h100": "dgx-h100",
            "r760xa-h100x1": "gpu-h100",
            "r740-t4x1": "gpu-t4",
            "r740-t4x4": "gpu-t4x4",
        }[itype.name]
        self._serial[prefix] += 1
        host = f"{prefix}-{self._serial[prefix]:02d}"
        self._names.add(host)
        return host, f"onprem/{itype.region}/{host}"

    # ---- workloads ----
    def _workload(self, workload: Workload) -> int:
        self.fleet.workloads.append(workload)
        return len(self.fleet.workloads) - 1

    def _server(self, project: Project) -> int:
        model = self.rnd.choice(MODELS)
        replica_set = self._pod_suffix(10)
        return self._workload(
            Workload(
                namespace=f"{project.name}-prod",
                pod=f"{model}-predictor-{replica_set}-{self._pod_suffix(5)}",
                container="kserve-container",
                workload=f"{model}-predictor",
                project=project,
            )
        )

    def _notebook(self, project: Project) -> int:
        user = f"{self.rnd.choice(FIRST_NAMES)}-{self.rnd.choice(LAST_NAMES)}".lower()
        return self._workload(
            Workload(
                namespace=f"{project.name}-notebooks",
                pod=f"jupyter-{user}",
                container="notebook",
                workload=f"jupyter-{user}",
                project=project,
            )
        )

    def _training_job(self, project: Project) -> int:
        self._jobs += 1
        name = f"{project.name}-train-{self._jobs:05d}"
        return self._workload(
            Workload(
                namespace=f"{project.name}-jobs",
                pod=f"{name}-worker-0",
                container="pytorch",
                workload=name,
                project=project,
            )
        )

    # ---- hosts ----
    def add_host(
        self,
        itype_name: str,
        role: str,
        pattern: str,
        owner: Project,
        *,
        tagged: bool = True,
        savings_plan: bool = False,
    ) -> int:
        itype = INSTANCE_TYPES[itype_name]
        host, resource_id = self._host_identity(itype)
        uuids = tuple(self._uuid("GPU") for _ in range(itype.gpu_count))
        ebs_gb, ebs_volume_id = 0, None
        if itype.provider == AWS and itype.gpu:
            ebs_gb = self.rnd.choice((500, 1000, 2000))
            ebs_volume_id = self._unique(lambda: f"vol-0{self._hex(64)}")
        self.fleet.hosts.append(
            Host(host, resource_id, itype, role, pattern, owner, tagged, savings_plan, uuids,
                  ebs_gb, ebs_volume_id)
        )  # fmt: skip
        index = len(self.fleet.hosts) - 1
        self._add_units(index)
        return index

    def _unit(
        self, host_index: int, gpu_index: int, pattern: int, workload: int, **params: int
    ) -> None:
        host = self.fleet.hosts[host_index]
        assert host.itype.gpu is not None
        self.fleet.units.append(
            Unit(
                host_index=host_index,
                gpu_index=gpu_index,
                gpu_uuid=host.gpu_uuids[gpu_index],
                usage_uuid=host.gpu_uuids[gpu_index],
                mig_profile=None,
                gpu_instance_id=None,
                sevenths=MIG_COMPUTE_SLICES,
                share_divisor=1,
                pattern=pattern,
                fb_total_mib=host.itype.gpu.fb_total_mib,
                workload=workload,
                **params,
            )
        )

    def _diurnal_params(self, *, oversized: bool = False) -> dict[str, int]:
        if oversized:  # a small model on a big GPU: peak memory < 20 %, utilisation < 30 %
            return {
                "base_pct": self.rnd.randint(3, 6),
                "amp_pct": self.rnd.randint(10, 18),
                "mem_permille": self.rnd.randint(100, 180),
                "noise_pct": 3,
            }
        return {
            "base_pct": self.rnd.randint(8, 22),
            "amp_pct": self.rnd.randint(40, 70),
            "mem_permille": self.rnd.randint(550, 900),
            "noise_pct": 6,
        }

    def _notebook_params(self) -> dict[str, int]:
        low = self.rnd.randint(5, 15)
        return {
            "base_pct": low,
            "amp_pct": self.rnd.randint(20, 40),
            "mem_permille": self.rnd.randint(250, 600),
            "noise_pct": 8,
        }

    def _add_units(self, host_index: int) -> None:
        host = self.fleet.hosts[host_index]
        gpu_count = host.itype.gpu_count
        if host.pattern == "idle":
            for gpu in range(gpu_count):
                self._unit(host_index, gpu, P_IDLE, 0)
        elif host.pattern in ("diurnal", "oversized"):
            # One pod serves the model over all the host's GPUs (tensor parallel).
            workload = self._server(host.owner)
            params = self._diurnal_params(oversized=host.pattern == "oversized")
            for gpu in range(gpu_count):
                jitter = {"base_pct": params["base_pct"] + self.rnd.randint(-2, 2)}
                self._unit(host_index, gpu, P_DIURNAL, workload, **{**params, **jitter})
        elif host.pattern == "model-on-cpu":
            workload = self._server(host.owner)
            for gpu in range(gpu_count):
                self._unit(host_index, gpu, P_ON_CPU, workload)
        elif host.pattern == "notebook":
            for gpu in range(gpu_count):
                self._unit(
                    host_index,
                    gpu,
                    P_NOTEBOOK,
                    self._notebook(host.owner),
                    **self._notebook_params(),
                )
        elif host.pattern == "training":
            for gpu in range(gpu_count):
                self._unit(host_index, gpu, P_TRAINING, 0, noise_pct=3)
            self._plan_jobs(host_index)
        elif host.pattern in ("mig", "time-sliced", "cpu-model-server", "cpu-batch"):
            pass  # shared GPUs are laid out by their scenario; CPU hosts have no GPU rows
        else:
            raise AssertionError(host.pattern)

    def _plan_jobs(self, host_index: int) -> None:
        """Training bursts: jobs of 4-60 h at 82-96 % separated by 3-40 idle hours."""
        host = self.fleet.hosts[host_index]
        projects = self.fleet.projects
        hour = self.rnd.randrange(0, min(12, self.hours))
        while hour < self.hours:
            end = min(self.hours, hour + self.rnd.randint(4, 60))
            project = host.owner if self.rnd.random() < 0.8 else self.rnd.choice(projects)
            self.fleet.jobs.append(
                Job(
                    host_index,
                    hour,
                    end,
                    self._training_job(project),
                    self.rnd.randint(82, 96),
                    self.rnd.randint(700, 950),
                )
            )
            hour = end + self.rnd.randint(3, 40)

    def add_mig_host(self, owners: Sequence[Project]) -> None:
        """An H100 split into 3g.40gb + 2g.20gb + 1g.10gb (+ an unused 1g.10gb)."""
        index = self.add_host("r760xa-h100x1", "model-server", "mig", owners[0])
        host = self.fleet.hosts[index]
        slices: list[dict[str, object]] = []
        for position, (profile, instance_id) in enumerate(MIG_LAYOUT):
            owner = owners[position] if position < len(owners) else None
            workload = self._server(owner) if owner else 0
            params = self._diurnal_params() if owner else {}
            self.fleet.units.append(
                Unit(
                    host_index=index,
                    gpu_index=0,
                    gpu_uuid=host.gpu_uuids[0],
                    usage_uuid=self._uuid("MIG"),
                    mig_profile=profile,
                    gpu_instance_id=instance_id,
                    sevenths=int(profile[0]),
                    share_divisor=1,
                    pattern=P_DIURNAL if owner else P_IDLE,
                    fb_total_mib=MIG_FB_MIB[profile],
                    workload=workload,
                    **params,
                )
            )
            slices.append(
                {
                    "mig_profile": profile,
                    "gpu_instance_id": instance_id,
                    "project": owner.name if owner else None,
                }
            )
        self.fleet.shared_gpus.append(
            {
                "kind": "mig",
                "host": host.host,
                "resource_id": host.resource_id,
                "gpu_uuid": host.gpu_uuids[0],
                "slices": slices,
            }
        )

    def add_time_sliced_host(self, first: Project, second: Project) -> None:
        """One T4 shared by a model server (<= 55 %) and a notebook (<= 45 %)."""
        index = self.add_host("r740-t4x1", "notebook", "time-sliced", first)
        host = self.fleet.hosts[index]
        server = self._server(first)
        notebook = self._notebook(second)
        for workload, pattern, params in (
            (
                server,
                P_DIURNAL,
                {"base_pct": 5, "amp_pct": 35, "mem_permille": 400, "noise_pct": 5, "max_pct": 55},
            ),
            (
                notebook,
                P_NOTEBOOK,
                {"base_pct": 5, "amp_pct": 30, "mem_permille": 300, "noise_pct": 5, "max_pct": 45},
            ),
        ):
            self.fleet.units.append(
                Unit(
                    host_index=index,
                    gpu_index=0,
                    gpu_uuid=host.gpu_uuids[0],
                    usage_uuid=host.gpu_uuids[0],
                    mig_profile=None,
                    gpu_instance_id=None,
                    sevenths=MIG_COMPUTE_SLICES,
                    share_divisor=2,
                    pattern=pattern,
                    fb_total_mib=GPU_MODELS["T4"].fb_total_mib,
                    workload=workload,
                    **params,
                )
            )
        self.fleet.shared_gpus.append(
            {
                "kind": "time-sliced",
                "host": host.host,
                "resource_id": host.resource_id,
                "gpu_uuid": host.gpu_uuids[0],
                "pods": [
                    {"pod": wl.pod, "namespace": wl.namespace, "project": wl.project.name}
                    for wl in (self.fleet.workloads[server], self.fleet.workloads[notebook])
                    if wl is not None
                ],
            }
        )

    def anomaly(self, kind: str, host_index: int, **detail: object) -> None:
        host = self.fleet.hosts[host_index]
        self.fleet.anomalies.append(
            {
                "kind": kind,
                "host": host.host,
                "resource_id": host.resource_id,
                "provider": host.itype.provider,
                "instance_type": host.itype.name,
                "project": host.owner.name,
                "tagged": host.tagged,
                **detail,
            }
        )

    def add_scenario_block(self, block: int) -> None:
        """One of each planted scenario (7 GPUs); projects rotate from block to block."""
        projects = self.fleet.projects

        def project(slot: int) -> Project:
            return projects[(block * 7 + slot) % len(projects)]

        self.add_host("g6.xlarge", "model-server", "diurnal", project(0), savings_plan=True)
        idle = self.add_host("g4dn.xlarge", "notebook", "idle", project(1))
        self.anomaly("idle_gpu_server", idle)
        # Untagged on purpose: only its pods' namespaces say whose it is.
        self.add_host("a2-highgpu-1g", "training", "training", project(2), tagged=False)
        on_cpu = self.add_host("g2-standard-4", "model-server", "model-on-cpu", project(3))
        self.anomaly("model_on_cpu_in_gpu_host", on_cpu)
        self.add_mig_host([project(4), project(5), project(6)])
        self.add_time_sliced_host(project(2), project(3))
        cpu_server = self.add_host("c7i.4xlarge", "model-server", "cpu-model-server", project(0))
        self.anomaly("cpu_misplaced_model_server", cpu_server)
        oversized = self.add_host("a2-highgpu-1g", "model-server", "oversized", project(1))
        self.anomaly("oversized_gpu", oversized)

    def add_filler(self, itype_name: str) -> None:
        roles = FILLER_ROLES[itype_name]
        draw, role = self.rnd.random(), roles[-1][0]
        for candidate, probability in roles:
            if draw < probability:
                role = candidate
                break
            draw -= probability
        pattern = {"training": "training", "model-server": "diurnal", "notebook": "notebook"}[role]
        idle = self.rnd.random() < FILLER_IDLE_PROBABILITY and role != "training"
        owner = self.rnd.choice(self.fleet.projects)
        tagged = self.rnd.random() >= FILLER_UNTAGGED_PROBABILITY
        savings_plan = itype_name == "p5.48xlarge" and self.rnd.random() < 0.5
        index = self.add_host(
            itype_name,
            role,
            "idle" if idle else pattern,
            owner,
            tagged=tagged,
            savings_plan=savings_plan,
        )
        if idle:
            self.anomaly("idle_gpu_server", index)

    def add_cpu_batch(self, number: int) -> None:
        itype = ("m7i.2xlarge", "n2-standard-8")[number % 2]
        owner = self.rnd.choice(self.fleet.projects)
        self.add_host(itype, "data-processing", "cpu-batch", owner)


def build_fleet(gpus: int, projects: list[Project], hours: int, rnd: random.Random) -> Fleet:
    """Scenario blocks, filler hosts in rotation up to exactly ``gpus`` GPUs, then CPU hosts."""
    builder = _FleetBuilder(projects, hours, rnd)
    for block in range(max(1, gpus // SCENARIO_BLOCK_GPUS)):
        builder.add_scenario_block(block)
    remaining = gpus - builder.fleet.gpu_count
    turn = 0
    while remaining > 0:
        itype = INSTANCE_TYPES[FILLER_ROTATION[turn % len(FILLER_ROTATION)]]
        turn += 1
        if itype.gpu_count <= remaining:
            builder.add_filler(itype.name)
            remaining -= itype.gpu_count
    for number in range(max(1, gpus // 64)):
        builder.add_cpu_batch(number)
    fleet = builder.fleet
    # Every host's GPU rows are contiguous and ordered by GPU, MIG instance and pod.
    order = sorted(
        range(len(fleet.units)),
        key=lambda i: (
            fleet.units[i].host_index,
            fleet.units[i].gpu_index,
            fleet.units[i].gpu_instance_id or 0,
            i,
        ),
    )
    fleet.units = [fleet.units[i] for i in order]
    return fleet
