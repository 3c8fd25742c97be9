"""``gpucost synth``: deterministic files, a bill the FOCUS collector reads, planted anomalies."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from gpucost.collector.focus_files import read_focus_file
from gpucost.core.contracts import GPU_USAGE, HOST_METRICS
from gpucost.synth import FOCUS_HEADER, MIN_GPUS, SynthSummary, generate

FOCUS_SAMPLE = (
    Path(__file__).resolve().parents[2] / "shared/realdata/focus/focus_1.0_sample_1000.csv"
)
INGESTED_AT = datetime(2024, 10, 2, tzinfo=UTC)
SMALL = {"gpus": 16, "days": 2, "projects": 4, "seed": 42}


def _generate(out_dir: Path, **overrides: Any) -> SynthSummary:
    arguments: dict[str, Any] = {**SMALL, **overrides}
    return generate(out_dir, **arguments)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _truth(summary: SynthSummary) -> dict[str, Any]:
    truth: dict[str, Any] = json.loads(summary.truth_json.read_text())
    return truth


def _billing(summary: SynthSummary) -> pl.DataFrame:
    result = read_focus_file(
        str(summary.billing_csv), summary.billing_csv.read_bytes(), "synth", INGESTED_AT
    )
    assert result.rejects.height == 0, result.rejects.head(5)
    assert result.dropped_columns == []
    return result.frame


@pytest.fixture(scope="module")
def dcgm_fleet(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return _generate(tmp_path_factory.mktemp("dcgm"))


@pytest.fixture(scope="module")
def parquet_fleet(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return _generate(tmp_path_factory.mktemp("parquet"), usage_format="parquet")


@pytest.fixture(scope="module")
def usage(parquet_fleet: SynthSummary) -> pl.DataFrame:
    return pl.read_parquet(parquet_fleet.usage_path)


@pytest.fixture(scope="module")
def inventory(parquet_fleet: SynthSummary) -> pl.DataFrame:
    return pl.read_csv(parquet_fleet.inventory_csv)


# ---- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("usage_format", ["dcgm", "parquet"])
def test_same_arguments_give_identical_bytes(tmp_path: Path, usage_format: str) -> None:
    first = _generate(tmp_path / "a", usage_format=usage_format)
    second = _generate(tmp_path / "b", usage_format=usage_format)
    digests = _digests(tmp_path / "a")
    assert digests == _digests(tmp_path / "b")
    assert len(digests) == len(first.files) == len(second.files)
    # Re-running in place replaces the earlier run's files, byte for byte.
    _generate(tmp_path / "a", usage_format=usage_format)
    assert _digests(tmp_path / "a") == digests


def test_another_seed_gives_another_fleet(tmp_path: Path, dcgm_fleet: SynthSummary) -> None:
    other = _generate(tmp_path, seed=43)
    assert other.billing_csv.read_bytes() != dcgm_fleet.billing_csv.read_bytes()


def test_switching_format_leaves_no_stale_files(tmp_path: Path) -> None:
    _generate(tmp_path)
    summary = _generate(tmp_path, usage_format="parquet")
    assert not (tmp_path / "dcgm").exists()
    assert sorted(_digests(tmp_path)) == sorted(
        str(path.relative_to(tmp_path)) for path in summary.files
    )


def test_truth_does_not_depend_on_the_usage_format(
    dcgm_fleet: SynthSummary, parquet_fleet: SynthSummary
) -> None:
    dcgm_truth, parquet_truth = _truth(dcgm_fleet), _truth(parquet_fleet)
    assert dcgm_truth["arguments"].pop("usage_format") == "dcgm"
    assert parquet_truth["arguments"].pop("usage_format") == "parquet"
    assert dcgm_truth == parquet_truth
    assert dcgm_fleet.billing_csv.read_bytes() == parquet_fleet.billing_csv.read_bytes()


# ---- billing -------------------------------------------------------------------------------


def test_billing_header_is_the_focus_sample_header_without_id(dcgm_fleet: SynthSummary) -> None:
    header = dcgm_fleet.billing_csv.read_text().split("\n", 1)[0]
    assert header == ",".join(f'"{name}"' for name in FOCUS_HEADER)
    if not FOCUS_SAMPLE.exists():
        pytest.skip("shared/realdata is not next to this checkout")
    sample = FOCUS_SAMPLE.read_text().split("\n", 1)[0].replace('"Id",', "")
    assert header == sample


def test_billing_reads_without_rejects_and_totals_match_truth(dcgm_fleet: SynthSummary) -> None:
    billing = _billing(dcgm_fleet)
    truth = _truth(dcgm_fleet)["billing"]
    assert billing.height == truth["rows"] == dcgm_fleet.billing_rows
    billed = billing["BilledCost"].sum()
    effective = billing["EffectiveCost"].sum()
    assert Decimal(str(billed)) == Decimal(truth["billed_cost_total"])
    assert Decimal(str(effective)) == Decimal(truth["effective_cost_total"])
    assert Decimal(str(billed)) == dcgm_fleet.billed_cost_total
    # A fully used Savings Plan moves cost between rows, never in or out of the bill.
    assert billed == effective


def test_money_is_written_as_exact_decimals(dcgm_fleet: SynthSummary) -> None:
    frame = pl.read_csv(dcgm_fleet.billing_csv, infer_schema=False)
    for column in ("BilledCost", "EffectiveCost", "ListCost"):
        values = frame[column].filter(frame[column] != "NULL")
        assert values.str.contains(r"^-?\d+\.\d{11}$").all(), column
    assert "e" not in "".join(frame["BilledCost"].to_list()).lower()


def test_billing_has_every_kind_of_charge(dcgm_fleet: SynthSummary) -> None:
    billing = _billing(dcgm_fleet)
    assert set(billing["ProviderName"]) == {"AWS", "Google Cloud"}
    assert set(billing["ChargeCategory"]) == {"Usage", "Purchase", "Credit"}
    assert set(billing["ServiceCategory"]) >= {"Compute", "Storage", "Networking", "Other"}

    credit = billing.filter(pl.col("ChargeCategory") == "Credit")
    assert credit.height == 1 and credit["BilledCost"][0] < 0

    plan = billing.filter(pl.col("CommitmentDiscountId").is_not_null())
    fee = plan.filter(pl.col("ChargeCategory") == "Purchase")
    assert fee.height and (fee["EffectiveCost"] < fee["BilledCost"]).all()
    covered = plan.filter(pl.col("ChargeCategory") == "Usage")
    assert covered.height and (covered["EffectiveCost"] < covered["ListCost"]).all()

    support = billing.filter(pl.col("ServiceName").str.contains("Support"))
    assert support.height == SMALL["days"] and support["Tags"].is_null().all()

    instances = billing.filter(pl.col("ResourceType") == "instance")
    aws = instances.filter(pl.col("ProviderName") == "AWS")["ResourceId"]
    gcp = instances.filter(pl.col("ProviderName") == "Google Cloud")["ResourceId"]
    assert aws.str.contains(r"^i-[0-9a-f]{17}$").all()
    assert gcp.str.contains(r"^projects/[^/]+/zones/[^/]+/instances/[^/]+$").all()
    hours = instances["ChargePeriodEnd"] - instances["ChargePeriodStart"]
    assert (hours.dt.total_seconds() == 3600).all()
    assert set(instances["ChargeFrequency"]) == {"Usage-Based"}
    assert set(instances["ConsumedUnit"]) == {"Hours"}
    assert instances["Tags"].is_null().any() and instances["Tags"].is_not_null().any()
    tags = instances["Tags"].drop_nulls().str.json_decode()
    assert set(tags.struct.field("project").drop_nulls()) <= set(_truth(dcgm_fleet)["projects"])


def test_instance_prices_are_the_documented_on_demand_prices(dcgm_fleet: SynthSummary) -> None:
    billing = _billing(dcgm_fleet)
    inventory = pl.read_csv(dcgm_fleet.inventory_csv, infer_schema=False)
    prices = dict(zip(inventory["instance_type"], inventory["hourly_list_price"], strict=True))
    assert prices["p5.48xlarge"] == "98.32"
    assert prices["g6.xlarge"] == "0.8048"
    assert prices["a2-highgpu-1g"] == "3.673385"
    listed = billing.filter(pl.col("ResourceType") == "instance").join(
        inventory.select("resource_id", "hourly_list_price"),
        left_on="ResourceId",
        right_on="resource_id",
    )
    assert listed.height == billing.filter(pl.col("ResourceType") == "instance").height
    for billed, listed_price in listed.select("ListUnitPrice", "hourly_list_price").iter_rows():
        assert billed == Decimal(listed_price)
    on_prem = inventory.filter(pl.col("provider") == "On-Prem")["resource_id"]
    assert on_prem.len() and not billing["ResourceId"].is_in(on_prem.implode()).any()


# ---- fleet and planted anomalies -----------------------------------------------------------


def test_fleet_mixes_models_providers_and_roles(
    parquet_fleet: SynthSummary, inventory: pl.DataFrame
) -> None:
    truth = _truth(parquet_fleet)
    assert truth["fleet"]["gpus"] == SMALL["gpus"] == parquet_fleet.gpus
    assert set(truth["fleet"]["gpus_by_model"]) == {"H100", "A100", "L4", "T4"}
    assert set(truth["fleet"]["gpus_by_provider"]) == {"AWS", "Google Cloud", "On-Prem"}
    assert inventory["gpu_count"].sum() == SMALL["gpus"]
    assert set(inventory["role"]) >= {"model-server", "training", "notebook"}
    assert set(truth["projects"]) == {
        "llm-serving",
        "recsys-training",
        "vision-research",
        "speech-asr",
    }
    assert truth["projects"]["llm-serving"]["cost_center"] == "CC-101"
    assert truth["projects"]["speech-asr"]["cost_center"] == "CC-104"


def _anomaly(summary: SynthSummary, kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [a for a in _truth(summary)["anomalies"] if a["kind"] == kind]
    assert found, kind
    return found[0]


def test_idle_gpu_host_is_idle_and_billed(parquet_fleet: SynthSummary, usage: pl.DataFrame) -> None:
    idle = _anomaly(parquet_fleet, "idle_gpu_server")
    rows = usage.filter(pl.col("host") == idle["host"])
    assert rows.height == SMALL["days"] * 24
    assert (rows["util_max"] < 0.05).all()
    assert (rows["mem_used_max_bytes"] == 0).all()
    assert rows["pod"].is_null().all()
    billed = _billing(parquet_fleet).filter(pl.col("ResourceId") == idle["resource_id"])
    assert billed.height == SMALL["days"] * 24 and (billed["BilledCost"] > 0).all()
    host = _truth(parquet_fleet)["hosts"][idle["host"]]
    assert host["used_gpu_seconds"] == 0
    assert host["gpu_cost"] == host["gpu_cost_idle"]


def test_model_on_cpu_in_gpu_host(parquet_fleet: SynthSummary, usage: pl.DataFrame) -> None:
    planted = _anomaly(parquet_fleet, "model_on_cpu_in_gpu_host")
    rows = usage.filter(pl.col("host") == planted["host"])
    assert rows["pod"].is_not_null().all()
    assert (rows["util_max"] == 0).all() and (rows["mem_used_max_bytes"] == 0).all()
    cpu = pl.read_csv(parquet_fleet.host_metrics_csv).filter(
        pl.col("resource_id") == planted["resource_id"]
    )
    assert cpu.height == SMALL["days"] * 24
    assert cpu.select(pl.col("cpu_util_p95").quantile(0.5)).item() > 0.7


def test_cpu_misplaced_model_server(parquet_fleet: SynthSummary, inventory: pl.DataFrame) -> None:
    planted = _anomaly(parquet_fleet, "cpu_misplaced_model_server")
    host = inventory.filter(pl.col("resource_id") == planted["resource_id"]).row(0, named=True)
    assert host["gpu_count"] == 0 and host["role"] == "model-server"
    cpu = pl.read_csv(parquet_fleet.host_metrics_csv)
    assert HOST_METRICS.column_names == cpu.columns
    mine = cpu.filter(pl.col("resource_id") == planted["resource_id"])
    assert mine.select(pl.col("cpu_util_p95").quantile(0.95)).item() > 0.7
    assert (mine["cpu_util_avg"] <= mine["cpu_util_p95"]).all()
    assert (mine["cpu_util_p95"] <= mine["cpu_util_max"]).all()
    others = cpu.filter(pl.col("resource_id") != planted["resource_id"])
    assert others.select(pl.col("cpu_util_p95").min()).item() < 0.7  # GPU servers' CPUs rest


def test_oversized_gpu(parquet_fleet: SynthSummary, usage: pl.DataFrame) -> None:
    planted = _anomaly(parquet_fleet, "oversized_gpu")
    rows = usage.filter(pl.col("host") == planted["host"])
    assert (rows["mem_used_max_bytes"] < rows["mem_total_bytes"] / 2).all()
    assert rows.select(pl.col("util_avg").mean()).item() < 0.3


def test_training_bursts_and_diurnal_serving(
    parquet_fleet: SynthSummary, usage: pl.DataFrame
) -> None:
    hosts = _truth(parquet_fleet)["hosts"]
    training = [h for h, e in hosts.items() if e["pattern"] == "training"]
    serving = [h for h, e in hosts.items() if e["pattern"] == "diurnal"]
    assert training and serving
    train = usage.filter(pl.col("host") == training[0])
    assert (train["util_avg"] > 0.8).any() and (train["util_avg"] == 0).any()
    serve = usage.filter(pl.col("host") == serving[0], pl.col("gpu_index") == 0)
    by_hour = serve.group_by(pl.col("hour").dt.hour()).agg(pl.col("util_avg").mean())
    assert by_hour.select(pl.col("util_avg").max() > 2 * pl.col("util_avg").min()).item()


def test_mig_slices_and_time_sliced_gpu_are_shared_by_projects(
    parquet_fleet: SynthSummary, usage: pl.DataFrame
) -> None:
    shared = {s["kind"]: s for s in _truth(parquet_fleet)["shared_gpus"]}
    mig = usage.filter(pl.col("host") == shared["mig"]["host"])
    assert set(mig["mig_profile"]) == {"3g.40gb", "2g.20gb", "1g.10gb"}
    assert mig["gpu_uuid"].str.starts_with("MIG-").all()
    slice_projects = {s["project"] for s in shared["mig"]["slices"]} - {None}
    assert len(slice_projects) >= 2

    sliced = usage.filter(pl.col("host") == shared["time-sliced"]["host"])
    per_hour = sliced.group_by("hour", "gpu_uuid").agg(
        pl.col("pod").n_unique().alias("pods"),
        pl.col("namespace").n_unique().alias("namespaces"),
        pl.col("util_max").n_unique().alias("util_max_values"),
        pl.col("util_max").max(),
        pl.col("gpu_seconds_held").sum(),
    )
    assert (per_hour["pods"] == 2).all() and (per_hour["namespaces"] == 2).all()
    # Each pod's series carries the device's utilisation, as dcgm-exporter writes it; the two
    # pods hold the GPU's hour between them.
    assert (per_hour["util_max_values"] == 1).all() and (per_hour["util_max"] <= 1.0).all()
    assert (per_hour["gpu_seconds_held"] == 3600.0).all()
    projects = {p["project"] for p in shared["time-sliced"]["pods"]}
    assert len(projects) == 2


def test_namespaces_start_with_their_project(usage: pl.DataFrame) -> None:
    namespaces = usage["namespace"].drop_nulls().unique()
    projects = ("llm-serving", "recsys-training", "vision-research", "speech-asr")
    assert all(any(ns.startswith(f"{p}-") for p in projects) for ns in namespaces)


def test_roster_splits_people_over_projects(parquet_fleet: SynthSummary) -> None:
    roster = pl.read_csv(parquet_fleet.roster_csv, infer_schema=False)
    assert roster.columns == [
        "person_id",
        "name",
        "project",
        "fraction",
        "start",
        "end",
        "cost_center",
    ]
    totals = roster.group_by("person_id").agg(pl.col("fraction").cast(pl.Float64).sum())
    assert (totals["fraction"] == 1.0).all()
    assert (roster["fraction"] == "0.5").any()
    assert roster["cost_center"].str.contains(r"^CC-1\d\d$").all()


# ---- gpu_usage and truth -------------------------------------------------------------------


def test_parquet_usage_conforms_to_the_contract(
    parquet_fleet: SynthSummary, usage: pl.DataFrame
) -> None:
    GPU_USAGE.validate(usage, "synth")
    assert usage.height == parquet_fleet.usage_rows
    assert usage["util_avg"].is_between(0, 1).all() and usage["util_max"].is_between(0, 1).all()
    assert (usage["util_avg"] <= usage["util_max"]).all()
    assert (usage["mem_used_max_bytes"] <= usage["mem_total_bytes"]).all()
    assert usage["project"].is_null().all()  # resolved by the allocator's rules


def test_truth_follows_from_the_generated_rows(
    parquet_fleet: SynthSummary, usage: pl.DataFrame, inventory: pl.DataFrame
) -> None:
    """Recompute used/held GPU-seconds and usage-basis cost from the files alone."""
    truth = _truth(parquet_fleet)
    projects = list(truth["projects"])
    fraction = (
        pl.when(pl.col("mig_profile").is_null())
        .then(1.0)
        .otherwise(pl.col("mig_profile").str.slice(0, 1).cast(pl.Float64) / 7)
    )
    project = pl.lit(None, pl.String)
    for name in projects:
        project = (
            pl.when(pl.col("namespace").str.starts_with(f"{name}-"))
            .then(pl.lit(name))
            .otherwise(project)
        )
    rows = usage.with_columns(
        fraction.alias("fraction"),
        project.alias("owner"),
        pl.col("pod").count().over("hour", "gpu_uuid").clip(lower_bound=1).alias("pods"),
    ).with_columns(
        # A time-sliced GPU's util_avg is the device's: its pods split it.
        (
            pl.col("util_avg") * pl.col("seconds_observed") * pl.col("fraction") / pl.col("pods")
        ).alias("used"),
        (pl.col("seconds_observed") * pl.col("fraction") / pl.col("pods")).alias("held"),
    )
    # The rollup's share columns say the same, row by row (rows with a pod).
    differences = rows.filter(pl.col("pod").is_not_null()).select(
        (pl.col("used") - pl.col("gpu_seconds_busy") * pl.col("fraction")).abs().max(),
        (pl.col("held") - pl.col("gpu_seconds_held") * pl.col("fraction")).abs().max(),
    )
    assert max(differences.row(0)) < 1e-9, differences
    instance_cost = (
        _billing(parquet_fleet)
        .filter(pl.col("ResourceType") == "instance")
        .select(
            pl.col("ResourceId").alias("resource_id"),
            pl.col("ChargePeriodStart").alias("hour"),
            pl.col("EffectiveCost").cast(pl.Float64).alias("cost"),
        )
    )
    costed = (
        rows.join(inventory.select("host", "resource_id", "gpu_count"), on="host")
        .join(instance_cost, on=["resource_id", "hour"], how="left")
        .with_columns(
            (pl.col("cost") * pl.col("used") / (pl.col("gpu_count") * 3600)).alias("used_cost")
        )
    )
    sums: dict[str, dict[str, float]] = defaultdict(dict)
    for name, used, held, cost in (
        costed.filter(pl.col("owner").is_not_null())
        .group_by("owner")
        .agg(pl.col("used").sum(), pl.col("held").sum(), pl.col("used_cost").sum())
        .iter_rows()
    ):
        sums[name] = {"used": used, "held": held, "cost": cost}
    for name, expected in truth["projects"].items():
        got = sums.get(name, {"used": 0.0, "held": 0.0, "cost": 0.0})
        assert got["used"] == pytest.approx(expected["gpu_seconds_used"], rel=1e-9)
        assert got["held"] == pytest.approx(expected["gpu_seconds_held"], rel=1e-9)
        assert got["cost"] == pytest.approx(float(expected["gpu_cost_used"]), rel=1e-9, abs=1e-9)
    idle = rows.group_by("host").agg(pl.col("used").sum())
    for host, used in idle.iter_rows():
        entry = truth["hosts"][host]
        assert used == pytest.approx(entry["used_gpu_seconds"], rel=1e-9, abs=1e-6)
        assert entry["idle_gpu_seconds"] == pytest.approx(
            entry["capacity_gpu_seconds"] - entry["used_gpu_seconds"]
        )
    cost = truth["gpu_cost"]
    assert Decimal(cost["used"]) + Decimal(cost["idle"]) == pytest.approx(Decimal(cost["total"]))


def test_dcgm_files_carry_the_same_numbers_as_the_rollup(
    dcgm_fleet: SynthSummary, usage: pl.DataFrame
) -> None:
    files = sorted(dcgm_fleet.usage_path.rglob("*.prom"))
    hosts = {f.parent.name for f in files}
    assert len(files) == len(hosts) * SMALL["days"] * 24 == dcgm_fleet.dcgm_files
    sample = next(f for f in files if f.parent.name.startswith("ip-") and f.stem.endswith("T14"))
    text = sample.read_text()
    assert text.startswith("# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).\n")
    line = re.compile(r"^(DCGM_FI_\w+)\{(.*)\} (\S+) (\d{13})$")
    utilisation: dict[str, list[int]] = defaultdict(list)
    for text_line in text.splitlines():
        if text_line.startswith("#"):
            continue
        match = line.match(text_line)
        assert match, text_line
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        assert list(labels)[:7] == [
            "gpu",
            "UUID",
            "pci_bus_id",
            "device",
            "modelName",
            "Hostname",
            "DCGM_FI_DRIVER_VERSION",
        ]
        if match.group(1) == "DCGM_FI_DEV_GPU_UTIL":
            utilisation[labels["gpu"]].append(int(match.group(3)))
    hour = datetime.strptime(sample.stem, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    rollup = usage.filter(pl.col("host") == sample.parent.name, pl.col("hour") == hour)
    for gpu, values in utilisation.items():
        assert len(values) == 12
        row = rollup.filter(pl.col("gpu_index") == int(gpu)).row(0, named=True)
        assert row["util_avg"] == pytest.approx(sum(values) / 1200)
        assert row["util_max"] == pytest.approx(max(values) / 100)


def test_mig_exposition_has_instance_labels_and_no_device_utilisation(
    dcgm_fleet: SynthSummary,
) -> None:
    host = next(s for s in _truth(dcgm_fleet)["shared_gpus"] if s["kind"] == "mig")["host"]
    text = next((dcgm_fleet.usage_path / host).glob("*.prom")).read_text()
    assert "DCGM_FI_DEV_GPU_UTIL" not in text
    assert 'GPU_I_PROFILE="3g.40gb",GPU_I_ID="2",Hostname=' in text
    assert text.count("DCGM_FI_PROF_GR_ENGINE_ACTIVE{") == 4 * 12


# ---- sizes ---------------------------------------------------------------------------------


def test_a_64_gpu_fleet_uses_dcgm_and_a_65_gpu_fleet_parquet(tmp_path: Path) -> None:
    small = generate(tmp_path / "64", gpus=64, days=1, projects=6, seed=1)
    assert small.usage_format == "dcgm" and small.gpus == 64
    large = generate(tmp_path / "65", gpus=65, days=1, projects=6, seed=1)
    assert large.usage_format == "parquet" and large.gpus == 65
    models = _truth(small)["fleet"]["gpus_by_model"]
    assert models["H100"] >= 8


def test_smallest_fleet_still_plants_every_scenario(tmp_path: Path) -> None:
    summary = generate(tmp_path, gpus=MIN_GPUS, days=1, projects=2, seed=5)
    truth = _truth(summary)
    assert {a["kind"] for a in truth["anomalies"]} == {
        "idle_gpu_server",
        "cpu_misplaced_model_server",
        "model_on_cpu_in_gpu_host",
        "oversized_gpu",
    }
    assert {s["kind"] for s in truth["shared_gpus"]} == {"mig", "time-sliced"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"gpus": MIN_GPUS - 1}, "gpus"),
        ({"days": 0}, "days"),
        ({"projects": 1}, "projects"),
        ({"seed": -1}, "seed"),
        ({"usage_format": "csv"}, "usage_format"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _generate(tmp_path, **arguments)
