"""A first `pulumi up` from an empty account, and every upgrade after it: what EKS does that mocks cannot show.

Each test is named after the failure it prevents and says where the fact comes from. Every one of
them fails on the program before issue 12 (list-position entries, a second entry for the creator,
no API rule, 1.31 on EXTENDED support, node version unset, floating add-ons, no protection...).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.addon_versions import ADDON_VERSIONS, ADDONS
from infra.config import ConfigError
from infra.mocks import ACCOUNT_ID, StackRun, run_program, run_stack, stack_config

CLUSTER = "eks:index:Cluster"
NODES = "eks:index:ManagedNodeGroup"
ADDON = "aws:eks/addon:Addon"
RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
P = "data-mesh:"
ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role"


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def addons(run: StackRun) -> dict[str, Any]:
    return {a.inputs["addonName"]: a for a in run.of_type(ADDON)}


# ---- access: the creator's bootstrap entry, entries keyed by ARN -----------------------------------

def test_deploying_role_listed_as_admin_stops_before_any_resource_instead_of_409() -> None:
    """pulumi-eks sets accessConfig.bootstrapClusterCreatorAdminPermissions: true (pulumi/pulumi-eks,
    nodejs/eks/cluster/cluster.ts): EKS already gives the creator an admin entry; a second one for the
    same principal is 409 ResourceInUseException, and the vpc-cni add-on waiting on entries never comes."""
    admins = [f"{ROLE}/platform-admin", f"{ROLE}/deploy-prod"]
    config = {**stack_config("prod", {f"{P}clusterAdminRoleArns": json.dumps(admins)}),
              f"{P}databasePassword": "pw"}
    errors: list[ConfigError] = []

    def program() -> None:
        from infra.config import settings_from_pulumi
        from infra.program import deploy
        try:
            deploy(settings_from_pulumi())
        except ConfigError as error:
            errors.append(error)

    run = run_program("prod", config, {f"{P}databasePassword"}, program=program)
    (error,) = errors
    message = str(error)
    assert f"'{P}clusterAdminRoleArns'" in message and f"{ROLE}/deploy-prod" in message
    assert f"pulumi config rm --path '{P}clusterAdminRoleArns[1]' --stack prod" in message
    assert run.resources == [], "nothing may be declared before the check"


def test_caller_lookup_is_answered_and_the_deployer_gets_no_entry_of_its_own(prod: StackRun) -> None:
    tokens = {i.token for i in prod.invocations if i.answered}
    assert {"aws:index/getCallerIdentity:getCallerIdentity", "aws:iam/getSessionContext:getSessionContext"} <= tokens
    assert prod.unanswered == []
    principals = [e["principalArn"] for e in prod.one(CLUSTER).inputs["accessEntries"].values()]
    assert f"{ROLE}/deploy-prod" not in principals and principals == [f"{ROLE}/platform-admin"]


def test_an_assumed_role_session_is_matched_by_its_role_not_its_sts_arn() -> None:
    """get_caller_identity says arn:aws:sts::<account>:assumed-role/<role>/<session>, never the role's
    IAM ARN; only iam.get_session_context's issuerArn can be compared with the listed roles."""
    with pytest.raises(ConfigError) as caught:
        run_stack("dev", caller_arn=f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/platform-admin/alice")
    assert f"lists {ROLE}/platform-admin," in str(caught.value)
    assert run_stack("dev", caller_arn=f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/breakglass/alice").of_type(CLUSTER)


def test_reordering_admin_roles_replaces_no_access_entry() -> None:
    """Entries were keyed admin-0, admin-1: swapping two ARNs changed both entries' principal (replace)."""
    arns = [f"{ROLE}/platform-admin", f"{ROLE}/sre-oncall"]
    keyed = [{key: entry["principalArn"] for key, entry in
              run_stack("dev", {f"{P}clusterAdminRoleArns": json.dumps(order)}).one(CLUSTER)
              .inputs["accessEntries"].items()} for order in (arns, arns[::-1])]
    assert keyed[0] == keyed[1] and sorted(keyed[0].values()) == sorted(arns)
    assert all("::" not in key for key in keyed[0]), "logical names must not contain the URN separator"


# ---- API reachability ------------------------------------------------------------------------------

def test_private_endpoint_admits_the_runner_network_on_443(prod: StackRun) -> None:
    """With skip_default_security_groups the cluster security group admits only itself; EKS user guide
    (cluster-endpoint): allow tcp/443 from the connected network on the control plane security group."""
    (rule,) = [r for r in prod.of_type(RULE) if "api-from" in r.name]
    assert (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("tcp", 443, 443)
    assert rule.inputs["cidrIpv4"] == "10.50.0.0/16"
    assert rule.inputs["securityGroupId"] == prod.one(CLUSTER).inputs.get("clusterSecurityGroupId",
                                                                           rule.inputs["securityGroupId"])
    assert rule.inputs["securityGroupId"].startswith("sg-")
    provider = prod.one("pulumi:providers:kubernetes", "cluster-k8s")
    assert rule.urn in provider.dependencies, "Kubernetes resources must wait for the API to be reachable"


def test_runner_security_groups_are_admitted_by_reference() -> None:
    access = {"privateCidrs": ["10.50.0.0/16"], "securityGroupIds": ["sg-0123456789abcdef0"]}
    run = run_stack("prod", {f"{P}apiAccess": json.dumps(access)})
    rules = {r.name: r.inputs for r in run.of_type(RULE) if "api-from" in r.name}
    assert rules["cluster-api-from-sg-0123456789abcdef0"]["referencedSecurityGroupId"] == "sg-0123456789abcdef0"


def test_a_private_endpoint_nothing_can_reach_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        run_stack("prod", {f"{P}apiAccess": None})
    message = str(caught.value)
    assert f"'{P}apiAccess.privateCidrs'" in message and "nothing could reach the Kubernetes API" in message
    assert "pulumi config set" in message


# ---- versions and upgrades -------------------------------------------------------------------------

def test_kubernetes_version_is_in_standard_support_and_never_billed_as_extended(stack_run: StackRun) -> None:
    """EKS: 14 months of standard support, then extended support at 6x; the default upgrade policy is
    EXTENDED (pulumi-eks ClusterArgs.upgradePolicy: 'Defaults to "EXTENDED"')."""
    cluster = stack_run.one(CLUSTER)
    assert cluster.inputs["version"] in ADDON_VERSIONS and cluster.inputs["version"] >= "1.35"
    assert cluster.inputs["upgradePolicy"] == {"supportType": "STANDARD"}


@pytest.mark.parametrize("version", ["1.31", "1.34", "1.37"])
def test_a_version_without_standard_support_or_pinned_add_ons_is_refused(version: str) -> None:
    with pytest.raises(ConfigError) as caught:
        run_stack("dev", {f"{P}kubernetesVersion": version})
    assert f"'{P}kubernetesVersion'" in str(caught.value) and "pulumi config set" in str(caught.value)


def test_node_group_follows_the_control_plane_version(stack_run: StackRun) -> None:
    """pulumi-eks nodejs/eks/nodes/nodegroup.ts defaults the version only `if (!args.version &&
    !args.launchTemplate)`: with our launch template the nodes kept their old version on an upgrade."""
    assert stack_run.one(NODES).inputs["version"] == stack_run.one(CLUSTER).inputs["version"]


def test_every_addon_is_declared_once_at_its_pinned_version(stack_run: StackRun) -> None:
    """pulumi-eks creates vpc-cni and kube-proxy itself at getAddonVersion(mostRecent: true), and no
    coredns with skipDefaultNodeGroup (cluster.ts): switched off there, declared here, never both."""
    cluster = stack_run.one(CLUSTER).inputs
    assert cluster["useDefaultVpcCni"] is True and "vpcCniOptions" not in cluster
    assert cluster["kubeProxyAddonOptions"]["enabled"] is False
    assert cluster["corednsAddonOptions"]["enabled"] is False
    declared = addons(stack_run)
    assert sorted(declared) == sorted(ADDONS)
    pinned = ADDON_VERSIONS[cluster["version"]]
    assert {name: a.inputs["addonVersion"] for name, a in declared.items()} == pinned


def test_vpc_cni_enforces_network_policy_strictly_from_pod_start(stack_run: StackRun) -> None:
    """amazon-vpc-cni-k8s README, NETWORK_POLICY_ENFORCING_MODE (v1.17.1+): in `standard` a new pod
    allows all traffic until its policies are programmed; `strict` starts it denied."""
    values = json.loads(addons(stack_run)["vpc-cni"].inputs["configurationValues"])
    assert values == {"enableNetworkPolicy": "true", "env": {"NETWORK_POLICY_ENFORCING_MODE": "strict"}}


def test_strict_mode_keeps_dns_and_metrics_reachable(stack_run: StackRun) -> None:
    """Strict mode: "you must have a network policy defined for every pod" (same README); CoreDNS and
    metrics-server are not host-networked, so they get kube-system policies before they start."""
    policies = {p.get("metadata.name"): p for p in stack_run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
                if p.get("metadata.namespace") == "kube-system"}
    dns = policies["allow-coredns"].inputs["spec"]
    assert dns["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {"port": 53, "protocol": "UDP"} in dns["ingress"][0]["ports"]
    declared = addons(stack_run)
    assert policies["allow-coredns"].urn in declared["coredns"].dependencies
    assert policies["allow-metrics-server"].urn in declared["metrics-server"].dependencies


def test_version_bump_upgrades_control_plane_then_addons_then_nodes(stack_run: StackRun) -> None:
    """The order of every update follows depends_on: DaemonSets before the nodes (a node is Ready only
    with its CNI), Deployments after them (CoreDNS created before any node goes DEGRADED)."""
    declared, cluster, nodes = addons(stack_run), stack_run.one(CLUSTER), stack_run.one(NODES)
    for name in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent"):
        assert cluster.urn in declared[name].dependencies, name
        assert declared[name].urn in nodes.dependencies, f"nodes before {name}"
    for name in ("coredns", "metrics-server"):
        assert nodes.urn in declared[name].dependencies, f"{name} before the nodes"
    bumped = run_stack(stack_run.stack, {f"{P}kubernetesVersion": "1.36"})
    assert bumped.one(CLUSTER).inputs["version"] == bumped.one(NODES).inputs["version"] == "1.36"
    assert {n: a.inputs["addonVersion"] for n, a in addons(bumped).items()} == ADDON_VERSIONS["1.36"]


def test_services_wait_for_nodes_dns_cni_and_metrics(stack_run: StackRun) -> None:
    """Without it the first `up` created Deployments (and HPAs) while no node, DNS or metrics existed."""
    needed = {stack_run.one(NODES).urn, *(a.urn for n, a in addons(stack_run).items() if n != "eks-pod-identity-agent")}
    mesh = stack_run.one("mesh:k8s:ServiceMesh")
    workloads = [r for r in stack_run.resources if r.type.startswith("kubernetes:")
                 and r.get("metadata.namespace") == mesh_namespace(stack_run)]
    assert workloads and mesh
    for resource in workloads:
        assert needed <= set(resource.dependencies), (resource.name, needed - set(resource.dependencies))


def mesh_namespace(run: StackRun) -> str:
    return run.one("kubernetes:core/v1:Namespace", "mesh-namespace").get("metadata.name")


# ---- protection, logs, flow-log trust ---------------------------------------------------------------

def test_prod_refuses_to_delete_cluster_key_and_repositories(stack_run: StackRun) -> None:
    protected = stack_run.stack == "prod"
    for resource in (stack_run.one(CLUSTER), stack_run.one("aws:kms/key:Key"),
                     *stack_run.of_type("aws:ecr/repository:Repository")):
        assert resource.protect is protected, resource.name
    assert stack_run.one(CLUSTER).inputs["deletionProtection"] is protected


def test_control_plane_log_group_exists_before_eks_creates_one_that_never_expires(stack_run: StackRun) -> None:
    """EKS writes to /aws/eks/<cluster>/cluster and creates it, with no retention, if absent (EKS user
    guide, control-plane-logs)."""
    group = next(g for g in stack_run.of_type("aws:cloudwatch/logGroup:LogGroup")
                 if g.inputs["name"] == f"/aws/eks/data-mesh-{stack_run.stack}/cluster")
    assert group.inputs["retentionInDays"] == {"dev": 30, "prod": 365}[stack_run.stack]
    assert group.urn in stack_run.one(CLUSTER).dependencies


def test_flow_log_role_is_assumable_only_for_this_accounts_flow_logs(stack_run: StackRun) -> None:
    """The confused deputy: without aws:SourceAccount/aws:SourceArn any account's flow log could use the
    role (Amazon VPC user guide, flow-logs-iam-role)."""
    role = stack_run.one("aws:iam/role:Role", "network-flow-logs")
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT_ID}
    assert statement["Condition"]["ArnLike"] == {
        "aws:SourceArn": f"arn:aws:ec2:eu-west-1:{ACCOUNT_ID}:vpc-flow-log/*"}


# ---- the database's server identity ---------------------------------------------------------------

def test_prod_verifies_the_database_server_against_a_mounted_ca_bundle(prod: StackRun) -> None:
    """sslmode=require encrypts but accepts any certificate; verify-full needs the CA (sslrootcert)."""
    maps = {c.get("metadata.name"): c for c in prod.of_type("kubernetes:core/v1:ConfigMap")}
    url = maps["customer-features-config"].inputs["data"]["APINODE_SQL_URL"]
    assert "sslmode=verify-full" in url and "sslrootcert=/etc/apinode/database-ca/ca.crt" in url
    assert "BEGIN CERTIFICATE" in maps["customer-features-database-ca"].inputs["data"]["ca.crt"]
    deployment = next(d for d in prod.of_type("kubernetes:apps/v1:Deployment")
                      if d.get("metadata.name") == "customer-features")
    pod = deployment.inputs["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "database-ca"]
    assert volume["configMap"]["name"] == "customer-features-database-ca"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["database-ca"] == {"name": "database-ca", "mountPath": "/etc/apinode/database-ca",
                                     "readOnly": True}


def test_verify_full_without_a_ca_bundle_is_a_config_error() -> None:
    database = {"host": "db.internal", "name": "features", "user": "reader", "cidr": "10.60.0.0/24"}
    with pytest.raises(ConfigError) as caught:
        run_stack("prod", {f"{P}database": json.dumps(database)})
    assert f"'{P}database.caBundleFile'" in str(caught.value) and "verify-full" in str(caught.value)
