"""The VPC as `pulumi preview` would show it: subnets per zone, ELB tags, NAT layout, routes."""

from __future__ import annotations

import ipaddress

import pytest

from infra.mocks import StackRun
from infra.network import subnet_cidrs

SUBNET = "aws:ec2/subnet:Subnet"
NAT = "aws:ec2/natGateway:NatGateway"
ROUTE = "aws:ec2/route:Route"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
EXPECTED = {  # what a reviewer expects per environment (DESIGN.md, Environments)
    "dev": {"zones": 2, "nats": 1, "cidr": "10.20.0.0/16"},
    "prod": {"zones": 3, "nats": 3, "cidr": "10.40.0.0/16"},
}


def _subnets(run: StackRun, tier: str) -> list:
    return sorted((s for s in run.of_type(SUBNET) if s.inputs["tags"].get("tier") == tier), key=lambda s: s.name)


def test_vpc_has_dns_hostnames_and_the_stack_cidr(stack_run: StackRun) -> None:
    vpc = stack_run.one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == EXPECTED[stack_run.stack]["cidr"]
    assert vpc.inputs["enableDnsHostnames"] is True
    assert vpc.inputs["enableDnsSupport"] is True
    assert vpc.inputs["tags"]["stack"] == stack_run.stack


def test_one_public_and_one_private_subnet_per_zone(stack_run: StackRun) -> None:
    zones = EXPECTED[stack_run.stack]["zones"]
    public, private = _subnets(stack_run, "public"), _subnets(stack_run, "private")
    assert len(public) == len(private) == zones
    expected_zones = [f"eu-west-1{letter}" for letter in "abc"[:zones]]
    assert [s.inputs["availabilityZone"] for s in public] == expected_zones
    assert [s.inputs["availabilityZone"] for s in private] == expected_zones
    assert not any(s.inputs.get("mapPublicIpOnLaunch") for s in public + private)


def test_subnets_fit_in_the_vpc_without_overlap(stack_run: StackRun) -> None:
    vpc = ipaddress.IPv4Network(EXPECTED[stack_run.stack]["cidr"])
    networks = [ipaddress.IPv4Network(s.inputs["cidrBlock"]) for s in stack_run.of_type(SUBNET)]
    assert all(n.subnet_of(vpc) for n in networks)
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1:])


def test_subnets_are_tagged_for_eks_load_balancers(stack_run: StackRun) -> None:
    cluster_tag = f"kubernetes.io/cluster/data-mesh-{stack_run.stack}"
    for subnet in _subnets(stack_run, "public"):
        assert subnet.inputs["tags"]["kubernetes.io/role/elb"] == "1"
        assert "kubernetes.io/role/internal-elb" not in subnet.inputs["tags"]
        assert subnet.inputs["tags"][cluster_tag] == "shared"
    for subnet in _subnets(stack_run, "private"):
        assert subnet.inputs["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert "kubernetes.io/role/elb" not in subnet.inputs["tags"]
        assert subnet.inputs["tags"][cluster_tag] == "shared"
    # The cluster the subnets are tagged for is the cluster the program creates.
    assert stack_run.one("eks:index:Cluster").inputs["name"] == cluster_tag.rsplit("/", 1)[1]


def test_nat_layout_single_in_dev_per_zone_in_prod(stack_run: StackRun) -> None:
    nats = stack_run.of_type(NAT)
    assert len(nats) == EXPECTED[stack_run.stack]["nats"]
    assert len(stack_run.of_type("aws:ec2/eip:Eip")) == len(nats)
    public_ids = {f"{s.name}-id" for s in _subnets(stack_run, "public")}
    assert {n.inputs["subnetId"] for n in nats} <= public_ids
    assert len({n.inputs["subnetId"] for n in nats}) == len(nats), "two NAT gateways share a zone"


def test_routes_public_via_igw_private_via_nat(stack_run: StackRun) -> None:
    defaults = [r for r in stack_run.of_type(ROUTE) if r.inputs["destinationCidrBlock"] == "0.0.0.0/0"]
    public = [r for r in defaults if "gatewayId" in r.inputs]
    private = [r for r in defaults if "natGatewayId" in r.inputs]
    assert [r.inputs["gatewayId"] for r in public] == ["network-igw-id"]
    zones = EXPECTED[stack_run.stack]["zones"]
    assert len(private) == zones
    used_nats = {r.inputs["natGatewayId"] for r in private}
    assert used_nats == {f"{n.name}-id" for n in stack_run.of_type(NAT)}
    # every subnet is associated with exactly one route table
    associated = sorted(a.inputs["subnetId"] for a in stack_run.of_type(ASSOCIATION))
    assert associated == sorted(f"{s.name}-id" for s in stack_run.of_type(SUBNET))


def test_private_subnets_route_to_the_nat_in_their_own_zone_in_prod(prod: StackRun) -> None:
    by_id = {f"{n.name}-id": n for n in prod.of_type(NAT)}
    subnet_zone = {f"{s.name}-id": s.inputs["availabilityZone"] for s in prod.of_type(SUBNET)}
    tables = {a.inputs["routeTableId"]: a.inputs["subnetId"] for a in prod.of_type(ASSOCIATION)}
    for route in prod.of_type(ROUTE):
        if "natGatewayId" in route.inputs:
            nat = by_id[route.inputs["natGatewayId"]]
            assert subnet_zone[nat.inputs["subnetId"]] == subnet_zone[tables[route.inputs["routeTableId"]]]


def test_default_security_group_is_closed(stack_run: StackRun) -> None:
    group = stack_run.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert not group.inputs.get("ingress") and not group.inputs.get("egress")


@pytest.mark.parametrize("cidr,zones", [("10.20.0.0/16", 2), ("10.40.0.0/16", 3), ("10.0.0.0/20", 6)])
def test_subnet_plan_is_disjoint_and_private_subnets_are_larger(cidr: str, zones: int) -> None:
    plan = subnet_cidrs(cidr, zones)
    flat = [ipaddress.IPv4Network(c) for pair in plan for c in pair]
    assert len(plan) == zones
    assert not any(a.overlaps(b) for i, a in enumerate(flat) for b in flat[i + 1:])
    assert all(ipaddress.IPv4Network(private).num_addresses > ipaddress.IPv4Network(public).num_addresses
               for public, private in plan)


def test_vpc_flow_logs_capture_all_traffic_to_cloudwatch(stack_run: StackRun) -> None:
    flow_log = stack_run.one("aws:ec2/flowLog:FlowLog")
    group = stack_run.one("aws:cloudwatch/logGroup:LogGroup", "network-flow-logs")
    role = stack_run.one("aws:iam/role:Role", "network-flow-logs")
    assert flow_log.inputs["vpcId"] == "network-vpc-id"
    assert flow_log.inputs["trafficType"] == "ALL"
    assert flow_log.inputs["logDestination"].endswith(f":log-group:{group.inputs['name']}")
    assert flow_log.inputs["iamRoleArn"].endswith(f":role/{role.inputs['name']}")
    assert group.inputs["retentionInDays"] >= 90
    assert '"vpc-flow-logs.amazonaws.com"' in role.inputs["assumeRolePolicy"]
    policy = stack_run.one("aws:iam/rolePolicy:RolePolicy", "network-flow-logs")
    assert group.inputs["name"] in policy.inputs["policy"]
