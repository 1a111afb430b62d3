"""The namespace's mesh policies: STRICT mTLS, a waypoint for L7, AuthorizationPolicies by identity.

Istio ambient enforces policy in two places (docs/ambient/usage/l4-policy, .../usage/waypoint):

- **ztunnel** (L4, on the destination node) enforces policies that *select pods*
  (``spec.selector``): principals, namespaces, ports, source ranges. It cannot read HTTP, and an
  ALLOW rule with paths there fails closed.
- **the waypoint** (an Envoy per namespace, a Gateway API ``Gateway`` of class ``istio-waypoint``)
  enforces policies that *target* it or a Service (``spec.targetRefs``): paths and methods too.

Once traffic goes through the waypoint, the destination's ztunnel sees the *waypoint's* identity,
not the caller's. So each service's pods admit only the waypoint (plus, for customer-scoring, its
client ranges in plaintext: clients outside the mesh cannot speak mTLS), and the waypoint decides
who may call what:

- ``customer-features``: its Service admits ``cluster.local/ns/<ns>/sa/customer-scoring`` and the
  stack's ``data-mesh:consumers``, on every path but ``/metrics``;
- ``/metrics`` of any pod of the namespace: only workloads of the monitoring namespace (a policy on
  the waypoint itself, so pod-addressed scrapes are covered: the waypoint serves ``all`` traffic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.policies import (
    FEATURES,
    HBONE_PORT,
    MONITORING_NAMESPACE,
    SCORING,
    WAYPOINT,
    calls_features,
    selector_labels,
)
from infra.settings import Consumer, ServiceSettings
from infra.workload import KEEP_ALIVE_SECONDS

WAYPOINT_CLASS = "istio-waypoint"
# The waypoint (Envoy) keeps idle upstream connections for 1 hour unless told otherwise (Envoy's
# FAQ, "How do I configure timeouts?": the default idle_timeout is 1 hour); the pods close theirs
# after KEEP_ALIVE_SECONDS. A request the waypoint sends on a connection the pod is closing at that
# moment fails (a 503 to the caller), so the waypoint must close idle connections first.
WAYPOINT_IDLE_SECONDS = KEEP_ALIVE_SECONDS - 5
METRICS_PATH = "/metrics"
TRUST_DOMAIN = "cluster.local"


def principal(namespace: str, service_account: str) -> str:
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def mesh_namespace_labels() -> dict[str, str]:
    """Enrol every pod of the namespace in ambient, and send its traffic through the waypoint."""
    return {"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": WAYPOINT}


def _resource(kind: str, api_version: str, name: str, namespace: str, spec: dict[str, Any],
              labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}


def authorization(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _resource("AuthorizationPolicy", "security.istio.io/v1", name, namespace, {"action": "ALLOW", **spec})


def mesh_resources(*, namespace: str, services: Sequence[ServiceSettings], consumers: Sequence[Consumer], client_blocks: Sequence[str],
                   pod_subnets: Sequence[str]) -> list[dict[str, Any]]:
    """Every custom resource of the namespace's mesh policy, as manifests. Pure: tested without Pulumi.

    ``client_blocks`` are the ranges scoring's clients call from (already without the pod subnets);
    ``pod_subnets`` are excluded again in the L4 rule, so a wider range can never slip in pods.
    """
    by_id = {service.id: service for service in services}
    waypoint_identity = principal(namespace, WAYPOINT)
    resources = [
        _resource("PeerAuthentication", "security.istio.io/v1", "default", namespace,
                  {"mtls": {"mode": "STRICT"}}),
        _resource("Gateway", "gateway.networking.k8s.io/v1", WAYPOINT, namespace, {
            "gatewayClassName": WAYPOINT_CLASS,
            "listeners": [{"name": "mesh", "port": HBONE_PORT, "protocol": "HBONE"}],
        }, labels={"istio.io/waypoint-for": "all"}),
        # On the waypoint itself: every request it carries, service- or pod-addressed.
        authorization("metrics-from-monitoring", namespace, {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": WAYPOINT}],
            "rules": [{"from": [{"source": {"namespaces": [MONITORING_NAMESPACE]}}],
                       "to": [{"operation": {"paths": [METRICS_PATH], "methods": ["GET"]}}]}],
        }),
    ]
    if FEATURES in by_id:
        callers = [principal(namespace, s.id) for s in services if calls_features(s)]
        callers += [consumer.principal for consumer in consumers]
        if callers:
            resources.append(authorization(f"{FEATURES}-callers", namespace, {
                "targetRefs": [{"group": "", "kind": "Service", "name": FEATURES}],
                "rules": [{"from": [{"source": {"principals": callers}}],
                           "to": [{"operation": {"notPaths": [METRICS_PATH]}}]}],
            }))
    for service in services:
        rules: list[dict[str, Any]] = [{"from": [{"source": {"principals": [waypoint_identity]}}]}]
        if service.id == SCORING and client_blocks:
            # Clients outside the mesh arrive in plaintext on the service port, from their own address.
            rules.append({"from": [{"source": {"ipBlocks": list(client_blocks), "notIpBlocks": list(pod_subnets)}}],
                          "to": [{"operation": {"ports": [str(service.port)]}}]})
            resources.append(_resource("PeerAuthentication", "security.istio.io/v1", f"{service.id}-clients",
                                       namespace, {
                                           "selector": {"matchLabels": selector_labels(service.id)},
                                           "mtls": {"mode": "STRICT"},
                                           "portLevelMtls": {str(service.port): {"mode": "PERMISSIVE"}},
                                       }))
        resources.append(_resource("DestinationRule", "networking.istio.io/v1", service.id, namespace, {
            "host": f"{service.id}.{namespace}.svc.cluster.local",
            "trafficPolicy": {"connectionPool": {"http": {"idleTimeout": f"{WAYPOINT_IDLE_SECONDS}s"}}},
        }))
        resources.append(authorization(f"{service.id}-via-waypoint", namespace, {
            "selector": {"matchLabels": selector_labels(service.id)},
            "rules": rules,
        }))
    return resources


@dataclass(frozen=True, kw_only=True)
class MeshPoliciesArgs:
    """What the namespace's mesh policies are derived from."""

    namespace: str
    services: Sequence[ServiceSettings]
    consumers: Sequence[Consumer]
    client_blocks: Sequence[str]
    pod_subnets: Sequence[str]
    labels: Mapping[str, str]


class MeshPolicies(pulumi.ComponentResource):
    """PeerAuthentication, the waypoint and the AuthorizationPolicies of one namespace."""

    names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: MeshPoliciesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:k8s:MeshPolicies", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        items = mesh_resources(namespace=args.namespace, services=args.services,
                               consumers=args.consumers, client_blocks=args.client_blocks,
                               pod_subnets=args.pod_subnets)
        self.resources: list[k8s.apiextensions.CustomResource] = []
        for item in items:
            metadata = {**item["metadata"], "labels": {**args.labels, **item["metadata"].get("labels", {})}}
            self.resources.append(k8s.apiextensions.CustomResource(
                f"{name}-{item['kind'].lower()}-{item['metadata']['name']}",
                api_version=item["apiVersion"], kind=item["kind"], metadata=metadata, spec=item["spec"],
                opts=child))
        self.names = pulumi.Output.from_input(sorted(f"{i['kind']}/{i['metadata']['name']}" for i in items))
        self.register_outputs({"names": self.names})
