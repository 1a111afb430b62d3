"""Pod security the restricted Pod Security Standard demands, checked before the API server sees it.

Each rule reads every container (init containers too) or the pod spec of any workload kind, and
says which field to change. The Pod Security Standards (kubernetes.io/docs/concepts/security/
pod-security-standards) are the reference: privileged containers, host namespaces and hostPath
volumes are "baseline" violations; added capabilities other than NET_BIND_SERVICE are "restricted"
ones. Token automount is our own rule: no pod of ours calls the API server.
"""
from collections.abc import Mapping

from .props import as_list, containers, dig, pod_spec

SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
ALLOWED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})  # the only one `restricted` lets a pod add


def _name(container: Mapping) -> str:
    return container.get("name") or "<unnamed>"


def no_privileged_containers(resource_type: str, props: Mapping, stack: str) -> list[str]:
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    return [f"container '{_name(c)}' is privileged (securityContext.privileged: true): it has every device "
            "and capability of the node; remove it" for c in containers(spec)
            if dig(c, "securityContext", "privileged") is True]


def no_host_namespaces(resource_type: str, props: Mapping, stack: str) -> list[str]:
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    return [f"pod sets {field}: true and shares the node's namespace: remove {field}"
            for field in HOST_NAMESPACES if spec.get(field) is True]


def no_host_path_volumes(resource_type: str, props: Mapping, stack: str) -> list[str]:
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    return [f"volume '{v.get('name')}' mounts the node's {dig(v, 'hostPath', 'path') or 'filesystem'} "
            "(hostPath): use an emptyDir, a ConfigMap or a Secret" for v in as_list(spec.get("volumes"))
            if isinstance(v, Mapping) and v.get("hostPath") is not None]


def no_added_capabilities(resource_type: str, props: Mapping, stack: str) -> list[str]:
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    found = []
    for container in containers(spec):
        added = sorted({str(cap).upper().removeprefix("CAP_")
                        for cap in as_list(dig(container, "securityContext", "capabilities", "add"))}
                       - ALLOWED_CAPABILITIES)
        if added:
            found.append(f"container '{_name(container)}' adds capabilities {', '.join(added)}: drop ALL and add "
                         "none (NET_BIND_SERVICE at most)")
    return found


def no_token_automount(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type == SERVICE_ACCOUNT:
        if props.get("automountServiceAccountToken") is False:
            return []
        return ["ServiceAccount mounts its API token into every pod by default: "
                "set automount_service_account_token=False"]
    spec = pod_spec(resource_type, props)
    if spec is None or spec.get("automountServiceAccountToken") is False:
        return []
    return ["pod gets a Kubernetes API token mounted (automountServiceAccountToken is not false): "
            "set automountServiceAccountToken: false in the pod spec"]
