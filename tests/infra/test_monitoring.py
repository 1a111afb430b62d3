"""ServiceMonitors and PrometheusRules (when a stack enables the Prometheus Operator), schema-valid
against the operator's CRDs (copied under tests/infra/crds/), and the CloudWatch add-on when asked."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from infra.mocks import run_stack
from infra.render import manifests
from tests.infra.runtime_metrics import exposed_metric_names, used_metric_names

CRDS = Path(__file__).with_name("crds") / "monitoring.coreos.com"
ON = json.dumps({"prometheusOperator": True, "cloudwatchObservability": True})


@functools.cache
def _run(stack: str, monitoring: str | None):
    return run_stack(stack, overrides={"data-mesh:monitoring": monitoring})


def _of_kind(stack: str, kind: str, monitoring: str | None = ON) -> list[dict[str, Any]]:
    return [m for m in manifests(_run(stack, monitoring).resources) if m["kind"] == kind]


def _validate(manifest: dict[str, Any], schema_file: str) -> None:
    schema = json.loads((CRDS / schema_file).read_text())
    # Instance checks only: the CRDs hold Go regular expressions the metaschema check rejects.
    # The copied schemas are strict (additionalProperties: false), like kubernetes-validate --strict.
    jsonschema.Draft7Validator(schema).validate(manifest)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_monitors_and_rules_are_valid_against_the_operator_crds(stack):
    monitors = _of_kind(stack, "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == ["customer-features", "customer-scoring"]
    for monitor in monitors:
        _validate(monitor, "servicemonitor_v1.json")
        assert monitor["spec"]["endpoints"][0]["port"] == "http"
        assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": monitor["metadata"]["name"]}
    (rules,) = _of_kind(stack, "PrometheusRule")
    _validate(rules, "prometheusrule_v1.json")
    alerts = {rule["alert"] for group in rules["spec"]["groups"] for rule in group["rules"]}
    assert {"ApinodeErrorRatioHigh", "ApinodeLatencyP99High", "ApinodeStaleData",
            "ApinodeFeaturesUnavailable", "ApinodeQueryLogGap"} <= alerts


def test_the_schema_check_catches_a_misspelt_field():
    """A field the CRD does not declare is pruned by the API server without a word: caught here."""
    monitor = _of_kind("dev", "ServiceMonitor")[0]
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken, "servicemonitor_v1.json")
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"] = "http"
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken, "servicemonitor_v1.json")


def test_monitors_carry_the_release_label_or_kube_prometheus_stack_ignores_them():
    """kube-prometheus-stack's values.yaml (serviceMonitorSelectorNilUsesHelmValues and
    ruleSelectorNilUsesHelmValues, both true) selects only objects labelled release=<its release>."""
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for manifest in _of_kind("prod", kind):
            assert manifest["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_monitors_honor_the_runtime_labels_or_the_operator_overwrites_endpoint():
    """The operator labels every scraped series endpoint=<port name> and service=<Service name>
    (prometheus-operator pkg/prometheus/promcfg.go); the runtime's endpoint label ("high-spender/
    predict") would become exported_endpoint and the rules' "by endpoint" would group on "http"."""
    for monitor in _of_kind("prod", "ServiceMonitor"):
        assert all(endpoint["honorLabels"] is True for endpoint in monitor["spec"]["endpoints"])


def test_scrapes_come_through_the_mesh_never_in_plaintext_to_the_service_port():
    """Under STRICT mTLS ztunnel refuses plaintext, so a NetworkPolicy opening 8080 to Prometheus would
    only be a hole: the mesh's waypoint admits the monitoring namespace (HBONE) and serves /metrics."""
    policies = {p["metadata"]["name"]: p for p in _of_kind("prod", "NetworkPolicy")}
    sources = policies["allow-hbone-to-waypoint"]["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in [
        {k: v for k, v in s.items() if k == "namespaceSelector"} for s in sources]
    for policy in policies.values():
        for rule in policy["spec"].get("ingress", []):
            namespaces = [s.get("namespaceSelector", {}).get("matchLabels", {}) for s in rule.get("from", [])]
            if {"kubernetes.io/metadata.name": "monitoring"} in namespaces:
                assert {p["port"] for p in rule["ports"]} == {15008}, policy["metadata"]["name"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_nothing_is_declared_unless_the_stack_asks(stack):
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert _of_kind(stack, kind, None) == []
    assert _run(stack, None).of_type("aws:eks/addon:Addon") == [] or all(
        a.inputs.get("addonName") != "amazon-cloudwatch-observability" for a in _run(stack, None).of_type(
            "aws:eks/addon:Addon"))


def test_the_cloudwatch_add_on_ships_the_logs_with_its_own_pod_identity():
    """CloudWatch docs (Quick start with the Amazon CloudWatch Observability EKS add-on): Pod Identity
    from add-on 3.1.0, service account cloudwatch-agent, CloudWatchAgentServerPolicy."""
    run = _run("prod", ON)
    (addon,) = [a for a in run.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] == "amazon-cloudwatch-observability"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+-eksbuild\.\d+", addon.inputs["addonVersion"])
    (association,) = addon.inputs["podIdentityAssociations"]
    assert association["serviceAccount"] == "cloudwatch-agent"
    role = run.one("aws:iam/role:Role", "monitoring-cloudwatch")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(trust["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    attachment = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "monitoring-cloudwatch")
    assert attachment.inputs["policyArn"] == "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"
    # Without the Pod Identity agent the association hands out no credentials: the agent would
    # start and fail to ship anything until it exists.
    (agent,) = [a for a in run.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] == "eks-pod-identity-agent"]
    assert agent.urn in addon.dependencies and attachment.urn in addon.dependencies


def test_every_metric_the_rules_use_is_one_the_runtime_exposes():
    (rules,) = _of_kind("dev", "PrometheusRule")
    used = {name for group in rules["spec"]["groups"] for rule in group["rules"]
            for name in used_metric_names(rule["expr"])}
    assert used and used <= exposed_metric_names(), used - exposed_metric_names()


def test_the_dashboard_ships_to_grafana_when_the_operator_is_there():
    (config,) = [c for c in _of_kind("prod", "ConfigMap") if c["metadata"]["name"] == "apinode-dashboard"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config["data"]["apinode.json"])["uid"] == "apinode-data-mesh"
