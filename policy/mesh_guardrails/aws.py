"""Rules on the AWS side: ECR repositories and the EKS control plane.

Each rule is a function of (resource_type, props, stack) returning violation messages.
`eks:index:Cluster` (pulumi-eks) is a component: the engine shows the policy pack its
inputs, and its `aws:eks/cluster:Cluster` child only when the provider expands it, so the
EKS rules read both shapes.
"""
from collections.abc import Mapping

from . import ranges
from .props import as_list, dig, is_prod

ECR_REPOSITORY = "aws:ecr/repository:Repository"
EKS_COMPONENT = "eks:index:Cluster"
EKS_CLUSTER = "aws:eks/cluster:Cluster"

REQUIRED_LOG_TYPES = ("api", "audit", "authenticator")


def ecr_scan_on_push(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type != ECR_REPOSITORY:
        return []
    if dig(props, "imageScanningConfiguration", "scanOnPush") is True:
        return []
    return ["ECR repository does not scan images on push: "
            "set image_scanning_configuration={'scan_on_push': True}"]


def ecr_immutable_tags_in_prod(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type != ECR_REPOSITORY or not is_prod(stack):
        return []
    mutability = props.get("imageTagMutability") or "MUTABLE (the default)"
    if mutability == "IMMUTABLE":
        return []
    return [f"ECR repository in stack '{stack}' allows tags to be overwritten "
            f"(image_tag_mutability={mutability}): set image_tag_mutability='IMMUTABLE'"]


def eks_secrets_encryption(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type == EKS_COMPONENT:
        if props.get("encryptionConfigKeyArn"):
            return []
        return ["EKS cluster does not envelope-encrypt Kubernetes secrets with a KMS key: "
                "set encryption_config_key_arn to a KMS key ARN"]
    if resource_type == EKS_CLUSTER:
        config = props.get("encryptionConfig")
        if "secrets" in as_list(dig(config, "resources")) and dig(config, "provider", "keyArn"):
            return []
        return ["EKS cluster does not envelope-encrypt Kubernetes secrets with a KMS key: "
                "set encryption_config={'resources': ['secrets'], 'provider': {'key_arn': ...}}"]
    return []


def eks_control_plane_logging(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type not in (EKS_COMPONENT, EKS_CLUSTER):
        return []
    enabled = set(as_list(props.get("enabledClusterLogTypes")))
    missing = [log for log in REQUIRED_LOG_TYPES if log not in enabled]
    if not missing:
        return []
    return [f"EKS control-plane logging is missing {', '.join(missing)}: "
            f"set enabled_cluster_log_types to include {', '.join(REQUIRED_LOG_TYPES)}"]


def eks_endpoint_not_open(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type == EKS_COMPONENT:
        settings = props
    elif resource_type == EKS_CLUSTER:
        settings = props.get("vpcConfig") or {}
    else:
        return []
    # AWS defaults: the public endpoint is on and open to every address.
    if settings.get("endpointPublicAccess") is False:
        return []
    cidrs = [str(c) for c in as_list(settings.get("publicAccessCidrs"))] or ["0.0.0.0/0"]
    if not ranges.is_open(cidrs):
        return []
    return [f"EKS API endpoint is public and open to {ranges.describe(cidrs)}: "
            "set endpoint_public_access=False or restrict public_access_cidrs to known networks"]
