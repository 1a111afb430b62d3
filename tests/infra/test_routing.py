"""Networks outside the VPC and the AWS APIs from private subnets, and the config rules behind them.

A route table answers only what it is told: the database and client ranges outside the VPC follow
0.0.0.0/0 to the NAT gateway unless a route sends them to a Transit Gateway or a peering. The
mocks accept any route; these tests check the routes exist and the config refuses a stack that
lists such ranges with neither.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import Any

import pytest

from infra.config import ConfigError, parse_settings
from infra.config_platform import external_cidrs
from infra.routing import interface_endpoints
from infra.mocks import StackRun, run_stack, stack_config
from infra.mesh import subnets
from infra.policies import client_blocks

P = "data-mesh:"
SECRET = {f"{P}databasePassword": "pw"}


@functools.cache
def _run(stack: str) -> StackRun:
    return run_stack(stack)


def _parse(stack: str, **overrides: Any):
    config = {**stack_config(stack), **SECRET}
    for key, value in overrides.items():
        full = f"{P}{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return parse_settings(config, stack, frozenset(SECRET))


def _error(stack: str, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        _parse(stack, **overrides)
    return str(caught.value)


def test_prod_routes_the_database_and_external_clients_to_the_transit_gateway() -> None:
    """prod's database (10.60.0.0/24) and clients in 10.50.0.0/16 lie outside its VPC 10.40.0.0/16."""
    run = _run("prod")
    attachment = run.one("aws:ec2transitgateway/vpcAttachment:VpcAttachment")
    assert attachment.inputs["transitGatewayId"] == "tgw-0123456789abcdef0"
    private = sorted(s.name + "-id" for s in run.of_type("aws:ec2/subnet:Subnet") if "private" in s.name)
    assert sorted(attachment.inputs["subnetIds"]) == private, "attached on the private subnets"
    tables = {t.name + "-id" for t in run.of_type("aws:ec2/routeTable:RouteTable") if "private" in t.name}
    routes = {(r.inputs["routeTableId"], r.inputs["destinationCidrBlock"]): r
              for r in run.of_type("aws:ec2/route:Route") if r.inputs.get("transitGatewayId")}
    public = {key for key in routes if key[0] not in tables}
    assert set(routes) - public == {(t, c) for t in tables for c in ("10.60.0.0/24", "10.50.0.0/16")}
    assert public == {("network-public-rt-id", "10.50.0.0/16")}, "the NLBs' answers to clients (next test)"
    assert all(attachment.urn in r.dependencies for r in routes.values()), "routes wait for the attachment"


def test_a_peering_connection_gets_the_same_routes() -> None:
    run = run_stack("prod", overrides={f"{P}connectivity": json.dumps(
        {"peeringConnectionId": "pcx-0123456789abcdef0", "vpcEndpoints": False})})
    peered = [r for r in run.of_type("aws:ec2/route:Route") if r.inputs.get("vpcPeeringConnectionId")]
    assert len(peered) == 3 * 2 + 1  # per private table: database and clients; the public one: clients
    assert run.of_type("aws:ec2transitgateway/vpcAttachment:VpcAttachment") == []
    assert run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") == []


def test_external_ranges_with_neither_transit_gateway_nor_peering_are_a_config_error() -> None:
    message = _error("prod", connectivity=None)
    assert "'data-mesh:connectivity.transitGatewayId'" in message
    assert "10.60.0.0/24" in message and "10.50.0.0/16" in message
    assert "pulumi config set --path 'data-mesh:connectivity.transitGatewayId'" in message


def test_both_transit_gateway_and_peering_is_a_config_error() -> None:
    message = _error("prod", connectivity={"transitGatewayId": "tgw-0123456789abcdef0",
                                           "peeringConnectionId": "pcx-0123456789abcdef0"})
    assert "pulumi config rm --path 'data-mesh:connectivity.peeringConnectionId'" in message


@pytest.mark.parametrize(("key", "value"), [("transitGatewayId", "tgw-XYZ"), ("peeringConnectionId", "vpc-123")])
def test_malformed_gateway_ids_are_config_errors(key: str, value: str) -> None:
    assert f"'data-mesh:connectivity.{key}'" in _error("prod", connectivity={key: value})


def test_ranges_inside_the_vpc_need_no_route() -> None:
    settings = _parse("dev")
    assert external_cidrs(settings.network.cidr, settings.exposure, settings.database) == ()
    assert [r for r in _run("dev").of_type("aws:ec2/route:Route") if r.inputs["destinationCidrBlock"] != "0.0.0.0/0"] \
        == []


def test_private_nodes_reach_every_aws_api_they_call_through_vpc_endpoints() -> None:
    """Image pulls (ecr.api, ecr.dkr, S3 gateway), credentials (sts; eks-auth for the Pod Identity agent,
    required from private subnets: EKS User Guide "Set up the Amazon EKS Pod Identity Agent"), logs,
    and what Karpenter calls in a private cluster (ec2, ssm, sqs, eks: Karpenter getting-started,
    "Private Clusters") plus the load balancer controller's elasticloadbalancing."""
    run = _run("prod")
    endpoints = {r.inputs["serviceName"].removeprefix("com.amazonaws.eu-west-1."): r
                 for r in run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert set(endpoints) == {"ecr.api", "ecr.dkr", "sts", "logs", "eks-auth", "ec2", "ssm", "sqs", "eks",
                              "elasticloadbalancing", "s3"}
    group = run.one("aws:ec2/securityGroup:SecurityGroup")
    for service, endpoint in endpoints.items():
        if service == "s3":
            assert endpoint.inputs["vpcEndpointType"] == "Gateway"
            assert len(endpoint.inputs["routeTableIds"]) == 3
        else:
            assert endpoint.inputs["vpcEndpointType"] == "Interface" and endpoint.inputs["privateDnsEnabled"]
            assert endpoint.inputs["securityGroupIds"] == [group.name + "-id"]
    (rule,) = [r for r in run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
               if r.inputs["securityGroupId"] == group.name + "-id"]
    assert (rule.inputs["cidrIpv4"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("10.40.0.0/16", 443, 443)


def test_endpoints_are_on_by_default() -> None:
    assert _parse("prod", connectivity={"transitGatewayId": "tgw-0123456789abcdef0"}).connectivity.vpc_endpoints
    assert not _parse("dev").connectivity.vpc_endpoints, "dev opts out in its stack file"
    assert interface_endpoints(_parse("dev"), load_balancer_controller=False) == (
        "ecr.api", "ecr.dkr", "sts", "logs", "eks-auth")


def test_nlb_health_checks_are_admitted_without_admitting_a_pod() -> None:
    """IP targets with client IP preservation show the pods the client address, but the NLB's health
    checks come from its own addresses (LBC docs/guide/service/nlb.md, "Security group"; AWS ELB docs,
    "Target security groups": health checks from the load balancer's private addresses). Left to
    subnet discovery an internal NLB takes addresses of the `internal-elb`-tagged private subnets,
    the pod subnets: admitting them would admit every pod (the old code admitted the whole VPC). The
    NLB is pinned to the public subnets instead, and only those are admitted besides the clients."""
    settings = _parse("prod", exposure={"type": "LoadBalancer", "clientCidrs": ["10.50.0.0/16"]})
    pods, public = subnets(settings)
    blocks = client_blocks(settings.exposure, pods, public)
    assert [b["cidr"] for b in blocks] == ["10.50.0.0/16", *public]
    for block in blocks:
        admitted = ipaddress.ip_network(block["cidr"])
        excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
        for pod in map(ipaddress.ip_network, pods):
            assert not admitted.overlaps(pod) or any(pod.subnet_of(e) for e in excepted), (block, pod)
    service = next(r for r in _run("prod").of_type("kubernetes:core/v1:Service")
                   if r.inputs["metadata"]["name"] == "customer-scoring")
    pinned = service.inputs["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-subnets"]
    expected = sorted(s.name + "-id" for s in _run("prod").of_type("aws:ec2/subnet:Subnet") if "public" in s.name)
    assert sorted(pinned.split(",")) == expected


def test_nlb_answers_to_clients_outside_the_vpc_leave_the_public_subnets_by_the_gateway() -> None:
    """The NLB lives in the public subnets; their route table sends everything else to the internet
    gateway, where answers to 10.50.0.0/16 would be dropped."""
    run = _run("prod")
    public = next(t.name + "-id" for t in run.of_type("aws:ec2/routeTable:RouteTable") if "public" in t.name)
    routes = {r.inputs["destinationCidrBlock"]: r.inputs for r in run.of_type("aws:ec2/route:Route")
              if r.inputs["routeTableId"] == public}
    assert routes["10.50.0.0/16"]["transitGatewayId"] == "tgw-0123456789abcdef0"
    assert "10.60.0.0/24" not in routes, "the database is reached from the private subnets only"


# ---- Karpenter config rules ----------------------------------------------------------------------

def test_disabling_karpenter_while_services_autoscale_is_a_config_error() -> None:
    """The HPAs add pods; only a node autoscaler adds the nodes to hold them."""
    message = _error("prod", karpenter={"enabled": False})
    assert "'data-mesh:karpenter.enabled'" in message and "16 pods" in message and "8 cores" in message


def test_a_node_pool_limit_below_the_hpa_ceilings_is_a_config_error() -> None:
    message = _error("prod", karpenter={"cpuLimit": 4})
    assert "'data-mesh:karpenter.cpuLimit'" in message and "pulumi config set --path" in message


@pytest.mark.parametrize(("setting", "value"), [
    ("amiAlias", "al2023@latest"), ("capacityTypes", ["reserved"]), ("instanceCategories", ["x"])])
def test_karpenter_setting_rules(setting: str, value: Any) -> None:
    assert f"'data-mesh:karpenter.{setting}'" in _error("prod", karpenter={setting: value})
