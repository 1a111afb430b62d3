"""Rules on the Kubernetes side: pod security, resources, images, exposure, secrets."""
import re
from collections.abc import Callable, Mapping

from .props import as_list, containers, dig, is_prod, pod_spec

SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"

REQUIRED_LIMITS = ("cpu", "memory")
IMAGE_BY_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")

# A name says its value *is* a credential when its last word is one of these:
# DB_PASSWORD, APINODE_API_KEYS, CLIENT_SECRET. PASSWORD_FILE or SECRET_NAME only point at one.
_SECRET_WORDS = frozenset({
    "PASSWORD", "PASSWORDS", "PASSWD", "PWD", "SECRET", "SECRETS", "TOKEN", "TOKENS",
    "KEY", "KEYS", "APIKEY", "APIKEYS", "CREDENTIAL", "CREDENTIALS",
})
_WORD_BOUNDARY = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# user:password@ inside a URL is a credential whatever the variable is called, and so is a
# password=... parameter (libpq keyword strings, URL query strings, JDBC properties).
_PASSWORD_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
_PASSWORD_PARAMETER = re.compile(r"(?i)(?:^|[\s?&;,])(?:password|passwd|pwd)=[^&\s;,]+")


def _name(container: Mapping) -> str:
    return container.get("name") or "<unnamed>"


def _per_container(resource_type: str, props: Mapping,
                   check: Callable[[Mapping, Mapping], str | None]) -> list[str]:
    """Run ``check(container, pod_spec)`` on every container of a pod-bearing resource."""
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    return [message for container in containers(spec) if (message := check(container, spec))]


def _non_root(container: Mapping, spec: Mapping) -> str | None:
    pod_context = spec.get("securityContext") or {}
    context = container.get("securityContext") or {}
    # A container's own setting overrides the pod's.
    non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    user = context.get("runAsUser", pod_context.get("runAsUser"))
    if user == 0:
        return f"container '{_name(container)}' runs as root (runAsUser: 0): use a non-zero UID"
    if non_root is not True:
        return (f"container '{_name(container)}' may run as root: set "
                "securityContext.runAsNonRoot: true on the pod or the container")
    return None


def _limits(container: Mapping, spec: Mapping) -> str | None:
    limits = dig(container, "resources", "limits") or {}
    missing = [kind for kind in REQUIRED_LIMITS if not limits.get(kind)]
    if missing:
        return (f"container '{_name(container)}' has no {' or '.join(missing)} limit: "
                "set resources.limits.cpu and resources.limits.memory")
    return None


def _by_digest(container: Mapping, spec: Mapping) -> str | None:
    image = container.get("image") or ""
    if not IMAGE_BY_DIGEST.search(image):
        return (f"container '{_name(container)}' image '{image}' is not pinned by digest: "
                "reference it as <repository>@sha256:<digest>")
    return None


def pods_run_as_non_root(resource_type: str, props: Mapping, stack: str) -> list[str]:
    return _per_container(resource_type, props, _non_root)


def containers_have_limits(resource_type: str, props: Mapping, stack: str) -> list[str]:
    return _per_container(resource_type, props, _limits)


def images_by_digest(resource_type: str, props: Mapping, stack: str) -> list[str]:
    return _per_container(resource_type, props, _by_digest)


def no_nodeport_in_prod(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type != SERVICE or not is_prod(stack):
        return []
    if dig(props, "spec", "type") != "NodePort":
        return []
    return [f"Service of type NodePort in stack '{stack}' opens a port on every node: "
            "use a LoadBalancer, or ClusterIP behind an Ingress"]


def looks_like_secret(name: str, value: object) -> bool:
    """Whether a literal name/value pair carries a credential."""
    if not isinstance(value, str) or not value:
        return False
    words = [w.upper() for w in _WORD_BOUNDARY.split(name) if w]
    return bool(words and words[-1] in _SECRET_WORDS) or bool(_PASSWORD_IN_URL.search(value)) \
        or bool(_PASSWORD_PARAMETER.search(value))


def no_secret_literals(resource_type: str, props: Mapping, stack: str) -> list[str]:
    if resource_type == CONFIG_MAP:
        data = props.get("data") or {}
        return [f"ConfigMap key '{key}' holds what looks like a secret: move it to a Secret "
                "and fill it from a stack secret (pulumi config set --secret)"
                for key in data if looks_like_secret(key, data[key])]
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    return [f"container '{_name(container)}' sets env '{entry.get('name')}' to a literal that "
            "looks like a secret: use valueFrom.secretKeyRef"
            for container in containers(spec)
            for entry in as_list(container.get("env"))
            if isinstance(entry, Mapping) and looks_like_secret(entry.get("name") or "", entry.get("value"))]
