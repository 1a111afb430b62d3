"""Our own dev and prod stacks, run under Pulumi mocks, satisfy every guardrail.

And the guardrails are not vacuous there: each rule has resources of its kind to read in the
stacks, and breaking one real resource the way an unsafe change would gets caught.
"""
import asyncio
import copy
from collections.abc import Callable

import pytest

from infra.mocks import StackRun, run_stack
from policy.mesh_guardrails import aws, kubernetes as k8s
from policy.mesh_guardrails.props import WORKLOAD_TYPES
from policy.mesh_guardrails.rules import RULES, violations

STACKS = ("dev", "prod")
RULES_BY_NAME = {rule.name: rule for rule in RULES}
EKS = {aws.EKS_COMPONENT, aws.EKS_CLUSTER}

# The resource types each rule reads.
SUBJECTS: dict[str, set[str]] = {
    "ecr-scan-on-push": {aws.ECR_REPOSITORY},
    "ecr-immutable-tags-in-prod": {aws.ECR_REPOSITORY},
    "eks-secrets-encryption": EKS,
    "eks-control-plane-logging": EKS,
    "eks-endpoint-not-open": EKS,
    "pods-run-as-non-root": set(WORKLOAD_TYPES),
    "containers-have-limits": set(WORKLOAD_TYPES),
    "images-by-digest": set(WORKLOAD_TYPES),
    "no-nodeport-in-prod": {k8s.SERVICE},
    "no-secret-literals": set(WORKLOAD_TYPES) | {k8s.CONFIG_MAP},
}


def run_in_fresh_loop(stack: str) -> StackRun:
    """run_stack drives Pulumi on asyncio's current loop; an asyncio.run() earlier in the session leaves none."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return run_stack(stack)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.fixture(scope="module", params=STACKS)
def stack_run(request) -> StackRun:
    return run_in_fresh_loop(request.param)


def test_every_rule_is_covered_here():
    assert set(SUBJECTS) == set(RULES_BY_NAME)


def test_stack_satisfies_every_rule(stack_run):
    found = [(r.type, r.name, rule, message)
             for r in stack_run.resources for rule, message in violations(r.type, r.inputs, stack_run.stack)]
    assert found == [], "\n".join(" | ".join(item) for item in found)


@pytest.mark.parametrize("rule_name", sorted(SUBJECTS))
def test_stack_declares_what_the_rule_reads(stack_run, rule_name):
    read = [r for r in stack_run.resources if r.type in SUBJECTS[rule_name]]
    assert read, f"{stack_run.stack} declares no {sorted(SUBJECTS[rule_name])}: {rule_name} checked nothing"


def _pod_spec(props: dict) -> dict:
    return props["spec"]["template"]["spec"]


def _run_as_root(props: dict) -> None:
    spec = _pod_spec(props)
    spec.pop("securityContext", None)
    for container in spec["containers"]:
        container.pop("securityContext", None)


def _drop_limits(props: dict) -> None:
    for container in _pod_spec(props)["containers"]:
        container["resources"].pop("limits")


def _image_by_tag(props: dict) -> None:
    for container in _pod_spec(props)["containers"]:
        container["image"] = container["image"].split("@")[0] + ":1.0.0"


def _env_literal_key(props: dict) -> None:
    _pod_spec(props)["containers"][0].setdefault("env", []).append({"name": "APINODE_API_KEYS", "value": "k"})


# rule -> (resource type to break in prod, how an unsafe change would break it)
BREAKAGES: dict[str, tuple[str, Callable[[dict], None]]] = {
    "ecr-scan-on-push": (aws.ECR_REPOSITORY, lambda p: p.pop("imageScanningConfiguration")),
    "ecr-immutable-tags-in-prod": (aws.ECR_REPOSITORY, lambda p: p.update(imageTagMutability="MUTABLE")),
    "eks-secrets-encryption": (aws.EKS_COMPONENT, lambda p: p.pop("encryptionConfigKeyArn")),
    "eks-control-plane-logging": (aws.EKS_COMPONENT, lambda p: p.update(enabledClusterLogTypes=["api"])),
    "eks-endpoint-not-open": (aws.EKS_COMPONENT,
                              lambda p: p.update(endpointPublicAccess=True, publicAccessCidrs=None)),
    "pods-run-as-non-root": ("kubernetes:apps/v1:Deployment", _run_as_root),
    "containers-have-limits": ("kubernetes:apps/v1:Deployment", _drop_limits),
    "images-by-digest": ("kubernetes:apps/v1:Deployment", _image_by_tag),
    "no-nodeport-in-prod": (k8s.SERVICE, lambda p: p["spec"].update(type="NodePort")),
    "no-secret-literals": ("kubernetes:apps/v1:Deployment", _env_literal_key),
}


@pytest.fixture(scope="module")
def prod_run() -> StackRun:
    return run_in_fresh_loop("prod")


@pytest.mark.parametrize("rule_name", sorted(BREAKAGES))
def test_rule_catches_an_unsafe_change_to_our_prod_stack(prod_run, rule_name):
    resource_type, breakage = BREAKAGES[rule_name]
    real = prod_run.of_type(resource_type)
    assert real, f"prod declares no {resource_type}"
    for resource in real:
        props = copy.deepcopy(resource.inputs)
        breakage(props)
        caught = RULES_BY_NAME[rule_name].check(resource_type, props, "prod")
        assert caught, f"{rule_name} missed the broken {resource.name}"
