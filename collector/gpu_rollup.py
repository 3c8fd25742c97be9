"""Raw GPU samples to hourly ``gpu_usage`` rows, shared by the three GPU metric sources.

Every GPU source first turns what it read into *raw samples* (:data:`RAW_SAMPLE_SCHEMA`): one row
per series and instant, where a *series* is one GPU (or MIG slice) x one workload
(``host``, ``gpu_uuid``, ``namespace``, ``pod``, ``container``). :func:`rollup_hourly` then makes
one ``gpu_usage`` row per UTC hour x series:

``seconds_observed``
    Each sample stands for ``min(interval_s, time to the next sample of the same series)``
    (for the series' last sample: to the device's next sample, so that a pod handing the GPU
    over between two scrapes is not counted past the scrape that shows the next pod),
    counted in the hour the sample was taken; the hour's sum is capped at 3600. A missed scrape
    therefore leaves the hour below 3600 and nothing is ever invented: the last sample before a
    gap counts one interval, not the gap. Two samples of one series at the same instant (a page
    read twice, overlapping recordings) count once.
``gpu_seconds_held`` / ``gpu_seconds_busy``
    The series' share of its device (GPU or MIG slice), from the samples rather than the hour:
    at each instant a *workload series* (one with a ``pod``) holds ``1 / n`` of the device,
    ``n`` being the workload series present on that device at that instant, and
    ``gpu_seconds_held`` sums ``covered seconds x 1 / n``. Pods that follow one another within
    an hour therefore hold the device for their own minutes each, and pods time-slicing it
    split it. ``gpu_seconds_busy`` sums ``covered seconds x util / n``: dcgm-exporter and NVML's
    device counters repeat the device's utilisation on every sharing pod's series and cannot
    tell the pods apart, so the device's busy time is split equally and never counted twice;
    where a source knows a process's own utilisation (``process_util``, NVML's
    ``nvmlDeviceGetProcessUtilization``) that is the series' busy fraction instead. A series
    without a pod (a GPU with no workload, or the exporter's own pod once recognised as such)
    holds nothing; when no workload is present its busy time (if any) is split over the
    device's series as well, so it lands once. Both are seconds of the device, not scaled by a
    MIG slice's fraction (the allocator knows the geometry), capped at 3600.
``util_avg`` / ``util_max``
    Mean and maximum of ``util`` (fraction 0..1) over the hour's samples; a sample's own
    ``util_max`` (a peak within its interval, as the Prometheus source queries it) wins over
    its ``util`` for the maximum.
``mem_used_max_bytes``, ``mem_total_bytes``, ``power_avg_w``, ``sm_clock_avg_mhz``
    Maximum, maximum, mean and mean.
``workload``
    The owner of the pod, guessed from Kubernetes' generated pod names (:func:`workload_of`).
``project``
    Left null on purpose: the allocator resolves projects from namespaces with the config's
    project rules, and the collectors must not depend on the allocator (DESIGN.md).

MIG slices keep their profile in ``mig_profile``, and their ``gpu_uuid`` names the slice:
``<GPU uuid>/<GPU instance id>`` (:func:`mig_slice_uuid`), the same from every source.

:class:`SampleSpool` keeps raw samples on local disk for a few days, so that sources sampled
live (one scrape per collection) can roll up whole hours from many collections.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final

import polars as pl

from gpucost.collector.base import CollectorContext
from gpucost.core.contracts import GPU_USAGE, UTC_TIME
from gpucost.core.window import Window

__all__ = [
    "DEFAULT_EXPORTER_PODS",
    "DEVICE_KEYS",
    "EXPORTER_CONTAINERS",
    "RAW_SAMPLE_SCHEMA",
    "SECONDS_PER_HOUR",
    "SERIES_KEYS",
    "SampleSpool",
    "clear_exporter_identity",
    "conform_samples",
    "glob_pattern",
    "merge_rollups",
    "mib_to_bytes",
    "mig_slice_uuid",
    "rollup_hourly",
    "samples_by_instant",
    "slice_uuid_expr",
    "workload_of",
]

SECONDS_PER_HOUR: Final = 3600
MIB: Final = 1 << 20
"""dcgm-exporter reports framebuffer sizes in MiB ("Framebuffer memory used (in MiB)")."""

RAW_SAMPLE_SCHEMA: Final = pl.Schema(
    {
        "time": UTC_TIME,
        "host": pl.String(),
        "gpu_uuid": pl.String(),
        "gpu_index": pl.Int32(),
        "gpu_model": pl.String(),
        "mig_profile": pl.String(),
        "namespace": pl.String(),
        "pod": pl.String(),
        "container": pl.String(),
        "util": pl.Float64(),
        "util_max": pl.Float64(),
        "process_util": pl.Float64(),
        "mem_used_bytes": pl.Int64(),
        "mem_total_bytes": pl.Int64(),
        "power_w": pl.Float64(),
        "sm_clock_mhz": pl.Float64(),
    }
)
"""One row per series and instant. ``gpu_uuid`` already names the MIG slice; ``util`` and
``util_max`` are fractions 0..1 of the device; ``process_util`` is the series' own share of the
device's time (0..1), where the source measures it per process; absent columns are null."""

SERIES_KEYS: Final = ("host", "gpu_uuid", "namespace", "pod", "container")
"""A series: one GPU or MIG slice x one workload. Time-sliced pods are separate series."""
DEVICE_KEYS: Final = ("host", "gpu_uuid")
"""One device: a GPU, or a MIG slice (whose ``gpu_uuid`` names the slice)."""

EXPORTER_CONTAINERS: Final = ("nvidia-dcgm-exporter", "dcgm-exporter", "exporter")
"""Container names of dcgm-exporter itself. NVIDIA's GPU Operator names the DaemonSet's
container ``nvidia-dcgm-exporter`` and the dcgm-exporter Helm chart names it ``exporter``: both
are what Kubernetes service discovery attaches to every series of the target in real
Prometheus answers (NVIDIA's EKS H100 cluster, UpCloud's L40S; tests/data/dcgm/prometheus_api)."""
DEFAULT_EXPORTER_PODS: Final = ("nvidia-dcgm-exporter-*", "dcgm-exporter-*")
"""Pod name globs of the exporter's own pods: the GPU Operator's and the Helm chart's
DaemonSet pods (``<daemonset>-<5 characters>``)."""

_ATTRIBUTES: Final = ("gpu_index", "gpu_model", "mig_profile")
_MEASURES: Final = (
    "util",
    "util_max",
    "process_util",
    "mem_used_bytes",
    "mem_total_bytes",
    "power_w",
    "sm_clock_mhz",
)

# Kubernetes' generated name suffixes use k8s.io/apimachinery/pkg/util/rand's alphabet
# "bcdfghjklmnpqrstvwxz2456789" (no vowels, no 0/1/3): 5 characters for a GenerateName suffix
# (apiserver names.SimpleNameGenerator, randomLength = 5) and up to 10 for a Deployment's
# pod-template-hash (rand.SafeEncodeString of a 32-bit hash).
_K8S_ALPHABET: Final = "[bcdfghjklmnpqrstvwxz2456789]"
_WORKLOAD_RULES: Final = (
    # Deployment: <deployment>-<pod-template-hash>-<5>
    rf"^(.+)-{_K8S_ALPHABET}{{6,10}}-{_K8S_ALPHABET}{{5}}$",
    # Kubeflow training-operator jobs: <job>-<replica type>-<index>
    r"^(.+)-(?:master|worker|chief|ps|evaluator|launcher|learner)-[0-9]+$",
    # StatefulSet: <statefulset>-<ordinal>
    r"^(.+)-[0-9]+$",
    # Job, DaemonSet, bare ReplicaSet: <owner>-<5>
    rf"^(.+)-{_K8S_ALPHABET}{{5}}$",
)


def mig_slice_uuid(gpu_uuid: str, gpu_instance_id: int | str) -> str:
    """The ``gpu_uuid`` of a MIG slice: ``<GPU uuid>/<GPU instance id>``."""
    return f"{gpu_uuid}/{gpu_instance_id}"


def slice_uuid_expr(gpu_uuid: pl.Expr, gpu_instance_id: pl.Expr) -> pl.Expr:
    """Polars twin of :func:`mig_slice_uuid`: the GPU's uuid when there is no instance id."""
    return (
        pl.when(gpu_instance_id.is_not_null())
        .then(pl.concat_str([gpu_uuid, pl.lit("/"), gpu_instance_id.cast(pl.String())]))
        .otherwise(gpu_uuid)
    )


def workload_of(pod: pl.Expr) -> pl.Expr:
    """The workload that owns a pod, from Kubernetes' pod naming conventions.

    ``llama-predictor-7d9f8b6c5d-x2k9p`` -> ``llama-predictor`` (Deployment),
    ``train-00042-worker-0`` -> ``train-00042`` (Kubeflow job), ``db-0`` -> ``db``
    (StatefulSet), ``backup-x2k9p`` -> ``backup`` (Job); any other name is its own workload.
    A heuristic: a hand-written name ending in five consonants loses them.
    """
    expression: pl.Expr = pod
    for pattern in reversed(_WORKLOAD_RULES):
        expression = (
            pl.when(pod.str.contains(pattern))
            .then(pod.str.extract(pattern, 1))
            .otherwise(expression)
        )
    return expression


def glob_pattern(globs: Sequence[str]) -> str:
    """One anchored regular expression matching any of ``globs`` (``*`` any run, ``?`` one
    character, nothing else special)."""
    parts = [re.escape(glob).replace(r"\*", ".*").replace(r"\?", ".") for glob in globs if glob]
    return "^(?:" + "|".join(parts) + ")$" if parts else "$^"


def clear_exporter_identity(
    samples: pl.DataFrame, exporter_pods: Sequence[str] = DEFAULT_EXPORTER_PODS
) -> tuple[pl.DataFrame, int]:
    """Samples whose ``namespace``/``pod``/``container`` name the exporter itself, with those
    cleared (a GPU with no workload); returns the samples and how many were cleared.

    Prometheus' Kubernetes service discovery attaches the scrape target's own pod to every
    series it scrapes, and dcgm-exporter adds workload labels only to GPUs that have a
    workload, so a series of an idle GPU carries the exporter's pod. It is recognised by its
    container (:data:`EXPORTER_CONTAINERS`) or, as the last resort, by a pod name matching
    ``exporter_pods``.
    """
    own = pl.col("container").is_in(list(EXPORTER_CONTAINERS)).fill_null(False) | pl.col(
        "pod"
    ).str.contains(glob_pattern(exporter_pods)).fill_null(False)
    count = int(samples.select(own.sum()).item() or 0)
    if not count:
        return samples, 0
    cleared = samples.with_columns(
        *(
            pl.when(own).then(pl.lit(None, pl.String())).otherwise(pl.col(name)).alias(name)
            for name in ("namespace", "pod", "container")
        )
    )
    return cleared, count


def mib_to_bytes(mib: pl.Expr) -> pl.Expr:
    """MiB (dcgm-exporter's framebuffer unit, see :data:`MIB`) as whole bytes."""
    return (mib * MIB).round().cast(pl.Int64())


def samples_by_instant(rows: pl.LazyFrame, values: Mapping[str, pl.Expr]) -> pl.LazyFrame:
    """One row per instant and series (``time`` + :data:`SERIES_KEYS`) from long rows: the
    GPU's first known index, model and MIG profile, and each aggregation of ``values`` under
    its name (one column per metric a source read)."""
    return rows.group_by("time", *SERIES_KEYS).agg(
        *(pl.col(name).first(ignore_nulls=True) for name in _ATTRIBUTES),
        *(value.alias(name) for name, value in values.items()),
    )


def conform_samples(frame: pl.DataFrame) -> pl.DataFrame:
    """Shape a source's samples into :data:`RAW_SAMPLE_SCHEMA` (absent columns become null)."""
    unknown = [name for name in frame.columns if name not in RAW_SAMPLE_SCHEMA]
    if unknown:
        raise ValueError(f"raw GPU samples have unknown columns: {', '.join(unknown)}")
    return frame.select(
        [
            (
                pl.col(name).cast(dtype)
                if name in frame.columns
                else pl.lit(None, dtype=dtype).alias(name)
            )
            for name, dtype in RAW_SAMPLE_SCHEMA.items()
        ]
    )


def empty_samples() -> pl.DataFrame:
    """No samples, with :data:`RAW_SAMPLE_SCHEMA`."""
    return pl.DataFrame(schema=RAW_SAMPLE_SCHEMA)


def rollup_hourly(
    samples: pl.DataFrame,
    *,
    interval_s: float,
    source: str,
    window: Window | None = None,
) -> pl.DataFrame:
    """One ``gpu_usage`` row per UTC hour x series, conformed to the contract (pure).

    ``interval_s`` is the nominal time between two samples of a series (the scrape interval,
    the query step, the agent's interval). Samples without a time, host or GPU uuid are
    dropped, as are samples outside ``window`` when one is given. Rows are sorted.
    """
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    conformed = (
        conform_samples(samples)
        .lazy()
        .filter(
            pl.col("time").is_not_null(),
            pl.col("host").is_not_null(),
            pl.col("gpu_uuid").is_not_null(),
        )
    )
    if window is not None:
        conformed = conformed.filter(
            pl.col("time").is_between(
                pl.lit(window.start_time, dtype=UTC_TIME),
                pl.lit(window.end_time, dtype=UTC_TIME),
                closed="left",
            )
        )
    keys = list(SERIES_KEYS)
    time = pl.col("time")
    # A sample stands until the series' next sample; the last sample of a series (a pod that
    # left, a handover) stands until the device's next sample, where the next pod already
    # shows, and never longer than one interval.
    next_time = pl.coalesce(time.shift(-1).over(keys, order_by="time"), pl.col("__device_next"))
    covered_s = ((next_time - time).dt.total_microseconds() / 1e6).clip(upper_bound=interval_s)
    # The device's next instant, on rows sorted by device and time: the next row's time where
    # it differs, carried back over the rows of the same instant.
    following = time.shift(-1).over(list(DEVICE_KEYS))
    device_next = pl.when(following != time).then(following).backward_fill().over(list(DEVICE_KEYS))
    instant = [*DEVICE_KEYS, "time"]
    workloads_now = pl.col("pod").is_not_null().cast(pl.Int64).sum().over(instant)
    series_now = pl.len().over(instant)
    # A series' share of its device at this instant: 1/n among the workload series present;
    # where no workload is present, the device's busy time (if any) is split over its series so
    # that it still lands exactly once (on the host's owner, by the allocator's rules).
    held_share = (
        pl.when(pl.col("pod").is_not_null())
        .then(1.0 / workloads_now.cast(pl.Float64))
        .otherwise(0.0)
    )
    busy_share = (
        pl.when(workloads_now == 0).then(1.0 / series_now.cast(pl.Float64)).otherwise(held_share)
    )
    busy_fraction = (
        pl.when(pl.col("pod").is_not_null() & pl.col("process_util").is_not_null())
        .then(pl.col("process_util").clip(0.0, 1.0))
        .otherwise(pl.col("util").clip(0.0, 1.0) * busy_share)
    )
    rows = (
        conformed.group_by([*keys, "time"])
        .agg([pl.col(name).first(ignore_nulls=True) for name in (*_ATTRIBUTES, *_MEASURES)])
        # A fixed row order makes float sums, and so the lake's bytes, the same on every run.
        .sort([*DEVICE_KEYS, "time"])
        .with_columns(device_next.alias("__device_next"))
        .sort([*keys, "time"], nulls_last=False)
        .with_columns(covered_s.fill_null(interval_s).alias("covered_s"))
        .drop("__device_next")
        .with_columns(
            (pl.col("covered_s") * held_share).alias("held_s"),
            (pl.col("covered_s") * busy_fraction).alias("busy_s"),
        )
        .group_by([time.dt.truncate("1h").alias("hour"), *keys], maintain_order=True)
        .agg(
            *[pl.col(name).first(ignore_nulls=True) for name in _ATTRIBUTES],
            # Float sums and means are taken over each group's list in time order: Polars'
            # grouped sum may add partial sums from several threads, in varying order.
            pl.col("covered_s"),
            pl.col("held_s"),
            pl.col("busy_s"),
            pl.col("busy_s").is_not_null().any().alias("busy_known"),
            pl.col("util"),
            pl.coalesce("util_max", "util").max().alias("util_max"),
            pl.col("mem_used_bytes").max().alias("mem_used_max_bytes"),
            pl.col("mem_total_bytes").max(),
            pl.col("power_w"),
            pl.col("sm_clock_mhz"),
        )
        .with_columns(
            pl.col("covered_s")
            .list.sum()
            .clip(upper_bound=SECONDS_PER_HOUR)
            .alias("seconds_observed"),
            pl.col("held_s")
            .list.sum()
            .clip(upper_bound=SECONDS_PER_HOUR)
            .alias("gpu_seconds_held"),
            pl.when(pl.col("busy_known"))
            .then(pl.col("busy_s").list.drop_nulls().list.sum().clip(upper_bound=SECONDS_PER_HOUR))
            .alias("gpu_seconds_busy"),
            pl.col("util").list.mean().alias("util_avg"),
            pl.col("power_w").list.mean().alias("power_avg_w"),
            pl.col("sm_clock_mhz").list.mean().alias("sm_clock_avg_mhz"),
        )
        .drop("covered_s", "held_s", "busy_s", "busy_known", "util", "power_w", "sm_clock_mhz")
        .with_columns(
            workload_of(pl.col("pod")).alias("workload"),
            pl.lit(None, dtype=pl.String()).alias("project"),
            pl.lit(source).alias("source"),
        )
        .sort(["hour", *keys], nulls_last=False)
        .collect()
    )
    return GPU_USAGE.conform(rows, source)


def merge_rollups(frames: Sequence[pl.DataFrame], source: str) -> pl.DataFrame:
    """Combine hourly rows of the same hour and series written at different times (pure).

    For an agent that flushed part of an hour, stopped and flushed the rest later: seconds
    (observed, held, busy) add up (capped at 3600), means are weighted by seconds observed,
    maxima stay maxima. Merging a frame with itself double-counts: merge only rows made from
    different samples.
    """
    if not frames:
        return GPU_USAGE.empty()
    keys = ["hour", *SERIES_KEYS, "source"]
    seconds = pl.col("seconds_observed")
    averaged = ("util_avg", "power_avg_w", "sm_clock_avg_mhz")
    rows = (
        pl.concat([GPU_USAGE.conform(frame, source) for frame in frames])
        .sort(keys, nulls_last=False)
        .with_columns(
            *[(pl.col(name) * seconds).alias(f"__product_{name}") for name in averaged],
            *[
                pl.when(pl.col(name).is_not_null()).then(seconds).alias(f"__weight_{name}")
                for name in averaged
            ],
        )
        .group_by(keys, maintain_order=True)
        .agg(
            *[pl.col(name).first(ignore_nulls=True) for name in (*_ATTRIBUTES, "workload")],
            pl.col("project").first(ignore_nulls=True),
            pl.col("util_max").max(),
            pl.col("mem_used_max_bytes").max(),
            pl.col("mem_total_bytes").max(),
            # Lists, summed below in row order: grouped float sums are not reproducible.
            seconds,
            pl.col("gpu_seconds_held"),
            pl.col("gpu_seconds_busy"),
            *[pl.col(f"__product_{name}") for name in averaged],
            *[pl.col(f"__weight_{name}") for name in averaged],
        )
        .with_columns(
            seconds.list.sum().clip(upper_bound=SECONDS_PER_HOUR),
            *[
                pl.when(pl.col(name).list.drop_nulls().list.len() > 0)
                .then(pl.col(name).list.drop_nulls().list.sum().clip(upper_bound=SECONDS_PER_HOUR))
                .alias(name)
                for name in ("gpu_seconds_held", "gpu_seconds_busy")
            ],
            *[
                pl.when(pl.col(f"__weight_{name}").list.sum() > 0)
                .then(
                    pl.col(f"__product_{name}").list.sum() / pl.col(f"__weight_{name}").list.sum()
                )
                .alias(name)
                for name in averaged
            ],
        )
    )
    rows = rows.drop([column for column in rows.columns if column.startswith("__")])
    return GPU_USAGE.conform(rows, source)


class SampleSpool:
    """Raw samples kept on local disk, one Parquet file per append, a folder per UTC day.

    Layout: ``{directory}/day=YYYY-MM-DD/{append time in ms}-{random}.parquet``. Appends are
    atomic (written to a hidden temporary name, then renamed), so a reader never sees half a
    file. Day folders older than ``retention_days`` are removed by :meth:`prune`.
    """

    def __init__(self, directory: Path, *, retention_days: int = 7) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        self.directory = directory
        self.retention_days = retention_days

    @classmethod
    def configured(
        cls, spool_dir: str | None, retention_days: int, context: CollectorContext
    ) -> SampleSpool | None:
        """The spool a source's ``spool_dir`` setting names (relative paths against the
        working directory), or None when it names none."""
        if spool_dir is None:
            return None
        return cls(Path(context.resolve(spool_dir)), retention_days=retention_days)

    def append(self, samples: pl.DataFrame, *, now: datetime) -> list[Path]:
        """Keep ``samples`` (split by UTC day of ``time``); returns the files written."""
        conformed = conform_samples(samples).filter(pl.col("time").is_not_null())
        if conformed.is_empty():
            return []
        stamp = f"{int(now.timestamp() * 1000)}-{uuid.uuid4().hex[:8]}"
        written: list[Path] = []
        by_day = conformed.with_columns(pl.col("time").dt.date().alias("__day")).partition_by(
            "__day", as_dict=True, include_key=False
        )
        for (day,), rows in sorted(by_day.items()):
            assert isinstance(day, date)
            folder = self.directory / f"day={day.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{stamp}.parquet"
            temporary = folder / f".{stamp}.parquet.tmp"
            rows.write_parquet(temporary, compression="zstd")
            temporary.replace(target)
            written.append(target)
        return written

    def files(self, window: Window) -> list[Path]:
        """Spooled files of the window's days, in name order."""
        found: list[Path] = []
        for day in window.each_day():
            folder = self.directory / f"day={day.isoformat()}"
            if folder.is_dir():
                found.extend(sorted(folder.glob("[!.]*.parquet")))
        return found

    def read(self, window: Window) -> pl.DataFrame:
        """Every spooled sample of the window."""
        files = self.files(window)
        if not files:
            return empty_samples()
        return conform_samples(pl.concat([pl.read_parquet(file) for file in files]))

    def prune(self, today: date) -> list[str]:
        """Remove day folders older than ``retention_days`` before ``today``; returns them."""
        if not self.directory.is_dir():
            return []
        oldest_kept = today - timedelta(days=self.retention_days)
        removed: list[str] = []
        for folder in sorted(self.directory.glob("day=*")):
            try:
                day = date.fromisoformat(folder.name.removeprefix("day="))
            except ValueError:
                continue
            if day < oldest_kept:
                shutil.rmtree(folder)
                removed.append(folder.name)
        return removed
