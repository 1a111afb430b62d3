"""Config of the cluster platform: ``data-mesh:karpenter`` and ``data-mesh:connectivity``.

Called from ``infra/config.py`` with its reader of the project namespace, once the services, the
exposure and the database are parsed (the defaults and the checks here depend on them).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import TYPE_CHECKING, Any

from infra.settings import DatabaseSettings, ExposureSettings, ServiceSettings
from infra.settings_platform import ConnectivitySettings, KarpenterSettings

if TYPE_CHECKING:
    from infra.config import _Reader

PLATFORM_KEYS = ("karpenter", "connectivity")
INSTANCE_CATEGORIES = ("c", "m", "r", "t")
CAPACITY_TYPES = ("on-demand", "spot")
# A release of the EKS-optimized AL2023 AMI: pinned, so a new AMI reaches the nodes only when this
# line changes (Karpenter's EC2NodeClass docs: "latest" drifts every node on each AMI release).
# The release name appears in aws/karpenter-provider-aws test/suites/ami/suite_test.go.
AMI_ALIAS = "al2023@v20260520"
# Headroom over the HPAs' ceilings: daemonset pods on every node (aws-node, kube-proxy, the pod
# identity agent, istio-cni, ztunnel), and replacement nodes Karpenter launches before it drains.
HEADROOM = 1.5
MEMORY_GI_PER_CORE = 8  # the r family's ratio: the limit never stops a memory-optimized choice
_AMI_ALIAS = re.compile(r"^al2023@v\d{8}$")
_TRANSIT_GATEWAY = re.compile(r"^tgw-[0-9a-f]{8,17}$")
_PEERING = re.compile(r"^pcx-[0-9a-f]{8,17}$")


def millicores(quantity: str) -> float:
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def hpa_ceiling_millicores(services: tuple[ServiceSettings, ...]) -> float:
    """CPU the pods request when every HPA sits at its ceiling (and the others at their replicas)."""
    return sum(millicores(s.resources.cpu_request) * (s.autoscaling.max_replicas if s.autoscaling else s.replicas)
               for s in services)


def karpenter_settings(top: _Reader, services: tuple[ServiceSettings, ...]) -> KarpenterSettings | None:
    """On by default when a service autoscales: an HPA adds pods, only a node autoscaler adds nodes."""
    reader = top.child("karpenter", "'{\"enabled\": true}'", default={})
    reader.only({"enabled", "instanceCategories", "capacityTypes", "amiAlias", "cpuLimit"})
    scaled = [s for s in services if s.autoscaling is not None and s.highly_available]
    ceiling = hpa_ceiling_millicores(services)
    if not reader.boolean("enabled", "true", default=bool(scaled)):
        if scaled:
            pods = sum(s.autoscaling.max_replicas for s in scaled)  # type: ignore[union-attr]
            raise reader.fail("enabled", f"is false but {', '.join(s.id for s in scaled)} autoscale to {pods} pods "
                              f"({ceiling / 1000:g} cores requested at their ceilings); without a node autoscaler "
                              "the pods beyond the managed group's capacity stay Pending", "true")
        return None
    categories = reader.strings("instanceCategories", "'[\"c\", \"m\", \"r\"]'", default=["c", "m", "r"])
    capacity = reader.strings("capacityTypes", "'[\"on-demand\"]'", default=["on-demand"])
    for key, values, allowed in (("instanceCategories", categories, INSTANCE_CATEGORIES),
                                 ("capacityTypes", capacity, CAPACITY_TYPES)):
        wrong = [v for v in values if v not in allowed]
        if wrong or not values:
            raise reader.fail(key, f"must list some of {', '.join(allowed)}; got {list(values)}",
                              f"'[\"{allowed[0]}\"]'")
    ami_alias = reader.string("amiAlias", AMI_ALIAS, default=AMI_ALIAS)
    if not _AMI_ALIAS.match(ami_alias):
        raise reader.fail("amiAlias", f"'{ami_alias}' is not a pinned AL2023 release like {AMI_ALIAS} "
                          "(latest would replace every node on each AMI release)", AMI_ALIAS)
    needed = math.ceil(ceiling / 1000)
    cpu_limit = reader.integer("cpuLimit", str(needed), default=math.ceil(ceiling * HEADROOM / 1000), low=1,
                               high=10000)
    if cpu_limit < needed:
        raise reader.fail("cpuLimit", f"{cpu_limit} cores cannot hold the HPAs' ceilings ({ceiling / 1000:g} cores "
                          "of CPU requests): the NodePool would stop adding nodes before the pods fit", str(needed))
    return KarpenterSettings(instance_categories=categories, capacity_types=capacity, ami_alias=ami_alias,
                             cpu_limit=cpu_limit, memory_limit_gi=cpu_limit * MEMORY_GI_PER_CORE)


def external_cidrs(vpc_cidr: str, exposure: ExposureSettings, database: DatabaseSettings | None) -> tuple[str, ...]:
    """The database range and every client range that lies outside the VPC (they need a route out).

    Clients of an internet-facing load balancer arrive from the internet, through the internet
    gateway: they need no private route."""
    vpc = ipaddress.IPv4Network(vpc_cidr)
    private_clients = exposure.client_cidrs if exposure.internal or exposure.type == "NodePort" else ()
    wanted = [*((database.cidr,) if database else ()), *private_clients]
    outside = [c for c in wanted if not ipaddress.IPv4Network(c).subnet_of(vpc)]
    return tuple(dict.fromkeys(outside))


def connectivity_settings(top: _Reader, vpc_cidr: str, exposure: ExposureSettings,
                          database: DatabaseSettings | None) -> ConnectivitySettings:
    """A Transit Gateway or a peering for the ranges outside the VPC; VPC endpoints on by default."""
    reader = top.child("connectivity", "'{\"transitGatewayId\": \"tgw-0123456789abcdef0\"}'", default={})
    reader.only({"transitGatewayId", "peeringConnectionId", "vpcEndpoints"})
    gateway, peering = None, None
    if reader.has("transitGatewayId"):
        gateway = reader.string("transitGatewayId", "tgw-0123456789abcdef0")
        if not _TRANSIT_GATEWAY.match(gateway):
            raise reader.fail("transitGatewayId", f"'{gateway}' is not a Transit Gateway id", "tgw-0123456789abcdef0")
    if reader.has("peeringConnectionId"):
        peering = reader.string("peeringConnectionId", "pcx-0123456789abcdef0")
        if not _PEERING.match(peering):
            raise reader.fail("peeringConnectionId", f"'{peering}' is not a VPC peering connection id",
                              "pcx-0123456789abcdef0")
    if gateway and peering:
        raise reader.remove("peeringConnectionId", "and transitGatewayId are both set; the private route tables "
                            "can send the external ranges to one of them")
    outside = external_cidrs(vpc_cidr, exposure, database)
    if outside and not (gateway or peering):
        raise reader.fail("transitGatewayId", f"is not set, nor peeringConnectionId, but {', '.join(outside)} lie "
                          f"outside the VPC {vpc_cidr} (database.cidr, exposure.clientCidrs): the private route "
                          "tables send them to the NAT gateway and the internet, so they are unreachable",
                          "tgw-0123456789abcdef0")
    return ConnectivitySettings(
        transit_gateway_id=gateway,
        peering_connection_id=peering,
        vpc_endpoints=reader.boolean("vpcEndpoints", "true", default=True),
        external_cidrs=outside,
    )


def platform_settings(top: _Reader, services: tuple[ServiceSettings, ...], vpc_cidr: str,
                      exposure: ExposureSettings, database: DatabaseSettings | None) -> dict[str, Any]:
    """The StackSettings fields of this module's keys."""
    return {"karpenter": karpenter_settings(top, services),
            "connectivity": connectivity_settings(top, vpc_cidr, exposure, database)}
