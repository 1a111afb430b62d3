"""The cluster's EKS managed add-ons, declared explicitly with pinned versions, in the order they must start.

``eks.Cluster`` would otherwise manage vpc-cni and kube-proxy itself at "most recent" versions
(pulumi/pulumi-eks nodejs/eks/cluster/cluster.ts: ``getAddonVersionOutput({mostRecent: true})``) and
declare no CoreDNS at all with ``skipDefaultNodeGroup``; ``infra/cluster.py`` switches all three off
there (``useDefaultVpcCni``, ``kubeProxyAddonOptions``/``corednsAddonOptions.enabled: false``): one
owner per add-on, never "addon already exists".

Order, on the first `up` and on every version bump (each arrow is a ``depends_on``):
control plane -> vpc-cni, kube-proxy, eks-pod-identity-agent -> node group -> coredns, metrics-server.
DaemonSets go before the nodes (a node turns Ready only once the CNI runs on it); Deployments go after
(created before any node, CoreDNS goes DEGRADED and the add-on create fails).

The VPC CNI's network-policy agent runs in ``strict`` mode: a new pod starts with every connection
denied until its NetworkPolicies are programmed (amazon-vpc-cni-k8s README,
``NETWORK_POLICY_ENFORCING_MODE``, v1.17.1+; the default ``standard`` lets a new pod talk to anything
meanwhile). Strict mode also means every pod that is not host-networked needs a policy: CoreDNS and
metrics-server get theirs here, before they start.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.addon_versions import COREDNS, KUBE_PROXY, METRICS_SERVER, POD_IDENTITY_AGENT, VPC_CNI, addon_version

NETWORK_POLICY_ENFORCING_MODE = "strict"
KUBE_SYSTEM = "kube-system"


def vpc_cni_configuration() -> dict[str, Any]:
    """The vpc-cni add-on's configuration values (its describe-addon-configuration schema)."""
    return {"enableNetworkPolicy": "true", "env": {"NETWORK_POLICY_ENFORCING_MODE": NETWORK_POLICY_ENFORCING_MODE}}


def _port(number: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"port": number, "protocol": protocol}


def system_network_policies(vpc_cidr: str) -> dict[str, dict[str, Any]]:
    """NetworkPolicy specs for the add-on pods that strict mode would otherwise cut off (name -> spec).

    Destinations are by port, not address: under the VPC CNI the policy sees a Service's cluster IP
    (the API server's ``kubernetes`` Service, the VPC resolver) before kube-proxy translates it.
    """
    dns = [_port(53, "UDP"), _port(53)]
    return {
        # Every pod resolves names through CoreDNS; CoreDNS asks the VPC resolver and watches the API.
        "coredns": {
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [*dns, _port(9153)]}],
            "egress": [{"ports": [*dns, _port(443)]}],
        },
        # The API server's aggregation layer calls metrics-server from the control plane's ENIs in the
        # VPC; metrics-server scrapes every kubelet (10250) and talks to the API server (443).
        "metrics-server": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "metrics-server"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": vpc_cidr}}]}],
            "egress": [{"ports": [_port(10250), _port(443)]}],
        },
    }


@dataclass(frozen=True, kw_only=True)
class ClusterAddonsArgs:
    """The cluster the add-ons go on, its Kubernetes version, and how to make the nodes between the phases."""

    cluster_name: pulumi.Input[str]
    kubernetes_version: str
    vpc_cidr: str
    tags: Mapping[str, str]
    provider: k8s.Provider
    # Called once with the add-ons the nodes need first; returns the node group the rest waits for.
    make_nodes: Callable[[Sequence[pulumi.Resource]], pulumi.Resource]


class ClusterAddons(pulumi.ComponentResource):
    """vpc-cni (network policy, strict), kube-proxy, eks-pod-identity-agent, then the nodes, then coredns and
    metrics-server: EKS managed add-ons at the versions pinned for the cluster's Kubernetes version."""

    vpc_cni: aws.eks.Addon
    kube_proxy: aws.eks.Addon
    pod_identity_agent: aws.eks.Addon  # Helm releases whose roles come from EKS Pod Identity wait for it
    coredns: aws.eks.Addon
    metrics_server: aws.eks.Addon  # the HorizontalPodAutoscalers read CPU through it
    nodes: pulumi.Resource

    def __init__(self, name: str, args: ClusterAddonsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:ClusterAddons", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))

        def addon(addon_name: str, after: Sequence[pulumi.Resource] = (),
                  configuration: dict[str, Any] | None = None) -> aws.eks.Addon:
            return aws.eks.Addon(
                f"{name}-{addon_name}",
                cluster_name=args.cluster_name,
                addon_name=addon_name,
                addon_version=addon_version(args.kubernetes_version, addon_name),
                configuration_values=json.dumps(configuration, sort_keys=True) if configuration else None,
                # Adopt a self-managed copy on create; keep our values on update (they are declared here).
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                # Deleting the add-on object must not pull the CNI or DNS out from under running pods.
                preserve=True,
                tags=dict(args.tags),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=list(after))),
            )

        self.vpc_cni = addon(VPC_CNI, configuration=vpc_cni_configuration())
        self.kube_proxy = addon(KUBE_PROXY)
        self.pod_identity_agent = addon(POD_IDENTITY_AGENT)
        self.nodes = args.make_nodes([self.vpc_cni, self.kube_proxy, self.pod_identity_agent])

        in_cluster = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            provider=args.provider, depends_on=[self.vpc_cni]))
        policies = {
            policy: k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy}-policy",
                metadata={"name": f"allow-{policy}", "namespace": KUBE_SYSTEM,
                          "labels": {"app.kubernetes.io/managed-by": "pulumi"}},
                spec=spec,
                opts=in_cluster,
            )
            for policy, spec in system_network_policies(args.vpc_cidr).items()
        }
        self.coredns = addon(COREDNS, after=[self.nodes, policies["coredns"]])
        self.metrics_server = addon(METRICS_SERVER, after=[self.nodes, policies["metrics-server"]])
        self.register_outputs({
            "vpc_cni": self.vpc_cni.arn, "kube_proxy": self.kube_proxy.arn,
            "pod_identity_agent": self.pod_identity_agent.arn, "coredns": self.coredns.arn,
            "metrics_server": self.metrics_server.arn,
        })

    @property
    def workload_dependencies(self) -> list[pulumi.Resource]:
        """What a pod of the services needs before it starts: nodes, CNI with policies, service routing,
        DNS and the metrics its autoscaler reads."""
        return [self.nodes, self.vpc_cni, self.kube_proxy, self.coredns, self.metrics_server]
