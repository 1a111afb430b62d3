"""The catalogue of mandatory guardrails, independent of the policy engine."""
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import aws, kubernetes

Check = Callable[[str, Mapping, str], list[str]]


@dataclass(frozen=True)
class Rule:
    """One guardrail: its policy name, what it requires, and the check returning violations."""

    name: str
    description: str
    check: Check


RULES: tuple[Rule, ...] = (
    Rule("ecr-scan-on-push", "ECR repositories scan every pushed image.", aws.ecr_scan_on_push),
    Rule("ecr-immutable-tags-in-prod", "ECR repositories in prod have immutable tags.",
         aws.ecr_immutable_tags_in_prod),
    Rule("eks-secrets-encryption", "EKS envelope-encrypts Kubernetes secrets with a KMS key.",
         aws.eks_secrets_encryption),
    Rule("eks-control-plane-logging", "EKS ships api, audit and authenticator logs.",
         aws.eks_control_plane_logging),
    Rule("eks-endpoint-not-open", "The EKS API endpoint is private or limited to known networks.",
         aws.eks_endpoint_not_open),
    Rule("pods-run-as-non-root", "Every container runs as a non-root user.", kubernetes.pods_run_as_non_root),
    Rule("containers-have-limits", "Every container has CPU and memory limits.",
         kubernetes.containers_have_limits),
    Rule("images-by-digest", "Every container image is pinned by sha256 digest.", kubernetes.images_by_digest),
    Rule("no-nodeport-in-prod", "No NodePort Service in prod.", kubernetes.no_nodeport_in_prod),
    Rule("no-secret-literals", "No credential in a ConfigMap or a literal env value.",
         kubernetes.no_secret_literals),
)


def violations(resource_type: str, props: Mapping, stack: str) -> list[tuple[str, str]]:
    """Every (rule name, message) the resource breaks."""
    return [(rule.name, message) for rule in RULES for message in rule.check(resource_type, props, stack)]
