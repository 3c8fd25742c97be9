"""Tests for collector/dcgm_text.py: real dcgm-exporter scrapes, label normalisation, bad lines.

Values are checked against prometheus_client's own parser (the reference implementation of
the text format in Python) on every recorded scrape.
"""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpucost.collector.base import REJECT_SCHEMA
from gpucost.collector.dcgm_text import (
    DCGM_FP64_BLANK,
    DCGM_INT32_BLANK,
    DCGM_INT64_BLANK,
    LEGACY_METRIC_NAMES,
    SAMPLE_SCHEMA,
    ExpositionSyntaxError,
    LineError,
    _attach_label_sets,
    _split_lines,
    _split_samples,
    canonical_metric_name,
    is_dcgm_blank,
    iter_samples,
    parse_dcgm_exposition,
)

prometheus_parser: ModuleType | None
try:  # the reference parser; not a runtime dependency of gpucost
    import prometheus_client.parser

    prometheus_parser = prometheus_client.parser
except ImportError:  # pragma: no cover - the comparisons are skipped without it
    prometheus_parser = None

DATA = Path(__file__).resolve().parents[1] / "data" / "dcgm"
BUNDLED = sorted(DATA.glob("*.prom"))
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata" / "dcgm" / "exposition"


def _shared_files() -> list[Any]:
    if not SHARED.is_dir():
        reason = f"shared reference scrapes not present at {SHARED.resolve()} (optional)"
        return [pytest.param(None, id="shared-absent", marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(path, id=path.name) for path in sorted(SHARED.iterdir())]


def _parse(text: str, **kwargs: Any) -> pl.DataFrame:
    result = parse_dcgm_exposition(text, **kwargs)
    assert result.errors == []
    return result.frame


def _only_row(text: str) -> dict[str, Any]:
    frame = _parse(text, keep_labels=True)
    assert frame.height == 1
    return frame.row(0, named=True)


def _same_float(ours: float | None, theirs: float) -> bool:
    """Equal as floats (prometheus_client returns ints for integer texts), NaN equal to NaN."""
    if ours is None:
        return False
    return (math.isnan(ours) and math.isnan(theirs)) or ours == float(theirs)


def _looks_like_blank(value: float) -> bool:
    """A value that prometheus_client read from a DCGM sentinel text (ints from integer texts)."""
    if isinstance(value, int):
        return DCGM_INT32_BLANK <= value <= 0x7FFFFFFF or value >= DCGM_INT64_BLANK
    return math.isfinite(value) and value >= DCGM_FP64_BLANK


def _assert_agrees_with_prometheus_client(text: str) -> None:
    if prometheus_parser is None:
        pytest.skip("prometheus_client is not installed (pip install prometheus-client)")
    families = prometheus_parser.text_string_to_metric_families(text)
    theirs = [sample for family in families for sample in family.samples]
    raw = list(iter_samples(text))
    frame = _parse(text, keep_labels=True)
    assert len(theirs) == len(raw) == frame.height
    for their, mine, row in zip(theirs, raw, frame.iter_rows(named=True), strict=True):
        # prometheus_client appends _total to counters whose name lacks it (OpenMetrics style).
        assert their.name in (mine.name, mine.name + "_total")
        assert row["metric"] == canonical_metric_name(mine.name)
        assert their.labels == mine.labels
        assert {label["name"]: label["value"] for label in row["labels"]} == their.labels
        assert _same_float(mine.value, their.value)
        assert (row["value"] is None) == _looks_like_blank(their.value)
        if row["value"] is not None:
            assert _same_float(row["value"], their.value)
        if their.timestamp is None:
            assert row["timestamp_ms"] is None
        else:
            assert row["timestamp_ms"] == round(float(their.timestamp) * 1000)


# --- every recorded scrape ----------------------------------------------------------------------


def test_bundled_data_is_present() -> None:
    assert len(BUNDLED) >= 9, f"expected the recorded scrapes in {DATA}"


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_scrape_parses_cleanly(path: Path) -> None:
    result = parse_dcgm_exposition(path.read_text())
    assert result.errors == []
    assert result.frame.schema == SAMPLE_SCHEMA
    expected = sum(1 for line in path.read_text().splitlines() if line.startswith("DCGM_FI_"))
    assert result.frame.height == expected
    assert result.frame.get_column("metric").str.starts_with("DCGM_FI_").all()
    assert result.frame.get_column("gpu_uuid").str.starts_with("GPU-").all()
    assert result.frame.get_column("gpu_index").null_count() == 0


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_scrape_agrees_with_prometheus_client(path: Path) -> None:
    _assert_agrees_with_prometheus_client(path.read_text())


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_line_by_line_path_gives_the_same_frame(path: Path) -> None:
    text = path.read_text()
    fast = _parse(text, keep_labels=True)
    # A leading blank defeats the vectorised cut, so every sample takes the per-line parser.
    indented = "\n".join(
        f" {line}" if line.startswith("DCGM") else line for line in text.split("\n")
    )
    # CR LF line ends take the plain line split instead of the CSV reader.
    crlf = text.replace("\n", "\r\n")
    for variant in (indented, crlf):
        assert _parse(variant, keep_labels=True).equals(fast)


@pytest.mark.parametrize("path", _shared_files())
def test_shared_reference_scrape(path: Path) -> None:
    text = path.read_text()
    frame = _parse(text)
    assert frame.height > 0
    _assert_agrees_with_prometheus_client(text)
    expectations = SHARED_EXPECTATIONS.get(path.name)
    if expectations is not None:
        expectations(frame)


def _expect_pr736(frame: pl.DataFrame) -> None:
    assert frame.get_column("host").unique().to_list() == ["dcgm-exporter-wwwjh"]
    mig = frame.filter(pl.col("mig_profile").is_not_null()).row(0, named=True)
    assert (mig["mig_profile"], mig["mig_instance_id"]) == ("1g.6gb", "3")
    assert (mig["namespace"], mig["pod"], mig["container"]) == (
        "default",
        "triton-server-f7cb5d77-95xcf",
        "triton-server",
    )
    assert frame.get_column("gpu_model").unique().sort().to_list() == [
        "NVIDIA A30",
        "NVIDIA RTX 2000 Ada Generation",
    ]


def _expect_issue188(frame: pl.DataFrame) -> None:
    assert frame.get_column("metric").to_list()[:3] == [
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_CLOCK",
        "DCGM_FI_DEV_GPU_TEMP",
    ]
    assert "DCGM_FI_DEV_GPU_UTIL" in frame.get_column("metric").to_list()
    assert frame.get_column("pod").null_count() == frame.height


def _expect_issue272(frame: pl.DataFrame) -> None:
    assert frame.get_column("metric").unique().to_list() == ["DCGM_FI_PROF_GR_ENGINE_ACTIVE"]
    assert frame.get_column("gpu_uuid").str.starts_with("GPU-").all()
    assert frame.get_column("mig_profile").to_list() == ["3g.40gb", "4g.40gb", "3g.40gb"]
    assert frame.get_column("pod").null_count() == frame.height


def _expect_issue512(frame: pl.DataFrame) -> None:
    assert frame.get_column("pod").null_count() == 1
    assert frame.get_column("mig_instance_id").to_list() == ["7", "8", "9"]
    assert set(frame.get_column("namespace").drop_nulls()) == {"model-playground-stg"}


def _expect_issue58(frame: pl.DataFrame) -> None:
    assert frame.get_column("gpu_index").to_list() == [0, 1, 2, 3, 4]
    assert frame.select(pl.col("namespace", "pod", "container").null_count()).row(0) == (5, 5, 5)


def _expect_linode(frame: pl.DataFrame) -> None:
    assert set(frame.get_column("pod")) == {"cuda-75454ffb9f-8ljq7"}
    assert set(frame.get_column("container")) == {"cuda"}


SHARED_EXPECTATIONS = {
    "pr736_mixed_models_MIG_lowercase_hostname_excerpt.prom": _expect_pr736,
    "issue188_legacy_1x_names_excerpt.prom": _expect_issue188,
    "issue272_A100_MIG_lowercase_relabelled_excerpt.prom": _expect_issue272,
    "issue512_H100_MIG_with_pod_labels_excerpt.prom": _expect_issue512,
    "issue58_TITANV_x6_empty_pod_labels_excerpt.prom": _expect_issue58,
    "linode_lke_RTX4000Ada_with_pod_labels.prom": _expect_linode,
}


# --- values and DCGM blanks ---------------------------------------------------------------------


def test_readme_blank_sentinel_is_null_and_space_after_comma_is_accepted() -> None:
    frame = _parse((DATA / "dcgm-exporter_README_blank_sentinel_excerpt.prom").read_text())
    assert frame.get_column("value").to_list() == [139.0, 405.0, None]
    assert frame.get_column("gpu_index").to_list() == [0, 0, 0]
    assert set(frame.get_column("gpu_uuid")) == {"GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52"}
    assert frame.select(pl.col("namespace", "pod", "container").null_count()).row(0) == (3, 3, 3)


@pytest.mark.parametrize(
    ("text", "blank"),
    [
        (str(DCGM_INT32_BLANK - 1), False),
        (str(DCGM_INT32_BLANK), True),  # DCGM_INT32_BLANK
        (str(DCGM_INT32_BLANK + 2), True),  # DCGM_INT32_NOT_SUPPORTED
        ("2147483647", True),
        ("2147483648", False),  # a real int64 counter above the int32 range
        (str(DCGM_INT64_BLANK - 1), False),
        (str(DCGM_INT64_BLANK), True),
        ("9223372036854775794", True),  # DCGM_INT64_NOT_SUPPORTED, seen in the exporter README
        ("140737488355328", False),  # an integer text is an int64 field, not a double
        ("140737488355327.000000", False),
        ("140737488355328.000000", True),  # DCGM_FP64_BLANK as "%f"
        ("140737488355331.000000", True),  # DCGM_FP64_NOT_PERMISSIONED
        ("1.44115188075855872e+17", True),
        ("+Inf", False),
        ("NaN", False),
        ("-9223372036854775808", False),
    ],
)
def test_blank_sentinels(text: str, blank: bool) -> None:
    assert is_dcgm_blank(text) is blank
    row = _only_row(f'DCGM_FI_DEV_FB_USED{{gpu="0"}} {text}')
    if blank:
        assert row["value"] is None
    else:
        assert _same_float(row["value"], float(text))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0.0),
        ("-3", -3.0),
        ("68.244000", 68.244),
        ("1e3", 1000.0),
        ("2.5E-07", 2.5e-7),
        ("+Inf", math.inf),
        ("-Inf", -math.inf),
        ("NaN", math.nan),
        ("15152422938", 15152422938.0),
    ],
)
def test_value_spellings(text: str, value: float) -> None:
    assert _same_float(_only_row(f'DCGM_FI_DEV_POWER_USAGE{{gpu="0"}} {text}')["value"], value)


def test_timestamps_are_kept_in_milliseconds() -> None:
    frame = _parse(
        'DCGM_FI_DEV_GPU_UTIL{gpu="0"} 91 1773114089123\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="1"} 92\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="2"}\t93\t-5\n'
    )
    assert frame.get_column("timestamp_ms").to_list() == [1773114089123, None, -5]
    assert frame.get_column("value").to_list() == [91.0, 92.0, 93.0]


@given(
    st.floats(allow_nan=False).flatmap(
        lambda x: st.sampled_from([repr(x), f"{x:f}", f"{x:e}", f"{x:.17g}"])
    )
)
@settings(max_examples=300, deadline=None)
def test_values_match_python_float(text: str) -> None:
    text = {"inf": "+Inf", "-inf": "-Inf"}.get(text, text)
    row = _only_row(f'DCGM_FI_DEV_POWER_USAGE{{gpu="0"}} {text}')
    expected = None if is_dcgm_blank(text) else float(text)
    assert row["value"] == expected


# --- label normalisation ------------------------------------------------------------------------

_GPU = 'gpu="1",UUID="GPU-aaaa",device="nvidia1",modelName="NVIDIA H100 80GB HBM3"'


def test_lowercase_hostname_and_uuid() -> None:
    row = _only_row('DCGM_FI_DEV_GPU_UTIL{gpu="2",uuid="GPU-bbbb",hostname="node-7"} 5')
    assert (row["gpu_index"], row["gpu_uuid"], row["host"]) == (2, "GPU-bbbb", "node-7")


def test_capitalised_labels_win_over_lowercase_ones() -> None:
    row = _only_row(
        'DCGM_FI_DEV_GPU_UTIL{uuid="GPU-low",UUID="GPU-up",hostname="low",Hostname="up"} 5'
    )
    assert (row["gpu_uuid"], row["host"]) == ("GPU-up", "up")


def test_gpu_index_falls_back_to_device() -> None:
    assert _only_row('DCGM_FI_DEV_GPU_UTIL{device="nvidia3",UUID="GPU-c"} 5')["gpu_index"] == 3
    assert _only_row('DCGM_FI_DEV_GPU_UTIL{UUID="GPU-c"} 5')["gpu_index"] is None


def test_mig_profile_and_instance() -> None:
    row = _only_row(
        f'DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{_GPU},GPU_I_PROFILE="1g.10gb",GPU_I_ID="7"}} 0'
    )
    assert (row["mig_profile"], row["mig_instance_id"]) == ("1g.10gb", "7")
    assert row["gpu_model"] == "NVIDIA H100 80GB HBM3"
    row = _only_row(f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{_GPU}}} 0")
    assert (row["mig_profile"], row["mig_instance_id"]) == (None, None)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ('container="main",namespace="llm",pod="vllm-0"', ("llm", "vllm-0", "main")),
        ('container="",namespace="",pod=""', (None, None, None)),
        ("", (None, None, None)),
        ('container_name="c",pod_name="p",pod_namespace="ns"', ("ns", "p", "c")),
        ('pod="",pod_name="p"', (None, "p", None)),
        (
            'pod="exporter-x",exported_pod="vllm-1",namespace="gpu-operator",exported_namespace="llm"',
            ("llm", "vllm-1", None),
        ),
        # The exporter said "no pod"; the unprefixed label is the scrape target's own pod.
        (
            'pod="dcgm-exporter-abc",exported_pod="",exported_container="",container="exporter"',
            (None, None, None),
        ),
    ],
)
def test_pod_labels(labels: str, expected: tuple[str | None, ...]) -> None:
    separator = "," if labels else ""
    row = _only_row(f"DCGM_FI_DEV_GPU_UTIL{{{_GPU}{separator}{labels}}} 1")
    assert (row["namespace"], row["pod"], row["container"]) == expected


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("vks_vGPU_GRID-A100-10C.prom", "GRID A100-10C"),
        ("vks_vGPU_GRID-A100-40C.prom", "GRID A100-40C"),
        ("nvidia_aicr_eks_p5_H100x8_sampled_with_pod_labels.prom", "NVIDIA H100 80GB HBM3"),
    ],
)
def test_gpu_models(name: str, model: str) -> None:
    frame = _parse((DATA / name).read_text())
    assert set(frame.get_column("gpu_model")) == {model}


def test_recorded_pod_labels_on_gpu_zero_only() -> None:
    frame = _parse((DATA / "nvidia_aicr_eks_p5_H100x8_sampled_with_pod_labels.prom").read_text())
    pods = frame.group_by("gpu_index").agg(pl.col("pod").drop_nulls().unique()).sort("gpu_index")
    assert pods.get_column("pod").to_list() == [["vllm-agg-0-vllmdecodeworker-s65j5"]] + [[]] * 7
    assert frame.get_column("host").unique().to_list() == ["gpu-node-1"]


def test_escapes_and_odd_characters_in_label_values() -> None:
    text = (
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",pod="a\\"b",container="c\\\\d",namespace="x\\ny",'
        'modelName="GRID } {A100}, \\"quoted\\"",Hostname="n\\u00e9",UUID="GPU-é",} 7\n'
    )
    row = _only_row(text)
    assert (row["pod"], row["container"], row["namespace"]) == ('a"b', "c\\d", "x\ny")
    assert row["gpu_model"] == 'GRID } {A100}, "quoted"'
    assert row["host"] == "n\\u00e9"  # unknown escapes stay as written
    assert row["gpu_uuid"] == "GPU-é"
    assert row["value"] == 7.0


def test_non_ascii_label_values_on_the_fast_path() -> None:
    frame = _parse(
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",modelName="Grafikkarte ü",Hostname="knoten-ä"} 7 100\n'
        'DCGM_FI_DEV_GPU_UTIL{gpu="1",modelName="显卡",Hostname="节点"} 8 200\n'
    )
    assert frame.select("gpu_model", "host", "value", "timestamp_ms").rows() == [
        ("Grafikkarte ü", "knoten-ä", 7.0, 100),
        ("显卡", "节点", 8.0, 200),
    ]


_LABEL_VALUES = st.text(max_size=12)


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), _LABEL_VALUES))
@settings(max_examples=200, deadline=None)
def test_label_values_round_trip(labels: dict[str, str]) -> None:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    label_text = ",".join(f'{name}="{escape(value)}"' for name, value in labels.items())
    text = f"# HELP DCGM_FI_DEV_GPU_UTIL x\nDCGM_FI_DEV_GPU_UTIL{{{label_text}}} 1\n"
    row = _only_row(text)
    assert {label["name"]: label["value"] for label in row["labels"]} == labels
    assert row["pod"] == (labels.get("pod") or labels.get("pod_name") or None)
    assert [sample.labels for sample in iter_samples(text)] == [labels]
    if prometheus_parser is not None:
        families = prometheus_parser.text_string_to_metric_families(text)
        assert [sample.labels for family in families for sample in family.samples] == [labels]


# --- metric names -------------------------------------------------------------------------------


def test_legacy_names_cover_the_exporters_compatibility_file() -> None:
    with (DATA / "1.x-compatibility-metrics.csv").open() as handle:
        names = [
            row[0].lstrip("# ").strip()
            for row in csv.reader(handle)
            if row and row[0].lstrip("# ").startswith("dcgm_")
        ]
    assert len(names) > 30
    for name in names:
        assert LEGACY_METRIC_NAMES[name].startswith("DCGM_FI_")


def test_legacy_and_relabelled_names_are_canonicalised() -> None:
    frame = _parse(
        'dcgm_gpu_utilization{gpu="0",UUID="GPU-a",Hostname="h"} 3\n'
        'dcgm_fb_used{gpu="0",UUID="GPU-a",Hostname="h"} 1024\n'
        'dcgm_power_usage{gpu="0",UUID="GPU-a",Hostname="h"} 30.982000\n'
        'dcgm_sm_clock{gpu="0",UUID="GPU-a",Hostname="h"} 585\n'
        'dcgm_fi_prof_gr_engine_active{gpu="0",uuid="GPU-a"} 0.5\n'
        'dcgm_fi_dev_fb_reserved{gpu="0",uuid="GPU-a"} 447\n'
        'node_load1{instance="x"} 0.1\n'
    )
    assert frame.get_column("metric").to_list() == [
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_DEV_FB_RESERVED",
        "node_load1",
    ]


# --- bad input ----------------------------------------------------------------------------------

_MIXED = """\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a"} 10

this is not a sample
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b"} ten
DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-c} 12
DCGM_FI_DEV_GPU_UTIL{gpu="3",gpu="3"} 13
DCGM_FI_DEV_GPU_UTIL{gpu="4",UUID="GPU-e"} 14 yesterday
DCGM_FI_DEV_GPU_UTIL{gpu="5",UUID="GPU-f"}
DCGM_FI_DEV_GPU_UTIL{gpu="6",UUID="GPU-g"} 16}
9bad{gpu="7"} 17
DCGM_FI_DEV_GPU_UTIL{gpu="8" UUID="GPU-i"} 18
DCGM_FI_DEV_GPU_UTIL{gpu="9",UUID="GPU-j"} 1_000
   # an indented comment
DCGM_FI_DEV_GPU_UTIL{gpu="10",UUID="GPU-k"} 20
"""


def test_bad_lines_are_reported_and_good_lines_still_parse() -> None:
    result = parse_dcgm_exposition(_MIXED)
    assert result.frame.get_column("gpu_index").to_list() == [0, 10]
    assert result.frame.get_column("value").to_list() == [10.0, 20.0]
    assert [error.line_number for error in result.errors] == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    reasons = {error.line_number: error.reason for error in result.errors}
    assert "not a number" in reasons[6]
    assert "label" in reasons[7]
    assert "appears twice" in reasons[8]
    assert "timestamp" in reasons[9]
    assert result.errors[1] == LineError(6, reasons[6], _MIXED.splitlines()[5])


def test_bad_lines_become_collector_rejects() -> None:
    rejects = parse_dcgm_exposition(_MIXED).rejects("http://node:9400/metrics")
    assert rejects.schema == REJECT_SCHEMA
    assert rejects.height == 10
    assert rejects.get_column("row").to_list()[0] == 5


def test_bad_lines_with_crlf_keep_their_line_numbers() -> None:
    result = parse_dcgm_exposition(_MIXED.replace("\n", "\r\n"))
    assert [error.line_number for error in result.errors] == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert result.frame.get_column("gpu_index").to_list() == [0, 10]


def test_iter_samples_raises_at_the_first_bad_line() -> None:
    with pytest.raises(ExpositionSyntaxError) as raised:
        list(iter_samples(_MIXED))
    assert raised.value.line_number == 5


@pytest.mark.parametrize("text", ["", "\n\n", "# HELP x y\n# TYPE x gauge\n", "\ufeff"])
def test_nothing_to_parse(text: str) -> None:
    result = parse_dcgm_exposition(text)
    assert result.errors == []
    assert result.frame.height == 0
    assert result.frame.schema == SAMPLE_SCHEMA


def test_unlabelled_samples_and_a_byte_order_mark() -> None:
    frame = _parse('\ufeffDCGM_FI_DEV_COUNT 8\nDCGM_FI_DEV_COUNT{} 8 1000\nup{job="dcgm"} 1\n')
    assert frame.select("metric", "value", "timestamp_ms").rows() == [
        ("DCGM_FI_DEV_COUNT", 8.0, None),
        ("DCGM_FI_DEV_COUNT", 8.0, 1000),
        ("up", 1.0, None),
    ]


def test_nul_characters_fall_back_to_the_plain_split() -> None:
    result = parse_dcgm_exposition('a{gpu="0"} 1\nb{gpu="\x00"} 2\nc\x00{gpu="1"} 3\n')
    assert result.frame.get_column("value").to_list() == [1.0, 2.0]
    assert [error.line_number for error in result.errors] == [3]


# --- scrape time --------------------------------------------------------------------------------


def test_scrape_time_fills_its_column_in_utc() -> None:
    when = datetime(2026, 3, 10, 4, 41, 29, tzinfo=timezone(timedelta(hours=2)))
    frame = _parse((DATA / "kops_aws_NVIDIA-L4_scrape1.prom").read_text(), scrape_time=when)
    assert frame.get_column("scrape_time").unique().to_list() == [when.astimezone(UTC)]


def test_naive_scrape_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_dcgm_exposition("", scrape_time=datetime(2026, 1, 1))


# --- the hash join's safety net -----------------------------------------------------------------


def test_label_hash_collision_falls_back_to_joining_on_text() -> None:
    text = (DATA / "nvidia_aicr_eks_p5_H100x8_sampled_with_pod_labels.prom").read_text()
    samples = _split_samples(_split_lines(text))
    colliding = samples.with_columns(pl.lit(42, dtype=pl.UInt64).alias("labels_hash"))
    honest = _attach_label_sets(samples, keep_labels=False).sort("line_number")
    fallback = _attach_label_sets(colliding, keep_labels=False).sort("line_number")
    columns = ["line_number", "gpu_index", "gpu_uuid", "pod", "label_set_ok"]
    assert fallback.select(columns).equals(honest.select(columns))
    assert honest.get_column("gpu_index").n_unique() == 8
