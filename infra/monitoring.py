"""Monitoring of the services: ServiceMonitors and PrometheusRules for a Prometheus Operator the
stack says is there (``data-mesh:monitoring.prometheusOperator``), and the CloudWatch
observability EKS add-on that ships the pods' stdout, the query records, to CloudWatch Logs
(``data-mesh:monitoring.cloudwatchObservability``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.policies import selector_labels
from infra.settings import StackSettings

# kube-prometheus-stack's Prometheus selects ServiceMonitors and PrometheusRules by the label
# release=<its Helm release> (values.yaml: serviceMonitorSelectorNilUsesHelmValues: true,
# ruleSelectorNilUsesHelmValues: true); without it they are silently ignored.
PROMETHEUS_RELEASE_LABEL = "release"
DEFAULT_PROMETHEUS_RELEASE = "kube-prometheus-stack"
# amazon-cloudwatch-observability: Pod Identity from add-on 3.1.0 (CloudWatch docs, "Quick start
# with the Amazon CloudWatch Observability EKS add-on"); its agent's service account is fixed.
CLOUDWATCH_ADDON = "amazon-cloudwatch-observability"
CLOUDWATCH_ADDON_VERSION = "v6.2.0-eksbuild.1"
CLOUDWATCH_SERVICE_ACCOUNT = "cloudwatch-agent"
CLOUDWATCH_POLICY = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"
DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "apinode.json"
# kube-prometheus-stack's Grafana sidecar loads ConfigMaps with this label (its values.yaml:
# sidecar.dashboards.label); searchNamespace must include the services' namespace.
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"
P99_OBJECTIVE_SECONDS = 0.05
ERROR_RATIO_OBJECTIVE = 0.01


def service_monitor_spec(service_id: str, namespace: str) -> dict[str, Any]:
    """Scrape the service's ``http`` port at /metrics, every pod behind its Service.

    honorLabels: the operator adds the target labels ``endpoint`` (the port name, "http") and
    ``service`` (prometheus-operator, pkg/prometheus/promcfg.go); without it they would replace
    the runtime's own ``endpoint`` ("high-spender/predict") and ``service`` labels, moved to
    ``exported_*``, and every rule and panel grouping by endpoint would see "http".
    """
    return {
        "selector": {"matchLabels": selector_labels(service_id)},
        "namespaceSelector": {"matchNames": [namespace]},
        "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s",
                       "honorLabels": True}],
    }


def _rule(alert: str, expr: str, duration: str, severity: str, summary: str) -> dict[str, Any]:
    return {"alert": alert, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary, "runbook": "docs/operations.md"}}


def prometheus_rule_spec(namespace: str) -> dict[str, Any]:
    """Error ratio and p99 objectives (per generation), stale data, features unavailable, audit gaps."""
    ns = f'namespace="{namespace}"'
    by = "service, endpoint, generation"
    return {"groups": [
        {"name": "apinode.objectives", "rules": [
            _rule("ApinodeErrorRatioHigh",
                  f'sum by ({by}) (rate(apinode_requests_total{{{ns},status=~"5.."}}[5m])) / '
                  f"sum by ({by}) (rate(apinode_requests_total{{{ns}}}[5m])) > {ERROR_RATIO_OBJECTIVE}",
                  "10m", "page", "More than 1% of answers are 5xx ({{ $labels.endpoint }}, "
                  "generation {{ $labels.generation }})"),
            _rule("ApinodeLatencyP99High",
                  f"histogram_quantile(0.99, sum by (le, {by}) "
                  f"(rate(apinode_request_duration_seconds_bucket{{{ns}}}[5m]))) > {P99_OBJECTIVE_SECONDS}",
                  "15m", "ticket", "p99 latency above 50 ms ({{ $labels.endpoint }}, "
                  "generation {{ $labels.generation }})"),
        ]},
        {"name": "apinode.data", "rules": [
            _rule("ApinodeStaleData", f"max by (service, source) (apinode_source_stale{{{ns}}}) == 1",
                  "10m", "ticket", "{{ $labels.service }} serves stale {{ $labels.source }} data: refreshes fail"),
            _rule("ApinodeFeaturesUnavailable",
                  f'sum by (service) (rate(apinode_errors_total{{{ns},error_type="SourceUnavailable"}}[5m])) > 0',
                  "5m", "page", "{{ $labels.service }} answers 503: a data source or customer-features is down"),
            _rule("ApinodeNotReady", f"min by (service) (apinode_ready{{{ns}}}) == 0", "10m", "ticket",
                  "a pod of {{ $labels.service }} has not been ready for 10 minutes"),
        ]},
        {"name": "apinode.audit", "rules": [
            _rule("ApinodeQueryLogGap",
                  f'sum by (service) (increase(apinode_query_log_records_total{{{ns},outcome=~"dropped|failed"}}'
                  "[10m])) > 0", "0m", "ticket",
                  "{{ $labels.service }} lost query audit records (dropped or failed writes)"),
        ]},
    ]}


@dataclass(frozen=True, kw_only=True)
class MonitoringArgs:
    """The stack's settings, the cluster's name, and the common labels of the namespace's objects."""

    settings: StackSettings
    cluster_name: pulumi.Input[str]
    labels: Mapping[str, str]
    # The CloudWatch agent is a DaemonSet that takes its credentials from EKS Pod Identity: it
    # waits for the nodes and the eks-pod-identity-agent add-on.
    cloudwatch_after: Sequence[pulumi.Resource] = ()


class Monitoring(pulumi.ComponentResource):
    """ServiceMonitors, PrometheusRule and a scrape NetworkPolicy; the CloudWatch add-on when asked."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:k8s:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        settings, governance = args.settings, args.settings.governance
        namespace = settings.namespace
        if governance.prometheus_operator:
            labels = {**args.labels, PROMETHEUS_RELEASE_LABEL: DEFAULT_PROMETHEUS_RELEASE}
            for service in settings.services:
                k8s.apiextensions.CustomResource(
                    f"{name}-{service.id}-monitor", api_version="monitoring.coreos.com/v1",
                    kind="ServiceMonitor",
                    metadata={"name": service.id, "namespace": namespace, "labels": labels},
                    spec=service_monitor_spec(service.id, namespace), opts=child)
            k8s.apiextensions.CustomResource(
                f"{name}-rules", api_version="monitoring.coreos.com/v1", kind="PrometheusRule",
                metadata={"name": "apinode", "namespace": namespace, "labels": labels},
                spec=prometheus_rule_spec(namespace), opts=child)
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard",
                metadata={"name": "apinode-dashboard", "namespace": namespace,
                          "labels": {**args.labels, GRAFANA_DASHBOARD_LABEL: "1"}},
                data={DASHBOARD.name: DASHBOARD.read_text()}, opts=child)
            # No NetworkPolicy of its own: scrapes come through the mesh (infra/authz.py, policies.py:
            # the waypoint admits HBONE from the monitoring namespace and serves it /metrics).
        if governance.cloudwatch_observability:
            aws_child = pulumi.ResourceOptions(parent=self)
            role = aws.iam.Role(
                f"{name}-cloudwatch", name=f"{settings.name}-cloudwatch-agent", tags=settings.tags,
                assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                    "Action": ["sts:AssumeRole", "sts:TagSession"]}]}),
                opts=aws_child)
            attachment = aws.iam.RolePolicyAttachment(
                f"{name}-cloudwatch", role=role.name, policy_arn=CLOUDWATCH_POLICY, opts=aws_child)
            aws.eks.Addon(
                f"{name}-cloudwatch-observability", cluster_name=args.cluster_name, addon_name=CLOUDWATCH_ADDON,
                addon_version=CLOUDWATCH_ADDON_VERSION, tags=settings.tags,
                pod_identity_associations=[aws.eks.AddonPodIdentityAssociationArgs(
                    role_arn=role.arn, service_account=CLOUDWATCH_SERVICE_ACCOUNT)],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[attachment, *args.cloudwatch_after]))
        self.register_outputs({})
