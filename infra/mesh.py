"""The services' namespace: restricted Pod Security, zero-trust policies, API keys, one Workload each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.authz import MeshPolicies, MeshPoliciesArgs, mesh_namespace_labels
from infra.network import subnet_cidrs
from infra.policies import FEATURES, NetworkPolicies, NetworkPoliciesArgs, calls_features, client_blocks
from infra.settings import ServiceSettings, StackSettings
from infra.workload import Upstream, Workload, WorkloadArgs, cluster_url

POD_SECURITY = "restricted"


def common_labels(settings: StackSettings) -> dict[str, str]:
    """Labels on every object of the mesh: who owns it and which environment it belongs to."""
    return {
        "app.kubernetes.io/part-of": settings.project,
        "app.kubernetes.io/managed-by": "pulumi",
        "environment": settings.stack,
    }


def namespace_labels(settings: StackSettings) -> dict[str, str]:
    """Pod Security Admission rejects (enforce), records (audit) and reports (warn) anything below restricted."""
    return {
        **common_labels(settings),
        **{f"pod-security.kubernetes.io/{mode}": POD_SECURITY for mode in ("enforce", "audit", "warn")},
        **{f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "audit", "warn")},
        **mesh_namespace_labels(),
    }


def subnets(settings: StackSettings) -> tuple[list[str], list[str]]:
    """(pod subnets, public subnets): under the VPC CNI pods take addresses of the private node subnets."""
    pairs = subnet_cidrs(settings.network.cidr, settings.network.availability_zones)
    return [private for _, private in pairs], [public for public, _ in pairs]


def admitted_callers(service: ServiceSettings, settings: StackSettings) -> tuple[str, ...]:
    """Who may call a service, as its data-product page names them: workload identities for
    customer-features (scoring and the listed consumers), client ranges for the others."""
    if service.id == FEATURES:
        callers = [f"{settings.namespace}/{s.id}" for s in settings.services if calls_features(s)]
        return tuple(callers + [f"{c.namespace}/{c.service_account}" for c in settings.mesh.consumers])
    return tuple(f"clients in {cidr}" for cidr in settings.exposure.client_cidrs)


@dataclass(frozen=True, kw_only=True)
class ServiceMeshArgs:
    """The stack's settings, each service's image by digest, and the VPC range traffic arrives from."""

    settings: StackSettings
    image_refs: Mapping[str, pulumi.Input[str]]  # service id -> "<repository>@sha256:<digest>"
    vpc_cidr: str
    # What must exist before the namespace's pods and mesh resources (the Istio component's `ready`).
    mesh_ready: Sequence[pulumi.Resource] = ()
    # Controllers whose webhooks admit the Services and Ingresses (the load balancer controller).
    exposure_depends_on: Sequence[pulumi.Resource] = ()
    # The public subnets: NLBs live there, off the pod subnets (see infra/policies.client_blocks).
    load_balancer_subnet_ids: pulumi.Input[list[str]] | None = None


class ServiceMesh(pulumi.ComponentResource):
    """Namespace, NetworkPolicies and every service's Workload, with the API keys they accept."""

    namespace: pulumi.Output[str]
    endpoints: pulumi.Output[dict[str, str]]
    cluster_urls: pulumi.Output[dict[str, str]]
    api_keys: pulumi.Output[dict[str, str]]  # secret: service id -> the key clients present

    def __init__(self, name: str, args: ServiceMeshArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:k8s:ServiceMesh", name, None, opts)
        settings = args.settings
        missing = sorted({s.id for s in settings.services} - set(args.image_refs))
        if missing:
            raise ValueError(f"no image reference for service(s) {', '.join(missing)}")
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        labels = common_labels(settings)

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata={"name": settings.namespace, "labels": namespace_labels(settings)},
            opts=child)
        in_namespace = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespace]))

        pod_subnets, public_subnets = subnets(settings)
        consumers = settings.mesh.consumers
        policies = NetworkPolicies(f"{name}-policies", NetworkPoliciesArgs(
            namespace=settings.namespace, services=settings.services, exposure=settings.exposure,
            database=settings.database, pod_subnets=pod_subnets, public_subnets=public_subnets,
            consumer_namespaces=sorted({c.namespace for c in consumers}), labels=labels), opts=in_namespace)
        mesh_policies = MeshPolicies(f"{name}-mesh-policies", MeshPoliciesArgs(
            namespace=settings.namespace, services=settings.services, consumers=consumers,
            client_blocks=[b["cidr"] for b in client_blocks(settings.exposure, pod_subnets, public_subnets)],
            pod_subnets=pod_subnets, labels=labels),
            opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(
                depends_on=[namespace, *args.mesh_ready])))
        # A pod starts only once its policies exist: never a moment unrestricted, or refused by a
        # policy that is still missing (the ztunnel ALLOW of the waypoint, the HBONE NetworkPolicies).
        guarded = pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(
            depends_on=[namespace, *policies.policies, *mesh_policies.resources, *args.mesh_ready]))

        client_keys = {service.id: self._client_key(name, service) for service in settings.services}
        # Scoring presents its own key to features, never a client's: it can be rotated on its own.
        internal_keys = {
            service.id: random.RandomPassword(f"{name}-{service.id}-to-{FEATURES}-key", length=40,
                                              special=False, opts=pulumi.ResourceOptions(parent=self)).result
            for service in settings.services if calls_features(service)
        }
        features = next((s for s in settings.services if s.id == FEATURES), None)

        workloads: dict[str, Workload] = {}
        for service in settings.services:
            accepted = [client_keys[service.id]]
            if service.id == FEATURES:
                accepted += list(internal_keys.values())
            upstream = None
            if service.id in internal_keys and features is not None:
                upstream = Upstream(url=cluster_url(FEATURES, settings.namespace, features.port),
                                    api_key=internal_keys[service.id])
            workloads[service.id] = Workload(f"{name}-{service.id}", WorkloadArgs(
                service=service,
                namespace=settings.namespace,
                image=args.image_refs[service.id],
                exposure=settings.exposure,
                labels=labels,
                accepted_api_keys=accepted,
                database=settings.database if service.source == "sql" else None,
                upstream=upstream,
                callers=admitted_callers(service, settings),
                exposure_depends_on=args.exposure_depends_on,
                load_balancer_subnet_ids=args.load_balancer_subnet_ids,
            ), opts=guarded)

        self.namespace = namespace.metadata.apply(lambda metadata: metadata.name)
        self.endpoints = pulumi.Output.all(**{sid: w.endpoint for sid, w in workloads.items()})
        self.cluster_urls = pulumi.Output.all(**{sid: w.cluster_url for sid, w in workloads.items()})
        self.api_keys = pulumi.Output.secret(pulumi.Output.all(**client_keys))
        self.register_outputs({"namespace": self.namespace, "endpoints": self.endpoints,
                               "cluster_urls": self.cluster_urls, "api_keys": self.api_keys})

    def _client_key(self, name: str, service: ServiceSettings) -> pulumi.Output[str]:
        """The stack secret when set, else a key generated once per stack and kept in its state."""
        if service.api_key is not None:
            return pulumi.Output.secret(service.api_key.reveal())
        return random.RandomPassword(f"{name}-{service.id}-api-key", length=40, special=False,
                                     opts=pulumi.ResourceOptions(parent=self)).result
