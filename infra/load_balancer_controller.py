"""The AWS Load Balancer Controller: provisions the services' NLB and serves the ``alb`` IngressClass.

Without it an Ingress has no controller (Pulumi waits for an address that never comes) and a
LoadBalancer Service falls to the legacy in-tree provisioner. Its IAM policy is the controller's
published ``docs/install/iam_policy.json`` at the pinned release, kept verbatim in
``infra/iam/aws-load-balancer-controller-v<version>.json``; the role is assumed through EKS Pod
Identity, the install guide's recommended option (docs/deploy/installation.md, "Option B").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.controllers import controller_network_policy, on_managed_nodes
from infra.pod_identity import pod_identity_role
from infra.settings import StackSettings

VERSION = "3.5.0"  # chart and app (kubernetes-sigs/aws-load-balancer-controller v3.5.0)
CHART = "aws-load-balancer-controller"
CHART_REPOSITORY = "https://aws.github.io/eks-charts"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "aws-load-balancer-controller"
POLICY_FILE = Path(__file__).with_name("iam") / f"aws-load-balancer-controller-v{VERSION}.json"
INGRESS_CONTROLLER = "ingress.k8s.aws/alb"  # IngressClass spec.controller the LBC watches
WEBHOOK_PORT = 9443  # the control plane calls the controller's admission webhooks here
NLB_CLASS = "service.k8s.aws/nlb"  # Service spec.loadBalancerClass the LBC reconciles (docs/guide/service/nlb.md)


def serves_exposure(settings: StackSettings) -> bool:
    """A LoadBalancer Service or an Ingress needs the controller; NodePort does not."""
    return settings.exposure.type in ("LoadBalancer", "Ingress")


def controller_policy() -> str:
    """The published policy, minified (an IAM managed policy holds at most 6,144 characters)."""
    return json.dumps(json.loads(POLICY_FILE.read_text()), separators=(",", ":"))


def controller_values(settings: StackSettings, cluster_name: str, vpc_id: str) -> dict[str, Any]:
    """Region and VPC given, not looked up: the metadata service is out of the pods' reach (hop limit 1)."""
    return {
        "clusterName": cluster_name,
        "region": settings.region,
        "vpcId": vpc_id,
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        "replicaCount": 2 if settings.cluster.node_group.min_size >= 2 else 1,
        # The IngressClass and its parameters are declared here, with the stack's scheme and ranges.
        "createIngressClassResource": False,
        "ingressClassParams": {"create": False},
        # Services are handed over explicitly (spec.loadBalancerClass), not by a defaulting webhook.
        "enableServiceMutatorWebhook": False,
        "defaultTargetType": "ip",
        "affinity": on_managed_nodes(),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    }


def ingress_class_params_spec(settings: StackSettings) -> dict[str, Any]:
    """What every ALB of the class gets, whatever an Ingress's annotations say."""
    exposure = settings.exposure
    return {
        "scheme": "internal" if exposure.internal else "internet-facing",
        "ipAddressType": "ipv4",
        "targetType": "ip",
        "inboundCIDRs": list(exposure.client_cidrs),
        "group": {"name": settings.namespace},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.namespace}},
    }


@dataclass(frozen=True, kw_only=True)
class LoadBalancerControllerArgs:
    """The cluster and VPC the controller manages load balancers in."""

    settings: StackSettings
    cluster_name: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    kubernetes_provider: k8s.Provider
    # The eks-pod-identity-agent add-on and the managed node group the controller runs on.
    depends_on: Sequence[pulumi.Resource] = ()
    tags: Mapping[str, str] | None = None


class LoadBalancerController(pulumi.ComponentResource):
    """Pod Identity role with the published policy, the pinned chart, the IngressClass and its parameters."""

    controller: k8s.helm.v3.Release
    ingress_class: pulumi.Output[str]

    def __init__(self, name: str, args: LoadBalancerControllerArgs, opts: pulumi.ResourceOptions | None = None
                 ) -> None:
        super().__init__("mesh:infra:LoadBalancerController", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        tags = {**settings.tags, **(args.tags or {})}
        cluster_name = pulumi.Output.from_input(args.cluster_name)

        _, association = pod_identity_role(
            f"{name}-controller", role_name=f"{settings.name}-aws-load-balancer-controller",
            cluster_name=cluster_name, namespace=NAMESPACE, service_account=SERVICE_ACCOUNT,
            policies={"policy": controller_policy()}, tags=tags, opts=child, depends_on=args.depends_on)

        on_cluster = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(provider=args.kubernetes_provider))
        # The API server calls the webhooks from the control plane's network interfaces in the VPC.
        policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy", metadata={"name": "allow-aws-load-balancer-controller", "namespace": NAMESPACE},
            spec=controller_network_policy(CHART, ingress=[{
                "from": [{"ipBlock": {"cidr": settings.network.cidr}}],
                "ports": [{"port": WEBHOOK_PORT, "protocol": "TCP"}]}]),
            opts=on_cluster)
        self.controller = k8s.helm.v3.Release(
            f"{name}-controller", name=CHART, chart=CHART, version=VERSION, namespace=NAMESPACE, atomic=True,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPOSITORY),
            values=pulumi.Output.all(cluster_name, args.vpc_id).apply(
                lambda v: controller_values(settings, v[0], v[1])),
            opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(
                depends_on=[association, policy, *args.depends_on])))

        # The controller's webhook admits IngressClassParams: they wait for the Release.
        after_controller = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(
            depends_on=[self.controller]))
        class_name = settings.exposure.ingress_class
        params = k8s.apiextensions.CustomResource(
            f"{name}-ingress-class-params", api_version="elbv2.k8s.aws/v1beta1", kind="IngressClassParams",
            metadata={"name": class_name}, spec=ingress_class_params_spec(settings), opts=after_controller)
        ingress_class = k8s.networking.v1.IngressClass(
            f"{name}-ingress-class", metadata={"name": class_name},
            spec={"controller": INGRESS_CONTROLLER, "parameters": {
                "apiGroup": "elbv2.k8s.aws", "kind": "IngressClassParams", "name": class_name}},
            opts=pulumi.ResourceOptions.merge(after_controller, pulumi.ResourceOptions(depends_on=[params])))

        self.ingress_class = ingress_class.metadata.apply(lambda metadata: metadata.name)
        self.register_outputs({"ingress_class": self.ingress_class})
