"""Node autoscaling with Karpenter: IAM, interruption queue, node access, Helm releases, NodePool.

The managed node group keeps the system pods (CoreDNS, the controllers, Karpenter itself);
Karpenter adds and removes the nodes the services' HPAs need beyond it. Everything here follows
Karpenter's getting-started CloudFormation template (aws/karpenter-provider-aws v1.14.1,
website/content/en/docs/getting-started/getting-started-with-karpenter/cloudformation.yaml), whose
six controller policies are kept verbatim in ``infra/iam/karpenter-controller-v1.14.1.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.controllers import controller_network_policy, on_managed_nodes
from infra.pod_identity import pod_identity_role
from infra.settings import StackSettings
from infra.settings_platform import KarpenterSettings

VERSION = "1.14.1"  # chart and app; Kubernetes 1.35 needs >= 1.9 (docs/upgrading/compatibility.md)
CHART_REPOSITORY = "oci://public.ecr.aws/karpenter"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"
POLICIES_FILE = Path(__file__).with_name("iam") / f"karpenter-controller-v{VERSION}.json"
NODE_POLICIES = ("AmazonEKS_CNI_Policy", "AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly",
                 "AmazonSSMManagedInstanceCore")
# EventBridge rules of the template, each sending its events to the interruption queue.
INTERRUPTION_EVENTS = {
    "scheduled-change": ("aws.health", "AWS Health Event"),
    "spot-interruption": ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    "rebalance": ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    "instance-state-change": ("aws.ec2", "EC2 Instance State-change Notification"),
    "capacity-reservation-interruption": ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
}
DISCOVERY_TAG = "karpenter.sh/discovery"
# istio-cni's node agent is not ready on a new node; istiod's untaint controller removes this taint
# once it is (istio pilot/pkg/serviceregistry/kube/controller/untaint.go, TaintName). Pods scheduled
# before that would start outside the ambient mesh.
ISTIO_CNI_TAINT = {"key": "cni.istio.io/not-ready", "effect": "NoSchedule"}
NODE_CLASS = "default"
NODE_POOL = "services"


def controller_policies(cluster_name: str, partition: str, region: str, account: str, node_role_arn: str,
                        queue_arn: str) -> dict[str, str]:
    """The template's six policy documents with its ``${...}`` parameters filled in."""
    document = json.loads(POLICIES_FILE.read_text())
    substitutions = {"${ClusterName}": cluster_name, "${AWS::Partition}": partition, "${AWS::Region}": region,
                     "${AWS::AccountId}": account, "${KarpenterNodeRole.Arn}": node_role_arn,
                     "${KarpenterInterruptionQueue.Arn}": queue_arn}
    policies = {}
    for name, policy in document["policies"].items():
        text = json.dumps(policy, separators=(",", ":"))
        for placeholder, value in substitutions.items():
            text = text.replace(placeholder, value)
        if "${" in text:
            raise ValueError(f"{POLICIES_FILE.name}: {name} has a parameter this program does not fill")
        policies[name] = text
    return policies


def queue_policy(queue_arn: str) -> dict[str, Any]:
    """EventBridge (and SQS) may send; nothing may use the queue over plain HTTP."""
    return {"Id": "EC2InterruptionPolicy", "Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
         "Action": "sqs:SendMessage", "Resource": queue_arn},
        {"Sid": "DenyHTTP", "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": queue_arn,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}


def controller_values(settings: StackSettings, cluster_name: str, queue_name: str) -> dict[str, Any]:
    """Chart values: cluster, interruption queue, region (IMDS is out of reach: hop limit 1), placement."""
    replicas = 2 if settings.cluster.node_group.min_size >= 2 else 1
    return {
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        "replicas": replicas,
        "settings": {"clusterName": cluster_name, "interruptionQueue": queue_name},
        "controller": {
            "env": [{"name": "AWS_REGION", "value": settings.region}],
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        },
        "affinity": {**on_managed_nodes(), "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname"}]}},
        "podDisruptionBudget": {"name": "karpenter", "maxUnavailable": 1},
    }


def node_class_spec(settings: StackSettings, karpenter: KarpenterSettings, cluster_name: str,
                    node_role: str) -> dict[str, Any]:
    """Private subnets and the cluster security group by discovery tag; pinned AL2023; IMDSv2; encrypted disk."""
    nodes = settings.cluster.node_group
    return {
        "role": node_role,
        "amiSelectorTerms": [{"alias": karpenter.ami_alias}],
        "subnetSelectorTerms": [{"tags": {DISCOVERY_TAG: cluster_name, "tier": "private"}}],
        "securityGroupSelectorTerms": [{"tags": {DISCOVERY_TAG: cluster_name}}],
        "associatePublicIPAddress": False,
        # Hop limit 1: pods cannot reach the node's role through the metadata service.
        "metadataOptions": {"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled",
                            "httpPutResponseHopLimit": 1, "httpTokens": "required"},
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {
            "volumeSize": f"{nodes.disk_size_gb}Gi", "volumeType": "gp3", "encrypted": True,
            "deleteOnTermination": True}}],
        "tags": {**settings.tags, "Name": f"{settings.name}-karpenter-node"},
    }


def node_pool_spec(karpenter: KarpenterSettings) -> dict[str, Any]:
    """What Karpenter may launch for the services, up to limits that hold the HPAs' ceilings."""
    return {
        "template": {"spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": NODE_CLASS},
            "requirements": [
                {"key": "karpenter.k8s.aws/instance-category", "operator": "In",
                 "values": list(karpenter.instance_categories)},
                {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["5"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": list(karpenter.capacity_types)},
            ],
            "startupTaints": [ISTIO_CNI_TAINT],
            "expireAfter": "720h",
        }},
        "limits": {"cpu": str(karpenter.cpu_limit), "memory": f"{karpenter.memory_limit_gi}Gi"},
        "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "5m",
                       "budgets": [{"nodes": "10%"}]},
    }


@dataclass(frozen=True, kw_only=True)
class KarpenterArgs:
    """The cluster Karpenter scales, and what must exist before its controller starts."""

    settings: StackSettings
    karpenter: KarpenterSettings
    cluster_name: pulumi.Input[str]
    cluster_security_group_id: pulumi.Input[str]
    kubernetes_provider: k8s.Provider
    # The eks-pod-identity-agent add-on and the managed node group the controller runs on.
    depends_on: Sequence[pulumi.Resource] = ()
    tags: Mapping[str, str] | None = None


class Karpenter(pulumi.ComponentResource):
    """Karpenter's IAM, interruption handling, node access entry, CRDs, controller, EC2NodeClass and NodePool."""

    node_role_arn: pulumi.Output[str]
    queue_name: pulumi.Output[str]
    controller: k8s.helm.v3.Release

    def __init__(self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:Karpenter", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        tags = {**settings.tags, **(args.tags or {})}
        cluster_name = pulumi.Output.from_input(args.cluster_name)

        node_role = aws.iam.Role(
            f"{name}-node-role",
            name=f"{settings.name}-karpenter-nodes",
            assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
            tags=tags, opts=child)
        node_attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-node-{policy}", role=node_role.name,
                                         policy_arn=f"arn:aws:iam::aws:policy/{policy}", opts=child)
            for policy in NODE_POLICIES
        ]
        # Karpenter's nodes are self-managed to EKS: with API authentication they join only with an
        # EC2_LINUX access entry for their role (EKS User Guide, "Create access entries").
        node_access = aws.eks.AccessEntry(f"{name}-node-access", cluster_name=cluster_name,
                                          principal_arn=node_role.arn, type="EC2_LINUX", tags=tags, opts=child)
        # The cluster security group is EKS's; the EC2NodeClass finds it by this tag.
        security_group_tag = aws.ec2.Tag(f"{name}-security-group-discovery",
                                         resource_id=args.cluster_security_group_id, key=DISCOVERY_TAG,
                                         value=cluster_name, opts=child)

        queue = aws.sqs.Queue(f"{name}-interruptions", name=f"{settings.name}-karpenter",
                              message_retention_seconds=300, sqs_managed_sse_enabled=True, tags=tags, opts=child)
        aws.sqs.QueuePolicy(f"{name}-interruptions", queue_url=queue.url,
                            policy=queue.arn.apply(lambda arn: json.dumps(queue_policy(arn))), opts=child)
        for rule_name, (source, detail_type) in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{rule_name}", name=f"{settings.name}-karpenter-{rule_name}",
                event_pattern=json.dumps({"source": [source], "detail-type": [detail_type]}), tags=tags, opts=child)
            aws.cloudwatch.EventTarget(f"{name}-{rule_name}", rule=rule.name, target_id="KarpenterInterruptionQueue",
                                       arn=queue.arn, opts=child)

        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self)).partition
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        documents = pulumi.Output.all(cluster_name, partition, account, node_role.arn, queue.arn).apply(
            lambda v: controller_policies(v[0], v[1], settings.region, v[2], v[3], v[4]))
        _, association = pod_identity_role(
            f"{name}-controller", role_name=f"{settings.name}-karpenter", cluster_name=cluster_name,
            namespace=NAMESPACE, service_account=SERVICE_ACCOUNT,
            policies={policy: documents[policy] for policy in json.loads(POLICIES_FILE.read_text())["policies"]},
            tags=tags, opts=child, depends_on=args.depends_on)

        on_cluster = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(provider=args.kubernetes_provider))
        # Karpenter 1.x serves no webhook: nothing needs to reach it (kubelet probes always may).
        policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy", metadata={"name": "allow-karpenter", "namespace": NAMESPACE},
            spec=controller_network_policy("karpenter"), opts=on_cluster)
        crds = k8s.helm.v3.Release(
            f"{name}-crd", name="karpenter-crd", chart=f"{CHART_REPOSITORY}/karpenter-crd", version=VERSION,
            namespace=NAMESPACE, atomic=True,
            opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=list(args.depends_on))))
        self.controller = k8s.helm.v3.Release(
            f"{name}-controller", name="karpenter", chart=f"{CHART_REPOSITORY}/karpenter", version=VERSION,
            namespace=NAMESPACE, skip_crds=True, atomic=True,
            values=pulumi.Output.all(cluster_name, queue.name).apply(
                lambda v: controller_values(settings, v[0], v[1])),
            opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(
                depends_on=[crds, association, policy, *node_attachments, *args.depends_on])))

        after_controller = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(
            depends_on=[self.controller, node_access, security_group_tag]))
        node_class = k8s.apiextensions.CustomResource(
            f"{name}-node-class", api_version="karpenter.k8s.aws/v1", kind="EC2NodeClass",
            metadata={"name": NODE_CLASS},
            spec=pulumi.Output.all(cluster_name, node_role.name).apply(
                lambda v: node_class_spec(settings, args.karpenter, v[0], v[1])),
            opts=after_controller)
        k8s.apiextensions.CustomResource(
            f"{name}-node-pool", api_version="karpenter.sh/v1", kind="NodePool", metadata={"name": NODE_POOL},
            spec=node_pool_spec(args.karpenter),
            opts=pulumi.ResourceOptions.merge(after_controller, pulumi.ResourceOptions(depends_on=[node_class])))

        self.node_role_arn = node_role.arn
        self.queue_name = queue.name
        self.register_outputs({"node_role_arn": self.node_role_arn, "queue_name": self.queue_name})
