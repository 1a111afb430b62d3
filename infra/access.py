"""Who administers the cluster: the principal running `pulumi up`, and the EKS access entries of the others.

pulumi-eks creates the cluster with ``accessConfig.bootstrapClusterCreatorAdminPermissions: true``
(pulumi/pulumi-eks, nodejs/eks/cluster/cluster.ts, the ``accessConfig`` of ``aws.eks.Cluster``): EKS
itself gives the creating principal an access entry with cluster-admin. A second entry declared for
the same principal fails with ``409 ResourceInUseException``, so the program looks the principal up
and stops before declaring anything when it is listed in ``data-mesh:clusterAdminRoleArns``.
"""

from __future__ import annotations

import hashlib
import re

import pulumi_aws as aws
import pulumi_eks as eks

from infra.config import PROJECT, ConfigError
from infra.settings import StackSettings

CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
_NAME_UNSAFE = re.compile(r"[^a-z0-9-]+")


def deploying_principal() -> str:
    """The IAM identity behind the running credentials: the role of an assumed-role session, else the ARN.

    ``get_caller_identity`` returns ``arn:aws:sts::<account>:assumed-role/<role>/<session>`` for a role
    session; ``iam.get_session_context`` turns it into the role's IAM ARN, the form access entries use.
    """
    caller = aws.get_caller_identity()
    return aws.iam.get_session_context(arn=caller.arn).issuer_arn


def refuse_deployer_as_listed_admin(settings: StackSettings, deployer: str) -> None:
    """Fail before any resource when the running principal would get a second (conflicting) access entry."""
    arns = settings.cluster.admin_role_arns
    if deployer not in arns:
        return
    key = f"{PROJECT}:clusterAdminRoleArns"
    raise ConfigError(
        f"config key '{key}': lists {deployer}, the principal running this program. EKS already gives the "
        "principal that creates the cluster an admin access entry (bootstrapClusterCreatorAdminPermissions), "
        "so a second entry fails with 409 ResourceInUseException. Run every `pulumi up` of this stack as its "
        f"deploy role and leave it out of the list. Fix: pulumi config rm --path "
        f"'{key}[{arns.index(deployer)}]' --stack {settings.stack}"
    )


def entry_name(arn: str) -> str:
    """A logical name derived from the ARN alone: reordering the list never replaces an entry.

    ARNs contain ``::`` (the URN separator), so the name is the role's last path segment plus a hash of
    the whole ARN (two roles of the same name in different paths or accounts stay distinct).
    """
    role = _NAME_UNSAFE.sub("-", arn.rsplit("/", 1)[-1].lower()).strip("-")[:40]
    return f"admin-{role}-{hashlib.sha256(arn.encode()).hexdigest()[:8]}"


def admin_access_entries(admin_arns: tuple[str, ...]) -> dict[str, eks.AccessEntryArgs]:
    """One cluster-admin access entry per listed role, keyed by its ARN-derived name."""
    return {
        entry_name(arn): eks.AccessEntryArgs(
            principal_arn=arn,
            access_policies={"cluster-admin": eks.AccessPolicyAssociationArgs(
                policy_arn=CLUSTER_ADMIN_POLICY,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
            )},
        )
        for arn in admin_arns
    }

