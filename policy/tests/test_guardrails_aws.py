"""Each AWS guardrail catches a crafted violation with a message that says how to fix it."""
import copy

import pytest

from policy.mesh_guardrails import aws

REPO = "aws:ecr/repository:Repository"


def good_repository() -> dict:
    return {"imageScanningConfiguration": {"scanOnPush": True}, "imageTagMutability": "IMMUTABLE",
            "forceDelete": False}


def good_component() -> dict:
    return {"encryptionConfigKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/k",
            "enabledClusterLogTypes": ["api", "audit", "authenticator", "scheduler"],
            "endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]}


def good_cluster() -> dict:
    return {"encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn:aws:kms:k"}},
            "enabledClusterLogTypes": ["api", "audit", "authenticator"],
            "vpcConfig": {"endpointPublicAccess": False, "subnetIds": ["subnet-1"]}}


def with_change(props: dict, path: str, value) -> dict:
    """A deep copy of props with the dotted path set to value (None deletes it)."""
    changed = copy.deepcopy(props)
    *parents, leaf = path.split(".")
    target = changed
    for key in parents:
        target = target.setdefault(key, {})
    if value is None:
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return changed


@pytest.mark.parametrize("rule, resource_type, props", [
    (aws.ecr_scan_on_push, REPO, good_repository()),
    (aws.ecr_immutable_tags_in_prod, REPO, good_repository()),
    (aws.eks_secrets_encryption, aws.EKS_COMPONENT, good_component()),
    (aws.eks_secrets_encryption, aws.EKS_CLUSTER, good_cluster()),
    (aws.eks_control_plane_logging, aws.EKS_COMPONENT, good_component()),
    (aws.eks_control_plane_logging, aws.EKS_CLUSTER, good_cluster()),
    (aws.eks_endpoint_not_open, aws.EKS_COMPONENT, good_component()),
    (aws.eks_endpoint_not_open, aws.EKS_CLUSTER, good_cluster()),
])
def test_compliant_resource_passes(rule, resource_type, props):
    assert rule(resource_type, props, "prod") == []


@pytest.mark.parametrize("rule, resource_type, props, stack, expected", [
    pytest.param(aws.ecr_scan_on_push, REPO, with_change(good_repository(), "imageScanningConfiguration", None),
                 "dev", "scan_on_push", id="ecr-scan-missing"),
    pytest.param(aws.ecr_scan_on_push, REPO,
                 with_change(good_repository(), "imageScanningConfiguration.scanOnPush", False),
                 "prod", "scan_on_push", id="ecr-scan-off"),
    pytest.param(aws.ecr_immutable_tags_in_prod, REPO,
                 with_change(good_repository(), "imageTagMutability", "MUTABLE"),
                 "prod", "image_tag_mutability='IMMUTABLE'", id="ecr-mutable-prod"),
    pytest.param(aws.ecr_immutable_tags_in_prod, REPO, with_change(good_repository(), "imageTagMutability", None),
                 "prod", "MUTABLE (the default)", id="ecr-default-mutability-prod"),
    pytest.param(aws.eks_secrets_encryption, aws.EKS_COMPONENT,
                 with_change(good_component(), "encryptionConfigKeyArn", None),
                 "dev", "encryption_config_key_arn", id="eks-component-no-kms"),
    pytest.param(aws.eks_secrets_encryption, aws.EKS_CLUSTER,
                 with_change(good_cluster(), "encryptionConfig.resources", []),
                 "dev", "encrypt Kubernetes secrets", id="eks-cluster-encrypts-nothing"),
    pytest.param(aws.eks_secrets_encryption, aws.EKS_CLUSTER, with_change(good_cluster(), "encryptionConfig", None),
                 "dev", "encryption_config=", id="eks-cluster-no-encryption"),
    pytest.param(aws.eks_control_plane_logging, aws.EKS_COMPONENT,
                 with_change(good_component(), "enabledClusterLogTypes", ["api"]),
                 "dev", "missing audit, authenticator", id="eks-component-partial-logs"),
    pytest.param(aws.eks_control_plane_logging, aws.EKS_CLUSTER,
                 with_change(good_cluster(), "enabledClusterLogTypes", None),
                 "dev", "missing api, audit, authenticator", id="eks-cluster-no-logs"),
    pytest.param(aws.eks_endpoint_not_open, aws.EKS_COMPONENT,
                 with_change(good_component(), "publicAccessCidrs", None),
                 "dev", "open to 0.0.0.0/0", id="eks-component-default-cidrs"),
    pytest.param(aws.eks_endpoint_not_open, aws.EKS_COMPONENT,
                 with_change(good_component(), "publicAccessCidrs", ["10.0.0.0/8", "::/0"]),
                 "dev", "::/0 (together", id="eks-component-open-ipv6"),
    pytest.param(aws.eks_endpoint_not_open, aws.EKS_CLUSTER,
                 with_change(good_cluster(), "vpcConfig.endpointPublicAccess", None),
                 "dev", "endpoint_public_access=False", id="eks-cluster-default-public"),
    pytest.param(aws.eks_endpoint_not_open, aws.EKS_CLUSTER,
                 with_change(with_change(good_cluster(), "vpcConfig.endpointPublicAccess", True),
                             "vpcConfig.publicAccessCidrs", ["0.0.0.0/0"]),
                 "prod", "open to 0.0.0.0/0", id="eks-cluster-open"),
])
def test_violation_is_caught_with_a_clear_message(rule, resource_type, props, stack, expected):
    messages = rule(resource_type, props, stack)
    assert len(messages) == 1, messages
    assert expected in messages[0]


def test_mutable_tags_are_allowed_outside_prod():
    mutable = with_change(good_repository(), "imageTagMutability", "MUTABLE")
    assert aws.ecr_immutable_tags_in_prod(REPO, mutable, "dev") == []
    assert aws.ecr_immutable_tags_in_prod(REPO, mutable, "prod") != []


def test_rules_ignore_other_resource_types():
    for rule in (aws.ecr_scan_on_push, aws.ecr_immutable_tags_in_prod, aws.eks_secrets_encryption,
                 aws.eks_control_plane_logging, aws.eks_endpoint_not_open):
        assert rule("aws:s3/bucket:Bucket", {}, "prod") == []
