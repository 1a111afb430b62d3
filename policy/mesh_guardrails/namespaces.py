"""Namespaces: restricted Pod Security everywhere, and zero trust wherever our pods run.

``restricted_pod_security`` reads each Namespace. ``namespace_zero_trust`` needs the whole stack (a
Deployment is fine or not depending on the policies *of its namespace*), so it is a stack rule:
every namespace that runs a workload must have a default-deny NetworkPolicy (every pod, Ingress and
Egress, no rule) and STRICT mTLS (a namespace-wide PeerAuthentication, or the mesh-wide one in the
root namespace with nothing weaker in the namespace), and be enrolled in the ambient mesh, or its
PeerAuthentication protects nothing.
"""
from collections.abc import Iterable, Mapping, Sequence

from .props import WORKLOAD_TYPES, as_list, dig

NAMESPACE = "kubernetes:core/v1:Namespace"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PEER_AUTHENTICATION = "kubernetes:security.istio.io/v1:PeerAuthentication"
ROOT_NAMESPACE = "istio-system"
# Node agents (istio-cni, ztunnel) need NET_ADMIN and host paths: these may be privileged, nothing else.
NODE_AGENT_NAMESPACES = frozenset({"istio-system", "kube-system"})
ENFORCE = "pod-security.kubernetes.io/enforce"


def restricted_pod_security(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type != NAMESPACE:
        return []
    name = dig(props, "metadata", "name")
    level = dig(props, "metadata", "labels", ENFORCE)
    if level == "restricted" or (name in NODE_AGENT_NAMESPACES and level == "privileged"):
        return []
    return [f"namespace '{name}' does not enforce the restricted Pod Security Standard ({ENFORCE}: "
            f"{level or 'unset'}): label it {ENFORCE}: restricted"]


def _is_default_deny(spec: Mapping) -> bool:
    return dig(spec, "podSelector") in ({}, None) or (
        isinstance(spec.get("podSelector"), Mapping) and not spec["podSelector"].get("matchLabels")
        and not spec["podSelector"].get("matchExpressions"))


def namespace_zero_trust(resources: Iterable[tuple[str, Mapping]], stack: str) -> list[str]:
    """Violations over the whole stack: (resource type, props) of every resource."""
    items: Sequence[tuple[str, Mapping]] = list(resources)
    running = sorted({str(dig(p, "metadata", "namespace") or "default") for t, p in items if t in WORKLOAD_TYPES})
    labels = {dig(p, "metadata", "name"): dig(p, "metadata", "labels") or {} for t, p in items if t == NAMESPACE}

    def deny_all(namespace: str) -> bool:
        for t, p in items:
            spec = p.get("spec") or {}
            if t == NETWORK_POLICY and dig(p, "metadata", "namespace") == namespace and _is_default_deny(spec) \
                    and {"Ingress", "Egress"} <= set(as_list(spec.get("policyTypes"))) \
                    and not as_list(spec.get("ingress")) and not as_list(spec.get("egress")):
                return True
        return False

    def namespace_wide_modes(namespace: str) -> list[str]:
        return [str(dig(p, "spec", "mtls", "mode") or "UNSET") for t, p in items
                if t == PEER_AUTHENTICATION and dig(p, "metadata", "namespace") == namespace
                and not dig(p, "spec", "selector")]

    mesh_wide_strict = "STRICT" in namespace_wide_modes(ROOT_NAMESPACE)
    found = []
    for namespace in running:
        if not deny_all(namespace):
            found.append(f"namespace '{namespace}' runs pods without a default-deny NetworkPolicy: add one "
                         "selecting every pod (podSelector: {}) with policyTypes [Ingress, Egress] and no rules")
        modes = namespace_wide_modes(namespace)
        strict = "STRICT" in modes or (mesh_wide_strict and all(m in ("STRICT", "UNSET") for m in modes))
        if not strict:
            found.append(f"namespace '{namespace}' runs pods without STRICT mTLS: add a PeerAuthentication "
                         "with spec.mtls.mode STRICT in it (or keep the mesh-wide one and nothing weaker)")
        if (labels.get(namespace) or {}).get("istio.io/dataplane-mode") != "ambient":
            found.append(f"namespace '{namespace}' runs pods outside the mesh: label it "
                         "istio.io/dataplane-mode: ambient, or its mTLS policy protects nothing")
    return found
