"""The EKS cluster and node group as `pulumi preview` would show them, per stack."""

from __future__ import annotations

import json

from infra.access import CLUSTER_ADMIN_POLICY
from infra.mocks import StackRun

CLUSTER = "eks:index:Cluster"
NODES = "eks:index:ManagedNodeGroup"
EXPECTED = {
    "dev": {"admins": ["arn:aws:iam::123456789012:role/platform-admin"],
            "public_cidrs": ["203.0.113.0/24", "198.51.100.16/28"],
            "instance_types": ["t3.large"], "scaling": {"minSize": 1, "desiredSize": 1, "maxSize": 2}, "disk": 30},
    "prod": {"admins": ["arn:aws:iam::123456789012:role/platform-admin"],
             "public_cidrs": [], "instance_types": ["m6i.large", "m5.large"],
             "scaling": {"minSize": 2, "desiredSize": 3, "maxSize": 6}, "disk": 50},
}


def test_cluster_version_network_and_no_default_node_group(stack_run: StackRun) -> None:
    cluster = stack_run.one(CLUSTER)
    assert cluster.inputs["version"] == "1.35"
    assert cluster.inputs["name"] == f"data-mesh-{stack_run.stack}"
    assert cluster.inputs["vpcId"] == "network-vpc-id"
    zones = 2 if stack_run.stack == "dev" else 3
    assert cluster.inputs["privateSubnetIds"] == [f"network-private-{i}-id" for i in range(zones)]
    assert cluster.inputs["publicSubnetIds"] == [f"network-public-{i}-id" for i in range(zones)]
    assert cluster.inputs["skipDefaultNodeGroup"] is True
    assert cluster.inputs["nodeAssociatePublicIpAddress"] is False


def test_admin_roles_get_api_access_entries_with_cluster_admin(stack_run: StackRun) -> None:
    cluster = stack_run.one(CLUSTER)
    assert cluster.inputs["authenticationMode"] == "API"
    entries = cluster.inputs["accessEntries"].values()
    assert sorted(e["principalArn"] for e in entries) == sorted(EXPECTED[stack_run.stack]["admins"])
    for entry in entries:
        (policy,) = entry["accessPolicies"].values()
        assert policy == {"policyArn": CLUSTER_ADMIN_POLICY, "accessScope": {"type": "cluster"}}


def test_oidc_logging_and_kms_secrets_encryption(stack_run: StackRun) -> None:
    cluster = stack_run.one(CLUSTER)
    assert cluster.inputs["createOidcProvider"] is True
    assert sorted(cluster.inputs["enabledClusterLogTypes"]) == sorted(
        ["api", "audit", "authenticator", "controllerManager", "scheduler"])
    key = stack_run.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    assert cluster.inputs["encryptionConfigKeyArn"].endswith(f":key/{key.name}-id")


def test_endpoint_private_always_public_only_for_listed_cidrs(stack_run: StackRun) -> None:
    cluster = stack_run.one(CLUSTER)
    cidrs = EXPECTED[stack_run.stack]["public_cidrs"]
    assert cluster.inputs["endpointPrivateAccess"] is True
    assert cluster.inputs["endpointPublicAccess"] is bool(cidrs)
    assert cluster.inputs.get("publicAccessCidrs", []) == cidrs
    assert "0.0.0.0/0" not in cluster.inputs.get("publicAccessCidrs", [])


def test_vpc_cni_network_policy_agent_is_enabled(stack_run: StackRun) -> None:
    vpc_cni = stack_run.one("aws:eks/addon:Addon", "cluster-addons-vpc-cni")
    assert json.loads(vpc_cni.inputs["configurationValues"])["enableNetworkPolicy"] == "true"


def test_node_group_in_private_subnets_with_stack_sizes(stack_run: StackRun) -> None:
    nodes = stack_run.one(NODES)
    expected = EXPECTED[stack_run.stack]
    assert nodes.inputs["cluster"].urn == stack_run.one(CLUSTER).urn
    assert nodes.inputs["subnetIds"] == stack_run.one(CLUSTER).inputs["privateSubnetIds"]
    assert nodes.inputs["instanceTypes"] == expected["instance_types"]
    assert nodes.inputs["scalingConfig"] == expected["scaling"]
    assert nodes.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert nodes.inputs["capacityType"] == "ON_DEMAND"
    assert nodes.inputs["nodeRole"].urn == stack_run.one("aws:iam/role:Role", "cluster-node-role").urn


def test_nodes_require_imdsv2_and_encrypt_their_disk(stack_run: StackRun) -> None:
    template = stack_run.one("aws:ec2/launchTemplate:LaunchTemplate")
    nodes = stack_run.one(NODES)
    assert nodes.inputs["launchTemplate"]["id"] == f"{template.name}-id"
    metadata = template.inputs["metadataOptions"]
    assert metadata["httpTokens"] == "required"
    assert metadata["httpPutResponseHopLimit"] == 1
    (disk,) = template.inputs["blockDeviceMappings"]
    assert disk["ebs"]["volumeSize"] == EXPECTED[stack_run.stack]["disk"]
    assert disk["ebs"]["encrypted"] == "true"
    assert "diskSize" not in nodes.inputs  # EKS rejects disk size next to a launch template


def test_node_role_is_assumable_by_ec2_with_the_worker_policies(stack_run: StackRun) -> None:
    role = stack_run.one("aws:iam/role:Role", "cluster-node-role")
    assert '"ec2.amazonaws.com"' in role.inputs["assumeRolePolicy"]
    attached = {a.inputs["policyArn"].rsplit("/", 1)[1]
                for a in stack_run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if a.parent == stack_run.one("mesh:infra:Cluster").urn}
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"}


def test_kubernetes_provider_uses_the_cluster_kubeconfig_as_a_secret(stack_run: StackRun) -> None:
    provider = stack_run.one("pulumi:providers:kubernetes", "cluster-k8s")
    assert "kubeconfig" in provider.secret_inputs
    assert f'"--cluster-name", "data-mesh-{stack_run.stack}"' in provider.inputs["kubeconfig"]


def test_node_ports_open_to_client_cidrs_only_when_exposed_as_node_port(stack_run: StackRun) -> None:
    rules = stack_run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    node_port_rules = [rule for rule in rules if "nodeports" in rule.name]
    if stack_run.stack == "dev":
        assert [rule.inputs["cidrIpv4"] for rule in node_port_rules] == ["10.20.0.0/16"]
        (rule,) = node_port_rules
        assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["ipProtocol"]) == (30080, 30081, "tcp")
        assert rule.inputs["securityGroupId"].startswith("sg-")
        assert stack_run.one(CLUSTER).inputs["skipDefaultSecurityGroups"] is True
    else:
        assert node_port_rules == []
