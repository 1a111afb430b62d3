"""Zero-trust NetworkPolicies for the mesh namespace: deny everything, then allow each needed flow.

The VPC CNI network-policy agent (enabled by the cluster) enforces these. Policies are additive:
``default-deny`` selects every pod for ingress and egress, and each ``allow-*`` policy opens one
flow, named after it, so ``kubectl get networkpolicy`` reads as the list of permitted paths.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import ConfigError
from infra.settings import DatabaseSettings, ExposureSettings, ServiceSettings

FEATURES = "customer-features"
SCORING = "customer-scoring"
# Where cluster DNS (CoreDNS, labelled kube-dns for compatibility) runs on EKS.
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}
NAME_LABEL = "app.kubernetes.io/name"
# Istio ambient: HBONE, the mTLS tunnel between ztunnels and waypoints, and the source address
# istio-cni gives kubelet probes so ztunnel can tell them apart (docs/ambient/usage/networkpolicy).
HBONE_PORT = 15008
AMBIENT_PROBE_SOURCE = "169.254.7.127/32"
# Istio labels a waypoint's pods with the Gateway's name (and names their ServiceAccount after it).
WAYPOINT = "waypoint"
WAYPOINT_POD_LABELS = {"gateway.networking.k8s.io/gateway-name": WAYPOINT}
ISTIO_NAMESPACE = "istio-system"
ISTIOD_POD_LABELS = {"app": "istiod"}
ISTIOD_XDS_PORT = 15012
MONITORING_NAMESPACE = "monitoring"
METADATA_ENDPOINT = "169.254.169.254"


def selector_labels(service_id: str) -> dict[str, str]:
    """The labels that pick a service's pods: Deployment, Service, PDB and policies all use these."""
    return {NAME_LABEL: service_id}


def calls_features(service: ServiceSettings) -> bool:
    """Scoring fills missing features from the features service over HTTP."""
    return service.id == SCORING and service.enrichment == "remote"


def _network(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr, strict=False)


def client_blocks(exposure: ExposureSettings, pod_subnets: Sequence[str], public_subnets: Sequence[str]
                  ) -> list[dict[str, Any]]:
    """ipBlocks of the addresses scoring's clients arrive from, never covering a pod.

    Under the AWS VPC CNI every pod takes an address of the (private) node subnets, so a client range
    that contains them, the VPC range typically, would admit every pod of every namespace. Each range
    therefore carries ``except:`` for the pod subnets inside it, and a range that lies inside the pod
    subnets is refused. A LoadBalancer (NLB) and a NodePort both keep the client address
    (``externalTrafficPolicy: Local``). An Ingress (ALB, target type ip) connects from its own
    addresses, in the public subnets when internet-facing; an internal ALB sits in the pod subnets,
    where no address rule can tell it from a pod, so it is refused.
    """
    pods = [_network(cidr) for cidr in pod_subnets]
    if exposure.type == "Ingress":
        if exposure.internal:
            raise ConfigError(
                "config key 'data-mesh:exposure.internal': an internal ALB takes addresses of the pod subnets, so "
                "no NetworkPolicy can admit it without admitting every pod. Fix: pulumi config set --path "
                "'data-mesh:exposure.type' LoadBalancer (an internal NLB keeps the client address)")
        sources = list(public_subnets)
    elif exposure.type == "LoadBalancer":
        # The NLB's health checks come from its own addresses; it is pinned to the public subnets
        # (infra/workload.py), which hold only NAT gateways and load balancers, never a pod.
        sources = [*exposure.client_cidrs, *(s for s in public_subnets if s not in exposure.client_cidrs)]
    else:
        sources = list(exposure.client_cidrs)
    blocks = []
    for cidr in sources:
        network = _network(cidr)
        inside = next((pod for pod in pods if network.subnet_of(pod)), None)
        if inside is not None:
            raise ConfigError(
                f"config key 'data-mesh:exposure.clientCidrs': {cidr} lies inside the pod subnet {inside}: it would "
                "admit pods, not clients. Fix: pulumi config set --path 'data-mesh:exposure.clientCidrs[0]' "
                "<the clients' own range>; pods reach the services through the mesh (data-mesh:consumers)")
        excepted = [str(pod) for pod in pods if pod.subnet_of(network)]
        blocks.append({"cidr": cidr, **({"except": excepted} if excepted else {})})
    return blocks


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _in_namespace(namespace: str, pods: dict[str, Any] | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    if pods is not None:
        peer["podSelector"] = pods
    return peer


def policy_specs(
    *,
    services: Sequence[ServiceSettings],
    exposure: ExposureSettings,
    database: DatabaseSettings | None,
    pod_subnets: Sequence[str],
    public_subnets: Sequence[str] = (),
    consumer_namespaces: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Policy name -> NetworkPolicy spec, for the whole namespace. Pure: tested without Pulumi.

    In the ambient mesh, pod-to-pod traffic is HBONE (mTLS tunnelled on 15008) and goes through the
    namespace's waypoint: callers -> waypoint:15008 -> service pod:15008. Kubelet probes reach the
    pods from 169.254.7.127, the address istio-cni rewrites them to (Istio, docs/ambient/usage/
    networkpolicy). Nothing else is admitted; egress is DNS, HBONE to the waypoint, the database.
    """
    waypoint = {"matchLabels": dict(WAYPOINT_POD_LABELS)}
    ids = [service.id for service in services]
    service_pods = {"matchExpressions": [{"key": NAME_LABEL, "operator": "In", "values": ids}]}
    specs: dict[str, dict[str, Any]] = {
        "default-deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "allow-dns": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [_in_namespace(DNS_NAMESPACE, {"matchLabels": dict(DNS_POD_LABELS)})],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }],
        },
        "allow-ambient-probes": {
            "podSelector": service_pods,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": AMBIENT_PROBE_SOURCE}}],
                         "ports": sorted((_tcp(s.port) for s in services), key=lambda p: p["port"])}],
        },
        "allow-hbone-from-waypoint": {
            "podSelector": service_pods,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": waypoint}], "ports": [_tcp(HBONE_PORT)]}],
        },
    }
    # The waypoint: HBONE in from the callers it judges, HBONE out to the pods, xDS from istiod.
    callers = [{"podSelector": {"matchLabels": selector_labels(s.id)}} for s in services if calls_features(s)]
    callers += [_in_namespace(ns, {}) for ns in sorted({*consumer_namespaces, MONITORING_NAMESPACE})]
    specs["allow-hbone-to-waypoint"] = {
        "podSelector": waypoint,
        "policyTypes": ["Ingress"],
        "ingress": [{"from": callers, "ports": [_tcp(HBONE_PORT)]}],
    }
    specs["allow-waypoint-egress"] = {
        "podSelector": waypoint,
        "policyTypes": ["Egress"],
        "egress": [
            {"to": [{"podSelector": service_pods}], "ports": [_tcp(HBONE_PORT)]},
            {"to": [_in_namespace(ISTIO_NAMESPACE, {"matchLabels": dict(ISTIOD_POD_LABELS)})],
             "ports": [_tcp(ISTIOD_XDS_PORT)]},
        ],
    }
    for service in services:
        pods = {"matchLabels": selector_labels(service.id)}
        if service.id == SCORING:
            specs[f"allow-clients-to-{service.id}"] = {
                "podSelector": pods,
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"ipBlock": block} for block in client_blocks(exposure, pod_subnets,
                                                                                    public_subnets)],
                             "ports": [_tcp(service.port)]}],
            }
        if calls_features(service) and FEATURES in ids:
            specs[f"allow-{service.id}-to-waypoint"] = {
                "podSelector": pods,
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": waypoint}], "ports": [_tcp(HBONE_PORT)]}],
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
    pod_subnets: Sequence[str]
    public_subnets: Sequence[str]
    consumer_namespaces: Sequence[str]
    labels: Mapping[str, str]


class NetworkPolicies(pulumi.ComponentResource):
    """Default-deny plus one allow policy per permitted flow, in one namespace."""

    names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:k8s:NetworkPolicies", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        specs = policy_specs(services=args.services, exposure=args.exposure, database=args.database,
                             pod_subnets=args.pod_subnets, public_subnets=args.public_subnets,
                             consumer_namespaces=args.consumer_namespaces)
        self.policies = [
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy_name}",
                metadata={"name": policy_name, "namespace": args.namespace, "labels": dict(args.labels)},
                spec=spec,
                opts=child,
            )
            for policy_name, spec in specs.items()
        ]
        self.names = pulumi.Output.from_input(sorted(specs))
        self.register_outputs({"names": self.names})
