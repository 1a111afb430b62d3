"""The whole stack: network, cluster, registry, one image per service, then the services on Kubernetes."""

from __future__ import annotations

import pulumi

from infra.access import deploying_principal, refuse_deployer_as_listed_admin
from infra.cluster import Cluster, ClusterArgs, cluster_name
from infra.config import ConfigError, settings_from_pulumi
from infra.image import ServiceImage, ServiceImageArgs
from infra.istio import Istio, IstioArgs
from infra.mesh import ServiceMesh, ServiceMeshArgs, common_labels
from infra.monitoring import Monitoring, MonitoringArgs
from infra.network import Network, NetworkArgs
from infra.platform_addons import PlatformAddons, PlatformAddonsArgs
from infra.promotion import ImagePromotion, ImagePromotionArgs
from infra.registry import Registry, RegistryArgs
from infra.settings import StackSettings
from infra.workload import NODE_PORTS


def deploy(settings: StackSettings) -> None:
    """Declare every resource of one stack and export what operators and CI need."""
    refuse_deployer_as_listed_admin(settings, deploying_principal())
    network = Network("network", NetworkArgs(settings=settings, cluster_name=cluster_name(settings)))
    cluster = Cluster("cluster", ClusterArgs(
        settings=settings,
        vpc_id=network.vpc_id,
        public_subnet_ids=network.public_subnet_ids,
        private_subnet_ids=network.private_subnet_ids,
        node_ports=tuple(NODE_PORTS[service.id] for service in settings.services),
    ))
    platform = PlatformAddons("platform", PlatformAddonsArgs(
        settings=settings, network=network, cluster=cluster, cluster_addons=[cluster.addons.pod_identity_agent]))
    registry = Registry("registry", RegistryArgs(settings=settings))
    image_refs = _images(settings, registry)

    pulumi.export("vpcId", network.vpc_id)
    pulumi.export("publicSubnetIds", network.public_subnet_ids)
    pulumi.export("privateSubnetIds", network.private_subnet_ids)
    pulumi.export("clusterName", cluster.name)
    pulumi.export("kubeconfig", cluster.kubeconfig)
    pulumi.export("ecrRepositoryUrls", registry.repository_urls)
    pulumi.export("imageRefs", image_refs)

    istio = Istio("istio", IstioArgs(settings=settings), opts=pulumi.ResourceOptions(provider=cluster.provider))
    mesh = ServiceMesh("mesh", ServiceMeshArgs(
        settings=settings, image_refs=image_refs, vpc_cidr=settings.network.cidr, mesh_ready=istio.ready,
        exposure_depends_on=platform.exposure_controllers, load_balancer_subnet_ids=network.public_subnet_ids,
    ), opts=pulumi.ResourceOptions(provider=cluster.provider, depends_on=cluster.workload_dependencies))
    pulumi.export("serviceEndpoints", mesh.endpoints)
    pulumi.export("apiKeys", pulumi.Output.secret(mesh.api_keys))
    governance = settings.governance
    if governance.prometheus_operator or governance.cloudwatch_observability:
        Monitoring("monitoring", MonitoringArgs(
            settings=settings, cluster_name=cluster.name, labels=common_labels(settings),
            cloudwatch_after=(cluster.addons.pod_identity_agent, cluster.node_group),
        ), opts=pulumi.ResourceOptions(provider=cluster.provider, depends_on=[mesh]))


def _images(settings: StackSettings, registry: Registry) -> dict[str, pulumi.Output[str]]:
    """The stack that builds pushes its own images; a promoting stack copies the builder's digests."""
    if not settings.images.builds:
        promotion = ImagePromotion("promotion", ImagePromotionArgs(
            settings=settings,
            repository_urls={service.id: registry.repository_urls[service.id] for service in settings.services},
        ))
        return promotion.image_refs
    images = {
        service.id: ServiceImage(f"image-{service.id}", ServiceImageArgs(
            service_id=service.id,
            version=service.version,
            repository_url=registry.repository_urls[service.id],
            registry_id=registry.registry_ids[service.id],
            source=settings.source_repository,
            base_image=settings.images.base_image,
        ))
        for service in settings.services
    }
    return {service_id: image.repo_digest for service_id, image in images.items()}


def main() -> None:
    """Entry point of ``__main__.py``: a config mistake ends the run with one message, no traceback."""
    try:
        settings = settings_from_pulumi()
        deploy(settings)
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
