"""Networks outside the VPC and AWS APIs from the private subnets.

- Routes: the database range and every client range outside the VPC go from each private route
  table to an existing Transit Gateway (attached here on the private subnets) or VPC peering. Without
  them those ranges follow 0.0.0.0/0 to the NAT gateway and never arrive.
- VPC endpoints: the AWS APIs private nodes and the add-ons call (image pulls, credentials, logs,
  Karpenter's EC2/SSM/SQS/EKS calls, the load balancer controller's ELB calls) stay inside the VPC,
  behind a security group that admits 443 from the VPC only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.settings import StackSettings

HTTPS = 443
# Always: image pulls (ECR API, registry and the S3 gateway behind it), credentials (STS; EKS Auth is
# the API the Pod Identity agent calls, a PrivateLink endpoint is required from private subnets: EKS
# User Guide, "Set up the Amazon EKS Pod Identity Agent"), CloudWatch Logs.
BASE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts", "logs", "eks-auth")
# Karpenter in a private cluster (karpenter docs, getting-started "Private Clusters"): launching
# instances, resolving AMIs, the interruption queue, discovering the cluster endpoint.
KARPENTER_ENDPOINTS = ("ec2", "ssm", "sqs", "eks")
LOAD_BALANCER_ENDPOINTS = ("ec2", "elasticloadbalancing")


def interface_endpoints(settings: StackSettings, load_balancer_controller: bool) -> tuple[str, ...]:
    """The interface endpoints this stack needs, each once, in a stable order."""
    wanted = [*BASE_ENDPOINTS, *(KARPENTER_ENDPOINTS if settings.karpenter else ()),
              *(LOAD_BALANCER_ENDPOINTS if load_balancer_controller else ())]
    return tuple(dict.fromkeys(wanted))


@dataclass(frozen=True, kw_only=True)
class ConnectivityArgs:
    """The VPC's private side: its subnets and their route tables (one per zone)."""

    settings: StackSettings
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[list[str]]
    private_route_table_ids: pulumi.Input[list[str]]
    load_balancer_controller: bool = False
    # Where the NLBs live (infra/workload.py pins them to the public subnets): their answers to
    # clients outside the VPC leave from there, so that table needs the client routes too.
    public_route_table_id: pulumi.Input[str] | None = None


class Connectivity(pulumi.ComponentResource):
    """Transit Gateway attachment or peering routes for the external ranges, and the VPC endpoints."""

    routed_cidrs: pulumi.Output[list[str]]

    def __init__(self, name: str, args: ConnectivityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:Connectivity", name, None, opts)
        settings, connectivity = args.settings, args.settings.connectivity
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        tables = pulumi.Output.from_input(args.private_route_table_ids)

        def tags(role: str) -> dict[str, str]:
            return {**settings.tags, "Name": f"{settings.name}-{role}"}

        route_opts = child
        if connectivity.transit_gateway_id:
            attachment = aws.ec2transitgateway.VpcAttachment(
                f"{name}-transit-gateway", transit_gateway_id=connectivity.transit_gateway_id, vpc_id=args.vpc_id,
                subnet_ids=args.private_subnet_ids, dns_support="enable", tags=tags("transit-gateway"), opts=child)
            route_opts = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[attachment]))
        for zone in range(settings.network.availability_zones):
            for index, cidr in enumerate(connectivity.external_cidrs):
                aws.ec2.Route(
                    f"{name}-external-{zone}-{index}",
                    route_table_id=tables.apply(lambda ids, zone=zone: ids[zone]),
                    destination_cidr_block=cidr,
                    transit_gateway_id=connectivity.transit_gateway_id,
                    vpc_peering_connection_id=connectivity.peering_connection_id,
                    opts=route_opts)
        if args.public_route_table_id is not None and settings.exposure.type == "LoadBalancer":
            clients = [cidr for cidr in connectivity.external_cidrs if cidr in settings.exposure.client_cidrs]
            for index, cidr in enumerate(clients):
                aws.ec2.Route(
                    f"{name}-external-public-{index}", route_table_id=args.public_route_table_id,
                    destination_cidr_block=cidr, transit_gateway_id=connectivity.transit_gateway_id,
                    vpc_peering_connection_id=connectivity.peering_connection_id, opts=route_opts)

        if connectivity.vpc_endpoints:
            group = aws.ec2.SecurityGroup(
                f"{name}-endpoints", name=f"{settings.name}-vpc-endpoints", vpc_id=args.vpc_id,
                description=f"{settings.name}: AWS API endpoints, HTTPS from the VPC", tags=tags("vpc-endpoints"),
                opts=child)
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-endpoints-https", security_group_id=group.id, cidr_ipv4=settings.network.cidr,
                ip_protocol="tcp", from_port=HTTPS, to_port=HTTPS,
                description="HTTPS to the AWS API endpoints from the VPC", tags=tags("vpc-endpoints"), opts=child)
            for service in interface_endpoints(settings, args.load_balancer_controller):
                aws.ec2.VpcEndpoint(
                    f"{name}-{service.replace('.', '-')}", vpc_id=args.vpc_id,
                    service_name=f"com.amazonaws.{settings.region}.{service}", vpc_endpoint_type="Interface",
                    private_dns_enabled=True, subnet_ids=args.private_subnet_ids, security_group_ids=[group.id],
                    tags=tags(f"endpoint-{service}"), opts=child)
            aws.ec2.VpcEndpoint(
                f"{name}-s3", vpc_id=args.vpc_id, service_name=f"com.amazonaws.{settings.region}.s3",
                vpc_endpoint_type="Gateway", route_table_ids=tables, tags=tags("endpoint-s3"), opts=child)

        self.routed_cidrs = pulumi.Output.from_input(list(connectivity.external_cidrs))
        self.register_outputs({"routed_cidrs": self.routed_cidrs})
