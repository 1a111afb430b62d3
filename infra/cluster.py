"""The EKS control plane, its managed node group and the Kubernetes provider everything else deploys with."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from infra.settings import StackSettings

CONTROL_PLANE_LOGS = ("api", "audit", "authenticator", "controllerManager", "scheduler")
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
)
AMI_TYPE = "AL2023_x86_64_STANDARD"


def cluster_name(settings: StackSettings) -> str:
    """The EKS cluster's name; the subnets are tagged with it before the cluster exists."""
    return settings.name


@dataclass(frozen=True, kw_only=True)
class ClusterArgs:
    """The network the cluster lives in, and the stack settings."""

    settings: StackSettings
    vpc_id: pulumi.Input[str]
    public_subnet_ids: pulumi.Input[list[str]]
    private_subnet_ids: pulumi.Input[list[str]]
    # Node ports opened to the stack's client CIDRs when services are exposed as NodePort.
    node_ports: tuple[int, ...] = ()


class Cluster(pulumi.ComponentResource):
    """EKS with API access entries, OIDC, audit logs, KMS-encrypted secrets and network policies on."""

    name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:Cluster", name, None, opts)
        settings = args.settings
        nodes = settings.cluster.node_group
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        tags = {**settings.tags, "Name": cluster_name(settings)}

        key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"{settings.name}: envelope encryption of Kubernetes secrets",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=tags,
            opts=child,
        )
        aws.kms.Alias(f"{name}-secrets-key", name=f"alias/{settings.name}-eks-secrets", target_key_id=key.key_id,
                      opts=child)

        public_cidrs = list(settings.cluster.public_endpoint_cidrs)
        self._eks = eks.Cluster(
            f"{name}-eks",
            name=cluster_name(settings),
            version=settings.cluster.kubernetes_version,
            vpc_id=args.vpc_id,
            public_subnet_ids=args.public_subnet_ids,
            private_subnet_ids=args.private_subnet_ids,
            node_associate_public_ip_address=False,
            # Managed nodes then carry the EKS-created cluster security group, the one opened below.
            skip_default_security_groups=True,
            skip_default_node_group=True,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries={
                f"admin-{index}": eks.AccessEntryArgs(
                    principal_arn=arn,
                    access_policies={"cluster-admin": eks.AccessPolicyAssociationArgs(
                        policy_arn=CLUSTER_ADMIN_POLICY,
                        access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    )},
                )
                for index, arn in enumerate(settings.cluster.admin_role_arns)
            },
            create_oidc_provider=True,
            enabled_cluster_log_types=list(CONTROL_PLANE_LOGS),
            encryption_config_key_arn=key.arn,
            endpoint_private_access=True,
            endpoint_public_access=bool(public_cidrs),
            public_access_cidrs=public_cidrs or None,
            # The network-policy agent enforces the namespace's NetworkPolicies (zero trust between pods).
            vpc_cni_options=eks.VpcCniOptionsArgs(enable_network_policy=True),
            tags=tags,
            opts=child,
        )

        if settings.exposure.type == "NodePort" and args.node_ports:
            # Managed nodes accept only their own security group; clients inside the VPC need the node ports.
            for index, cidr in enumerate(settings.exposure.client_cidrs):
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-nodeports-{index}",
                    security_group_id=self._eks.cluster_security_group_id,
                    description=f"{settings.name}: service NodePorts from client range {cidr}",
                    cidr_ipv4=cidr,
                    ip_protocol="tcp",
                    from_port=min(args.node_ports),
                    to_port=max(args.node_ports),
                    tags=tags,
                    opts=child,
                )

        node_role = aws.iam.Role(
            f"{name}-node-role",
            name=f"{settings.name}-nodes",
            assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
            tags=tags,
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-node-{arn.rsplit('/', 1)[1]}", role=node_role.name,
                                         policy_arn=arn, opts=child)
            for arn in NODE_POLICIES
        ]
        launch_template = aws.ec2.LaunchTemplate(
            f"{name}-nodes",
            name_prefix=f"{settings.name}-nodes-",
            description="EKS managed nodes: IMDSv2 only, encrypted root volume",
            # Pods use no instance credentials: a hop limit of 1 keeps them from reaching the node's role.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=nodes.disk_size_gb, volume_type="gp3", encrypted="true",
                    delete_on_termination="true"),
            )],
            tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(
                resource_type=kind, tags={**tags, "Name": f"{settings.name}-node"})
                for kind in ("instance", "volume")],
            tags=tags,
            opts=child,
        )
        eks.ManagedNodeGroup(
            f"{name}-nodes",
            cluster=self._eks,
            node_group_name_prefix=f"{settings.name}-",
            node_role=node_role,
            subnet_ids=args.private_subnet_ids,
            ami_type=AMI_TYPE,
            instance_types=list(nodes.instance_types),
            capacity_type=nodes.capacity_type,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=nodes.min_size, desired_size=nodes.desired_size, max_size=nodes.max_size),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=launch_template.id, version=launch_template.latest_version.apply(str)),
            tags=tags,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=attachments)),
        )

        self.name = self._eks.kubeconfig_json.apply(lambda _: cluster_name(settings))
        self.kubeconfig = pulumi.Output.secret(self._eks.kubeconfig_json)
        self.oidc_provider_arn = self._eks.oidc_provider_arn
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=child,
        )
        self.register_outputs({
            "name": self.name,
            "kubeconfig": self.kubeconfig,
            "oidc_provider_arn": self.oidc_provider_arn,
        })
