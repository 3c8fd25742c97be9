"""infra/: every file parses, and each says what the code does.

* the IAM policy grants exactly the AWS actions the code calls (derived here from the source with
  ``ast`` and botocore's service models), plus what Athena needs on the caller's behalf;
* the Terraform policy document matches the JSON policy statement by statement;
* the Grafana dashboard and the alert rules only query metrics gpucost exports or
  dcgm-exporter's fields;
* the Kubernetes, systemd, cron and Docker files run real commands with the config they ship.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from botocore import xform_name
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpucost.cli import app
from gpucost.config import load_config
from gpucost.core.manifest import RunManifest, SourceRun
from gpucost.metrics import BusinessFigures, ServeMetrics
from gpucost.scheduler import parse_schedule

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "kubernetes"


# --- parsing every file ----------------------------------------------------------------------


def hcl_structure(text: str) -> str:
    """HCL with comments removed and string contents blanked; raises on unbalanced syntax.

    A structural check, not a full HCL parser: strings (with ``${...}`` interpolation) and
    comments are recognised, and braces, brackets and parentheses must nest.
    """
    out: list[str] = []
    stack: list[str] = []
    pairs = {"}": "{", "]": "[", ")": "("}
    index, line = 0, 1
    while index < len(text):
        char = text[index]
        if char == "\n":
            line += 1
        if char == "#" or text.startswith("//", index):
            end = text.find("\n", index)
            index = len(text) if end == -1 else end
            continue
        if text.startswith("/*", index):
            end = text.find("*/", index)
            assert end != -1, f"unclosed comment at line {line}"
            index = end + 2
            continue
        if char == '"':
            depth, index = 0, index + 1
            while True:
                assert index < len(text) and text[index] != "\n", f"unclosed string, line {line}"
                if text.startswith("${", index):
                    depth, index = depth + 1, index + 2
                    continue
                if text[index] == "}" and depth:
                    depth -= 1
                elif text[index] == "\\":
                    index += 1
                elif text[index] == '"' and not depth:
                    break
                index += 1
            out.append('""')
            index += 1
            continue
        if char in "{[(":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], f"unbalanced {char!r} at line {line}"
        out.append(char)
        index += 1
    assert not stack, f"unclosed {stack[-1]!r}"
    return "".join(out)


def hcl_block(text: str, header: str) -> str:
    """The body of the first block whose header matches the regex ``header``."""
    match = re.search(header + r"\s*\{", text)
    assert match, f"no block {header}"
    depth, index = 1, match.end()
    in_string = False
    while depth:
        char = text[index]
        if char == '"' and text[index - 1] != "\\":
            in_string = not in_string
        elif not in_string and char == "{":
            depth += 1
        elif not in_string and char == "}":
            depth -= 1
        index += 1
    return text[match.end() : index - 1]


def hcl_blocks(text: str, name: str) -> Iterator[str]:
    """Bodies of every block called ``name`` (``statement {``), nested ones included."""
    for match in re.finditer(rf"\b{name}\s*\{{", text):
        yield hcl_block(text[match.start() :], rf"\b{name}")


def hcl_strings(body: str, key: str) -> list[str]:
    """The string values of ``key = "x"`` or ``key = ["x", "y"]`` directly in ``body``."""
    values: list[str] = []
    for match in re.finditer(rf'\b{key}\s*=\s*(\[[^\]]*\]|"[^"]*")', body):
        values += re.findall(r'"([^"]*)"', match.group(1))
    return values


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        assert keyword.isupper(), f"not an instruction: {line}"
        instructions.append((keyword, rest.strip()))
    return instructions


def systemd_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def crontab_jobs(path: Path) -> list[tuple[str, str, str]]:
    """(schedule, user, command) of each job line of an /etc/cron.d file."""
    jobs = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, f"a cron.d line is 5 fields, a user and a command: {line}"
        jobs.append((" ".join(fields[:5]), fields[5], fields[6]))
    return jobs


PARSERS = {
    ".yaml": lambda path: [doc for doc in yaml.safe_load_all(path.read_text()) if doc],
    ".json": lambda path: json.loads(path.read_text()),
    ".tf": lambda path: hcl_structure(path.read_text()),
    ".service": systemd_unit,
    ".timer": systemd_unit,
    ".crontab": crontab_jobs,
    ".dockerignore": lambda path: path.read_text().splitlines(),
    "Dockerfile": lambda path: dockerfile_instructions(path.read_text()),
}


def infra_files() -> list[Path]:
    return sorted(path for path in INFRA.rglob("*") if path.is_file())


@pytest.mark.parametrize("path", infra_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_infra_file_parses(path: Path) -> None:
    parser = PARSERS.get(path.name) or PARSERS.get(path.suffix)
    assert parser is not None, f"{path}: no parser for this kind of file; add one"
    assert parser(path)


# --- AWS: the policy is exactly what the code calls ------------------------------------------

AWS_SOURCES = [
    *sorted((REPO / "collector").glob("aws_*.py")),
    REPO / "collector" / "focus_files.py",  # s3:// globs
    REPO / "gpucost" / "core" / "storage.py",  # an s3:// lake
]

IAM_ACTION_FOR_OPERATION = {
    # Service Authorization Reference: these operations are authorised by another action.
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
}

IMPLIED_ACTIONS = {
    # Athena runs a query with the caller's permissions: it reads table metadata from the Glue
    # Data Catalog and writes (then GetQueryResults reads) the results in S3. Athena User Guide,
    # "Access to the AWS Glue Data Catalog" and "Access to Amazon S3 / query results location".
    "athena:StartQueryExecution": {
        "glue:GetDatabase",
        "glue:GetTable",
        "glue:GetPartitions",
        "s3:GetBucketLocation",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    },
}


def _operations(service: str) -> dict[str, str]:
    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(name): name for name in model.operation_names}


def _returned_strings(tree: ast.AST) -> dict[str, set[str]]:
    """For each function, the string constants its return statements can give (properties)."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and inner.value is not None:
                    found.setdefault(node.name, set()).update(
                        constant.value
                        for constant in ast.walk(inner.value)
                        if isinstance(constant, ast.Constant) and isinstance(constant.value, str)
                    )
    return found


def called_aws_operations(path: Path) -> set[tuple[str, str]]:
    """(boto3 service, API operation) pairs a module calls.

    Services are those the module builds clients for (``.client("s3")``). Operations are
    ``client.<operation>(...)`` calls, ``get_paginator("<operation>")``, and the operation
    named to gpucost's ``AwsClients.call(client, "<operation>")`` / ``.pages(...)`` helpers,
    a constant or a property returning constants (``self.operation``).
    """
    tree = ast.parse(path.read_text())
    services = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "client"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }
    operations = {service: _operations(service) for service in services}
    known = {name for table in operations.values() for name in table}
    returned = _returned_strings(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method, args = node.func.attr, node.args
        if method in ("call", "pages") and len(args) >= 2:
            named = args[1]
            if isinstance(named, ast.Constant) and isinstance(named.value, str):
                names.add(named.value)
            elif isinstance(named, ast.Attribute) and named.attr in returned:
                names.update(returned[named.attr] & known)
            elif isinstance(named, ast.Attribute | ast.Name):
                pytest.fail(f"{path.name}:{node.lineno}: cannot tell which operation is called")
        elif method == "get_paginator" and args and isinstance(args[0], ast.Constant):
            names.add(str(args[0].value))
        elif method in known:
            names.add(method)
    pairs = set()
    for name in names:
        owners = [service for service, table in operations.items() if name in table]
        assert len(owners) == 1, f"{path.name}: {name} belongs to {owners or 'no'} service"
        pairs.add((owners[0], operations[owners[0]][name]))
    return pairs


def derived_iam_actions() -> set[str]:
    actions: set[str] = set()
    for path in AWS_SOURCES:
        for service, operation in called_aws_operations(path):
            action = f"{service}:{operation}"
            actions.add(IAM_ACTION_FOR_OPERATION.get(action, action))
    for trigger, implied in IMPLIED_ACTIONS.items():
        if trigger in actions:
            actions |= implied
    return actions


def policy_statements() -> dict[str, dict[str, Any]]:
    policy = json.loads((INFRA / "aws" / "iam-policy.json").read_text())
    assert policy["Version"] == "2012-10-17"
    statements = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement
        actions = statement["Action"]
        statement["Action"] = [actions] if isinstance(actions, str) else actions
        resources = statement["Resource"]
        statement["Resource"] = [resources] if isinstance(resources, str) else resources
        statements[statement["Sid"]] = statement
    return statements


def test_the_derivation_sees_the_calls_it_should() -> None:
    derived = derived_iam_actions()
    assert {"ce:GetCostAndUsage", "s3:GetObject", "s3:PutObject", "sts:AssumeRole"} <= derived


def test_the_iam_policy_grants_exactly_the_actions_the_code_calls() -> None:
    granted = {action for s in policy_statements().values() for action in s["Action"]}
    derived = derived_iam_actions()
    assert not any("*" in action for action in granted), "no wildcard actions"
    assert granted - derived == set(), "granted but never called: remove from the policy"
    assert derived - granted == set(), "called but not granted: add to infra/aws and terraform"


def test_billing_data_is_read_only_and_scoped_to_its_prefix() -> None:
    statements = policy_statements()
    writes = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
    for sid in ("CurList", "CurRead"):
        statement = statements[sid]
        assert set(statement["Action"]) <= {"s3:GetObject", "s3:ListBucket"}
        assert all(resource != "*" for resource in statement["Resource"])
    assert statements["CurRead"]["Resource"] == ["arn:aws:s3:::example-billing-exports/cur/*"]
    assert statements["CurList"]["Condition"]["StringLike"]["s3:prefix"] == ["cur", "cur/*"]
    for sid, statement in statements.items():
        if writes & set(statement["Action"]):
            assert sid in ("LakeReadWrite", "AthenaResults"), f"{sid} may not write"
            assert all(r.startswith("arn:aws:s3:::example-") for r in statement["Resource"])


def test_terraform_policy_matches_the_json_policy() -> None:
    text = hcl_structure_keep_strings(INFRA / "terraform" / "aws" / "main.tf")
    document = hcl_block(text, r'data\s+"aws_iam_policy_document"\s+"gpucost"')
    from_terraform: dict[str, set[str]] = {}
    for body in [*hcl_blocks(document, "statement"), *hcl_blocks(document, "content")]:
        sids = hcl_strings(body, "sid")
        if sids:
            from_terraform[sids[0]] = set(hcl_strings(body, "actions"))
    from_json = {sid: set(s["Action"]) for sid, s in policy_statements().items()}
    assert from_terraform == from_json


def hcl_structure_keep_strings(path: Path) -> str:
    text = path.read_text()
    hcl_structure(text)  # balanced and well-formed
    return re.sub(r"(?m)^\s*#.*$", "", text)


def test_gcp_roles_are_the_three_the_collectors_need() -> None:
    text = hcl_structure_keep_strings(INFRA / "terraform" / "gcp" / "main.tf")
    roles = dict(
        re.findall(
            r'resource\s+"(google_[a-z_]+_iam_member)"\s+"\w+"\s*\{[^}]*?role\s*=\s*"([^"]+)"',
            text,
            flags=re.S,
        )
    )
    assert roles == {
        "google_project_iam_member": "roles/bigquery.jobUser",
        "google_bigquery_dataset_iam_member": "roles/bigquery.dataViewer",
        "google_billing_account_iam_member": "roles/billing.viewer",
        "google_service_account_iam_member": "roles/iam.workloadIdentityUser",
    }


# --- Grafana and Prometheus: only metrics that exist -----------------------------------------

DCGM_EXPORTER_FIELDS = {
    # dcgm-exporter etc/default-counters.csv and etc/dcp-metrics-included.csv
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL",
    "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_PROF_SM_OCCUPANCY",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_PROF_PIPE_FP64_ACTIVE",
    "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
    "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
    "DCGM_FI_PROF_PCIE_TX_BYTES",
    "DCGM_FI_PROF_PCIE_RX_BYTES",
}

PROMETHEUS_OWN = {"up"}
"""Series Prometheus itself writes for every scrape target."""

PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def known_dcgm_fields() -> set[str]:
    fields = set(DCGM_EXPORTER_FIELDS)
    try:
        from gpucost.collector import dcgm_text
    except ImportError:
        return fields
    return fields | set(getattr(dcgm_text, "LEGACY_METRIC_NAMES", {}).values())


def gpucost_series() -> set[str]:
    """Every series name gpucost's /metrics can show, from a collector with every kind of fact."""
    metrics = ServeMetrics(jobs=lambda: [("nightly", datetime(2024, 10, 2, 2, tzinfo=UTC))])
    manifest = RunManifest(
        run_id="r1",
        command="nightly",
        window_start="2024-09-30",
        window_end_exclusive="2024-10-01",
        config_path=None,
        started_at="2024-10-01T02:00:00+00:00",
        finished_at="2024-10-01T02:01:00+00:00",
        status="complete",
        sources=[SourceRun("s", "roster", rows={"headcount": 3}, duration_s=1.0)],
    )
    metrics.record_manifest(manifest)
    metrics.set_business(
        BusinessFigures(
            date(2024, 9, 30),
            [("yesterday", "p", "cc", "USD", 1.0, 1.0)],
            [("yesterday", "p", "idle", 2.0)],
            [("idle_gpu_server", "p", "USD", 3.0)],
            [("idle_gpu_server", "high", 1)],
        )
    )
    text = generate_latest(metrics.registry).decode()
    return {
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def promql_metric_names(expression: str) -> set[str]:
    """Metric names an expression selects (label matchers, ranges, functions left out)."""
    names = set(re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,", expression))
    if "label_values(" in expression:
        return names
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        if match.group(2) is None and match.group(1) not in PROMQL_WORDS:
            names.add(match.group(1))
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((INFRA / "grafana" / "gpucost-dashboard.json").read_text())
    expressions: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            expressions.extend(target["expr"] for target in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            expressions.append(query["query"])
    return expressions


def test_promql_names_are_extracted_from_real_expressions() -> None:
    expression = (
        'sum by (project, currency) (increase(gpucost_source_runs_total{source=~"$s"}[1d])) / '
        "count(DCGM_FI_DEV_GPU_UTIL == 0) or vector(0) and on(gpu) up"
    )
    assert promql_metric_names(expression) == {
        "gpucost_source_runs_total",
        "DCGM_FI_DEV_GPU_UTIL",
        "up",
    }
    assert promql_metric_names("label_values(gpucost_findings, kind)") == {"gpucost_findings"}


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    exported, dcgm = gpucost_series(), known_dcgm_fields()
    used = {
        name for expression in dashboard_expressions() for name in promql_metric_names(expression)
    }
    assert used - exported - dcgm == set(), "metrics neither gpucost nor dcgm-exporter export"
    assert {name for name in used if name.startswith("gpucost_")} >= {
        "gpucost_project_effective_cost",
        "gpucost_project_gpu_hours",
        "gpucost_estimated_monthly_waste",
        "gpucost_source_last_success_timestamp_seconds",
    }
    assert "DCGM_FI_DEV_GPU_UTIL" in used


def test_the_alert_rules_query_only_metrics_that_exist() -> None:
    (document,) = PARSERS[".yaml"](INFRA / "prometheus" / "alerts.yaml")
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert rules and all(rule["alert"] and rule["expr"] for rule in rules)
    used = {name for rule in rules for name in promql_metric_names(rule["expr"])}
    assert used - gpucost_series() - PROMETHEUS_OWN == set()


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_documents() -> dict[tuple[str, str], dict[str, Any]]:
    documents = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in PARSERS[".yaml"](path):
            if document.get("kind") == "Kustomization":
                continue
            assert document["apiVersion"] and document["metadata"]["name"], path
            assert document["metadata"]["namespace"] == "gpucost", path
            documents[(document["kind"], document["metadata"]["name"])] = document
    return documents


def shipped_config(tmp_path: Path) -> Any:
    configmap = k8s_documents()[("ConfigMap", "gpucost-config")]
    path = tmp_path / "gpucost.toml"
    path.write_text(configmap["data"]["gpucost.toml"])
    return load_config(path, environ={})


def commands() -> set[str]:
    return {command.name or "" for command in app.registered_commands}


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    shipped = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == shipped - {"secret.example.yaml"}


def test_the_configmap_is_a_valid_config_and_matches_the_deployment(tmp_path: Path) -> None:
    config = shipped_config(tmp_path)
    documents = k8s_documents()
    pod = documents[("Deployment", "gpucost-serve")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "serve" and "serve" in commands()
    assert [port["containerPort"] for port in container["ports"]] == [config.serve.metrics_port]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert config.serve.jobstore is not None
    assert mounts[str(Path(config.serve.jobstore).parent)] == "state"
    assert mounts["/etc/gpucost"] == "config"
    secret_file = config.serve.metrics_token.file if config.serve.metrics_token else None
    assert secret_file is not None and mounts[str(Path(secret_file).parent)] == "secrets"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["GPUCOST__SERVE__RUN_NIGHTLY"] == "false", "the CronJob runs the night"
    deployment = documents[("Deployment", "gpucost-serve")]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    for source in config.sources:
        assert source.schedule is not None
        parse_schedule(source.schedule)


def test_pods_run_as_the_image_user_without_privileges() -> None:
    documents = k8s_documents()
    pods = [
        documents[("Deployment", "gpucost-serve")]["spec"]["template"]["spec"],
        documents[("CronJob", "gpucost-nightly")]["spec"]["jobTemplate"]["spec"]["template"][
            "spec"
        ],
    ]
    for pod in pods:
        assert pod["serviceAccountName"] == "gpucost"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes["config"]["configMap"]["defaultMode"] == 0o440
        assert volumes["secrets"]["secret"]["defaultMode"] == 0o400


def test_the_cronjob_runs_one_nightly_at_a_time_in_utc() -> None:
    cronjob = k8s_documents()[("CronJob", "gpucost-nightly")]["spec"]
    assert cronjob["concurrencyPolicy"] == "Forbid"
    assert cronjob["timeZone"] == "Etc/UTC"
    parse_schedule(cronjob["schedule"])
    (container,) = cronjob["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["nightly", "--config", "/etc/gpucost/gpucost.toml"]


def test_the_service_account_carries_cloud_identities() -> None:
    account = k8s_documents()[("ServiceAccount", "gpucost")]
    annotations = account["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert annotations["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    service = k8s_documents()[("Service", "gpucost-metrics")]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


# --- Docker, systemd, cron -------------------------------------------------------------------


def test_the_image_is_multi_stage_slim_and_non_root() -> None:
    instructions = dockerfile_instructions((INFRA / "docker" / "Dockerfile").read_text())
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2 and all(stage.startswith("python:3.11-slim") for stage in stages)
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    assert ("ENTRYPOINT", '["gpucost"]') in final
    assert any(
        k == "RUN" and "pip install" in rest and "'.[gcp]'" in rest for k, rest in instructions
    )
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {
        name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        rest.split()[0]
        for keyword, rest in instructions
        if keyword == "COPY" and "--from" not in rest
    }
    assert packages <= copied, "every package the project installs is copied into the build"
    ignore = (INFRA / "docker" / "Dockerfile.dockerignore").read_text()
    assert all(f"!{package}/" in ignore for package in packages)


def test_systemd_units_run_gpucost_as_its_own_user() -> None:
    nightly = systemd_unit(INFRA / "systemd" / "gpucost-nightly.service")
    serve = systemd_unit(INFRA / "systemd" / "gpucost-serve.service")
    timer = systemd_unit(INFRA / "systemd" / "gpucost-nightly.timer")
    assert nightly["Service"]["Type"] == "oneshot"
    assert " nightly --config " in nightly["Service"]["ExecStart"]
    assert " serve --config " in serve["Service"]["ExecStart"]
    assert serve["Service"]["KillSignal"] == "SIGTERM"
    for unit in (nightly, serve):
        assert unit["Service"]["User"] == "gpucost"
        assert unit["Service"]["NoNewPrivileges"] == "true"
        assert unit["Service"]["ProtectSystem"] == "strict"
    assert timer["Timer"]["OnCalendar"].endswith("UTC")
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == "gpucost-nightly.service"


def test_the_crontab_line_runs_the_nightly_in_utc() -> None:
    path = INFRA / "cron" / "gpucost.crontab"
    assert "CRON_TZ=UTC" in path.read_text().splitlines()
    ((schedule, user, command),) = crontab_jobs(path)
    parse_schedule(schedule)
    assert user == "gpucost"
    assert re.search(r"/gpucost nightly --config /\S+\.toml", command)
