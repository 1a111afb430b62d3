"""Zero-trust NetworkPolicies for the mesh namespace: deny everything, then allow each needed flow.

The VPC CNI network-policy agent (enabled by the cluster) enforces these. Policies are additive:
``default-deny`` selects every pod for ingress and egress, and each ``allow-*`` policy opens one
flow, named after it, so ``kubectl get networkpolicy`` reads as the list of permitted paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.settings import DatabaseSettings, ExposureSettings, ServiceSettings

FEATURES = "customer-features"
SCORING = "customer-scoring"
# Where cluster DNS (CoreDNS, labelled kube-dns for compatibility) runs on EKS.
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}


def selector_labels(service_id: str) -> dict[str, str]:
    """The labels that pick a service's pods: Deployment, Service, PDB and policies all use these."""
    return {"app.kubernetes.io/name": service_id}


def calls_features(service: ServiceSettings) -> bool:
    """Scoring fills missing features from the features service over HTTP."""
    return service.id == SCORING and service.enrichment == "remote"


def client_sources(exposure: ExposureSettings, vpc_cidr: str) -> list[str]:
    """Source ranges allowed to reach an exposed pod, as the pod sees them.

    A NodePort forwards through any node (source rewritten to a node address) and an Ingress
    through the load balancer's addresses in the VPC: for those the client ranges are enforced at
    the load balancer or the node security group, and the VPC range is the path the traffic arrives
    by. A LoadBalancer (NLB, IP targets, client IP preserved) shows the client address, but its
    health checks come from the NLB's own addresses in the VPC: without the VPC range every target
    fails them when the clients lie outside it.
    """
    sources = list(exposure.client_cidrs)
    if vpc_cidr not in sources:
        sources.append(vpc_cidr)
    return sources


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def policy_specs(
    *,
    services: Sequence[ServiceSettings],
    exposure: ExposureSettings,
    database: DatabaseSettings | None,
    vpc_cidr: str,
) -> dict[str, dict[str, Any]]:
    """Policy name -> NetworkPolicy spec, for the whole namespace. Pure: tested without Pulumi."""
    specs: dict[str, dict[str, Any]] = {
        "default-deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "allow-dns": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": DNS_NAMESPACE}},
                    "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
                }],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }],
        },
    }
    by_id = {service.id: service for service in services}
    for service in services:
        pods = {"matchLabels": selector_labels(service.id)}
        specs[f"allow-clients-to-{service.id}"] = {
            "podSelector": pods,
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{"ipBlock": {"cidr": cidr}} for cidr in client_sources(exposure, vpc_cidr)],
                "ports": [_tcp(service.port)],
            }],
        }
        if calls_features(service) and FEATURES in by_id:
            features = by_id[FEATURES]
            features_pods = {"matchLabels": selector_labels(FEATURES)}
            # Both ends: egress from the caller and ingress to the callee, each on the callee's port.
            specs[f"allow-{service.id}-to-{FEATURES}"] = {
                "podSelector": pods,
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": features_pods}], "ports": [_tcp(features.port)]}],
            }
            specs[f"allow-{FEATURES}-from-{service.id}"] = {
                "podSelector": features_pods,
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": pods}], "ports": [_tcp(features.port)]}],
            }
        if service.source == "sql":
            if database is None:
                raise ValueError(f"{service.id} reads from SQL but the stack has no database settings")
            specs[f"allow-{service.id}-to-database"] = {
                "podSelector": pods,
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": database.cidr}}], "ports": [_tcp(database.port)]}],
            }
    return specs


@dataclass(frozen=True, kw_only=True)
class NetworkPoliciesArgs:
    """What the namespace's policies are derived from."""

    namespace: pulumi.Input[str]
    services: Sequence[ServiceSettings]
    exposure: ExposureSettings
    database: DatabaseSettings | None
    vpc_cidr: str
    labels: Mapping[str, str]


class NetworkPolicies(pulumi.ComponentResource):
    """Default-deny plus one allow policy per permitted flow, in one namespace."""

    names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:k8s:NetworkPolicies", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        specs = policy_specs(services=args.services, exposure=args.exposure, database=args.database,
                             vpc_cidr=args.vpc_cidr)
        for policy_name, spec in specs.items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy_name}",
                metadata={"name": policy_name, "namespace": args.namespace, "labels": dict(args.labels)},
                spec=spec,
                opts=child,
            )
        self.names = pulumi.Output.from_input(sorted(specs))
        self.register_outputs({"names": self.names})
