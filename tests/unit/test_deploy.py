"""Deployment files: manifests build and validate, alerts are unit-tested, nothing drifts."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from prometheus_client.metrics import MetricWrapperBase

from pipeline import metrics
from pipeline.deploy import drift
from pipeline.topics import load_topics
from tests import PROJECT_ROOT
from tests.conftest import tool

K8S = PROJECT_ROOT / "k8s"
CRD_KINDS = {"KafkaTopic", "ServiceMonitor", "PrometheusRule"}
KUBERNETES_VERSION = "1.30"


def build(folder: str) -> list[dict[str, Any]]:
    output = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / folder)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def validate(obj: dict[str, Any]) -> None:
    if obj["kind"] in CRD_KINDS:
        schema = orjson.loads((K8S / "schemas" / f"{obj['kind']}.json").read_bytes())
        Draft202012Validator(schema).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_overlay_builds_and_validates(overlay: str) -> None:
    objects = build(f"overlays/{overlay}")
    kinds = {o["kind"] for o in objects}
    assert kinds == {
        "StatefulSet",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    }
    for obj in objects:
        validate(obj)


def test_the_kafka_namespace_gets_the_owned_topics_replicated_for_production() -> None:
    objects = build("kafka")
    assert {o["metadata"]["namespace"] for o in objects} == {"kafka"}
    kafka_topics = [o for o in objects if o["kind"] == "KafkaTopic"]
    for obj in kafka_topics:
        validate(obj)
    owned = {s.name for s in load_topics(PROJECT_ROOT / "topics").specs if s.role != "raw"}
    assert {t["spec"]["topicName"] for t in kafka_topics} == owned  # raw topics are not ours
    assert {
        (t["spec"]["replicas"], t["spec"]["config"]["min.insync.replicas"]) for t in kafka_topics
    } == {(3, "2")}


def test_prod_uses_scram_over_tls_with_the_password_from_a_secret() -> None:
    objects = build("overlays/prod")
    (worker,) = [o for o in objects if o["kind"] == "StatefulSet"]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    password = next(e for e in container["env"] if e["name"] == "WMIWATCH_SASL_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "wmiwatch", "key": "password"}
    settings = next(
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("wmiwatch-settings")
    )["data"]
    assert settings["WMIWATCH_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert settings["WMIWATCH_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert (settings["WMIWATCH_REPLICATION_FACTOR"], settings["WMIWATCH_MIN_INSYNC_REPLICAS"]) == (
        "3",
        "2",
    )
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert worker["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]


def test_monitoring_carries_the_operator_selector_label_and_survives_drains() -> None:
    objects = build("overlays/prod")
    monitoring = [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {o["kind"] for o in monitoring} == {"ServiceMonitor", "PrometheusRule"}
    assert {o["metadata"]["labels"]["release"] for o in monitoring} == {"kube-prometheus-stack"}
    bases = (K8S / "base").rglob("*.yaml")
    assert sum(p.read_text().count("value: kube-prometheus-stack") for p in bases) == 1
    (budget,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    (worker,) = [o for o in objects if o["kind"] == "StatefulSet"]
    spread = worker["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    dashboard = next(o for o in objects if o["metadata"]["name"].startswith("wmiwatch-dashboard"))
    assert dashboard["metadata"]["name"] == "wmiwatch-dashboard"  # no hash: changes replace it
    assert dashboard["metadata"]["annotations"]["grafana_folder"] == "wmiwatch"


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = orjson.loads((K8S / "grafana" / "wmiwatch-dashboard.json").read_bytes())
    return [(panel["title"], t) for panel in dashboard["panels"] for t in panel["targets"]]


def test_the_dashboard_filters_by_namespace_and_pod_with_distinct_readable_legends() -> None:
    dashboard = orjson.loads((K8S / "grafana" / "wmiwatch-dashboard.json").read_bytes())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "pod"} <= variables
    for panel in dashboard["panels"]:
        legends = [t["legendFormat"] for t in panel["targets"]]
        assert len(set(legends)) == len(legends), panel["title"]
        for target in panel["targets"]:
            selectors = re.findall(r"\b(?:wmiwatch|process)_\w+(\{[^}]*\})?", target["expr"])
            assert all('namespace="$namespace", pod=~"$pod"' in s for s in selectors), target
            assert target["legendFormat"] != "__auto"
            if "by (rule" in target["expr"]:  # ids are UUIDs: legends name the rule
                assert "{{rule_name}}" in target["legendFormat"]
                assert "group_left (rule_name)" in target["expr"]


def test_every_alert_has_a_runbook_section_and_firing_and_quiet_tests() -> None:
    alerts = yaml.safe_load((K8S / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    tests = yaml.safe_load((K8S / "prometheus" / "alerts_test.yml").read_text())["tests"]
    cases = {(c["alertname"], bool(c["exp_alerts"])) for t in tests for c in t["alert_rule_test"]}
    operations = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    anchors = {h.lower() for h in re.findall(r"^### (\w+)$", operations, re.M)}
    documentation = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    for rule in rules:
        base, anchor = rule["annotations"]["runbook_url"].split("#")
        assert base == documentation["urls"]["Documentation"] + "operations.md"
        assert anchor == rule["alert"].lower() and anchor in anchors
        assert {(rule["alert"], True), (rule["alert"], False)} <= cases, rule["alert"]
    assert any(rule["expr"].startswith("absent(up{") for rule in rules)


def test_generated_files_are_in_sync_with_their_sources() -> None:
    assert drift(PROJECT_ROOT) == []


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    promtool = tool("promtool")
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            [promtool, *command],
            cwd=K8S / "prometheus",
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def exported_metric_names() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
            names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_every_dashboard_and_alert_query_names_an_exported_metric() -> None:
    expressions = [target["expr"] for _, target in dashboard_targets()]
    alerts = yaml.safe_load((K8S / "prometheus" / "alerts.yml").read_text())
    expressions += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    used = {name for expr in expressions for name in re.findall(r"\bwmiwatch_\w+", expr)}
    assert len(used) >= 12
    assert used <= exported_metric_names()


def test_the_dockerfile_lints_clean_and_matches_the_project() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(PROJECT_ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    assert re.findall(r"^FROM python:(3\.\d+)\.\d+-slim-bookworm", dockerfile, re.M) == ["3.11"] * 2
    assert "USER 10001:10001" in dockerfile
    assert 'ENTRYPOINT ["wmiwatch"]' in dockerfile and "wmiwatch" in project["scripts"]
    assert "COPY rules ./rules" in dockerfile and "COPY topics ./topics" in dockerfile  # the wheel
    assert "COPY pyproject.toml README.md LICENSE NOTICE ./" in dockerfile  # license-files
    labels = dict(re.findall(r'org\.opencontainers\.image\.(\w+)="([^"]*)"', dockerfile))
    assert labels["version"] == project["version"]
    assert labels["licenses"] == project["license"] == "Apache-2.0"


def test_the_manifests_run_the_image_the_documented_build_makes() -> None:
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    for overlay in ("dev", "prod"):
        (worker,) = [o for o in build(f"overlays/{overlay}") if o["kind"] == "StatefulSet"]
        assert worker["spec"]["template"]["spec"]["containers"][0]["image"] == f"wmiwatch:{version}"
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert f"# Build: docker build -t wmiwatch:{version} ." in dockerfile
    operations = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    assert f"kustomize edit set image wmiwatch=REGISTRY/wmiwatch:{version}" in operations


def test_the_lock_pins_every_dependency_within_its_range_with_hashes() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    pinned = {
        canonicalize_name(n): Version(v)
        for n, v in re.findall(r"^([\w.-]+)==(\S+) \\$", lock, re.M)
    }
    for dependency in map(Requirement, project["dependencies"]):
        assert dependency.specifier.contains(pinned[canonicalize_name(dependency.name)]), dependency
    assert lock.count("==") == len(pinned) and lock.count("--hash=sha256:") >= len(pinned)
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "pip install --no-deps --no-compile ." in dockerfile


def test_only_the_suppressions_principal_may_write_suppressions() -> None:
    users = {o["metadata"]["name"]: o for o in build("kafka") if o["kind"] == "KafkaUser"}

    def rights(user: str) -> dict[str, set[str]]:
        acls = users[user]["spec"]["authorization"]["acls"]
        return {
            acl["resource"]["name"]: set(acl["operations"])
            for acl in acls
            if acl["resource"]["type"] == "topic"
        }

    topics = load_topics(PROJECT_ROOT / "topics")
    worker = rights("wmiwatch")
    assert worker["wmiwatch.suppressions"] == {"Read", "Describe"}
    for spec in topics.specs:
        expected = (
            "Write" if spec.role != "raw" and spec.name != "wmiwatch.suppressions" else "Read"
        )
        assert expected in worker[spec.name], spec.name
        assert spec.role != "raw" or "Write" not in worker[spec.name]
    assert rights("wmiwatch-suppressions") == {
        "wmiwatch.suppressions": {"Read", "Write", "Describe"}
    }
