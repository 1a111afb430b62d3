"""The VPC: public and private subnets per availability zone, tagged for EKS load balancers, IGW, NAT, routes."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Callable

import pulumi
import pulumi_aws as aws

from infra.settings import StackSettings

ANYWHERE = "0.0.0.0/0"
FLOW_LOG_RETENTION_DAYS = 90


def subnet_cidrs(vpc_cidr: str, zones: int) -> list[tuple[str, str]]:
    """(public, private) CIDR per zone: private subnets get 1/8 of the VPC each (pods take VPC IPs),
    public ones share the last eighth (only NAT gateways and load balancers live there)."""
    vpc = ipaddress.IPv4Network(vpc_cidr)
    eighths = list(vpc.subnets(prefixlen_diff=3))
    if zones > 7:
        raise ValueError(f"{zones} zones do not fit in {vpc_cidr}; at most 7")
    publics = list(eighths[-1].subnets(prefixlen_diff=3))
    return [(str(publics[i]), str(eighths[i])) for i in range(zones)]


def nat_count(settings: StackSettings) -> int:
    """One NAT gateway for the whole VPC, or one per zone so a zone outage keeps the others online."""
    return 1 if settings.network.nat_gateways == "single" else settings.network.availability_zones


def elb_tags(cluster_name: str, public: bool) -> dict[str, str]:
    """Tags the AWS cloud controller and load balancer controller use to pick subnets."""
    role = "kubernetes.io/role/elb" if public else "kubernetes.io/role/internal-elb"
    return {role: "1", f"kubernetes.io/cluster/{cluster_name}": "shared"}


def flow_log_trust_policy(account_id: str, region: str) -> str:
    """Only the flow-logs service, acting for a flow log of this account, may assume the role.

    Without the conditions any account's flow log could be pointed at this role (the confused deputy);
    the VPC user guide (flow-logs-iam-role) scopes the trust with aws:SourceAccount and aws:SourceArn.
    """
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "vpc-flow-logs.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {
            "StringEquals": {"aws:SourceAccount": account_id},
            "ArnLike": {"aws:SourceArn": f"arn:aws:ec2:{region}:{account_id}:vpc-flow-log/*"},
        }}]})


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    """What the network needs: the stack settings and the name of the cluster that will use it."""

    settings: StackSettings
    cluster_name: str


class Network(pulumi.ComponentResource):
    """A VPC with one public and one private subnet per zone, NAT for egress from the private ones."""

    vpc_id: pulumi.Output[str]
    public_subnet_ids: pulumi.Output[list[str]]
    private_subnet_ids: pulumi.Output[list[str]]
    private_route_table_ids: pulumi.Output[list[str]]
    public_route_table_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:Network", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        zone_count = settings.network.availability_zones

        def tags(role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
            return {**settings.tags, "Name": f"{settings.name}-{role}", **(extra or {})}

        zones = aws.get_availability_zones_output(
            state="available",
            filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
            opts=pulumi.InvokeOutputOptions(parent=self),
        )

        def zone(index: int) -> pulumi.Output[str]:
            def pick(names: list[str]) -> str:
                if len(names) <= index:
                    raise ValueError(
                        f"config key 'data-mesh:availabilityZones' asks for {zone_count} zones but region "
                        f"{settings.region} offers {len(names)}. Fix: pulumi config set "
                        f"data-mesh:availabilityZones {len(names)}")
                return names[index]
            return zones.names.apply(pick)

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=settings.network.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tags("vpc"),
            opts=child,
        )
        vpc_child = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[vpc]))
        # The default security group of a VPC allows all traffic between its members; close it.
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=vpc.id, tags=tags("default-closed"),
                                     opts=vpc_child)
        self._flow_logs(name, settings, vpc, tags, child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags("igw"), opts=child)

        public_rt = aws.ec2.RouteTable(f"{name}-public-rt", vpc_id=vpc.id, tags=tags("public"), opts=child)
        aws.ec2.Route(f"{name}-public-default", route_table_id=public_rt.id, destination_cidr_block=ANYWHERE,
                      gateway_id=igw.id, opts=child)

        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []
        for index, (public_cidr, private_cidr) in enumerate(subnet_cidrs(settings.network.cidr, zone_count)):
            az = zone(index)
            public = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=vpc.id,
                cidr_block=public_cidr,
                availability_zone=az,
                map_public_ip_on_launch=False,  # nothing launched here needs one: NAT and LBs bring their own
                tags=tags(f"public-{index}", {**elb_tags(args.cluster_name, public=True), "tier": "public"}),
                opts=child,
            )
            private = aws.ec2.Subnet(
                f"{name}-private-{index}",
                vpc_id=vpc.id,
                cidr_block=private_cidr,
                availability_zone=az,
                map_public_ip_on_launch=False,
                tags=tags(f"private-{index}", {**elb_tags(args.cluster_name, public=False), "tier": "private",
                                               # Karpenter's EC2NodeClass selects its subnets by this tag.
                                               "karpenter.sh/discovery": args.cluster_name}),
                opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{name}-public-{index}", subnet_id=public.id,
                                          route_table_id=public_rt.id, opts=child)
            public_subnets.append(public)
            private_subnets.append(private)

        nat_gateways = []
        for index in range(nat_count(settings)):
            eip = aws.ec2.Eip(f"{name}-nat-{index}", domain="vpc", tags=tags(f"nat-{index}"),
                              opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[igw])))
            nat_gateways.append(aws.ec2.NatGateway(
                f"{name}-nat-{index}",
                allocation_id=eip.allocation_id,
                subnet_id=public_subnets[index].id,
                connectivity_type="public",
                tags=tags(f"nat-{index}"),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[igw])),
            ))

        private_tables: list[aws.ec2.RouteTable] = []
        for index, private in enumerate(private_subnets):
            table = aws.ec2.RouteTable(f"{name}-private-rt-{index}", vpc_id=vpc.id, tags=tags(f"private-{index}"),
                                       opts=child)
            aws.ec2.Route(f"{name}-private-default-{index}", route_table_id=table.id,
                          destination_cidr_block=ANYWHERE,
                          nat_gateway_id=nat_gateways[index % len(nat_gateways)].id, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{index}", subnet_id=private.id,
                                          route_table_id=table.id, opts=child)
            private_tables.append(table)

        self.vpc_id = vpc.id
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public_subnets])
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private_subnets])
        self.private_route_table_ids = pulumi.Output.all(*[t.id for t in private_tables])
        self.public_route_table_id = public_rt.id
        self.register_outputs({
            "public_route_table_id": self.public_route_table_id,
            "vpc_id": self.vpc_id,
            "public_subnet_ids": self.public_subnet_ids,
            "private_subnet_ids": self.private_subnet_ids,
            "private_route_table_ids": self.private_route_table_ids,
        })

    def _flow_logs(self, name: str, settings: StackSettings, vpc: aws.ec2.Vpc,
                   tags: Callable[[str], dict[str, str]], child: pulumi.ResourceOptions) -> None:
        """Every accepted and rejected flow to CloudWatch: what an incident review starts from."""
        group = aws.cloudwatch.LogGroup(f"{name}-flow-logs", name=f"/aws/vpc/{settings.name}/flow-logs",
                                        retention_in_days=FLOW_LOG_RETENTION_DAYS, tags=tags("flow-logs"),
                                        opts=child)
        role = aws.iam.Role(
            f"{name}-flow-logs",
            name=f"{settings.name}-vpc-flow-logs",
            assume_role_policy=aws.get_caller_identity_output(
                opts=pulumi.InvokeOutputOptions(parent=self)).account_id.apply(
                lambda account: flow_log_trust_policy(account, settings.region)),
            tags=tags("flow-logs"),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=group.arn.apply(lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogGroups",
                           "logs:DescribeLogStreams"],
                "Resource": [arn, f"{arn}:*"]}]})),
            opts=child,
        )
        aws.ec2.FlowLog(f"{name}-flow-logs", vpc_id=vpc.id, traffic_type="ALL",
                        log_destination_type="cloud-watch-logs",
                        log_destination=group.arn, iam_role_arn=role.arn, tags=tags("flow-logs"), opts=child)
