"""Karpenter and the AWS Load Balancer Controller: what the services rely on that EKS does not bring.

Each test is named after the failure it prevents on a real cluster and says where the fact comes
from, so the next upgrade of a pinned version knows what to re-check.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from infra import karpenter, load_balancer_controller as lbc
from infra.config_platform import hpa_ceiling_millicores, millicores
from infra.mocks import Captured, StackRun, run_stack
from infra.render import manifests

RELEASE = "kubernetes:helm.sh/v3:Release"
# Internet-facing: an internal ALB would sit in the pod subnets, which infra/policies.py refuses.
INGRESS = json.dumps({"type": "Ingress", "internal": False, "clientCidrs": ["198.51.100.0/24"],
                      "host": "mesh.example.com"})


@functools.cache
def _run(stack: str, ingress: bool = False) -> StackRun:
    return run_stack(stack, overrides={"data-mesh:exposure": INGRESS} if ingress else None)


def _settings(stack: str):
    from infra.config import parse_settings
    from infra.mocks import stack_config

    config = {**stack_config(stack), "data-mesh:databasePassword": "pw"}
    return parse_settings(config, stack, frozenset({"data-mesh:databasePassword"}))


def release(run: StackRun, chart_name: str) -> Captured:
    return next(r for r in run.of_type(RELEASE) if r.inputs["name"] == chart_name)


def custom(run: StackRun, kind: str) -> Captured:
    (found,) = [r for r in run.resources if r.type.endswith(f":{kind}") and r.custom]
    return found


def depends_on(run: StackRun, resource: Captured, other: Captured) -> bool:
    return other.urn in resource.dependencies


def trust(role: Captured) -> dict[str, Any]:
    return json.loads(role.inputs["assumeRolePolicy"])


def role_named(run: StackRun, name: str) -> Captured:
    return next(r for r in run.of_type("aws:iam/role:Role") if r.inputs["name"] == name)


# ---- Karpenter ------------------------------------------------------------------------------------

def test_hpa_ceilings_beyond_the_managed_group_get_a_node_pool_that_holds_them() -> None:
    """prod's HPAs reach 16 pods x 500m = 8 cores; the managed group stops at its maxSize, so without
    a node autoscaler the extra pods stay Pending. The NodePool's limits must hold that ceiling."""
    settings = _settings("prod")
    pool = custom(_run("prod"), "NodePool").inputs["spec"]
    ceiling = hpa_ceiling_millicores(settings.services)
    assert ceiling == 8000
    assert millicores(pool["limits"]["cpu"]) >= ceiling
    assert pool["template"]["spec"]["nodeClassRef"] == {
        "group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": karpenter.NODE_CLASS}


def test_karpenter_charts_are_pinned_crds_first_then_controller_then_node_pool() -> None:
    """CRDs from the karpenter-crd chart (Helm installs a chart's crds/ only once; Karpenter's upgrade
    guide, docs/upgrading/upgrade-guide.md "CRD Upgrades"), the controller after them, the custom
    resources after the controller."""
    run = _run("prod")
    crds, controller = release(run, "karpenter-crd"), release(run, "karpenter")
    for chart in (crds, controller):
        assert chart.inputs["version"] == karpenter.VERSION and chart.inputs["chart"].startswith("oci://")
    assert controller.inputs["skipCrds"] is True
    assert depends_on(run, controller, crds)
    assert depends_on(run, custom(run, "EC2NodeClass"), controller)
    assert depends_on(run, custom(run, "NodePool"), custom(run, "EC2NodeClass"))
    settings = controller.inputs["values"]["settings"]
    queue = run.one("aws:sqs/queue:Queue")
    assert settings == {"clusterName": "data-mesh-prod", "interruptionQueue": queue.inputs["name"]}


def test_karpenter_nodes_have_an_ec2_linux_access_entry_or_they_never_join() -> None:
    """With API authentication EKS creates access entries for managed node groups only; a node
    Karpenter launches is self-managed and needs an EC2_LINUX entry for its role (EKS User Guide,
    "Create access entries": EC2_LINUX for self-managed node roles)."""
    run = _run("prod")
    node_role = role_named(run, "data-mesh-prod-karpenter-nodes")
    entry = run.one("aws:eks/accessEntry:AccessEntry")
    assert entry.inputs["type"] == "EC2_LINUX"
    assert entry.inputs["principalArn"] == f"arn:aws:iam::123456789012:role/{node_role.inputs['name']}"
    node_class = custom(run, "EC2NodeClass")
    assert node_class.inputs["spec"]["role"] == node_role.inputs["name"]
    assert depends_on(run, custom(run, "EC2NodeClass"), entry)


def test_karpenter_controller_gets_the_template_policies_through_pod_identity_only() -> None:
    """The six policies of Karpenter's getting-started CloudFormation template (v1.14.1), filled in
    for this cluster; the role trusts EKS Pod Identity (pods.eks.amazonaws.com, AssumeRole +
    TagSession: EKS User Guide, "Create IAM role with trust policy required by EKS Pod Identity")
    for kube-system/karpenter only."""
    run = _run("prod")
    role = role_named(run, "data-mesh-prod-karpenter")
    (statement,) = trust(role)["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert statement["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    assert statement["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-service-account"] == "karpenter"
    association = next(a for a in run.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
                       if a.inputs["serviceAccount"] == "karpenter")
    assert association.inputs["namespace"] == "kube-system"
    assert association.inputs["roleArn"] == "arn:aws:iam::123456789012:role/data-mesh-prod-karpenter"
    policies = {p.inputs["name"]: json.loads(p.inputs["policy"]) for p in run.of_type("aws:iam/policy:Policy")
                if p.inputs["name"].startswith("data-mesh-prod-karpenter-")}
    assert {name.removeprefix("data-mesh-prod-karpenter-") for name in policies} == {
        "NodeLifecyclePolicy", "IAMIntegrationPolicy", "EKSIntegrationPolicy", "InterruptionPolicy",
        "ZonalShiftPolicy", "ResourceDiscoveryPolicy"}
    text = json.dumps(policies)
    assert "${" not in text
    passrole = policies["data-mesh-prod-karpenter-IAMIntegrationPolicy"]["Statement"][0]
    assert passrole["Action"] == "iam:PassRole"
    assert passrole["Resource"] == "arn:aws:iam::123456789012:role/data-mesh-prod-karpenter-nodes"
    queue = policies["data-mesh-prod-karpenter-InterruptionPolicy"]["Statement"][0]["Resource"]
    assert queue == "arn:aws:sqs:eu-west-1:123456789012:data-mesh-prod-karpenter"


def test_interruption_queue_is_fed_by_health_spot_rebalance_and_state_change_events() -> None:
    """Without the queue and its rules a Spot reclaim or a scheduled maintenance kills the node's pods
    with no drain (Karpenter's CloudFormation template: ScheduledChangeRule, SpotInterruptionRule,
    RebalanceRule, InstanceStateChangeRule, CapacityReservationInterruptionRule)."""
    run = _run("prod")
    queue = run.one("aws:sqs/queue:Queue")
    assert queue.inputs["messageRetentionSeconds"] == 300 and queue.inputs["sqsManagedSseEnabled"] is True
    patterns = {(p["source"][0], p["detail-type"][0]) for p in
                (json.loads(r.inputs["eventPattern"]) for r in run.of_type("aws:cloudwatch/eventRule:EventRule"))}
    assert {("aws.health", "AWS Health Event"), ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
            ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
            ("aws.ec2", "EC2 Instance State-change Notification")} <= patterns
    targets = run.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == len(patterns) and {t.inputs["arn"] for t in targets} == {
        "arn:aws:sqs:eu-west-1:123456789012:data-mesh-prod-karpenter"}
    policy = json.loads(run.one("aws:sqs/queuePolicy:QueuePolicy").inputs["policy"])
    assert policy["Statement"][0]["Principal"]["Service"] == ["events.amazonaws.com", "sqs.amazonaws.com"]


def test_karpenter_runs_on_the_managed_group_never_on_its_own_nodes() -> None:
    """A controller on a node it manages can consolidate itself away; the chart's default only keeps
    it off Karpenter nodes (charts/karpenter/values.yaml affinity); we also require the managed group."""
    values = release(_run("prod"), "karpenter").inputs["values"]
    (term,) = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert {"key": "karpenter.sh/nodepool", "operator": "DoesNotExist"} in term["matchExpressions"]
    assert {"key": "eks.amazonaws.com/nodegroup", "operator": "Exists"} in term["matchExpressions"]
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in values["controller"]["env"]


def test_new_karpenter_nodes_stay_tainted_until_istio_cni_is_ready() -> None:
    """A pod scheduled before istio-cni is up on a fresh node starts outside the ambient mesh;
    istiod's untaint controller removes cni.istio.io/not-ready once the CNI pod is ready
    (istio pilot/pkg/serviceregistry/kube/controller/untaint.go)."""
    spec = custom(_run("prod"), "NodePool").inputs["spec"]["template"]["spec"]
    assert {"key": "cni.istio.io/not-ready", "effect": "NoSchedule"} in spec["startupTaints"]


def test_node_class_finds_only_private_subnets_and_the_cluster_security_group() -> None:
    """The EC2NodeClass selects by tag: the discovery tag sits on the private subnets only (nodes
    never in public subnets) and on EKS's cluster security group (the one control plane and nodes
    share)."""
    run = _run("prod")
    spec = custom(run, "EC2NodeClass").inputs["spec"]
    (subnets,) = spec["subnetSelectorTerms"]
    tagged = [s for s in run.of_type("aws:ec2/subnet:Subnet")
              if all(s.inputs["tags"].get(k) == v for k, v in subnets["tags"].items())]
    assert tagged and all(s.inputs["tags"]["tier"] == "private" for s in tagged)
    assert len(tagged) == 3
    tag = run.one("aws:ec2/tag:Tag")
    assert {tag.inputs["key"]: tag.inputs["value"]} == spec["securityGroupSelectorTerms"][0]["tags"]
    assert tag.inputs["resourceId"].startswith("sg-")
    assert spec["metadataOptions"]["httpTokens"] == "required"
    assert spec["blockDeviceMappings"][0]["ebs"]["encrypted"] is True
    assert spec["amiSelectorTerms"] == [{"alias": "al2023@v20260520"}], "pinned: latest drifts every node"


def test_dev_without_autoscaling_runs_no_karpenter() -> None:
    assert _run("dev").of_type("kubernetes:karpenter.sh/v1:NodePool") == []
    assert _settings("dev").karpenter is None


# ---- AWS Load Balancer Controller -----------------------------------------------------------------

def test_ingress_exposure_declares_a_controller_that_serves_the_ingress_class() -> None:
    """EKS brings no ingress controller: an Ingress of class alb with no controller never gets an
    address and Pulumi fails after waiting 10 minutes. dev with exposure.type Ingress declares the
    controller, its IngressClass (controller ingress.k8s.aws/alb) and parameters."""
    run = _run("dev", ingress=True)
    items = manifests(run.resources)
    ingresses = [m for m in items if m["kind"] == "Ingress"]
    assert ingresses
    classes = {m["metadata"]["name"]: m for m in items if m["kind"] == "IngressClass"}
    for ingress in ingresses:
        served = classes[ingress["spec"]["ingressClassName"]]
        assert served["spec"]["controller"] == lbc.INGRESS_CONTROLLER
        assert served["spec"]["parameters"]["kind"] == "IngressClassParams"
    controller = release(run, lbc.CHART)
    assert controller.inputs["version"] == lbc.VERSION
    assert controller.inputs["repositoryOpts"] == {"repo": lbc.CHART_REPOSITORY}
    assert {k: controller.inputs["values"][k] for k in ("clusterName", "region")} == {
        "clusterName": "data-mesh-dev", "region": "eu-west-1"}
    assert controller.inputs["values"]["vpcId"] == run.one("aws:ec2/vpc:Vpc", "network-vpc").name + "-id"
    for ingress in (r for r in run.of_type("kubernetes:networking.k8s.io/v1:Ingress")):
        assert depends_on(run, ingress, controller), "the controller's webhook admits the Ingress"


def test_prod_nlb_is_provisioned_by_the_controller_with_ip_targets_not_the_in_tree_provisioner() -> None:
    """`service.beta.kubernetes.io/aws-load-balancer-type: nlb` alone is served by the legacy in-tree
    provisioner; spec.loadBalancerClass service.k8s.aws/nlb hands the Service to the controller
    (LBC docs/guide/service/nlb.md), which registers the pods' IPs as targets."""
    run = _run("prod")
    controller = release(run, lbc.CHART)
    services = run.of_type("kubernetes:core/v1:Service")
    assert services
    for service in services:
        spec, annotations = service.inputs["spec"], service.inputs["metadata"]["annotations"]
        assert spec["loadBalancerClass"] == "service.k8s.aws/nlb"
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
        assert "service.beta.kubernetes.io/aws-load-balancer-type" not in annotations
        assert depends_on(run, service, controller)


def test_load_balancer_controller_policy_is_the_published_one_via_pod_identity() -> None:
    """The policy is docs/install/iam_policy.json of kubernetes-sigs/aws-load-balancer-controller
    v3.5.0, embedded verbatim; Pod Identity is the install guide's recommended option."""
    run = _run("prod")
    (policy,) = [p for p in run.of_type("aws:iam/policy:Policy")
                 if p.inputs["name"] == "data-mesh-prod-aws-load-balancer-controller-policy"]
    assert json.loads(policy.inputs["policy"]) == json.loads(lbc.POLICY_FILE.read_text())
    assert len(policy.inputs["policy"]) <= 6144, "IAM managed policy size limit"
    role = role_named(run, "data-mesh-prod-aws-load-balancer-controller")
    assert trust(role)["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    association = next(a for a in run.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
                       if a.inputs["serviceAccount"] == lbc.SERVICE_ACCOUNT)
    assert association.inputs["namespace"] == "kube-system"


def test_nodeport_dev_runs_no_load_balancer_controller() -> None:
    assert [r for r in _run("dev").of_type(RELEASE) if r.inputs["name"] == lbc.CHART] == []


@pytest.mark.parametrize("chart", [lbc.CHART, "karpenter"])
def test_controllers_wait_for_the_managed_group_and_their_pod_identity(chart: str) -> None:
    """Helm waits for the pods: with no node yet they stay Pending and the release times out; with no
    association yet the controller starts without credentials."""
    run = _run("prod")
    controller = release(run, chart)
    assert "cluster-nodes" in {d.split("::")[-1] for d in controller.dependencies}
    association = next(a for a in run.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
                       if a.inputs["serviceAccount"] in (lbc.SERVICE_ACCOUNT, "karpenter")
                       and a.inputs["serviceAccount"] == controller.inputs["values"]["serviceAccount"]["name"])
    assert depends_on(run, controller, association)


def test_controllers_wait_for_the_pod_identity_agent_add_on_they_are_given() -> None:
    """A Pod Identity association hands out credentials only through the eks-pod-identity-agent on
    the node (EKS User Guide, "Set up the Amazon EKS Pod Identity Agent"): the releases wait for the
    cluster add-ons passed in ``PlatformAddonsArgs.cluster_addons``."""
    import pulumi_aws as aws

    from infra.cluster import Cluster, ClusterArgs, cluster_name
    from infra.config import settings_from_pulumi
    from infra.mocks import run_program, stack_config
    from infra.network import Network, NetworkArgs
    from infra.platform_addons import PlatformAddons, PlatformAddonsArgs

    def program() -> None:
        settings = settings_from_pulumi()
        network = Network("network", NetworkArgs(settings=settings, cluster_name=cluster_name(settings)))
        cluster = Cluster("cluster", ClusterArgs(settings=settings, vpc_id=network.vpc_id,
                                                 public_subnet_ids=network.public_subnet_ids,
                                                 private_subnet_ids=network.private_subnet_ids))
        agent = aws.eks.Addon("eks-pod-identity-agent", cluster_name=cluster.name,
                              addon_name="eks-pod-identity-agent")
        PlatformAddons("platform", PlatformAddonsArgs(settings=settings, network=network, cluster=cluster,
                                                      cluster_addons=[agent]))

    secrets = {"data-mesh:databasePassword": "pw"}
    run = run_program("prod", {**stack_config("prod"), **secrets}, frozenset(secrets), program=program)
    agent = run.one("aws:eks/addon:Addon", "eks-pod-identity-agent")
    for chart in ("karpenter-crd", "karpenter", lbc.CHART):
        assert depends_on(run, release(run, chart), agent), chart
    for association in run.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation"):
        assert depends_on(run, association, agent)


@pytest.mark.parametrize(("chart", "policy_name"), [
    ("karpenter", "allow-karpenter"), (lbc.CHART, "allow-aws-load-balancer-controller")])
def test_controllers_have_the_network_policy_a_strict_network_policy_agent_demands(chart: str,
                                                                                  policy_name: str) -> None:
    """Under the VPC CNI's strict enforcing mode a pod no policy selects can reach nothing
    (amazon-vpc-cni-k8s README, NETWORK_POLICY_ENFORCING_MODE): each controller gets DNS, HTTPS and
    its Pod Identity credentials (169.254.170.23:80, EKS User Guide) before it starts; the load
    balancer controller also admits its webhook port from the VPC (the control plane's interfaces)."""
    run = _run("prod")
    (policy,) = [p for p in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
                 if p.inputs["metadata"]["name"] == policy_name]
    assert policy.inputs["metadata"]["namespace"] == "kube-system"
    spec = policy.inputs["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": chart}}
    assert {"to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}], "ports": [{"port": 80, "protocol": "TCP"}]} \
        in spec["egress"]
    assert {"port": 443, "protocol": "TCP"} in spec["egress"][0]["ports"]
    if chart == lbc.CHART:
        assert spec["ingress"] == [{"from": [{"ipBlock": {"cidr": "10.40.0.0/16"}}],
                                    "ports": [{"port": 9443, "protocol": "TCP"}]}]
    assert depends_on(run, release(run, chart), policy), "the policy exists before the pods start"


def test_in_the_program_the_controllers_wait_for_the_clusters_pod_identity_agent() -> None:
    """The committed stacks wire ClusterAddons' eks-pod-identity-agent into the platform add-ons."""
    run = _run("prod")
    (agent,) = [a for a in run.of_type("aws:eks/addon:Addon") if a.inputs["addonName"] == "eks-pod-identity-agent"]
    for chart in ("karpenter-crd", "karpenter", lbc.CHART):
        assert depends_on(run, release(run, chart), agent), chart
