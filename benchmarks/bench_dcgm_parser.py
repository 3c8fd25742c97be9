"""Benchmark gpucost.collector.dcgm_text against prometheus_client's text parser on one payload.

    python benchmarks/bench_dcgm_parser.py [--hosts 543] [--repeat 7]

The payload is one exposition of ~100k samples shaped like a fleet of 8x H100 nodes: metric
families (HELP/TYPE text and order) from a recorded dcgm-exporter scrape, label sets from a
recorded p5.48xlarge scrape (GPU labels, every other GPU with pod labels), realistic values and
a few DCGM blank sentinels. Both parsers read the same text; the script checks that they agree
on every sample (ours null exactly where theirs read a DCGM blank) and prints samples per second
for both (median of the repetitions) and the ratio.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402

from gpucost.collector.dcgm_text import is_dcgm_blank, iter_samples, parse_dcgm_exposition  # noqa: E402

DATA = REPO / "tests" / "data" / "dcgm"
FAMILIES_FROM = DATA / "upcloud_NVIDIA-L40S.prom"
LABELS_FROM = DATA / "nvidia_aicr_eks_p5_H100x8_sampled_with_pod_labels.prom"
GPUS_PER_HOST = 8
T = TypeVar("T")


def _families() -> list[tuple[str, str, str]]:
    """(name, HELP text, TYPE) of every family in the recorded scrape, in its order."""
    helps: dict[str, str] = {}
    families: list[tuple[str, str, str]] = []
    for line in FAMILIES_FROM.read_text().splitlines():
        if line.startswith("# HELP "):
            name, _, text = line[len("# HELP ") :].partition(" ")
            helps[name] = text
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            families.append((name, helps.get(name, ""), kind))
    return families


def _label_template() -> tuple[str, str]:
    """Label texts of GPU 0 of the recorded H100 scrape: (with pod labels, without)."""
    first = next(iter_samples(LABELS_FROM.read_text()))
    with_pod = ",".join(f'{name}="{value}"' for name, value in first.labels.items())
    without_pod = with_pod.split(',container="', 1)[0]
    return with_pod, without_pod


def _value(name: str, rnd: random.Random) -> str:
    """A plausible value text for a family, formatted the way dcgm-exporter formats it."""
    if rnd.random() < 0.002:
        return rnd.choice(["9223372036854775794", "2147483632", "140737488355328.000000"])
    if name.startswith("DCGM_FI_PROF_"):
        return f"{rnd.random():f}"
    if name == "DCGM_FI_DEV_POWER_USAGE":
        return f"{rnd.uniform(60, 700):f}"
    if name == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION":
        return str(rnd.randint(10**9, 10**12))
    if name.endswith(("_CLOCK", "_FB_FREE", "_FB_USED", "_FB_RESERVED")):
        return str(rnd.randint(0, 81559))
    return str(rnd.randint(0, 100))


def build_payload(hosts: int, seed: int = 7) -> str:
    """One exposition: every family once, then every GPU of every host."""
    rnd = random.Random(seed)
    with_pod, without_pod = _label_template()
    gpu_labels: list[str] = []
    for host in range(hosts):
        for gpu in range(GPUS_PER_HOST):
            template = with_pod if gpu % 2 == 0 else without_pod
            labels = (
                template.replace('gpu="0"', f'gpu="{gpu}"')
                .replace('device="nvidia0"', f'device="nvidia{gpu}"')
                .replace("GPU-c4529c8d", f"GPU-{host:04x}{gpu:04x}")
                .replace('Hostname="gpu-node-1"', f'Hostname="ip-10-0-{host // 256}-{host % 256}"')
                .replace("-s65j5", f"-{host:03d}{gpu}")
            )
            gpu_labels.append(labels)
    lines: list[str] = []
    for name, help_text, kind in _families():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{{{labels}}} {_value(name, rnd)}" for labels in gpu_labels)
    return "\n".join(lines) + "\n"


def _timed(function: Callable[[], T], repeat: int) -> tuple[float, float, T]:
    """Median and best wall time of ``repeat`` calls, and the last result."""
    times: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), result


def _theirs(text: str) -> list[tuple[str, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (sample.name, float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _check_same_values(text: str, ours: pl.DataFrame, theirs: list[tuple[str, float]]) -> int:
    """Number of samples compared; raises when the two parsers disagree anywhere."""
    raw = list(iter_samples(text))
    if not (len(raw) == ours.height == len(theirs)):
        raise SystemExit(f"sample counts differ: {ours.height} vs {len(theirs)}")
    value_texts = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line[:1] != "#"]
    for index, ((name, value), mine, text_value) in enumerate(
        zip(theirs, ours.select("metric", "value").iter_rows(), value_texts, strict=True)
    ):
        metric, parsed = mine
        if not (name == metric or name == f"{metric}_total"):
            raise SystemExit(f"sample {index}: metric {metric!r} vs {name!r}")
        if parsed is None:
            if not is_dcgm_blank(text_value):
                raise SystemExit(f"sample {index}: null but {text_value!r} is not a DCGM blank")
        elif not (parsed == value or (math.isnan(parsed) and math.isnan(value))):
            raise SystemExit(f"sample {index}: value {parsed!r} vs {value!r}")
    return len(theirs)


def main() -> None:
    """Build the payload, time both parsers, check they agree, print the figures."""
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--hosts", type=int, default=543, help="8-GPU hosts in the payload")
    options.add_argument("--repeat", type=int, default=7, help="timed runs of our parser")
    options.add_argument("--repeat-theirs", type=int, default=3, help="timed runs of theirs")
    arguments = options.parse_args()

    text = build_payload(arguments.hosts)
    print(
        f"payload: {arguments.hosts} hosts x {GPUS_PER_HOST} GPUs x {len(_families())} families,"
        f" {len(text) / 1e6:.1f} MB; python {platform.python_version()}, polars {pl.__version__},"
        f" {os.cpu_count()} CPUs"
    )
    parse_dcgm_exposition(text)  # warm-up: first-call costs (regex compilation, thread pool)
    ours_s, ours_best_s, result = _timed(lambda: parse_dcgm_exposition(text), arguments.repeat)
    frame, errors = result
    if errors:
        raise SystemExit(f"our parser reported {len(errors)} bad lines, e.g. {errors[0]}")
    theirs_s, theirs_best_s, theirs = _timed(lambda: _theirs(text), arguments.repeat_theirs)
    compared = _check_same_values(text, frame, theirs)
    blanks = frame.get_column("value").null_count()

    ours_rate = frame.height / ours_s
    theirs_rate = compared / theirs_s
    print(f"samples: {frame.height:,} (values identical; {blanks} DCGM blanks null in ours)")
    print(
        f"ours:   median {ours_s * 1000:8.1f} ms  {ours_rate:>12,.0f} samples/s"
        f"  (best {ours_best_s * 1000:.1f} ms, n={arguments.repeat})"
    )
    print(
        f"theirs: median {theirs_s * 1000:8.1f} ms  {theirs_rate:>12,.0f} samples/s"
        f"  (best {theirs_best_s * 1000:.1f} ms, n={arguments.repeat_theirs}, prometheus_client)"
    )
    print(f"ratio:  {ours_rate / theirs_rate:.1f}x (medians)")


if __name__ == "__main__":
    main()
