"""Reading resource properties the way the policy engine hands them over.

Properties arrive with the engine's camelCase names, as mappings and sequences (during a
preview they are read-only proxies that raise on unknown values), so everything here works
on the `Mapping` / `Sequence` ABCs rather than on dict and list.
"""
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

PROD_STACKS = frozenset({"prod"})

# Where the pod spec sits inside each workload kind.
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
WORKLOAD_TYPES = frozenset(_POD_SPEC_PATHS)


def stack_of(urn: str) -> str:
    """The stack name in a resource URN (`urn:pulumi:<stack>::<project>::<type>::<name>`)."""
    return urn.split("::", 1)[0].rsplit(":", 1)[-1]


def is_prod(stack: str) -> bool:
    return stack in PROD_STACKS


def dig(obj: Any, *path: str) -> Any:
    """The value at `path` in nested mappings, or None where a step is missing."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def as_list(value: Any) -> Sequence:
    """A list-valued property as a sequence (absent or malformed counts as empty)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return value
    return ()


def pod_spec(resource_type: str, props: Mapping) -> Mapping | None:
    """The pod spec of a workload resource, or None for other kinds."""
    path = _POD_SPEC_PATHS.get(resource_type)
    if path is None:
        return None
    spec = dig(props, *path)
    return spec if isinstance(spec, Mapping) else {}


def containers(spec: Mapping) -> Iterator[Mapping]:
    """Every container of a pod spec, init containers included (they run the same image risks)."""
    for key in ("initContainers", "containers"):
        for container in as_list(spec.get(key)):
            if isinstance(container, Mapping):
                yield container
