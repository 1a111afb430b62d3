"""Istio in ambient mode, installed by the program: base, istiod, istio-cni and ztunnel, no sidecars.

The order follows Istio's Helm install guide for ambient (docs/ambient/install/helm): ``base`` (the
CRDs and the cluster roles) first, then ``istiod`` with ``profile=ambient``, then the node agents,
``cni`` with ``profile=ambient`` and ``ztunnel``. The Gateway API CRDs come before istiod too: a
waypoint is a Gateway API ``Gateway`` (class ``istio-waypoint``) and istiod only watches kinds whose
CRDs exist when it starts. Custom resources (the mesh-wide STRICT ``PeerAuthentication`` here, the
namespace's policies in ``infra/authz.py``) wait for istiod, whose webhook validates them.

On EKS, istio-cni runs *chained* behind the AWS VPC CNI: it appends itself to the VPC CNI's
``10-aws.conflist`` in ``/etc/cni/net.d`` instead of replacing it, and the VPC CNI keeps assigning
pod addresses and enforcing NetworkPolicies (Istio, docs/ambient/install/platform-prerequisites:
EKS needs no platform override unless pod security groups run in strict mode, which this
program does not use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.settings import StackSettings

SYSTEM_NAMESPACE = "istio-system"  # also the mesh's root namespace: policies here apply mesh-wide
CHART_REPOSITORY = "https://istio-release.storage.googleapis.com/charts"
# Istio release per Kubernetes version: the latest patch (1.30.4, 2026-08-27) of Istio 1.30, released
# after Kubernetes 1.36. Check the row of docs/releases/supported-releases before changing one; a
# Kubernetes version without a row fails the tests (and the program) instead of guessing.
ISTIO_VERSIONS = {"1.35": "1.30.4", "1.36": "1.30.4"}
# Gateway API CRDs (standard channel) for the waypoint; istioctl analyze IST0176 (Istio 1.30.1)
# flags CRDs older than the release needs.
GATEWAY_API_VERSION = "v1.5.0"
GATEWAY_API_CRDS = (f"https://github.com/kubernetes-sigs/gateway-api/releases/download/"
                    f"{GATEWAY_API_VERSION}/standard-install.yaml")
# istio-cni and ztunnel are node agents (NET_ADMIN, host paths): their namespace cannot be restricted.
SYSTEM_POD_SECURITY = "privileged"


def istio_version(kubernetes_version: str) -> str:
    """The pinned Istio release for a Kubernetes version; never "latest" at run time."""
    try:
        return ISTIO_VERSIONS[kubernetes_version]
    except KeyError:
        raise ValueError(f"no Istio release pinned for Kubernetes {kubernetes_version}: add it to "
                         "infra/istio.py ISTIO_VERSIONS (see Istio's supported-releases table)") from None


def chart_values(settings: StackSettings) -> dict[str, dict[str, Any]]:
    """Helm values per chart: the ambient profile, a chained CNI, istiod kept up during node drains."""
    highly_available = any(service.highly_available for service in settings.services)
    istiod: dict[str, Any] = {"profile": "ambient"}
    if highly_available:
        # Two control-plane replicas so a node drain never leaves ztunnel without certificates.
        istiod["pilot"] = {"autoscaleMin": 2, "replicaCount": 2}
    return {
        "base": {"defaultRevision": "default"},
        "istiod": istiod,
        # chained: append to the VPC CNI's conflist (manifests/charts/istio-cni/values.yaml).
        "cni": {"profile": "ambient", "cni": {"chained": True}},
        "ztunnel": {},
    }


def strict_peer_authentication(namespace: str) -> dict[str, Any]:
    """A PeerAuthentication requiring mTLS; in the root namespace it applies to the whole mesh."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"mtls": {"mode": "STRICT"}},
    }


@dataclass(frozen=True, kw_only=True)
class IstioArgs:
    """The stack's settings (Kubernetes version, availability)."""

    settings: StackSettings


class Istio(pulumi.ComponentResource):
    """The ambient mesh's control plane and node agents, and mesh-wide STRICT mTLS."""

    version: pulumi.Output[str]
    ready: list[pulumi.Resource]  # what the namespace's workloads and custom resources wait for

    def __init__(self, name: str, args: IstioArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:Istio", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        version = istio_version(args.settings.cluster.kubernetes_version)
        values = chart_values(args.settings)

        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={
            "name": SYSTEM_NAMESPACE,
            "labels": {f"pod-security.kubernetes.io/{mode}": SYSTEM_POD_SECURITY for mode in ("enforce", "warn")},
        }, opts=child)
        gateway_api = k8s.yaml.v2.ConfigFile(f"{name}-gateway-api-crds", file=GATEWAY_API_CRDS, opts=child)

        def release(chart: str, release_name: str, after: list[pulumi.Resource]) -> k8s.helm.v3.Release:
            return k8s.helm.v3.Release(
                f"{name}-{chart}",
                name=release_name,
                chart=chart,
                version=version,
                namespace=SYSTEM_NAMESPACE,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY),
                values=values[chart],
                atomic=True,
                cleanup_on_fail=True,
                timeout=600,
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=after)),
            )

        base = release("base", "istio-base", [namespace])
        istiod = release("istiod", "istiod", [base, gateway_api])
        cni = release("cni", "istio-cni", [istiod])
        ztunnel = release("ztunnel", "ztunnel", [istiod])

        mesh_wide = strict_peer_authentication(SYSTEM_NAMESPACE)
        strict = k8s.apiextensions.CustomResource(
            f"{name}-mesh-wide-strict-mtls", api_version=mesh_wide["apiVersion"], kind=mesh_wide["kind"],
            metadata=mesh_wide["metadata"], spec=mesh_wide["spec"],
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[istiod])))

        self.ready = [istiod, cni, ztunnel, gateway_api, strict]
        self.version = pulumi.Output.from_input(version)
        self.register_outputs({"version": self.version})
