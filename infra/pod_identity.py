"""An IAM role a cluster add-on's service account assumes through EKS Pod Identity."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"


def pod_identity_trust(cluster_name: str, namespace: str, service_account: str) -> dict[str, Any]:
    """Who may assume the role: EKS Pod Identity, for this one service account of this one cluster.

    AssumeRole and TagSession are both required; the session tags Pod Identity sets
    (kubernetes-namespace, kubernetes-service-account, eks-cluster-name) scope the role
    (EKS User Guide, "Create IAM role with trust policy required by EKS Pod Identity").
    """
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "AllowEksAuthToAssumeRoleForPodIdentity",
        "Effect": "Allow",
        "Principal": {"Service": POD_IDENTITY_PRINCIPAL},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {
            "aws:RequestTag/eks-cluster-name": cluster_name,
            "aws:RequestTag/kubernetes-namespace": namespace,
            "aws:RequestTag/kubernetes-service-account": service_account,
        }},
    }]}


def pod_identity_role(name: str, *, role_name: str, cluster_name: pulumi.Input[str], namespace: str,
                      service_account: str, policies: Mapping[str, pulumi.Input[str]], tags: Mapping[str, str],
                      opts: pulumi.ResourceOptions, depends_on: Sequence[pulumi.Resource] = ()
                      ) -> tuple[aws.iam.Role, aws.eks.PodIdentityAssociation]:
    """The role, one customer-managed policy per document, and the association to the service account.

    ``depends_on`` is the eks-pod-identity-agent add-on: without the agent on the nodes an
    association hands out no credentials.
    """
    role = aws.iam.Role(
        f"{name}-role",
        name=role_name,
        assume_role_policy=pulumi.Output.from_input(cluster_name).apply(
            lambda cluster: json.dumps(pod_identity_trust(cluster, namespace, service_account))),
        tags=dict(tags),
        opts=opts,
    )
    attachments = []
    for policy_name, document in policies.items():
        policy = aws.iam.Policy(f"{name}-{policy_name}", name=f"{role_name}-{policy_name}", policy=document,
                                tags=dict(tags), opts=opts)
        attachments.append(aws.iam.RolePolicyAttachment(f"{name}-{policy_name}", role=role.name,
                                                        policy_arn=policy.arn, opts=opts))
    association = aws.eks.PodIdentityAssociation(
        f"{name}-pod-identity",
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role.arn,
        tags=dict(tags),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[*attachments, *depends_on])),
    )
    return role, association
