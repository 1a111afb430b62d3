"""What the services rely on beyond the cluster: routes and endpoints, node autoscaling, load balancers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from infra.cluster import Cluster
from infra.routing import Connectivity, ConnectivityArgs
from infra.karpenter import Karpenter, KarpenterArgs
from infra.load_balancer_controller import LoadBalancerController, LoadBalancerControllerArgs, serves_exposure
from infra.network import Network
from infra.settings import StackSettings


@dataclass(frozen=True, kw_only=True)
class PlatformAddonsArgs:
    """The network and cluster the add-ons extend."""

    settings: StackSettings
    network: Network
    cluster: Cluster
    # Cluster add-ons the controllers need first: the eks-pod-identity-agent (credentials of the
    # Pod Identity associations) in particular.
    cluster_addons: Sequence[pulumi.Resource] = ()


class PlatformAddons(pulumi.ComponentResource):
    """Connectivity always; Karpenter when configured; the load balancer controller when a service is exposed."""

    exposure_controllers: list[pulumi.Resource]  # what the Services and Ingresses wait for
    karpenter: Karpenter | None
    load_balancer_controller: LoadBalancerController | None

    def __init__(self, name: str, args: PlatformAddonsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:PlatformAddons", name, None, opts)
        settings, network, cluster = args.settings, args.network, args.cluster
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        served = serves_exposure(settings)

        Connectivity(f"{name}-connectivity", ConnectivityArgs(
            settings=settings, vpc_id=network.vpc_id, private_subnet_ids=network.private_subnet_ids,
            private_route_table_ids=network.private_route_table_ids, load_balancer_controller=served,
            public_route_table_id=network.public_route_table_id),
            opts=child)
        # The controllers run on the managed group, with credentials from the pod identity agent.
        prerequisites = [cluster.node_group, *args.cluster_addons]

        self.karpenter = None
        if settings.karpenter is not None:
            self.karpenter = Karpenter(f"{name}-karpenter", KarpenterArgs(
                settings=settings, karpenter=settings.karpenter, cluster_name=cluster.name,
                cluster_security_group_id=cluster.security_group_id, kubernetes_provider=cluster.provider,
                depends_on=prerequisites), opts=child)

        self.load_balancer_controller = None
        self.exposure_controllers = []
        if served:
            self.load_balancer_controller = LoadBalancerController(
                f"{name}-load-balancer-controller", LoadBalancerControllerArgs(
                    settings=settings, cluster_name=cluster.name, vpc_id=network.vpc_id,
                    kubernetes_provider=cluster.provider, depends_on=prerequisites), opts=child)
            self.exposure_controllers = [self.load_balancer_controller.controller]

        self.register_outputs({})
