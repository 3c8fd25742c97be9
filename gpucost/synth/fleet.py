"""``gpucost synth``: a deterministic synthetic GPU fleet, its bills, its metrics and the truth.

:func:`generate` writes a fleet's FOCUS 1.0 bill, inventory, GPU metrics (dcgm-exporter text or
the ``gpu_usage`` rollup), CPU metrics of model servers, a people roster and ``truth.json``, the
ground truth an allocator and the findings are tested against. Same arguments, same bytes: every
random draw comes from ``random.Random`` / ``numpy.random.Generator`` seeded with ``seed``, no
clock is read and every output is sorted before it is written.

The fleet always holds, at every size (counts grow with ``gpus``, at least one of each):

* H100, A100, L4 and T4 GPUs on AWS, Google Cloud and on-prem hosts;
* training hosts with bursts (jobs at 82-96 % utilisation for hours, then nothing), model
  servers whose utilisation follows a day curve, notebooks busy only in office hours;
* an idle GPU host (no pod, 0 % utilisation, no memory, still billed): ``idle_gpu_server``;
* a model server on a CPU-only instance whose CPU p95 is above 70 %:
  ``cpu_misplaced_model_server``;
* a model server on a GPU host whose GPU shows 0 % and 0 MiB while its CPU is busy:
  ``model_on_cpu_in_gpu_host``;
* a small model on an A100 (peak memory under 20 %, utilisation under 30 %): ``oversized_gpu``;
* an H100 split into MIG slices (3g.40gb, 2g.20gb, 1g.10gb used by different projects and one
  1g.10gb slice left unused) and a T4 time-sliced between two pods of two projects.

Prices (USD per hour, Linux on-demand, as listed in September 2024; AWS in us-east-1 from the EC2
On-Demand pricing page, Google Cloud in us-central1 from the Compute Engine pricing page):

=================  ============  ============================  ===========
instance type      provider      GPUs                          USD / hour
=================  ============  ============================  ===========
p5.48xlarge        AWS           8 x H100 80GB HBM3            98.32
p4d.24xlarge       AWS           8 x A100-SXM4-40GB            32.7726
g6.xlarge          AWS           1 x L4                        0.8048
g4dn.xlarge        AWS           1 x T4                        0.526
c7i.4xlarge        AWS           none (16 vCPU)                0.714
m7i.2xlarge        AWS           none (8 vCPU)                 0.4032
a2-highgpu-1g      Google Cloud  1 x A100-SXM4-40GB            3.673385
g2-standard-4      Google Cloud  1 x L4                        0.706832
n2-standard-8      Google Cloud  none (8 vCPU)                 0.388472
dgx-h100 etc.      On-Prem       8 x H100, 1 x H100, T4        (not billed)
=================  ============  ============================  ===========

Other prices: S3 Standard 0.023 per GB-month (first 50 TB), EBS gp3 0.08 per GB-month, Cloud
Storage Standard (us-central1) 0.020 per GB-month, AWS data transfer out 0.09 per GB (first
10 TB), NAT gateway 0.045 per hour and 0.045 per GB processed, Google Cloud internet egress 0.12
per GB (premium tier, approximate). AWS Business Support is billed as 3 % of the day's AWS charges
(its top tier, prorated per day here; the real fee is monthly and tiered). A Compute Savings Plan
covers some hosts at an assumed 28 % below on-demand; its hourly fee is a ``Purchase`` row
(BilledCost = commitment, EffectiveCost = 0) and the covered usage rows carry BilledCost 0 and
EffectiveCost = the plan's rate, as AWS's FOCUS export writes them, so the file's BilledCost and
EffectiveCost totals are equal. A one-time promotional ``Credit`` has a negative BilledCost.

Metrics: one dcgm-exporter scrape every ``SCRAPE_INTERVAL_S`` seconds (12 per hour), GPU
utilisation in whole percent as ``DCGM_FI_DEV_GPU_UTIL`` reports it, so a GPU-hour's busy
seconds are exactly ``3 x`` the sum of its 12 samples. ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` carries
the same value as a ratio. MIG GPUs report no ``DCGM_FI_DEV_GPU_UTIL`` (NVML does not support it
in MIG mode), only per-instance series. On a time-sliced GPU the real exporter repeats the
device's values on each pod's series; synth writes each pod's own share instead, so that "split
by use" has a ground truth.

``truth.json`` (all money as Decimal strings rounded half-even to 18 places, GPU-seconds as
numbers) defines, per GPU row (one GPU, MIG slice or time-sliced pod, per hour):

* *used* GPU-seconds = mean utilisation x seconds observed x slice fraction, where a MIG slice
  ``Ng.*`` is N/7 of the GPU and a full GPU (or a time-sliced pod) is 1;
* *held* GPU-seconds = seconds observed x slice fraction / pods sharing the GPU, for rows with a
  pod; rows without a pod hold nothing;
* a host's *idle* GPU-seconds = GPUs x seconds in the window - used GPU-seconds on it;
* the ``usage`` basis gives each project, for every cloud GPU host and hour, the host's
  EffectiveCost for that hour x (project's used GPU-seconds / (GPUs x 3600)); the rest of the
  host's cost is idle cost, reported per host and under the host's ``project`` tag (owner).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from gpucost.core.contracts import GPU_USAGE, HOST_METRICS, MONEY_SCALE

__all__ = ["MIN_GPUS", "SynthSummary", "generate"]

SOURCE: Final = "synth"
SCRAPE_INTERVAL_S: Final = 300
"""One scrape every 5 minutes keeps the demo's files small (exporters are scraped every 15-30 s
in production; the hourly rollup is the same)."""
SAMPLES_PER_HOUR: Final = 3600 // SCRAPE_INTERVAL_S
SECONDS_PER_HOUR: Final = 3600
MIG_COMPUTE_SLICES: Final = 7
"""A100 and H100 have 7 MIG compute slices; profile ``Ng.XXgb`` owns N of them (NVIDIA MIG user
guide, "Supported MIG profiles")."""
MIB: Final = 1 << 20
DRIVER_VERSION: Final = "550.90.07"
"""An R550 production driver of mid-2024; dcgm-exporter puts it in DCGM_FI_DRIVER_VERSION."""
AUTO_DCGM_MAX_GPUS: Final = 64
SCENARIO_BLOCK_GPUS: Final = 500
"""One block of planted scenarios per this many requested GPUs (at least one block)."""
CHUNK_UNITS: Final = 512
"""GPU rows simulated per vectorised chunk; fixed so the random streams never depend on it."""
FOCUS_COST_PLACES: Final = 11
"""FOCUS sample files print costs with 11 fractional digits and ConsumedQuantity with 15."""
FOCUS_QUANTITY_PLACES: Final = 15
SAVINGS_PLAN_DISCOUNT: Final = Decimal("0.28")
SAVINGS_PLAN_NAME: Final = "ml-compute-savings-plan"
SUPPORT_RATE: Final = Decimal("0.03")
CREDIT_PER_8_GPUS_USD: Final = Decimal("100.00")

UsageFormat = Literal["auto", "dcgm", "parquet"]

STORAGE_PRICES: Final[Mapping[str, tuple[Decimal, str, str, str]]] = {
    # kind: (USD per GB-month, FOCUS ServiceName, ChargeDescription, ResourceType)
    "ebs": (Decimal("0.08"), "Amazon Elastic Compute Cloud",
            "$0.08 per GB-month of General Purpose SSD (gp3) provisioned storage", "volume"),
    "s3": (Decimal("0.023"), "Amazon Simple Storage Service",
           "$0.023 per GB - first 50 TB / month of storage used", "bucket"),
    "gcs": (Decimal("0.020"), "Cloud Storage", "Standard Storage US Regional", "bucket"),
}  # fmt: skip

TRUTH_DEFINITIONS: Final = {
    "gpu_seconds_used": "per GPU row (GPU, MIG slice or time-sliced pod) and hour: util_avg x "
    "seconds_observed x slice fraction (MIG Ng.* = N/7, otherwise 1), summed by the project "
    "whose namespace prefix the row's pod carries",
    "gpu_seconds_held": "seconds_observed x slice fraction / pods sharing the GPU, for rows "
    "with a pod",
    "idle_gpu_seconds": "per host: GPUs x seconds in the window - GPU-seconds used on it",
    "gpu_cost_used": "usage basis: for every cloud GPU host and hour, the host's EffectiveCost "
    "x project's GPU-seconds used / (GPUs x 3600)",
    "gpu_cost_idle": "the host's EffectiveCost not given to a project by use; "
    "gpu_cost_idle_owned sums it by the host's project tag (owner), untagged hosts apart",
    "money": "Decimal strings rounded half-even to 18 places from exact fractions",
    "fte_days": "sum over the window's days of roster fractions of people active that day "
    "(start <= day <= end, end inclusive, empty end = still there)",
}

# Office-hours request curve (fraction of peak per local hour 0-23), a typical shape of
# interactive inference traffic; literals, not cos(), so the output is identical on every CPU.
# fmt: off
DIURNAL_CURVE: Final = (
    0.10, 0.06, 0.04, 0.03, 0.04, 0.08, 0.18, 0.35, 0.55, 0.72, 0.84, 0.92,
    0.97, 1.00, 0.99, 0.96, 0.90, 0.82, 0.72, 0.60, 0.45, 0.32, 0.22, 0.15,
)
# fmt: on
WEEKEND_FACTOR: Final = 0.6


@dataclass(frozen=True)
class GpuModel:
    """A GPU model as dcgm-exporter reports it."""

    model_name: str
    """``modelName`` label (dcgm-exporter) and ``gpu_model`` column."""
    family: str
    fb_total_mib: int
    """FB_USED + FB_FREE of an idle GPU (nvidia-smi's total minus the driver's reservation)."""
    idle_power_w: int
    max_power_w: int
    idle_sm_clock_mhz: int
    max_sm_clock_mhz: int


# Idle power, idle clocks and framebuffer sizes of L4 (22563 MiB, 16 W, 210 MHz), T4 (14912 MiB,
# 14 W, 300 MHz) and H100 SXM (66-68 W) are read off the real scrapes in
# shared/realdata/dcgm/exposition; maximum power is the board TDP from NVIDIA's data sheets.
H100_SXM = GpuModel("NVIDIA H100 80GB HBM3", "H100", 81079, 67, 700, 345, 1980)
H100_PCIE = GpuModel("NVIDIA H100 PCIe", "H100", 81079, 48, 350, 345, 1755)
A100_SXM_40 = GpuModel("NVIDIA A100-SXM4-40GB", "A100", 40536, 55, 400, 210, 1410)
L4 = GpuModel("NVIDIA L4", "L4", 22563, 16, 72, 210, 2040)
T4 = GpuModel("Tesla T4", "T4", 14912, 14, 70, 300, 1590)

AWS: Final = "AWS"
GCP: Final = "Google Cloud"
ONPREM: Final = "On-Prem"


@dataclass(frozen=True)
class InstanceType:
    """A machine type: its GPUs, vCPUs and on-demand price."""

    name: str
    provider: str
    gpu: GpuModel | None
    gpu_count: int
    gpu_mem_mib: int
    """Memory per GPU as the provider's API reports it (EC2 DescribeInstanceTypes GpuInfo)."""
    vcpus: int
    hourly_price: Decimal | None
    region: str
    region_name: str
    zone: str
    tz_offset_h: int
    """Local time of the users, for the day curves (US East -4, US Central -5, San Jose -7)."""
    pci_bus_ids: tuple[str, ...] = ()


_AWS_REGION = ("us-east-1", "US East (N. Virginia)", "us-east-1a", -4)
_GCP_REGION = ("us-central1", "Iowa", "us-central1-a", -5)
_ONPREM_REGION = ("sjc1", "San Jose data centre", "sjc1-row4", -7)
# p5 bus ids are those of the real EKS p5.48xlarge scrape; the g6 one is the kops L4 scrape's.
_P5_BUS = tuple(f"00000000:{b}:00.0" for b in ("53", "64", "75", "86", "97", "A8", "B9", "CA"))
_P4D_BUS = tuple(
    f"00000000:{b}.0"
    for b in ("10:1C", "10:1D", "20:1C", "20:1D", "90:1C", "90:1D", "A0:1C", "A0:1D")
)
_T4X4_BUS = tuple(f"00000000:{b}:00.0" for b in ("3B", "5E", "86", "AF"))

# fmt: off
INSTANCE_TYPES: Final[Mapping[str, InstanceType]] = {
    it.name: it
    for it in (
        InstanceType("p5.48xlarge", AWS, H100_SXM, 8, 81920, 192, Decimal("98.32"),
                     *_AWS_REGION, _P5_BUS),
        InstanceType("p4d.24xlarge", AWS, A100_SXM_40, 8, 40960, 96, Decimal("32.7726"),
                     *_AWS_REGION, _P4D_BUS),
        InstanceType("g6.xlarge", AWS, L4, 1, 22888, 4, Decimal("0.8048"),
                     *_AWS_REGION, ("00000000:31:00.0",)),
        InstanceType("g4dn.xlarge", AWS, T4, 1, 16384, 4, Decimal("0.526"),
                     *_AWS_REGION, ("00000000:00:1E.0",)),
        InstanceType("c7i.4xlarge", AWS, None, 0, 0, 16, Decimal("0.714"), *_AWS_REGION),
        InstanceType("m7i.2xlarge", AWS, None, 0, 0, 8, Decimal("0.4032"), *_AWS_REGION),
        InstanceType("a2-highgpu-1g", GCP, A100_SXM_40, 1, 40960, 12, Decimal("3.673385"),
                     *_GCP_REGION, ("00000000:00:04.0",)),
        InstanceType("g2-standard-4", GCP, L4, 1, 24576, 4, Decimal("0.706832"),
                     *_GCP_REGION, ("00000000:00:03.0",)),
        InstanceType("n2-standard-8", GCP, None, 0, 0, 8, Decimal("0.388472"), *_GCP_REGION),
        InstanceType("dgx-h100", ONPREM, H100_SXM, 8, 81920, 224, None,
                     *_ONPREM_REGION, _P5_BUS),
        InstanceType("r760xa-h100x1", ONPREM, H100_PCIE, 1, 81920, 64, None,
                     *_ONPREM_REGION, ("00000000:CA:00.0",)),
        InstanceType("r740-t4x1", ONPREM, T4, 1, 16384, 32, None,
                     *_ONPREM_REGION, ("00000000:3B:00.0",)),
        InstanceType("r740-t4x4", ONPREM, T4, 4, 16384, 48, None, *_ONPREM_REGION, _T4X4_BUS),
    )
}
# fmt: on

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

# dcgm-exporter metric families written, in the order of its default-counters.csv, with the
# HELP texts of dcgm-exporter 3.x/4.x.
DCGM_FAMILIES: Final = (
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)."),
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active."),
)
_GPU_UTIL_RANK: Final = 2

# The 43 FOCUS 1.0 columns in the order of FOCUS-Sample-Data's focus_sample.csv (its extra Id
# column left out).
# fmt: off
FOCUS_HEADER: Final = (
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName",
    "CommitmentDiscountStatus", "CommitmentDiscountType", "ConsumedQuantity", "ConsumedUnit",
    "ContractedCost", "ContractedUnitPrice", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingQuantity", "PricingUnit", "ProviderName",
    "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceName", "SkuId", "SkuPriceId", "SubAccountId", "SubAccountName",
    "Tags",
)
# fmt: on
_PERIOD_COLUMNS: Final = (
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargePeriodEnd",
    "ChargePeriodStart",
)
# Numbers are written unquoted with a fixed number of places (as the sample does); every other
# value is a quoted string and an absent value is NULL.
_COST_COLUMNS: Final = frozenset(
    {
        "BilledCost",
        "ContractedCost",
        "ContractedUnitPrice",
        "EffectiveCost",
        "ListCost",
        "PricingQuantity",
    }
)
_QUANTITY_COLUMNS: Final = frozenset({"ConsumedQuantity"})

_AWS_ACCOUNT: Final = {
    "BillingAccountId": "123456789012",
    "BillingAccountName": "Acme ML",
    "BillingCurrency": "USD",
    "InvoiceIssuerName": "Amazon Web Services, Inc.",
    "ProviderName": AWS,
    "PublisherName": "Amazon Web Services, Inc.",
}
_GCP_ACCOUNT: Final = {
    "BillingAccountId": "01A2B3-C4D5E6-F7A8B9",
    "BillingAccountName": "Acme ML",
    "BillingCurrency": "USD",
    "InvoiceIssuerName": "Google Cloud",
    "ProviderName": GCP,
    "PublisherName": "Google Cloud",
}
_AWS_SUB_ACCOUNTS: Final = {
    "prod": ("345678901234", "ml-prod"),
    "research": ("456789012345", "ml-research"),
}
_GCP_PROJECT_ID: Final = "acme-ml-prod"


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote and the headline numbers of the fleet."""

    out_dir: Path
    billing_csv: Path
    inventory_csv: Path
    host_metrics_csv: Path
    roster_csv: Path
    truth_json: Path
    usage_format: Literal["dcgm", "parquet"]
    usage_path: Path
    """``gpu_usage.parquet`` or the ``dcgm/`` folder."""
    files: tuple[Path, ...] = field(repr=False)
    """Every file written, sorted (dcgm files included)."""
    hosts: int
    gpu_hosts: int
    gpus: int
    projects: int
    people: int
    billing_rows: int
    usage_rows: int
    """Hourly GPU rows (GPU, MIG slice or time-sliced pod x hour), whatever the format."""
    dcgm_files: int
    billed_cost_total: Decimal
    effective_cost_total: Decimal
    anomalies: int


@dataclass(frozen=True)
class Project:
    """An ML project: its name (also its namespaces' prefix), team and cost centre."""

    name: str
    team: str
    cost_center: str


@dataclass
class _Host:
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
        if not self.tagged:
            return None
        return {"project": self.owner.name, "role": self.role, "team": self.owner.team}


@dataclass(frozen=True)
class _Workload:
    namespace: str
    pod: str
    container: str
    workload: str
    project: Project


@dataclass(frozen=True)
class _Unit:
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
class _Job:
    host_index: int
    start_h: int
    end_h: int
    workload: int
    level_pct: int
    mem_permille: int


@dataclass
class _Fleet:
    projects: list[Project]
    hosts: list[_Host] = field(default_factory=list)
    units: list[_Unit] = field(default_factory=list)
    workloads: list[_Workload | None] = field(default_factory=lambda: [None])
    jobs: list[_Job] = field(default_factory=list)
    anomalies: list[dict[str, object]] = field(default_factory=list)
    shared_gpus: list[dict[str, object]] = field(default_factory=list)

    @property
    def gpu_count(self) -> int:
        return sum(host.itype.gpu_count for host in self.hosts)


@dataclass(frozen=True)
class _Simulation:
    level_pct: npt.NDArray[np.int16]
    mem_mib: npt.NDArray[np.int32]
    workload: npt.NDArray[np.int32]
    util_sum: npt.NDArray[np.int32]
    util_max: npt.NDArray[np.uint8]
    power_sum_mw: npt.NDArray[np.int64]
    clock_sum_mhz: npt.NDArray[np.int32]
    samples: npt.NDArray[np.uint8] | None


MIN_GPUS: Final = 7
"""GPUs of one scenario block: the smallest fleet that holds every planted scenario."""


def generate(
    out_dir: Path,
    *,
    gpus: int,
    days: int,
    projects: int,
    seed: int,
    start: date = date(2024, 9, 24),
    usage_format: UsageFormat = "auto",
) -> SynthSummary:
    """Write a synthetic fleet of about ``gpus`` GPUs over ``days`` days under ``out_dir``.

    Writes ``billing/synth-focus.csv`` (FOCUS 1.0), ``inventory.csv``, ``host_metrics.csv``,
    ``roster.csv``, ``truth.json`` and GPU usage: dcgm-exporter text files
    ``dcgm/{host}/{YYYY-MM-DDTHH}.prom`` (one per host and hour, 12 timestamped scrapes) when
    ``usage_format`` is ``"dcgm"`` or ``"auto"`` with ``gpus <= 64``, else
    ``gpu_usage.parquet`` in the ``gpu_usage`` contract. The fleet has exactly ``gpus`` GPUs.
    Outputs of an earlier run in the same folder are replaced. Same arguments, same bytes.
    """
    if gpus < MIN_GPUS:
        raise ValueError(f"gpus must be at least {MIN_GPUS} (one of each planted scenario)")
    if days < 1:
        raise ValueError("days must be at least 1")
    if projects < 2:
        raise ValueError("projects must be at least 2 (shared GPUs need two projects)")
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    if usage_format not in ("auto", "dcgm", "parquet"):
        raise ValueError(f"usage_format must be auto, dcgm or parquet, not {usage_format!r}")
    resolved: Literal["dcgm", "parquet"]
    if usage_format == "auto":
        resolved = "dcgm" if gpus <= AUTO_DCGM_MAX_GPUS else "parquet"
    else:
        resolved = usage_format
    hours = days * 24
    window_start = datetime(start.year, start.month, start.day, tzinfo=UTC)

    project_list = _projects(projects)
    fleet = _build_fleet(gpus, project_list, hours, _random(seed, "fleet"))
    simulation = _simulate(fleet, window_start, hours, seed, keep_samples=resolved == "dcgm")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = _Paths(out_dir)
    paths.clear()

    billing = _billing(fleet, window_start, hours, gpus, _random(seed, "billing"))
    billing_rows = _write_billing(paths.billing_csv, billing, window_start)
    _write_inventory(paths.inventory_csv, fleet, window_start, hours)
    _write_host_metrics(paths.host_metrics_csv, fleet, window_start, hours, seed)
    roster = _roster(project_list, window_start.date(), days, _random(seed, "roster"))
    _write_roster(paths.roster_csv, roster)
    dcgm_files: list[Path] = []
    if resolved == "dcgm":
        dcgm_files = _write_dcgm(paths.dcgm_dir, fleet, simulation, window_start, hours)
        usage_path = paths.dcgm_dir
    else:
        usage = _usage_frame(fleet, simulation, window_start, hours)
        usage.write_parquet(paths.usage_parquet, compression="zstd", statistics=True)
        usage_path = paths.usage_parquet
    truth = _truth(
        fleet,
        simulation,
        billing,
        roster,
        window_start,
        hours,
        {
            "gpus": gpus,
            "days": days,
            "projects": projects,
            "seed": seed,
            "start": start.isoformat(),
            "usage_format": resolved,
        },
    )
    paths.truth_json.write_text(
        json.dumps(truth, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    files = [
        paths.billing_csv,
        paths.inventory_csv,
        paths.host_metrics_csv,
        paths.roster_csv,
        paths.truth_json,
        *dcgm_files,
    ]
    if resolved == "parquet":
        files.append(paths.usage_parquet)
    return SynthSummary(
        out_dir=out_dir,
        billing_csv=paths.billing_csv,
        inventory_csv=paths.inventory_csv,
        host_metrics_csv=paths.host_metrics_csv,
        roster_csv=paths.roster_csv,
        truth_json=paths.truth_json,
        usage_format=resolved,
        usage_path=usage_path,
        files=tuple(sorted(files)),
        hosts=len(fleet.hosts),
        gpu_hosts=sum(1 for host in fleet.hosts if host.itype.gpu_count),
        gpus=fleet.gpu_count,
        projects=len(project_list),
        people=len({row.person_id for row in roster}),
        billing_rows=billing_rows,
        usage_rows=len(fleet.units) * hours,
        dcgm_files=len(dcgm_files),
        billed_cost_total=billing.billed_total,
        effective_cost_total=billing.effective_total,
        anomalies=len(fleet.anomalies),
    )


@dataclass(frozen=True)
class _Paths:
    out_dir: Path

    @property
    def billing_csv(self) -> Path:
        return self.out_dir / "billing" / "synth-focus.csv"

    @property
    def inventory_csv(self) -> Path:
        return self.out_dir / "inventory.csv"

    @property
    def host_metrics_csv(self) -> Path:
        return self.out_dir / "host_metrics.csv"

    @property
    def roster_csv(self) -> Path:
        return self.out_dir / "roster.csv"

    @property
    def truth_json(self) -> Path:
        return self.out_dir / "truth.json"

    @property
    def usage_parquet(self) -> Path:
        return self.out_dir / "gpu_usage.parquet"

    @property
    def dcgm_dir(self) -> Path:
        return self.out_dir / "dcgm"

    def clear(self) -> None:
        """Remove what an earlier run wrote here (only synth's own paths)."""
        if self.dcgm_dir.is_dir():
            shutil.rmtree(self.dcgm_dir)
        for path in (
            self.billing_csv,
            self.inventory_csv,
            self.host_metrics_csv,
            self.roster_csv,
            self.truth_json,
            self.usage_parquet,
        ):
            path.unlink(missing_ok=True)
        self.billing_csv.parent.mkdir(parents=True, exist_ok=True)


def _random(seed: int, stream: str) -> random.Random:
    """An independent, reproducible stream per purpose (string seeds hash with SHA-512)."""
    return random.Random(f"gpucost-synth:{seed}:{stream}")


def _projects(count: int) -> list[Project]:
    names = list(PROJECTS[:count])
    names += [(f"ml-team-{index:03d}", "research") for index in range(len(names), count)]
    return [Project(name, team, f"CC-{101 + index}") for index, (name, team) in enumerate(names)]


# --------------------------------------------------------------------------------------------
# The fleet: hosts, GPU rows (units), workloads and training jobs.
# --------------------------------------------------------------------------------------------


class _FleetBuilder:
    def __init__(self, projects: list[Project], hours: int, rnd: random.Random) -> None:
        self.fleet = _Fleet(projects)
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
            return host, f"projects/{_GCP_PROJECT_ID}/zones/{itype.zone}/instances/{host}"
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
    def _workload(self, workload: _Workload) -> int:
        self.fleet.workloads.append(workload)
        return len(self.fleet.workloads) - 1

    def _server(self, project: Project) -> int:
        model = self.rnd.choice(MODELS)
        replica_set = self._pod_suffix(10)
        return self._workload(
            _Workload(
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
            _Workload(
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
            _Workload(
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
            _Host(host, resource_id, itype, role, pattern, owner, tagged, savings_plan, uuids,
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
            _Unit(
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
                _Job(
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
                _Unit(
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
                _Unit(
                    host_index=index,
                    gpu_index=0,
                    gpu_uuid=host.gpu_uuids[0],
                    usage_uuid=host.gpu_uuids[0],
                    mig_profile=None,
                    gpu_instance_id=None,
                    sevenths=MIG_COMPUTE_SLICES,
                    share_divisor=2,
                    pattern=pattern,
                    fb_total_mib=T4.fb_total_mib,
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


def _build_fleet(gpus: int, projects: list[Project], hours: int, rnd: random.Random) -> _Fleet:
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


# --------------------------------------------------------------------------------------------
# Simulation: hourly activity per GPU row, then 12 scrapes per hour, vectorised.
# --------------------------------------------------------------------------------------------


def _unit_array(units: Sequence[_Unit], name: str) -> npt.NDArray[np.int64]:
    return np.array([getattr(unit, name) for unit in units], dtype=np.int64)


def _simulate(
    fleet: _Fleet, window_start: datetime, hours: int, seed: int, *, keep_samples: bool
) -> _Simulation:
    units = fleet.units
    count = len(units)
    rng = np.random.default_rng([seed, 1])
    pattern = _unit_array(units, "pattern")
    base = _unit_array(units, "base_pct")
    amp = _unit_array(units, "amp_pct")
    mem_permille = _unit_array(units, "mem_permille")
    fb_total = _unit_array(units, "fb_total_mib")
    fixed_workload = _unit_array(units, "workload")
    tz = np.array([fleet.hosts[u.host_index].itype.tz_offset_h for u in units], dtype=np.int64)

    hour = np.arange(hours, dtype=np.int64)[None, :] + tz[:, None]
    local_hour = hour % 24
    weekday = (window_start.weekday() + hour // 24) % 7
    weekend = weekday >= 5
    curve = np.array(DIURNAL_CURVE, dtype=np.float64)[local_hour]

    level = np.zeros((count, hours), dtype=np.int16)
    mem = np.zeros((count, hours), dtype=np.int32)
    workload = np.zeros((count, hours), dtype=np.int32)

    rows = pattern == P_DIURNAL
    if rows.any():
        scale = np.where(weekend[rows], WEEKEND_FACTOR, 1.0)
        raw = np.rint(base[rows, None] + amp[rows, None] * curve[rows] * scale).astype(np.int64)
        raw += rng.integers(-3, 4, size=raw.shape)
        level[rows] = np.clip(raw, 2, 97)
        jitter = rng.integers(-5, 6, size=raw.shape)  # KV-cache growth, in permille
        mem[rows] = (fb_total[rows, None] * (mem_permille[rows, None] + jitter)) // 1000
        workload[rows] = fixed_workload[rows, None]

    rows = pattern == P_NOTEBOOK
    if rows.any():
        office = ~weekend[rows] & (local_hour[rows] >= 9) & (local_hour[rows] < 19)
        active = office & (rng.random(size=office.shape) < 0.4)
        draw = base[rows, None] + (rng.random(size=office.shape) * amp[rows, None]).astype(np.int64)
        level[rows] = np.where(active, draw, 0)
        mem[rows] = np.broadcast_to(
            (fb_total[rows] * mem_permille[rows] // 1000)[:, None], office.shape
        )
        workload[rows] = fixed_workload[rows, None]

    rows = pattern == P_ON_CPU
    workload[rows] = fixed_workload[rows, None]

    units_of_host: dict[int, list[int]] = defaultdict(list)
    for index, unit in enumerate(units):
        units_of_host[unit.host_index].append(index)
    for job in fleet.jobs:
        members = np.array(units_of_host[job.host_index], dtype=np.int64)
        level[members, job.start_h : job.end_h] = job.level_pct
        mem[members, job.start_h : job.end_h] = fb_total[members, None] * job.mem_permille // 1000
        workload[members, job.start_h : job.end_h] = job.workload
    rows = pattern == P_TRAINING
    if rows.any():
        wobble = rng.integers(-2, 3, size=(int(rows.sum()), hours))
        level[rows] = np.where(level[rows] > 0, level[rows] + wobble, 0)

    return _scrape(units, fleet, level, mem, workload, seed, keep_samples=keep_samples)


def _scrape(
    units: Sequence[_Unit],
    fleet: _Fleet,
    level: npt.NDArray[np.int16],
    mem: npt.NDArray[np.int32],
    workload: npt.NDArray[np.int32],
    seed: int,
    *,
    keep_samples: bool,
) -> _Simulation:
    """Twelve scrapes per GPU row and hour: hourly level + uniform noise, in whole percent.

    Power and SM clock are linear in a sample's utilisation (:func:`_power_coefficients`,
    :func:`_clock_coefficients`), so their hourly sums follow from the utilisation sum exactly.
    """
    count, hours = level.shape
    noise_pct = _unit_array(units, "noise_pct").astype(np.int16)
    max_pct = _unit_array(units, "max_pct").astype(np.int16)
    util_sum = np.zeros((count, hours), dtype=np.int32)
    util_max = np.zeros((count, hours), dtype=np.uint8)
    samples = np.zeros((count, hours, SAMPLES_PER_HOUR), dtype=np.uint8) if keep_samples else None
    for chunk, first in enumerate(range(0, count, CHUNK_UNITS)):
        part = slice(first, min(count, first + CHUNK_UNITS))
        rng = np.random.default_rng([seed, 2, chunk])
        lvl = level[part][:, :, None]
        noise = rng.integers(-10, 11, size=(lvl.shape[0], hours, SAMPLES_PER_HOUR), dtype=np.int16)
        noise *= noise_pct[part, None, None]
        noise //= 10
        noise += lvl
        np.clip(noise, 1, max_pct[part, None, None], out=noise)
        pct = np.where(lvl > 0, noise, np.int16(0))
        util_sum[part] = pct.sum(axis=2, dtype=np.int32)
        util_max[part] = pct.max(axis=2)
        if samples is not None:
            samples[part] = pct
    gpus = [fleet.hosts[u.host_index].itype.gpu for u in units]
    idle_mw, step_mw = _power_coefficients(gpus)
    idle_mhz, top_mhz, step_mhz = _clock_coefficients(gpus)
    active = level > 0
    power_sum = idle_mw[:, None] * SAMPLES_PER_HOUR + step_mw[:, None] * util_sum
    clock_sum = np.where(
        active,
        (top_mhz - 100 * step_mhz)[:, None] * SAMPLES_PER_HOUR + step_mhz[:, None] * util_sum,
        idle_mhz[:, None] * SAMPLES_PER_HOUR,
    ).astype(np.int32)
    return _Simulation(level, mem, workload, util_sum, util_max, power_sum, clock_sum, samples)


def _power_coefficients(
    gpus: Sequence[GpuModel | None],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Board power = idle + step x utilisation %, rising linearly to the TDP (milliwatts)."""
    idle = np.array([g.idle_power_w * 1000 if g else 0 for g in gpus], dtype=np.int64)
    top = np.array([g.max_power_w * 1000 if g else 0 for g in gpus], dtype=np.int64)
    return idle, (top - idle) // 100


def _clock_coefficients(
    gpus: Sequence[GpuModel | None],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """SM clock: idle without work, else top - step x (100 - utilisation %), near boost."""
    idle = np.array([g.idle_sm_clock_mhz if g else 0 for g in gpus], dtype=np.int64)
    top = np.array([g.max_sm_clock_mhz if g else 0 for g in gpus], dtype=np.int64)
    return idle, top, (top - idle) // 400


# --------------------------------------------------------------------------------------------
# gpu_usage (Parquet) and dcgm-exporter text.
# --------------------------------------------------------------------------------------------


def _unit_frame(fleet: _Fleet) -> pl.DataFrame:
    units, hosts = fleet.units, fleet.hosts
    return pl.DataFrame(
        {
            "host": [hosts[u.host_index].host for u in units],
            "gpu_uuid": [u.usage_uuid for u in units],
            "gpu_index": pl.Series([u.gpu_index for u in units], dtype=pl.Int32),
            "gpu_model": [
                hosts[u.host_index].itype.gpu.model_name  # type: ignore[union-attr]
                for u in units
            ],
            "mig_profile": pl.Series([u.mig_profile for u in units], dtype=pl.String),
            "mem_total_bytes": pl.Series([u.fb_total_mib * MIB for u in units], dtype=pl.Int64),
        }
    )


def _workload_frame(fleet: _Fleet) -> pl.DataFrame:
    workloads = fleet.workloads

    def column(name: str) -> pl.Series:
        return pl.Series(
            name, [getattr(w, name) if w else None for w in workloads], dtype=pl.String
        )

    return pl.DataFrame(
        [column("namespace"), column("pod"), column("container"), column("workload")]
    )


def _usage_frame(
    fleet: _Fleet, sim: _Simulation, window_start: datetime, hours: int
) -> pl.DataFrame:
    """The gpu_usage rollup, hour-major, GPU rows in host order; conformed to the contract."""
    count = len(fleet.units)
    unit_index = pl.Series(np.tile(np.arange(count, dtype=np.int64), hours))
    hour_index = np.repeat(np.arange(hours, dtype=np.int64), count)
    start_us = int(window_start.timestamp()) * 1_000_000
    per_unit = _unit_frame(fleet).select(pl.all().gather(unit_index))
    per_workload = _workload_frame(fleet).select(
        pl.all().gather(pl.Series(sim.workload.T.ravel().astype(np.int64)))
    )
    measures = pl.DataFrame(
        {
            "hour": pl.Series(start_us + hour_index * 3_600_000_000).cast(pl.Datetime("us", "UTC")),
            "seconds_observed": np.full(count * hours, float(SECONDS_PER_HOUR)),
            "util_avg": sim.util_sum.T.ravel() / (100.0 * SAMPLES_PER_HOUR),
            "util_max": sim.util_max.T.ravel() / 100.0,
            "mem_used_max_bytes": sim.mem_mib.T.ravel().astype(np.int64) * MIB,
            "power_avg_w": sim.power_sum_mw.T.ravel() / (1000.0 * SAMPLES_PER_HOUR),
            "sm_clock_avg_mhz": sim.clock_sum_mhz.T.ravel() / float(SAMPLES_PER_HOUR),
        }
    )
    frame = pl.concat([measures, per_unit, per_workload], how="horizontal").with_columns(
        pl.lit(SOURCE).alias("source")
    )
    return GPU_USAGE.conform(frame, SOURCE)


def _write_dcgm(
    dcgm_dir: Path, fleet: _Fleet, sim: _Simulation, window_start: datetime, hours: int
) -> list[Path]:
    """One exposition file per host and hour holding its 12 scrapes with ms timestamps."""
    assert sim.samples is not None
    units, hosts = fleet.units, fleet.hosts
    count = len(units)
    prefixes = []
    for unit in units:
        host = hosts[unit.host_index]
        assert host.itype.gpu is not None
        mig = (
            f'GPU_I_PROFILE="{unit.mig_profile}",GPU_I_ID="{unit.gpu_instance_id}",'
            if unit.mig_profile
            else ""
        )
        prefixes.append(
            f'gpu="{unit.gpu_index}",UUID="{unit.gpu_uuid}",'
            f'pci_bus_id="{host.itype.pci_bus_ids[unit.gpu_index]}",'
            f'device="nvidia{unit.gpu_index}",modelName="{host.itype.gpu.model_name}",{mig}'
            f'Hostname="{host.host}",DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}"'
        )
    suffixes = [
        f',container="{w.container}",namespace="{w.namespace}",pod="{w.pod}",pod_uid=""'
        if w
        else ""
        for w in fleet.workloads
    ]
    gpus = [hosts[u.host_index].itype.gpu for u in units]
    idle_mw, step_mw = _power_coefficients(gpus)
    idle_mhz, top_mhz, step_mhz = _clock_coefficients(gpus)
    per_unit = pl.DataFrame(
        {
            "prefix": prefixes,
            "host_index": [u.host_index for u in units],
            "mig": [u.mig_profile is not None for u in units],
            "fb_total": [u.fb_total_mib for u in units],
            "idle_mw": idle_mw,
            "step_mw": step_mw,
            "idle_mhz": idle_mhz,
            "top_mhz": top_mhz,
            "step_mhz": step_mhz,
        }
    )
    samples = count * hours * SAMPLES_PER_HOUR
    unit_index = np.repeat(np.arange(count, dtype=np.int64), hours * SAMPLES_PER_HOUR)
    hour_index = np.tile(np.repeat(np.arange(hours, dtype=np.int64), SAMPLES_PER_HOUR), count)
    sample_index = np.tile(np.arange(SAMPLES_PER_HOUR, dtype=np.int64), count * hours)
    start_ms = int(window_start.timestamp()) * 1000
    frame = pl.concat(
        [
            per_unit.select(pl.all().gather(pl.Series(unit_index))),
            pl.DataFrame(
                {
                    "unit": unit_index,
                    "hour": hour_index,
                    "sample": sample_index,
                    "pct": sim.samples.reshape(samples).astype(np.int64),
                    "mem": np.repeat(sim.mem_mib.reshape(count * hours), SAMPLES_PER_HOUR),
                    "suffix": pl.Series(suffixes).gather(
                        pl.Series(
                            np.repeat(sim.workload.reshape(count * hours), SAMPLES_PER_HOUR).astype(
                                np.int64
                            )
                        )
                    ),
                }
            ),
        ],
        how="horizontal",
    ).with_columns(
        (pl.col("host_index") * hours + pl.col("hour")).alias("file"),
        (start_ms + pl.col("hour") * 3_600_000 + pl.col("sample") * SCRAPE_INTERVAL_S * 1000)
        .cast(pl.String)
        .alias("ts"),
        pl.concat_str([pl.col("prefix"), pl.col("suffix")]).alias("labels"),
        (pl.col("idle_mw") + pl.col("step_mw") * pl.col("pct")).alias("mw"),
    )
    pct, mw = pl.col("pct"), pl.col("mw")
    values = [
        pl.when(pct > 0)
        .then(pl.col("top_mhz") - (100 - pct) * pl.col("step_mhz"))
        .otherwise(pl.col("idle_mhz"))
        .cast(pl.String),
        pl.concat_str(
            [
                (mw // 1000).cast(pl.String),
                pl.lit("."),
                (mw % 1000).cast(pl.String).str.zfill(3),
                pl.lit("000"),
            ]
        ),
        pct.cast(pl.String),
        (pl.col("fb_total") - pl.col("mem")).cast(pl.String),
        pl.col("mem").cast(pl.String),
        pl.concat_str(
            [
                (pct // 100).cast(pl.String),
                pl.lit("."),
                (pct % 100).cast(pl.String).str.zfill(2),
                pl.lit("0000"),
            ]
        ),
    ]
    pieces = []
    for rank, ((name, _help), value) in enumerate(zip(DCGM_FAMILIES, values, strict=True)):
        piece = frame
        if rank == _GPU_UTIL_RANK:  # NVML reports no device utilisation in MIG mode
            piece = frame.filter(~pl.col("mig"))
        pieces.append(
            piece.select(
                "file",
                pl.lit(rank).alias("rank"),
                "sample",
                "unit",
                pl.concat_str(
                    [
                        pl.lit(name + "{"),
                        pl.col("labels"),
                        pl.lit("} "),
                        value,
                        pl.lit(" "),
                        pl.col("ts"),
                    ]
                ).alias("line"),
            )
        )
    headers = pl.DataFrame(
        {
            "rank": list(range(len(DCGM_FAMILIES))),
            "header": [
                f"# HELP {name} {text}\n# TYPE {name} gauge" for name, text in DCGM_FAMILIES
            ],
        },
        schema={"rank": pl.Int32, "header": pl.String},
    )
    files = (
        pl.concat(pieces)
        .sort("file", "rank", "sample", "unit")
        .group_by("file", "rank", maintain_order=True)
        .agg(pl.col("line").str.join("\n"))
        .join(headers, on="rank", how="left", maintain_order="left")
        .select("file", pl.concat_str(["header", "line"], separator="\n").alias("block"))
        .group_by("file", maintain_order=True)
        .agg(pl.col("block").str.join("\n"))
    )
    written = []
    for file_id, text in files.iter_rows():
        host = hosts[file_id // hours]
        stamp = (window_start + timedelta(hours=file_id % hours)).strftime("%Y-%m-%dT%H")
        path = dcgm_dir / host.host / f"{stamp}.prom"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() + b"\n")
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Billing: FOCUS 1.0 CSV, hourly rows per cloud host, daily storage, network, support, credit.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    """Rows identical but for their period: one resource's charge over a set of periods."""

    period_set: str
    sort_key: str
    provider: str
    texts: tuple[str, str, str]
    billed: Decimal
    effective: Decimal
    resource_id: str | None


@dataclass
class _Billing:
    segments: list[_Segment]
    period_sets: dict[str, list[tuple[int, int]]]
    host_hourly_effective: dict[str, Decimal]
    """resource id -> EffectiveCost of one hour of the host's instance."""
    billed_total: Decimal = Decimal(0)
    effective_total: Decimal = Decimal(0)
    by_category: dict[str, dict[str, Decimal]] = field(default_factory=dict)


def _decimal_text(value: Decimal, places: int) -> str:
    quantized = value.quantize(Decimal(1).scaleb(-places))
    if quantized != value:
        raise ValueError(f"{value} does not fit {places} decimal places exactly")
    return f"{quantized:f}"


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _focus_texts(values: Mapping[str, object]) -> tuple[str, str, str]:
    """The row's text around its two period pairs: (before, between, after)."""
    missing = set(FOCUS_HEADER) - set(_PERIOD_COLUMNS) - set(values)
    extra = set(values) - set(FOCUS_HEADER)
    if missing or extra:
        raise AssertionError(f"FOCUS row: missing {sorted(missing)}, extra {sorted(extra)}")
    cells: list[str] = []
    for name in FOCUS_HEADER:
        if name in _PERIOD_COLUMNS:
            cells.append("\0")
            continue
        value = values[name]
        if value is None:
            cells.append("NULL")
        elif name in _COST_COLUMNS:
            assert isinstance(value, Decimal)
            cells.append(_decimal_text(value, FOCUS_COST_PLACES))
        elif name in _QUANTITY_COLUMNS:
            assert isinstance(value, Decimal)
            cells.append(_decimal_text(value, FOCUS_QUANTITY_PLACES))
        else:
            cells.append(_quote(str(value)))
    line = ",".join(cells)
    before, _, rest = line.partition("\0,\0")
    between, _, after = rest.partition("\0,\0")
    return before.removesuffix(","), between.strip(","), after.removeprefix(",")


def _sku(*parts: str, gcp: bool = False) -> str:
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest().upper()
    if gcp:
        return f"{digest[:4]}-{digest[4:8]}-{digest[8:12]}"
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    number = int(digest, 16)
    return "".join(alphabet[(number >> (5 * i)) & 31] for i in range(16))


def _tags_text(tags: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(tags), sort_keys=True) if tags else None


def _base_row(provider: str, sub_account: str) -> dict[str, object]:
    """Account columns of a provider; every other FOCUS column NULL until set."""
    row: dict[str, object] = dict.fromkeys(FOCUS_HEADER)
    for name in _PERIOD_COLUMNS:
        del row[name]
    if provider == AWS:
        row.update(_AWS_ACCOUNT)
        row["SubAccountId"], row["SubAccountName"] = _AWS_SUB_ACCOUNTS[sub_account]
    else:
        row.update(_GCP_ACCOUNT)
        row["SubAccountId"] = row["SubAccountName"] = _GCP_PROJECT_ID
    return row


def _usage_row(
    provider: str,
    *,
    service: str,
    service_category: str,
    description: str,
    quantity: Decimal,
    unit: str,
    unit_price: Decimal,
    cost: Decimal | None = None,
    resource_id: str | None = None,
    resource_type: str | None = None,
    resource_name: str | None = None,
    zone: str | None = None,
    tags: Mapping[str, str] | None = None,
    sub_account: str = "prod",
) -> dict[str, object]:
    """A standard-priced usage charge; ``cost`` defaults to quantity x unit price."""
    cost = quantity * unit_price if cost is None else cost
    aws = provider == AWS
    sku = _sku(service, description, gcp=not aws)
    row = _base_row(provider, sub_account)
    row.update(
        {
            "AvailabilityZone": zone,
            "BilledCost": cost,
            "ChargeCategory": "Usage",
            "ChargeDescription": description,
            "ChargeFrequency": "Usage-Based",
            "ConsumedQuantity": quantity,
            "ConsumedUnit": unit,
            "ContractedCost": cost,
            "ContractedUnitPrice": unit_price,
            "EffectiveCost": cost,
            "ListCost": cost,
            "ListUnitPrice": str(unit_price),
            "PricingCategory": "Standard",
            "PricingQuantity": quantity,
            "PricingUnit": unit,
            "RegionId": "us-east-1" if aws else "us-central1",
            "RegionName": "US East (N. Virginia)" if aws else "Iowa",
            "ResourceId": resource_id,
            "ResourceName": resource_name,
            "ResourceType": resource_type,
            "ServiceCategory": service_category,
            "ServiceName": service,
            "SkuId": sku,
            # AWS price ids are "<sku>.<offer term>.<rate code>": JRTCKXETXF is OnDemand.
            "SkuPriceId": f"{sku}.JRTCKXETXF.6YS6EN2CT7" if aws else None,
            "Tags": _tags_text(tags),
        }
    )
    return row


def _instance_row(host: _Host, sp_arn: str) -> tuple[dict[str, object], Decimal]:
    """The hourly usage row of a cloud host and its hourly EffectiveCost."""
    itype = host.itype
    assert itype.hourly_price is not None
    price = itype.hourly_price
    aws = itype.provider == AWS
    row = _usage_row(
        itype.provider,
        service="Amazon Elastic Compute Cloud" if aws else "Compute Engine",
        service_category="Compute",
        description=(
            f"${price} per On Demand Linux {itype.name} Instance Hour"
            if aws
            else f"{itype.name} instance running in {itype.region_name} (on-demand)"
        ),
        quantity=Decimal(1),
        unit="Hours",
        unit_price=price,
        resource_id=host.resource_id,
        resource_type="instance",
        resource_name=None if aws else host.host,
        zone=itype.zone,
        tags=host.tags,
        sub_account="research" if host.role in ("training", "data-processing") else "prod",
    )
    if not host.savings_plan:
        return row, price
    # AWS's FOCUS export: covered usage is billed through the plan's fee (BilledCost 0) and
    # carries the plan's rate as EffectiveCost.
    rate = price * (1 - SAVINGS_PLAN_DISCOUNT)
    row.update(
        {
            "BilledCost": Decimal(0),
            "ChargeDescription": (
                f"Savings Plans covered usage: ${rate} per Linux {itype.name} Instance Hour"
            ),
            "CommitmentDiscountCategory": "Spend",
            "CommitmentDiscountId": sp_arn,
            "CommitmentDiscountName": SAVINGS_PLAN_NAME,
            "CommitmentDiscountStatus": "Used",
            "CommitmentDiscountType": "Savings Plan",
            "ContractedCost": rate,
            "ContractedUnitPrice": rate,
            "EffectiveCost": rate,
            "PricingCategory": "Committed",
        }
    )
    return row, rate


def _month_start(day: date) -> datetime:
    return datetime(day.year, day.month, 1, tzinfo=UTC)


def _next_month(moment: datetime) -> datetime:
    return datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)


class _BillingBuilder:
    """Collects the bill as segments; each names the set of periods it repeats over."""

    def __init__(self, window_start: datetime, hours: int, rnd: random.Random) -> None:
        self.window_start = window_start
        self.days = hours // 24
        self.rnd = rnd
        self.segments: list[_Segment] = []
        self.period_sets: dict[str, list[tuple[int, int]]] = {
            "hourly": [(h, h + 1) for h in range(hours)],
            "first-hour": [(0, 1)],
        }
        self.month_days: dict[str, list[int]] = defaultdict(list)
        for day in range(self.days):
            month = (window_start + timedelta(days=day)).strftime("%Y-%m")
            self.month_days[month].append(day)
            self.period_sets[f"day:{day}"] = [(day * 24, day * 24 + 24)]
        for month, days in self.month_days.items():
            self.period_sets[f"daily:{month}"] = [(d * 24, d * 24 + 24) for d in days]

    def add(self, period_set: str, key: str, row: Mapping[str, object]) -> None:
        billed, effective = row["BilledCost"], row["EffectiveCost"]
        assert isinstance(billed, Decimal) and isinstance(effective, Decimal)
        provider = str(row["ProviderName"])
        resource_id = row["ResourceId"]
        self.segments.append(
            _Segment(
                period_set=period_set,
                # Provider, resource, charge, then creation order: a total order for sorting.
                sort_key=f"{(AWS, GCP).index(provider)}|{key}|{len(self.segments):07d}",
                provider=provider,
                texts=_focus_texts(row),
                billed=billed,
                effective=effective,
                resource_id=resource_id if isinstance(resource_id, str) else None,
            )
        )

    def days_in_month(self, month: str) -> int:
        first = self.window_start + timedelta(days=self.month_days[month][0])
        return (_next_month(first) - _month_start(first.date())).days

    def instances(self, hosts: Sequence[_Host]) -> dict[str, Decimal]:
        """Hourly rows of every cloud host and the Savings Plan's hourly fee."""
        plan = f"{self.rnd.getrandbits(128):032x}"
        sp_arn = (
            f"arn:aws:savingsplans::{_AWS_ACCOUNT['BillingAccountId']}:savingsplan/"
            f"{plan[:8]}-{plan[8:12]}-{plan[12:16]}-{plan[16:20]}-{plan[20:]}"
        )
        hourly_effective: dict[str, Decimal] = {}
        commitment = Decimal(0)
        for host in hosts:
            if host.itype.provider == ONPREM:
                continue
            row, effective = _instance_row(host, sp_arn)
            hourly_effective[host.resource_id] = effective
            if host.savings_plan:
                commitment += effective
            self.add("hourly", f"{host.resource_id}|instance", row)
        if commitment:
            # The commitment equals the covered usage, so the plan is fully used: its fee row
            # carries BilledCost and no EffectiveCost (amortised onto the covered rows).
            row = _base_row(AWS, "prod")
            row.update(
                {
                    "BilledCost": commitment,
                    "ChargeCategory": "Purchase",
                    "ChargeDescription": "Compute Savings Plans hourly commitment fee",
                    "ChargeFrequency": "Recurring",
                    "CommitmentDiscountCategory": "Spend",
                    "CommitmentDiscountId": sp_arn,
                    "CommitmentDiscountName": SAVINGS_PLAN_NAME,
                    "CommitmentDiscountType": "Savings Plan",
                    "EffectiveCost": Decimal(0),
                    "ListCost": commitment,
                    "PricingCategory": "Committed",
                    "PricingQuantity": Decimal(1),
                    "PricingUnit": "Hours",
                    "ResourceId": sp_arn,
                    "ServiceCategory": "Compute",
                    "ServiceName": "Savings Plans for AWS Compute usage",
                }
            )
            self.add("hourly", "savings-plan|fee", row)
        return hourly_effective

    def storage(self, hosts: Sequence[_Host], projects: Sequence[Project]) -> None:
        """A day of storage = size x price per GB-month / days in the month (11 places)."""
        gcp_owners = {h.owner.name for h in hosts if h.itype.provider == GCP}
        for month in self.month_days:
            for host in hosts:
                if host.ebs_volume_id:
                    self.add(
                        f"daily:{month}",
                        f"{host.resource_id}|ebs",
                        self._storage_row(
                            AWS, "ebs", host.ebs_gb, month, host.ebs_volume_id, host.tags
                        ),
                    )
            for project in projects:
                tags = {"project": project.name, "team": project.team}
                size_gb = 1000 * (1 + _stable(project.name, 20))
                self.add(
                    f"daily:{month}",
                    f"s3|{project.name}",
                    self._storage_row(
                        AWS, "s3", size_gb, month, f"acme-{project.name}-datasets", tags
                    ),
                )
                if project.name in gcp_owners:
                    bucket = f"projects/_/buckets/acme-{project.name}-checkpoints"
                    self.add(
                        f"daily:{month}",
                        f"gcs|{project.name}",
                        self._storage_row(GCP, "gcs", size_gb // 2, month, bucket, tags),
                    )

    def _storage_row(
        self,
        provider: str,
        kind: str,
        size_gb: int,
        month: str,
        resource_id: str,
        tags: Mapping[str, str] | None,
    ) -> dict[str, object]:
        price, service, description, resource_type = STORAGE_PRICES[kind]
        days = self.days_in_month(month)
        return _usage_row(
            provider,
            service=service,
            service_category="Storage",
            description=description,
            quantity=(Decimal(size_gb) / days).quantize(Decimal("1e-11"), ROUND_HALF_EVEN),
            unit="GB-Months",
            unit_price=price,
            cost=(Decimal(size_gb) * price / days).quantize(Decimal("1e-11"), ROUND_HALF_EVEN),
            resource_id=resource_id,
            resource_type=resource_type,
            zone="us-east-1a" if kind == "ebs" else None,
            tags=tags,
            sub_account="research" if kind == "s3" else "prod",
        )

    def network(self, hosts: Sequence[_Host], projects: Sequence[Project]) -> None:
        """Daily egress per project (tagged) and a shared, untagged NAT gateway."""
        gcp_owners = {h.owner.name for h in hosts if h.itype.provider == GCP}
        nat_id = (
            f"arn:aws:ec2:us-east-1:{_AWS_SUB_ACCOUNTS['prod'][0]}:natgateway/"
            f"nat-0{self.rnd.getrandbits(64):016x}"
        )
        for day in range(self.days):
            period = f"day:{day}"
            for project in projects:
                tags = {"project": project.name, "team": project.team}
                gigabytes = Decimal(self.rnd.randint(20, 400))
                self.add(period, f"egress|{project.name}", _usage_row(
                    AWS, service="Amazon Elastic Compute Cloud", service_category="Networking",
                    description="$0.09 per GB - first 10 TB / month data transfer out",
                    quantity=gigabytes, unit="GB", unit_price=Decimal("0.09"), tags=tags,
                ))  # fmt: skip
                if project.name in gcp_owners:
                    gigabytes = Decimal(self.rnd.randint(10, 200))
                    self.add(period, f"gcp-egress|{project.name}", _usage_row(
                        GCP, service="Networking", service_category="Networking",
                        description="Network Internet Data Transfer Out from Americas to Americas",
                        quantity=gigabytes, unit="GB", unit_price=Decimal("0.12"), tags=tags,
                    ))  # fmt: skip
            self.add(period, "nat|hours", _usage_row(
                AWS, service="Amazon Elastic Compute Cloud", service_category="Networking",
                description="$0.045 per NAT Gateway Hour", quantity=Decimal(24), unit="Hours",
                unit_price=Decimal("0.045"), resource_id=nat_id,
            ))  # fmt: skip
            gigabytes = Decimal(self.rnd.randint(200, 2000))
            self.add(period, "nat|bytes", _usage_row(
                AWS, service="Amazon Elastic Compute Cloud", service_category="Networking",
                description="$0.045 per GB Data Processed by NAT Gateways", quantity=gigabytes,
                unit="GB", unit_price=Decimal("0.045"), resource_id=nat_id,
            ))  # fmt: skip

    def support(self) -> None:
        """AWS Business Support: 3 % of each day's AWS charges, untagged and shared."""
        per_day = {
            name: Counter(start // 24 for start, _ in bounds)
            for name, bounds in self.period_sets.items()
        }
        aws_daily: dict[int, Decimal] = defaultdict(Decimal)
        for segment in self.segments:
            if segment.provider == AWS:
                for day, number in per_day[segment.period_set].items():
                    aws_daily[day] += segment.billed * number
        for day in range(self.days):
            fee = (aws_daily[day] * SUPPORT_RATE).quantize(Decimal("0.01"), ROUND_HALF_UP)
            row = _base_row(AWS, "prod")
            row.update(
                {
                    "BilledCost": fee,
                    "ChargeCategory": "Purchase",
                    "ChargeDescription": "AWS Support (Business) - 3% of AWS charges, daily share",
                    "ChargeFrequency": "Recurring",
                    "ContractedCost": fee,
                    "EffectiveCost": fee,
                    "ListCost": fee,
                    "PricingCategory": "Standard",
                    "ServiceCategory": "Other",
                    "ServiceName": "AWS Support (Business)",
                }
            )
            self.add(f"day:{day}", "support", row)

    def credit(self, amount: Decimal) -> None:
        """A one-time promotional credit (negative cost) in the window's first hour."""
        row = _base_row(AWS, "prod")
        row.update(
            {
                "BilledCost": -amount,
                "ChargeCategory": "Credit",
                "ChargeDescription": "AWS Promotional Credits for machine learning workloads",
                "ChargeFrequency": "One-Time",
                "ContractedCost": -amount,
                "ContractedUnitPrice": -amount,
                "EffectiveCost": -amount,
                "ListCost": -amount,
                "PricingCategory": "Other",
                "PricingQuantity": Decimal(0),
                "PricingUnit": "Hours",
                "RegionId": "us-east-1",
                "RegionName": "US East (N. Virginia)",
                "ServiceCategory": "Compute",
                "ServiceName": "Amazon Elastic Compute Cloud",
                "SkuId": _sku("credit"),
            }
        )
        self.add("first-hour", "credit", row)

    def result(self, hourly_effective: dict[str, Decimal]) -> _Billing:
        billing = _Billing(self.segments, self.period_sets, hourly_effective)
        by_category: dict[str, dict[str, Decimal]] = defaultdict(
            lambda: {"billed": Decimal(0), "effective": Decimal(0)}
        )
        for segment in self.segments:
            number = len(self.period_sets[segment.period_set])
            billing.billed_total += segment.billed * number
            billing.effective_total += segment.effective * number
            category = segment.texts[1].split(",")[0].strip('"')
            by_category[category]["billed"] += segment.billed * number
            by_category[category]["effective"] += segment.effective * number
        billing.by_category = dict(sorted(by_category.items()))
        return billing


def _billing(
    fleet: _Fleet, window_start: datetime, hours: int, gpus: int, rnd: random.Random
) -> _Billing:
    """The whole bill of the window, as segments (not yet expanded to rows)."""
    builder = _BillingBuilder(window_start, hours, rnd)
    hourly_effective = builder.instances(fleet.hosts)
    builder.storage(fleet.hosts, fleet.projects)
    builder.network(fleet.hosts, fleet.projects)
    builder.support()
    builder.credit(CREDIT_PER_8_GPUS_USD * ((gpus + 7) // 8))
    return builder.result(hourly_effective)


def _stable(text: str, modulo: int) -> int:
    """A number from a name, independent of the random streams (sizes that never move)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % modulo


def _period_text(start: datetime, first: int, last: int) -> tuple[str, str]:
    """('"BillingPeriodEnd","BillingPeriodStart"', '"ChargePeriodEnd","ChargePeriodStart"')."""
    fmt = "%Y-%m-%d %H:%M:%S"
    charge_start = start + timedelta(hours=first)
    charge_end = start + timedelta(hours=last)
    month = _month_start(charge_start.date())
    billing = f'"{_next_month(month).strftime(fmt)}","{month.strftime(fmt)}"'
    return billing, f'"{charge_end.strftime(fmt)}","{charge_start.strftime(fmt)}"'


def _write_billing(path: Path, billing: _Billing, window_start: datetime) -> int:
    """Write the FOCUS CSV sorted by ChargePeriodStart, provider, resource; return its rows."""
    set_ids = {name: number for number, name in enumerate(billing.period_sets)}
    period_set, period_start, billing_texts, charge_texts = [], [], [], []
    for name, bounds in billing.period_sets.items():
        for first, last in bounds:
            billing_text, charge_text = _period_text(window_start, first, last)
            period_set.append(set_ids[name])
            period_start.append(first)
            billing_texts.append(billing_text)
            charge_texts.append(charge_text)
    periods = pl.DataFrame(
        {
            "period_set": pl.Series(period_set, dtype=pl.Int32),
            "start": pl.Series(period_start, dtype=pl.Int64),
            "period": pl.Series(range(len(period_set)), dtype=pl.Int64),
        }
    )
    segments = billing.segments
    rank = sorted(range(len(segments)), key=lambda i: segments[i].sort_key)
    order = pl.DataFrame(
        {
            "period_set": pl.Series(
                [set_ids[segments[i].period_set] for i in rank], dtype=pl.Int32
            ),
            "segment": pl.Series(rank, dtype=pl.Int64),
            "rank": pl.Series(range(len(rank)), dtype=pl.Int64),
        }
    )
    # Sort small integer keys first, then build the ~700-byte lines in their final order.
    index = order.join(periods, on="period_set", how="inner").sort("start", "rank")
    segment_texts = pl.DataFrame(
        {
            "a": [s.texts[0] for s in segments],
            "b": [s.texts[1] for s in segments],
            "c": [s.texts[2] for s in segments],
        }
    ).select(pl.all().gather(index["segment"]))
    period_texts = pl.DataFrame({"bp": billing_texts, "cp": charge_texts}).select(
        pl.all().gather(index["period"])
    )
    lines = pl.concat([segment_texts, period_texts], how="horizontal").select(
        pl.concat_str(["a", "bp", "b", "cp", "c"], separator=",").alias("line")
    )
    with path.open("wb") as handle:
        handle.write((",".join(_quote(name) for name in FOCUS_HEADER) + "\n").encode())
        lines.write_csv(handle, include_header=False, quote_style="never")
    return lines.height


# --------------------------------------------------------------------------------------------
# Inventory, host metrics, roster.
# --------------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_inventory(path: Path, fleet: _Fleet, window_start: datetime, hours: int) -> None:
    last_seen = _iso(window_start + timedelta(hours=hours - 1))
    hosts = sorted(fleet.hosts, key=lambda h: h.resource_id)
    frame = pl.DataFrame(
        {
            "resource_id": [h.resource_id for h in hosts],
            "provider": [h.itype.provider for h in hosts],
            "host": [h.host for h in hosts],
            "instance_type": [h.itype.name for h in hosts],
            "gpu_count": pl.Series([h.itype.gpu_count for h in hosts], dtype=pl.Int32),
            "gpu_model": pl.Series(
                [h.itype.gpu.model_name if h.itype.gpu else None for h in hosts], dtype=pl.String
            ),
            "gpu_mem_bytes": pl.Series(
                [h.itype.gpu_mem_mib * MIB if h.itype.gpu else None for h in hosts],
                dtype=pl.Int64,
            ),
            "vcpus": pl.Series([h.itype.vcpus for h in hosts], dtype=pl.Int32),
            "role": [h.role for h in hosts],
            "tags": pl.Series(
                [
                    json.dumps(h.tags, sort_keys=True, separators=(",", ":")) if h.tags else None
                    for h in hosts
                ],
                dtype=pl.String,
            ),
            "region": [h.itype.region for h in hosts],
            "hourly_list_price": pl.Series(
                [str(h.itype.hourly_price) if h.itype.hourly_price else None for h in hosts],
                dtype=pl.String,
            ),
            "currency": pl.Series(
                ["USD" if h.itype.hourly_price else None for h in hosts], dtype=pl.String
            ),
            "first_seen": [_iso(window_start)] * len(hosts),
            "last_seen": [last_seen] * len(hosts),
        }
    )
    frame.write_csv(path)


def _write_host_metrics(
    path: Path, fleet: _Fleet, window_start: datetime, hours: int, seed: int
) -> None:
    """Hourly CPU use of model servers, in basis points turned into fractions."""
    servers = sorted(
        (h for h in fleet.hosts if h.role == "model-server"), key=lambda h: h.resource_id
    )
    rng = np.random.default_rng([seed, 3])
    busy = np.array([h.pattern in ("cpu-model-server", "model-on-cpu") for h in servers])
    tz = np.array([h.itype.tz_offset_h for h in servers], dtype=np.int64)
    curve = np.array(DIURNAL_CURVE, dtype=np.float64)[
        (np.arange(hours, dtype=np.int64)[None, :] + tz[:, None]) % 24
    ]
    noise = rng.integers(-300, 301, size=curve.shape)
    # A saturated CPU model server sits at 72-98 %; a GPU model server's CPU at 8-26 %.
    avg = np.where(
        busy[:, None],
        np.clip(np.rint(7200 + 2200 * curve).astype(np.int64) + noise, 7000, 9800),
        np.clip(np.rint(800 + 1800 * curve).astype(np.int64) + noise, 300, 4000),
    )
    p95 = np.minimum(10000, avg + rng.integers(300, 900, size=curve.shape))
    peak = np.minimum(10000, p95 + rng.integers(100, 500, size=curve.shape))
    start_us = int(window_start.timestamp()) * 1_000_000
    count = len(servers)
    frame = pl.DataFrame(
        {
            "hour": pl.Series(
                start_us + np.tile(np.arange(hours, dtype=np.int64), count) * 3_600_000_000
            ).cast(pl.Datetime("us", "UTC")),
            "resource_id": np.repeat([h.resource_id for h in servers], hours).tolist(),
            "host": np.repeat([h.host for h in servers], hours).tolist(),
            "cpu_util_avg": avg.ravel() / 10000.0,
            "cpu_util_max": peak.ravel() / 10000.0,
            "cpu_util_p95": p95.ravel() / 10000.0,
            "source": [SOURCE] * (count * hours),
        }
    )
    HOST_METRICS.conform(frame, SOURCE).write_csv(path, datetime_format="%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _RosterRow:
    person_id: str
    name: str
    project: Project
    fraction: Decimal
    start: date
    end: date | None


def _roster(
    projects: list[Project], window_start: date, days: int, rnd: random.Random
) -> list[_RosterRow]:
    """2-6 people per project; some split 0.5/0.5, some join or leave inside the window."""
    rows: list[_RosterRow] = []
    used_names: set[str] = set()
    number = 0
    for project in projects:
        for _ in range(rnd.randint(2, 6)):
            number += 1
            name = f"{rnd.choice(FIRST_NAMES)} {rnd.choice(LAST_NAMES)}"
            while name in used_names:
                name = f"{rnd.choice(FIRST_NAMES)} {rnd.choice(LAST_NAMES)}"
            used_names.add(name)
            person = f"P{number:04d}"
            start = window_start - timedelta(days=rnd.randint(30, 900))
            end: date | None = None
            draw = rnd.random()
            if draw < 0.1 and days > 1:
                start = window_start + timedelta(days=rnd.randrange(1, days))
            elif draw < 0.2 and days > 1:
                end = window_start + timedelta(days=rnd.randrange(0, days - 1))
            if rnd.random() < 0.2:
                other = rnd.choice([p for p in projects if p != project])
                rows.append(_RosterRow(person, name, project, Decimal("0.5"), start, end))
                rows.append(_RosterRow(person, name, other, Decimal("0.5"), start, end))
            else:
                rows.append(_RosterRow(person, name, project, Decimal("1.0"), start, end))
    return sorted(rows, key=lambda r: (r.person_id, r.project.name))


def _write_roster(path: Path, roster: Sequence[_RosterRow]) -> None:
    frame = pl.DataFrame(
        {
            "person_id": [r.person_id for r in roster],
            "name": [r.name for r in roster],
            "project": [r.project.name for r in roster],
            "fraction": [str(r.fraction) for r in roster],
            "start": [r.start.isoformat() for r in roster],
            "end": pl.Series(
                [r.end.isoformat() if r.end else None for r in roster], dtype=pl.String
            ),
            "cost_center": [r.project.cost_center for r in roster],
        }
    )
    frame.write_csv(path)


# --------------------------------------------------------------------------------------------
# Ground truth.
# --------------------------------------------------------------------------------------------


def _money(value: Fraction | Decimal) -> str:
    with localcontext() as context:
        context.prec = 80
        if isinstance(value, Fraction):
            value = Decimal(value.numerator) / Decimal(value.denominator)
        return f"{value.quantize(Decimal(1).scaleb(-MONEY_SCALE), ROUND_HALF_EVEN):f}"


def _truth(
    fleet: _Fleet,
    sim: _Simulation,
    billing: _Billing,
    roster: Sequence[_RosterRow],
    window_start: datetime,
    hours: int,
    arguments: Mapping[str, object],
) -> dict[str, object]:
    units, hosts, projects = fleet.units, fleet.hosts, fleet.projects
    project_index = {p.name: i + 1 for i, p in enumerate(projects)}
    workload_project = np.array(
        [project_index[w.project.name] if w else 0 for w in fleet.workloads], dtype=np.int64
    )
    sevenths = _unit_array(units, "sevenths")
    share = _unit_array(units, "share_divisor")
    host_of = _unit_array(units, "host_index")
    # Seventh-seconds keep MIG fractions integral: a sample of p % for 300 s is 3 p GPU-seconds.
    busy_units = sim.util_sum.astype(np.int64) * (SCRAPE_INTERVAL_S // 100) * sevenths[:, None]
    held_units = np.where(
        sim.workload > 0, (SECONDS_PER_HOUR * sevenths // share)[:, None], 0
    ).astype(np.int64)
    owner = workload_project[sim.workload]
    keys = (host_of[:, None] * (len(projects) + 1) + owner).ravel()
    size = len(hosts) * (len(projects) + 1)
    limit = float(2**53)
    used = np.bincount(keys, weights=busy_units.ravel().astype(np.float64), minlength=size)
    held = np.bincount(keys, weights=held_units.ravel().astype(np.float64), minlength=size)
    if used.max(initial=0) >= limit or held.max(initial=0) >= limit:
        raise AssertionError("GPU-second sums exceed exact float range")
    used_by = used.astype(np.int64).reshape(len(hosts), len(projects) + 1)
    held_by = held.astype(np.int64).reshape(len(hosts), len(projects) + 1)
    if used_by[:, 0].any():
        raise AssertionError("GPU activity without a workload")

    project_used = Counter[str]()
    project_held = Counter[str]()
    project_cost: dict[str, Fraction] = defaultdict(Fraction)
    project_idle_cost: dict[str, Fraction] = defaultdict(Fraction)
    host_truth: dict[str, object] = {}
    total_cost, total_idle = Fraction(0), Fraction(0)
    unowned_idle = Fraction(0)
    for index, host in enumerate(hosts):
        gpu_count = host.itype.gpu_count
        if not gpu_count:
            continue
        capacity = gpu_count * MIG_COMPUTE_SLICES * SECONDS_PER_HOUR * hours
        hourly = billing.host_hourly_effective.get(host.resource_id)
        per_unit = (
            Fraction(hourly) / (gpu_count * MIG_COMPUTE_SLICES * SECONDS_PER_HOUR)
            if hourly is not None
            else None
        )
        host_used = 0
        for position, project in enumerate(projects, start=1):
            busy, holding = int(used_by[index, position]), int(held_by[index, position])
            host_used += busy
            project_used[project.name] += busy
            project_held[project.name] += holding
            if per_unit is not None:
                project_cost[project.name] += per_unit * busy
        idle = capacity - host_used
        entry: dict[str, object] = {
            "resource_id": host.resource_id,
            "provider": host.itype.provider,
            "instance_type": host.itype.name,
            "role": host.role,
            "pattern": host.pattern,
            "owner_project": host.owner.name if host.tagged else None,
            "gpu_count": gpu_count,
            "capacity_gpu_seconds": capacity / MIG_COMPUTE_SLICES,
            "used_gpu_seconds": host_used / MIG_COMPUTE_SLICES,
            "idle_gpu_seconds": idle / MIG_COMPUTE_SLICES,
            "gpu_cost": None,
            "gpu_cost_idle": None,
        }
        if per_unit is not None and hourly is not None:
            cost, idle_cost = Fraction(hourly) * hours, per_unit * idle
            total_cost += cost
            total_idle += idle_cost
            if host.tagged:
                project_idle_cost[host.owner.name] += idle_cost
            else:
                unowned_idle += idle_cost
            entry["gpu_cost"], entry["gpu_cost_idle"] = _money(cost), _money(idle_cost)
        host_truth[host.host] = entry

    days = hours // 24
    fte_days: Counter[str] = Counter()
    for row in roster:
        for day in range(days):
            moment = window_start.date() + timedelta(days=day)
            if row.start <= moment and (row.end is None or moment <= row.end):
                fte_days[row.project.name] += row.fraction  # type: ignore[assignment]
    people = {p.name: len({r.person_id for r in roster if r.project == p}) for p in projects}

    project_truth = {
        p.name: {
            "cost_center": p.cost_center,
            "team": p.team,
            "namespace_prefix": p.name,
            "gpu_seconds_used": project_used[p.name] / MIG_COMPUTE_SLICES,
            "gpu_seconds_held": project_held[p.name] / MIG_COMPUTE_SLICES,
            "gpu_cost_used": _money(project_cost[p.name]),
            "gpu_cost_idle_owned": _money(project_idle_cost[p.name]),
            "people": people[p.name],
            "fte_days": str(Decimal(fte_days[p.name])),
        }
        for p in projects
    }
    total_used = sum(project_cost.values(), Fraction(0))
    if total_used + total_idle != total_cost:
        raise AssertionError("usage-basis split does not add up")
    return {
        "arguments": dict(arguments),
        "definitions": TRUTH_DEFINITIONS,
        "window": {
            "start": _iso(window_start),
            "end": _iso(window_start + timedelta(hours=hours)),
            "hours": hours,
        },
        "currency": "USD",
        "billing": {
            "rows": sum(len(billing.period_sets[s.period_set]) for s in billing.segments),
            "billed_cost_total": _money(billing.billed_total),
            "effective_cost_total": _money(billing.effective_total),
            "by_charge_category": {
                category: {name: _money(value) for name, value in sums.items()}
                for category, sums in billing.by_category.items()
            },
        },
        "fleet": {
            "hosts": len(hosts),
            "gpu_hosts": sum(1 for h in hosts if h.itype.gpu_count),
            "gpus": fleet.gpu_count,
            "gpus_by_provider": dict(sorted(_gpu_counter(hosts, "provider").items())),
            "gpus_by_model": dict(sorted(_gpu_counter(hosts, "model").items())),
            "usage_rows": len(units) * hours,
        },
        "gpu_cost": {
            "basis": "usage",
            "cost_column": "EffectiveCost",
            "total": _money(total_cost),
            "used": _money(total_used),
            "idle": _money(total_idle),
            "idle_untagged_hosts": _money(unowned_idle),
        },
        "projects": project_truth,
        "hosts": host_truth,
        "anomalies": sorted(fleet.anomalies, key=lambda a: (str(a["kind"]), str(a["host"]))),
        "shared_gpus": sorted(fleet.shared_gpus, key=lambda s: (str(s["kind"]), str(s["host"]))),
    }


def _gpu_counter(hosts: Sequence[_Host], by: str) -> Counter[str]:
    counter: Counter[str] = Counter()
    for host in hosts:
        if host.itype.gpu is None:
            continue
        key = host.itype.provider if by == "provider" else host.itype.gpu.family
        counter[key] += host.itype.gpu_count
    return counter
