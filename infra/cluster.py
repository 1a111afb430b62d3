"""The EKS control plane, its managed node group, its add-ons and the Kubernetes provider everything else uses."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from infra.access import admin_access_entries
from infra.addons import ClusterAddons, ClusterAddonsArgs
from infra.settings import StackSettings

CONTROL_PLANE_LOGS = ("api", "audit", "authenticator", "controllerManager", "scheduler")
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
)
AMI_TYPE = "AL2023_x86_64_STANDARD"


def cluster_name(settings: StackSettings) -> str:
    """The EKS cluster's name; the subnets are tagged with it before the cluster exists."""
    return settings.name


def control_plane_log_group(settings: StackSettings) -> str:
    """Where EKS writes control-plane logs; it creates the group itself, never expiring, if it is absent
    (EKS user guide, control-plane-logs: "/aws/eks/my-cluster/cluster")."""
    return f"/aws/eks/{cluster_name(settings)}/cluster"


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in value)


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
    """EKS with API access entries, OIDC, audit logs, KMS-encrypted secrets, pinned add-ons and strict
    network policies; its node group runs the version of its control plane."""

    name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    security_group_id: pulumi.Output[str]  # EKS's cluster security group: control plane and nodes
    provider: k8s.Provider
    addons: ClusterAddons
    node_group: eks.ManagedNodeGroup

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:infra:Cluster", name, None, opts)
        settings = args.settings
        nodes = settings.cluster.node_group
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        tags = {**settings.tags, "Name": cluster_name(settings)}
        protected = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=settings.protect))

        key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"{settings.name}: envelope encryption of Kubernetes secrets",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=tags,
            opts=protected,
        )
        aws.kms.Alias(f"{name}-secrets-key", name=f"alias/{settings.name}-eks-secrets", target_key_id=key.key_id,
                      opts=child)

        # Declared before the cluster: otherwise EKS creates it on first log, with no expiry.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs",
            name=control_plane_log_group(settings),
            retention_in_days=settings.cluster.log_retention_days,
            tags=tags,
            opts=child,
        )

        public_cidrs = list(settings.cluster.public_endpoint_cidrs)
        self._eks = eks.Cluster(
            f"{name}-eks",
            name=cluster_name(settings),
            version=settings.cluster.kubernetes_version,
            # Standard support only: on EXTENDED (the default) an unattended version bills 6x per hour.
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            deletion_protection=settings.protect,
            vpc_id=args.vpc_id,
            public_subnet_ids=args.public_subnet_ids,
            private_subnet_ids=args.private_subnet_ids,
            node_associate_public_ip_address=False,
            # Managed nodes then carry the EKS-created cluster security group, the one opened below.
            skip_default_security_groups=True,
            skip_default_node_group=True,
            authentication_mode=eks.AuthenticationMode.API,
            # Keyed by ARN; the deploying principal is never among them (infra/access.py).
            access_entries=admin_access_entries(settings.cluster.admin_role_arns),
            create_oidc_provider=True,
            enabled_cluster_log_types=list(CONTROL_PLANE_LOGS),
            encryption_config_key_arn=key.arn,
            endpoint_private_access=True,
            endpoint_public_access=bool(public_cidrs),
            public_access_cidrs=public_cidrs or None,
            # ClusterAddons owns vpc-cni, kube-proxy and coredns (pinned versions, strict network policy):
            # pulumi-eks must not manage them too. No self-managed copies either: the managed add-ons
            # install them before the nodes start.
            use_default_vpc_cni=True,
            kube_proxy_addon_options=eks.KubeProxyAddonOptionsArgs(enabled=False),
            coredns_addon_options=eks.CoreDnsAddonOptionsArgs(enabled=False),
            bootstrap_self_managed_addons=False,
            tags=tags,
            opts=pulumi.ResourceOptions.merge(protected, pulumi.ResourceOptions(depends_on=[log_group])),
        )
        api_rules = self._api_access_rules(name, settings, tags, child)

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
        # Known once the control plane is: everything keyed on the name waits for the cluster.
        self.name = self._eks.kubeconfig_json.apply(lambda _: cluster_name(settings))
        self.kubeconfig = pulumi.Output.secret(self._eks.kubeconfig_json)
        # Every Kubernetes resource goes through this provider, so it waits for the API to be reachable.
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=api_rules)),
        )

        def make_nodes(prerequisites: list[pulumi.Resource]) -> eks.ManagedNodeGroup:
            return eks.ManagedNodeGroup(
                f"{name}-nodes",
                cluster=self._eks,
                node_group_name_prefix=f"{settings.name}-",
                # With a launch template pulumi-eks leaves the version unset (nodejs/eks/nodes/nodegroup.ts:
                # "if (!args.version && !args.launchTemplate)"), so nodes would stay behind a control plane
                # upgrade; set here, they follow it.
                version=settings.cluster.kubernetes_version,
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
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                    depends_on=[*attachments, *prerequisites])),
            )

        self.addons = ClusterAddons(f"{name}-addons", ClusterAddonsArgs(
            cluster_name=self.name,
            kubernetes_version=settings.cluster.kubernetes_version,
            vpc_cidr=settings.network.cidr,
            tags=tags,
            provider=self.provider,
            make_nodes=make_nodes,
        ), opts=child)
        self.node_group = self.addons.nodes

        self.oidc_provider_arn = self._eks.oidc_provider_arn
        self.security_group_id = self._eks.cluster_security_group_id
        self.register_outputs({
            "name": self.name,
            "kubeconfig": self.kubeconfig,
            "oidc_provider_arn": self.oidc_provider_arn,
            "security_group_id": self.security_group_id,
        })

    @property
    def workload_dependencies(self) -> list[pulumi.Resource]:
        """What the services' Kubernetes resources wait for: the node group and the add-ons they use."""
        return self.addons.workload_dependencies

    def _api_access_rules(self, name: str, settings: StackSettings, tags: dict[str, str],
                          child: pulumi.ResourceOptions) -> list[aws.vpc.SecurityGroupIngressRule]:
        """tcp/443 to the private endpoint from the listed networks and security groups.

        With ``skip_default_security_groups`` only the EKS-created cluster security group guards the
        endpoint, and it admits only itself; a runner in the VPC or a connected network needs a rule
        (EKS user guide, cluster-endpoint: "ensure that your Amazon EKS control plane security group
        contains rules to allow ingress traffic on port 443 from your connected network").
        """
        sources = [("cidr_ipv4", cidr) for cidr in settings.cluster.api_private_cidrs]
        sources += [("referenced_security_group_id", group) for group in settings.cluster.api_security_group_ids]
        return [
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-api-from-{_slug(value)}",  # by source, not position: reordering replaces nothing
                security_group_id=self._eks.cluster_security_group_id,
                description=f"{settings.name}: Kubernetes API (private endpoint) from {value}",
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                tags=tags,
                opts=child,
                **{field: value},
            )
            for field, value in sources
        ]
