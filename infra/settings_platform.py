"""Typed settings of the cluster platform: node autoscaling and the networks outside the VPC."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class KarpenterSettings:
    """Node autoscaling with Karpenter: what it may launch and how much of it."""

    instance_categories: tuple[str, ...]  # EC2 families by letter: c, m, r
    capacity_types: tuple[str, ...]  # on-demand, spot
    ami_alias: str  # a pinned EKS-optimized AMI release, e.g. al2023@v20260520
    cpu_limit: int  # cores of all the nodes the NodePool may hold at once
    memory_limit_gi: int


@dataclass(frozen=True, kw_only=True)
class ConnectivitySettings:
    """How the private subnets reach networks outside the VPC, and the AWS APIs without NAT."""

    transit_gateway_id: str | None = None
    peering_connection_id: str | None = None
    vpc_endpoints: bool = False
    external_cidrs: tuple[str, ...] = ()  # database and client ranges outside the VPC, routed out

    @property
    def gateway(self) -> str | None:
        return self.transit_gateway_id or self.peering_connection_id
