"""The catalogue of mandatory guardrails, independent of the policy engine."""
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from . import aws, exposure, kubernetes, namespaces, pods

Check = Callable[[str, Mapping, str], list[str]]
StackCheck = Callable[[Iterable[tuple[str, Mapping]], str], list[str]]


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
    Rule("no-open-load-balancer", "No internet-facing load balancer whose source ranges add up to the internet.",
         exposure.no_open_load_balancer),
    Rule("no-open-ingress", "No internet-facing ALB whose inbound CIDRs add up to the internet.",
         exposure.no_open_ingress),
    Rule("no-open-network-policy", "No NetworkPolicy whose ipBlocks add up to the internet.",
         exposure.no_open_network_policy),
    Rule("no-privileged-containers", "No privileged container.", pods.no_privileged_containers),
    Rule("no-host-namespaces", "No pod shares the node's network, PID or IPC namespace.", pods.no_host_namespaces),
    Rule("no-host-path-volumes", "No pod mounts a path of the node.", pods.no_host_path_volumes),
    Rule("no-added-capabilities", "No container adds a capability (NET_BIND_SERVICE at most).",
         pods.no_added_capabilities),
    Rule("no-token-automount", "No pod or ServiceAccount mounts a Kubernetes API token.", pods.no_token_automount),
    Rule("restricted-pod-security", "Every namespace enforces the restricted Pod Security Standard "
         "(node-agent namespaces may be privileged).", namespaces.restricted_pod_security),
)


@dataclass(frozen=True)
class StackRule:
    """A guardrail over the whole stack: resources judged by what else the stack declares."""

    name: str
    description: str
    check: StackCheck


STACK_RULES: tuple[StackRule, ...] = (
    StackRule("namespace-zero-trust", "Every namespace running pods has a default-deny NetworkPolicy, STRICT mTLS "
              "and is in the mesh.", namespaces.namespace_zero_trust),
)


def violations(resource_type: str, props: Mapping, stack: str) -> list[tuple[str, str]]:
    """Every (rule name, message) the resource breaks."""
    return [(rule.name, message) for rule in RULES for message in rule.check(resource_type, props, stack)]


def stack_violations(resources: Iterable[tuple[str, Mapping]], stack: str) -> list[tuple[str, str]]:
    """Every (rule name, message) the stack as a whole breaks."""
    items = list(resources)
    return [(rule.name, message) for rule in STACK_RULES for message in rule.check(items, stack)]
