"""Who can reach what: a connectivity table computed offline from the rendered policies.

A small evaluator of the namespace's NetworkPolicies (Kubernetes semantics, plus the VPC CNI agent's
one exception: a pod's own node is always admitted, aws/aws-network-policy-agent#65) and of Istio's
PeerAuthentication and AuthorizationPolicy as ambient mode enforces them: ztunnel on the
destination for policies that select pods (L4: identities, namespaces, ports, source ranges),
the waypoint for policies that target it or a Service (L7: paths too). A caller in the mesh reaches
a pod of a namespace with a waypoint through it (caller -> waypoint:15008 -> pod:15008), where the
pod's ztunnel then sees the waypoint's identity; a caller outside the mesh arrives in plaintext on
the service port, which a STRICT PeerAuthentication refuses. Kubelet probes, rewritten by istio-cni
to 169.254.7.127, are not seen by ztunnel at all.

A cell is "allow" when any route the caller can choose (the Service's name, a pod's address) gets
through; otherwise the first layer that stops the most promising route is named.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.policies import AMBIENT_PROBE_SOURCE, HBONE_PORT, METADATA_ENDPOINT, MONITORING_NAMESPACE

ROOT_NAMESPACE = "istio-system"
NAME_KEY = "kubernetes.io/metadata.name"
L7_FIELDS = ("paths", "notPaths", "methods", "notMethods", "hosts", "notHosts")


@dataclass(frozen=True)
class Endpoint:
    """A caller or callee: a pod (namespace, labels, service account) or a bare address."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str | None = None
    meshed: bool = False
    resident_node: bool = False  # the node the destination pod runs on
    probe: bool = False  # a kubelet probe, rewritten by istio-cni

    @property
    def principal(self) -> str | None:
        if not self.meshed or self.namespace is None or self.service_account is None:
            return None
        return f"cluster.local/ns/{self.namespace}/sa/{self.service_account}"


@dataclass(frozen=True)
class Target:
    """A service of the namespace: its Service name, port, pods, and the path asked for."""

    service: str
    pod: Endpoint
    port: int
    path: str
    method: str = "POST"


def _in(ip: str, cidr: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr, strict=False)


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics; an empty selector selects everything."""
    selector = selector or {}
    if not dict(selector.get("matchLabels") or {}).items() <= dict(labels).items():
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


class Cluster:
    """The rendered manifests of one stack, indexed for evaluation."""

    def __init__(self, items: Iterable[Mapping[str, Any]], extra_namespaces: Mapping[str, Mapping[str, str]]):
        self.items = list(items)
        self.namespaces: dict[str, dict[str, str]] = {
            name: {NAME_KEY: name, **labels} for name, labels in extra_namespaces.items()}
        for item in self.of("Namespace"):
            name = item["metadata"]["name"]
            self.namespaces[name] = {NAME_KEY: name, **(item["metadata"].get("labels") or {})}

    def of(self, kind: str, namespace: str | None = None) -> list[Mapping[str, Any]]:
        return [i for i in self.items if i["kind"] == kind
                and (namespace is None or i["metadata"].get("namespace") == namespace)]

    # ---- NetworkPolicy ------------------------------------------------------------------------

    def _peer_matches(self, peer: Mapping[str, Any], policy_namespace: str, other: Endpoint) -> bool:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            return _in(other.ip, block["cidr"]) and not any(_in(other.ip, c) for c in block.get("except") or [])
        if other.namespace is None:
            return False
        if "namespaceSelector" in peer:
            if not selects(peer["namespaceSelector"], self.namespaces.get(other.namespace, {})):
                return False
        elif other.namespace != policy_namespace:
            return False
        return selects(peer.get("podSelector"), other.labels)

    def _network_allows(self, pod: Endpoint, other: Endpoint, port: int, direction: str) -> bool:
        if pod.namespace is None:
            return True
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        policies = [p for p in self.of("NetworkPolicy", pod.namespace)
                    if selects(p["spec"]["podSelector"], pod.labels)
                    and direction in (p["spec"].get("policyTypes") or ["Ingress"])]
        if not policies:
            return True
        if direction == "Ingress" and other.resident_node:
            return True  # the VPC CNI agent always admits the pod's own node (kubelet probes)
        for policy in policies:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                ports = rule.get("ports")
                if (not peers or any(self._peer_matches(peer, pod.namespace, other) for peer in peers)) and \
                        (not ports or any(p.get("port") == port for p in ports)):
                    return True
        return False

    def network(self, source: Endpoint, destination: Endpoint, port: int) -> bool:
        return self._network_allows(source, destination, port, "Egress") and \
            self._network_allows(destination, source, port, "Ingress")

    # ---- Istio --------------------------------------------------------------------------------

    def mtls_mode(self, pod: Endpoint, port: int) -> str:
        """Effective PeerAuthentication mode: workload, then namespace, then root namespace."""
        candidates = [
            [p for p in self.of("PeerAuthentication", pod.namespace)
             if p["spec"].get("selector") and selects(p["spec"]["selector"], pod.labels)],
            [p for p in self.of("PeerAuthentication", pod.namespace) if not p["spec"].get("selector")],
            [p for p in self.of("PeerAuthentication", ROOT_NAMESPACE) if not p["spec"].get("selector")],
        ]
        for level in candidates:
            for policy in level:
                port_mode = ((policy["spec"].get("portLevelMtls") or {}).get(str(port)) or {}).get("mode")
                mode = port_mode or (policy["spec"].get("mtls") or {}).get("mode")
                if mode and mode != "UNSET":
                    return mode
        return "PERMISSIVE"

    @staticmethod
    def _source_matches(source: Mapping[str, Any], caller: Endpoint) -> bool:
        def any_of(patterns: Sequence[str], value: str | None) -> bool:
            return value is not None and any(
                p == "*" or p == value or (p.endswith("*") and value.startswith(p[:-1]))
                or (p.startswith("*") and value.endswith(p[1:])) for p in patterns)

        checks = {
            "principals": lambda v: any_of(v, caller.principal),
            "notPrincipals": lambda v: not any_of(v, caller.principal),
            "namespaces": lambda v: caller.principal is not None and any_of(v, caller.namespace),
            "notNamespaces": lambda v: not (caller.principal is not None and any_of(v, caller.namespace)),
            "ipBlocks": lambda v: any(_in(caller.ip, c) for c in v),
            "notIpBlocks": lambda v: not any(_in(caller.ip, c) for c in v),
        }
        unknown = set(source) - set(checks)
        if unknown:
            raise NotImplementedError(f"source fields {sorted(unknown)} are not modelled")
        return all(checks[key](value) for key, value in source.items())

    @staticmethod
    def _operation_matches(operation: Mapping[str, Any], target: Target, l7: bool) -> bool | None:
        """True/False, or None when the operation needs L7 and the enforcer is ztunnel."""
        if not l7 and any(key in operation for key in L7_FIELDS):
            return None

        def path_in(patterns: Sequence[str]) -> bool:
            return any(p == target.path or (p.endswith("*") and target.path.startswith(p[:-1])) for p in patterns)

        checks = {
            "ports": lambda v: str(target.port) in [str(p) for p in v],
            "notPorts": lambda v: str(target.port) not in [str(p) for p in v],
            "paths": path_in, "notPaths": lambda v: not path_in(v),
            "methods": lambda v: target.method in v, "notMethods": lambda v: target.method not in v,
        }
        unknown = set(operation) - set(checks)
        if unknown:
            raise NotImplementedError(f"operation fields {sorted(unknown)} are not modelled")
        return all(checks[key](value) for key, value in operation.items())

    def _rule_matches(self, rule: Mapping[str, Any], caller: Endpoint, target: Target, l7: bool,
                      action: str) -> bool:
        if rule.get("when"):
            raise NotImplementedError("'when' conditions are not modelled")
        if rule.get("from") and not any(self._source_matches(f["source"], caller) for f in rule["from"]):
            return False
        for to in rule.get("to") or [None]:
            if to is None:
                return True
            matched = self._operation_matches(to["operation"], target, l7)
            # ztunnel cannot read HTTP: an L7 ALLOW never matches there, an L7 DENY always does.
            if matched is None:
                matched = action == "DENY"
            if matched:
                return True
        return False

    def authorize(self, policies: Sequence[Mapping[str, Any]], caller: Endpoint, target: Target, l7: bool) -> bool:
        """Istio's order: any matching DENY denies; then, if ALLOW policies apply, one must match."""
        def matching(action: str) -> bool:
            return any(self._rule_matches(rule, caller, target, l7, action)
                       for p in policies if p["spec"].get("action", "ALLOW") == action
                       for rule in p["spec"].get("rules") or [])

        if matching("DENY"):
            return False
        allows = [p for p in policies if p["spec"].get("action", "ALLOW") == "ALLOW"]
        return not allows or matching("ALLOW")

    def ztunnel_policies(self, pod: Endpoint) -> list[Mapping[str, Any]]:
        found = []
        for namespace in (pod.namespace, ROOT_NAMESPACE):
            for policy in self.of("AuthorizationPolicy", namespace):
                spec = policy["spec"]
                if spec.get("targetRefs") or spec.get("targetRef"):
                    continue
                if namespace == ROOT_NAMESPACE or selects(spec.get("selector"), pod.labels):
                    found.append(policy)
        return found

    def waypoint_policies(self, namespace: str, gateway: str, service: str | None) -> list[Mapping[str, Any]]:
        found = []
        for policy in self.of("AuthorizationPolicy", namespace):
            for ref in policy["spec"].get("targetRefs") or []:
                if (ref["kind"] == "Gateway" and ref["name"] == gateway) or \
                        (service is not None and ref["kind"] == "Service" and ref["name"] == service):
                    found.append(policy)
                    break
        return found


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    how: str

    def __str__(self) -> str:
        return f"allow ({self.how})" if self.allowed else f"deny: {self.how}"


@dataclass(frozen=True)
class Waypoint:
    """The namespace's waypoint: its pod and the traffic it serves (istio.io/waypoint-for)."""

    pod: Endpoint
    gateway: str
    serves: str  # service, workload, all

    def handles(self, addressed: str) -> bool:
        return self.serves == "all" or self.serves == ("service" if addressed == "service" else "workload")


def evaluate(cluster: Cluster, caller: Endpoint, target: Target, waypoint: Waypoint | None) -> Verdict:
    """Whether ``caller`` gets ``target.path`` answered by ``target.pod``, over the best route it has."""
    pod = target.pod
    if caller.probe:
        ok = cluster.network(caller, pod, target.port)
        return Verdict(ok, "kubelet probe, not seen by ztunnel" if ok else "NetworkPolicy")
    if not caller.meshed:
        if not cluster.network(caller, pod, target.port):
            return Verdict(False, "NetworkPolicy")
        if cluster.mtls_mode(pod, target.port) == "STRICT":
            return Verdict(False, "mTLS STRICT refuses plaintext")
        ok = cluster.authorize(cluster.ztunnel_policies(pod), caller, target, l7=False)
        return Verdict(ok, "plaintext, AuthorizationPolicy on ztunnel" if ok else "AuthorizationPolicy (ztunnel)")
    failures = []
    namespace_labels = cluster.namespaces.get(pod.namespace, {})
    for addressed in ("service", "pod"):
        uses_waypoint = waypoint is not None and waypoint.handles(addressed) \
            and namespace_labels.get("istio.io/use-waypoint") == waypoint.gateway
        if uses_waypoint:
            assert waypoint is not None
            if not cluster.network(caller, waypoint.pod, HBONE_PORT):
                failures.append("NetworkPolicy (to the waypoint)")
                continue
            service = target.service if addressed == "service" else None
            if not cluster.authorize(cluster.waypoint_policies(pod.namespace, waypoint.gateway, service), caller,
                                     target, l7=True):
                failures.append("AuthorizationPolicy (waypoint)")
                continue
            hop = waypoint.pod
        else:
            hop = caller
        if not cluster.network(hop, pod, HBONE_PORT):
            failures.append("NetworkPolicy (HBONE 15008)")
            continue
        if not cluster.authorize(cluster.ztunnel_policies(pod), hop, target, l7=False):
            failures.append("AuthorizationPolicy (ztunnel)")
            continue
        return Verdict(True, f"by {addressed} address" + (", through the waypoint" if uses_waypoint else ""))
    # The service route is what callers use: report why it failed.
    return Verdict(False, failures[0])


def public_address(cidrs: Sequence[str], pod_subnets: Sequence[str]) -> str | None:
    """An address of the client ranges outside every pod subnet (what a real client would have)."""
    for cidr in cidrs:
        rest = [ipaddress.IPv4Network(cidr)]
        for pods in pod_subnets:
            pods_net = ipaddress.IPv4Network(pods)
            rest = [piece for net in rest for piece in
                    (list(net.address_exclude(pods_net)) if pods_net.subnet_of(net) else
                     ([] if net.subnet_of(pods_net) else [net]))]
        if rest:
            return str(min(rest)[1] if min(rest).num_addresses > 1 else min(rest)[0])
    return None


__all__ = ["AMBIENT_PROBE_SOURCE", "METADATA_ENDPOINT", "MONITORING_NAMESPACE", "Cluster", "Endpoint", "Target",
           "Verdict", "Waypoint", "evaluate", "public_address", "selects"]
