"""Config loading: validation errors name the key, env overrides, secrets stay masked."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from gpucost.cli import app
from gpucost.config import SecretRef, StrictModel, load_config, validate_config
from gpucost.core.errors import ConfigError

SAMPLE = Path(__file__).parent / "data" / "focus" / "focus_1.0_sample_1000.csv"

VALID = f"""
[store]
data_dir = "data"
out_dir = "out"

[[sources]]
name = "finance-focus"
kind = "focus-files"
path = "{SAMPLE}"
schedule = "0 3 * * *"

[[projects]]
name = "llm-serving"
cost_center = "CC-104"
match = {{ tags = {{ project = "llm-serving" }}, namespaces = ["llm-*"] }}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gpucost.toml"
    path.write_text(text)
    return path


def test_valid_config_is_typed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), environ={})
    assert config.store.data_dir == "data"
    assert config.sources[0].name == "finance-focus"
    assert type(config.sources[0]).__name__ == "FocusFilesSettings"
    assert config.projects[0].match.namespaces == ("llm-*",)
    assert config.nightly.lookback_days == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID.replace('out_dir = "out"', 'out_dir = "out"\nouts = 1'), "store.outs: unknown key"),
        (VALID + "\n[nightly]\nlookbak_days = 2\n", "nightly.lookbak_days: unknown key"),
        (
            VALID.replace('schedule = "0 3 * * *"', 'schedule = "0 3 * * *"\npaht = "x"'),
            "sources[0] (finance-focus).paht: unknown key",
        ),
        (VALID + "\nextra_section = 1\n", "extra_section: unknown key"),
        (
            VALID.replace("namespaces", "namespacez"),
            "projects.0.match.namespacez: unknown key",
        ),
    ],
)
def test_unknown_keys_are_named(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_pods_only_project_rule_is_accepted(tmp_path: Path) -> None:
    text = VALID.replace('namespaces = ["llm-*"]', 'pods = ["vllm-*"]').replace(
        'tags = { project = "llm-serving" }, ', ""
    )
    config = load_config(write(tmp_path, text), environ={})
    assert config.projects[0].match.pods == ("vllm-*",)
    assert not config.projects[0].match.tags


def test_an_empty_project_match_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('{ tags = { project = "llm-serving" }, namespaces = ["llm-*"] }', "{}")
    with pytest.raises(ConfigError, match=r"projects\.0\.match: .*accounts, hosts, pods"):
        load_config(write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('gpu_basis = "requests"', "allocation.gpu_basis: Input should be 'usage', 'allocation'"),
        ("shared_weights = { a = -1 }", "allocation.shared_weights.a: Input should be greater"),
        ('shared = "weights"', 'allocation: shared = "weights" needs shared_weights'),
        ('owner_tag_key = ""', "allocation.owner_tag_key: String should have at least 1"),
        ("idel = 1", "allocation.idel: unknown key"),
    ],
)
def test_allocation_policy_is_checked_with_the_config(
    tmp_path: Path, section: str, expected: str
) -> None:
    # The [allocation] section is the allocator's own AllocationPolicy, validated once here.
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, f"{VALID}\n[allocation]\n{section}\n"), environ={})
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("{ idle_hours_min = 3 }", "reports.thresholds.idle_hours_min: unknown key"),
        ('{ idle_min_hours = "12" }', "reports.thresholds.idle_min_hours: Input should be a valid"),
        ("{ idle_util = 5 }", "reports.thresholds.idle_util: Input should be less than or equal"),
    ],
)
def test_finding_thresholds_are_typed(tmp_path: Path, table: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, f"{VALID}\n[reports]\nthresholds = {table}\n"), environ={})
    assert expected in str(raised.value)


def test_finding_thresholds_keep_their_defaults(tmp_path: Path) -> None:
    text = f"{VALID}\n[reports]\nthresholds = {{ idle_min_hours = 12, severity_high = 500 }}\n"
    thresholds = load_config(write(tmp_path, text), environ={}).reports.thresholds
    assert (thresholds.idle_min_hours, thresholds.severity_high) == (12, Decimal(500))
    assert thresholds.oversized_min_hours == 24


def test_a_missing_source_path_is_left_to_the_run(tmp_path: Path) -> None:
    """Validation checks types and values only; files are looked for when the source runs."""
    missing = str(tmp_path / "nope" / "*.csv")
    config = load_config(write(tmp_path, VALID.replace(str(SAMPLE), missing)), environ={})
    assert config.sources[0].model_dump()["path"] == missing


def test_malformed_toml_names_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, "[store\ndata_dir = 1\n")
    with pytest.raises(ConfigError, match=r"gpucost.toml: malformed TOML: .*line 1"):
        load_config(path, environ={})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/gpucost.toml", environ={})


def test_unknown_kind_lists_known_kinds(tmp_path: Path) -> None:
    text = VALID.replace('kind = "focus-files"', 'kind = "focus-filez"')
    with pytest.raises(ConfigError, match=r"unknown source kind 'focus-filez'; known kinds: .*"):
        load_config(write(tmp_path, text), environ={})


def test_duplicate_source_names(tmp_path: Path) -> None:
    source = VALID[VALID.index("[[sources]]") : VALID.index("[[projects]]")]
    with pytest.raises(ConfigError, match="source name 'finance-focus' is used twice"):
        load_config(write(tmp_path, VALID + source), environ={})


def test_env_overrides_section_and_source(tmp_path: Path) -> None:
    environ = {
        "GPUCOST__STORE__DATA_DIR": "s3://lake/gpucost",
        "GPUCOST__NIGHTLY__LOOKBACK_DAYS": "7",
        "GPUCOST__SOURCES__FINANCE_FOCUS__ENABLED": "false",
        "UNRELATED": "x",
    }
    config = load_config(write(tmp_path, VALID), environ=environ)
    assert config.store.data_dir == "s3://lake/gpucost"
    assert config.nightly.lookback_days == 7
    assert config.sources[0].enabled is False


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("GPUCOST__SOURCES__NOPE__PATH", "no source named like 'nope'"),
        ("GPUCOST__STORE", "overrides are GPUCOST__<SECTION>__<KEY>"),
        ("GPUCOST__STORE__DATADIR", "store.datadir: unknown key"),
    ],
)
def test_bad_env_overrides_are_named(tmp_path: Path, variable: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, VALID), environ={variable: "x"})


class WithSecret(StrictModel):
    token: SecretStr


def test_secret_refs_resolve_and_stay_masked(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("s3cr3t-from-file\n")
    from_env = SecretRef(env="SLACK_WEBHOOK_URL").resolve({"SLACK_WEBHOOK_URL": "https://hooks/x"})
    from_file = SecretRef(file=str(secret_file)).resolve({})
    assert from_env.get_secret_value() == "https://hooks/x"
    assert from_file.get_secret_value() == "s3cr3t-from-file"
    model = WithSecret(token=from_file)
    for rendering in (repr(model), str(model), model.model_dump_json()):
        assert "s3cr3t" not in rendering
    with pytest.raises(ConfigError, match="SLACK_WEBHOOK_URL is not set"):
        SecretRef(env="SLACK_WEBHOOK_URL").resolve({})
    with pytest.raises(ConfigError, match="cannot be read"):
        SecretRef(file=str(tmp_path / "absent")).resolve({})
    with pytest.raises(ValueError, match="exactly one of"):
        SecretRef()


def test_sources_must_be_tables() -> None:
    with pytest.raises(ConfigError, match="array of tables"):
        validate_config({"sources": {"name": "x"}})
    with pytest.raises(ConfigError, match=r"sources\[0\] \(x\): missing key `kind`"):
        validate_config({"sources": [{"name": "x"}]})


def test_a_config_without_sources_is_refused(tmp_path: Path) -> None:
    """Without a source every night would 'succeed' with empty exports."""
    config = tmp_path / "gpucost.toml"
    config.write_text(VALID[: VALID.index("[[sources]]")] + VALID[VALID.index("[[projects]]") :])
    with pytest.raises(ConfigError, match=r"no \[\[sources\]\]: gpucost needs at least one source"):
        load_config(config, environ={})
    result = CliRunner().invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert "no [[sources]]" in result.output
