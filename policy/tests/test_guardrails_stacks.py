"""Our own dev and prod stacks, run under Pulumi mocks, satisfy every guardrail.

And the guardrails are not vacuous there: each rule has resources of its kind to read in the
stacks, and breaking one real resource the way an unsafe change would gets caught.
"""
import asyncio
import copy
import json
from collections.abc import Callable

import pytest

from infra.mocks import StackRun, run_stack
from policy.mesh_guardrails import aws, exposure, kubernetes as k8s, namespaces, pods
from policy.mesh_guardrails.props import WORKLOAD_TYPES
from policy.mesh_guardrails.rules import RULES, stack_violations, violations

# Our two stacks, and prod behind an internet-facing ALB (the only way the stacks declare an Ingress).
STACKS = ("dev", "prod", "prod-ingress")
INGRESS_EXPOSURE = {"type": "Ingress", "clientCidrs": ["198.51.100.0/24"], "host": "mesh.example.com",
                    "internal": False}
HALVES = ["0.0.0.0/1", "128.0.0.0/1"]  # the whole internet, in two entries
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
    "no-open-load-balancer": {exposure.SERVICE},
    "no-open-ingress": {exposure.INGRESS},
    "no-open-network-policy": {exposure.NETWORK_POLICY},
    "no-privileged-containers": set(WORKLOAD_TYPES),
    "no-host-namespaces": set(WORKLOAD_TYPES),
    "no-host-path-volumes": set(WORKLOAD_TYPES),
    "no-added-capabilities": set(WORKLOAD_TYPES),
    "no-token-automount": set(WORKLOAD_TYPES) | {pods.SERVICE_ACCOUNT},
    "restricted-pod-security": {namespaces.NAMESPACE},
}


def run_in_fresh_loop(stack: str) -> StackRun:
    """run_stack drives Pulumi on asyncio's current loop; an asyncio.run() earlier in the session leaves none."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        if stack == "prod-ingress":
            return run_stack("prod", overrides={"data-mesh:exposure": json.dumps(INGRESS_EXPOSURE)})
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
    found += [("stack", stack_run.stack, rule, message)
              for rule, message in stack_violations([(r.type, r.inputs) for r in stack_run.resources],
                                                    stack_run.stack)]
    assert found == [], "\n".join(" | ".join(item) for item in found)


@pytest.fixture(scope="module")
def runs() -> dict[str, StackRun]:
    return {stack: run_in_fresh_loop(stack) for stack in STACKS}


@pytest.mark.parametrize("rule_name", sorted(SUBJECTS))
def test_our_stacks_declare_what_the_rule_reads(runs, rule_name):
    read = [r for run in runs.values() for r in run.resources if r.type in SUBJECTS[rule_name]]
    assert read, f"no stack declares {sorted(SUBJECTS[rule_name])}: {rule_name} checked nothing"


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


def _containers(props: dict) -> list[dict]:
    return _pod_spec(props)["containers"]


def _internet_facing_halves(props: dict) -> None:
    props["metadata"]["annotations"].update({"service.beta.kubernetes.io/aws-load-balancer-internal": "false",
                                             "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"})
    props["spec"]["loadBalancerSourceRanges"] = list(HALVES)


def _db_url_with_password(props: dict) -> None:
    _containers(props)[0].setdefault("env", []).append(
        {"name": "APINODE_SQL_URL", "value": "postgresql://u@h/db?password=hunter2"})


# rule -> (resource type to break in prod, how an unsafe change would break it)
BREAKAGES: dict[str, tuple[str, Callable[[dict], None]]] = {
    "no-open-load-balancer": (exposure.SERVICE, _internet_facing_halves),
    "no-open-network-policy": (exposure.NETWORK_POLICY, lambda p: p["spec"].setdefault("ingress", []).append(
        {"from": [{"ipBlock": {"cidr": cidr}} for cidr in HALVES]})),
    "no-privileged-containers": ("kubernetes:apps/v1:Deployment",
                                 lambda p: _containers(p)[0]["securityContext"].update(privileged=True)),
    "no-host-namespaces": ("kubernetes:apps/v1:Deployment", lambda p: _pod_spec(p).update(hostPID=True)),
    "no-host-path-volumes": ("kubernetes:apps/v1:Deployment", lambda p: _pod_spec(p)["volumes"].append(
        {"name": "root", "hostPath": {"path": "/"}})),
    "no-added-capabilities": ("kubernetes:apps/v1:Deployment",
                              lambda p: _containers(p)[0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"])),
    "no-token-automount": ("kubernetes:apps/v1:Deployment", lambda p: _pod_spec(p).pop("automountServiceAccountToken")),
    "restricted-pod-security": (namespaces.NAMESPACE, lambda p: p["metadata"]["labels"].update(
        {"pod-security.kubernetes.io/enforce": "baseline"})),
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
    "no-secret-literals": ("kubernetes:apps/v1:Deployment", _db_url_with_password),
}
# Rules whose subject only the Ingress variant declares.
BREAKAGES_ON_INGRESS: dict[str, tuple[str, Callable[[dict], None]]] = {
    "no-open-ingress": (exposure.INGRESS, lambda p: p["metadata"]["annotations"].update(
        {"alb.ingress.kubernetes.io/inbound-cidrs": ",".join(HALVES)})),
}


def test_every_rule_has_a_breakage():
    assert set(BREAKAGES) | set(BREAKAGES_ON_INGRESS) == set(RULES_BY_NAME)


@pytest.fixture(scope="module")
def prod_run() -> StackRun:
    return run_in_fresh_loop("prod")


@pytest.mark.parametrize("rule_name", sorted([*BREAKAGES, *BREAKAGES_ON_INGRESS]))
def test_rule_catches_an_unsafe_change_to_our_prod_stack(runs, rule_name):
    prod_run = runs["prod-ingress" if rule_name in BREAKAGES_ON_INGRESS else "prod"]
    resource_type, breakage = {**BREAKAGES, **BREAKAGES_ON_INGRESS}[rule_name]
    real = prod_run.of_type(resource_type)
    assert real, f"prod declares no {resource_type}"
    for resource in real:
        props = copy.deepcopy(resource.inputs)
        breakage(props)
        caught = RULES_BY_NAME[rule_name].check(resource_type, props, "prod")
        assert caught, f"{rule_name} missed the broken {resource.name}"


def _stack_breakage(run: StackRun, change: Callable[[str, dict], bool]) -> list[tuple[str, str]]:
    """The stack rules' verdict on a copy of the stack where ``change(type, props)`` edited (or dropped) resources."""
    items = []
    for resource in run.resources:
        props = copy.deepcopy(resource.inputs)
        if change(resource.type, props):
            items.append((resource.type, props))
    return stack_violations(items, run.stack)


def _is(props: dict, kind_name: str) -> bool:
    return props.get("metadata", {}).get("name") == kind_name


@pytest.mark.parametrize(("case", "change", "expected"), [
    ("no default-deny", lambda t, p: not (t == namespaces.NETWORK_POLICY and _is(p, "default-deny")),
     "without a default-deny NetworkPolicy"),
    ("default-deny that allows", lambda t, p: (t != namespaces.NETWORK_POLICY or not _is(p, "default-deny"))
     or bool(p["spec"].update(ingress=[{}])) or True, "without a default-deny NetworkPolicy"),
    ("namespace PERMISSIVE", lambda t, p: (t != namespaces.PEER_AUTHENTICATION or p["metadata"]["namespace"] != "data-mesh"
                                           or p["spec"].get("selector") is not None
                                           or bool(p["spec"]["mtls"].update(mode="PERMISSIVE")) or True),
     "without STRICT mTLS"),
    ("no PeerAuthentication at all", lambda t, p: t != namespaces.PEER_AUTHENTICATION, "without STRICT mTLS"),
    ("not enrolled", lambda t, p: (t != namespaces.NAMESPACE or
                                   p["metadata"]["labels"].pop("istio.io/dataplane-mode", None) is not None or True),
     "outside the mesh"),
])
def test_namespace_zero_trust_catches_an_unsafe_change(runs, case, change, expected):
    assert stack_violations([(r.type, r.inputs) for r in runs["prod"].resources], "prod") == []
    found = _stack_breakage(runs["prod"], change)
    assert found and all(rule == "namespace-zero-trust" for rule, _ in found), case
    assert any(expected in message and "'data-mesh'" in message for _, message in found), found
