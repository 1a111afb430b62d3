"""The crafted violations of issue 14, each caught, with a message that says how to fix it.

Every one of these passed the pack before: it compared CIDRs as strings (only the literal
0.0.0.0/0), and had no rule for privileged pods, host namespaces, hostPath, capabilities, token
automount, ``password=`` literals, Pod Security labels, default-deny or STRICT mTLS.
"""
import pytest

from policy.mesh_guardrails import aws, exposure, kubernetes as k8s, namespaces, pods, ranges
from policy.mesh_guardrails.rules import stack_violations

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HALVES = ["0.0.0.0/1", "128.0.0.0/1"]


def deployment(**pod: object) -> dict:
    container = {"name": "app", "securityContext": {"capabilities": {"drop": ["ALL"]}}}
    spec = {"automountServiceAccountToken": False, "containers": [container], **pod}
    return {"metadata": {"namespace": "data-mesh"}, "spec": {"template": {"spec": spec}}}


def with_container(**fields: object) -> dict:
    props = deployment()
    props["spec"]["template"]["spec"]["containers"][0].update(fields)
    return props


# ---- ranges as sets ----------------------------------------------------------------------------

@pytest.mark.parametrize(("cidrs", "excepts", "is_open"), [
    (["0.0.0.0/0"], [], True),
    (HALVES, [], True),
    (["0.0.0.0/1"], [], True),
    (["0.0.0.0/0"], ["0.0.0.0/1", "128.0.0.0/1"], False),
    (["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"], [], False),  # private space is not the internet
    (["203.0.113.0/24", "198.51.100.0/24"], [], False),
    (["8.0.0.0/7"], [], True),  # 33 M public addresses
    (["8.0.0.0/9"], [], False),  # 8 M: a large network, not the internet
    (["::/0"], [], True),
    (["2001:db8::/32"], [], False),
])
def test_open_means_the_union_holds_the_internet(cidrs, excepts, is_open):
    assert ranges.is_open(cidrs, excepts) is is_open


def test_eks_endpoint_open_through_two_halves_is_caught():
    props = {"endpointPublicAccess": True, "publicAccessCidrs": HALVES, "encryptionConfigKeyArn": "k"}
    (message,) = aws.eks_endpoint_not_open(aws.EKS_COMPONENT, props, "dev")
    assert "0.0.0.0/1, 128.0.0.0/1 (together" in message and "restrict public_access_cidrs" in message


def test_internet_facing_load_balancer_with_the_same_halves_is_caught():
    service = {"metadata": {"annotations": {"service.beta.kubernetes.io/aws-load-balancer-scheme":
                                            "internet-facing"}},
               "spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": HALVES}}
    (message,) = exposure.no_open_load_balancer(exposure.SERVICE, service, "prod")
    assert message.startswith("internet-facing load balancer admits 0.0.0.0/1, 128.0.0.0/1")
    service["spec"]["loadBalancerSourceRanges"] = []
    assert exposure.no_open_load_balancer(exposure.SERVICE, service, "prod"), "no ranges: AWS opens it to all"
    service["spec"]["loadBalancerSourceRanges"] = ["198.51.100.0/24"]
    assert exposure.no_open_load_balancer(exposure.SERVICE, service, "prod") == []
    internal = {"metadata": {"annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}},
                "spec": {"type": "LoadBalancer", "loadBalancerSourceRanges": HALVES}}
    assert exposure.no_open_load_balancer(exposure.SERVICE, internal, "prod") == []


def test_open_ingress_and_network_policy_are_caught():
    ingress = {"metadata": {"annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing",
                                            "alb.ingress.kubernetes.io/inbound-cidrs": " 0.0.0.0/1, 128.0.0.0/1"}}}
    assert "inbound-cidrs" in exposure.no_open_ingress(exposure.INGRESS, ingress, "prod")[0]
    policy = {"spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": c}} for c in HALVES]}]}}
    assert exposure.no_open_network_policy(exposure.NETWORK_POLICY, policy, "dev")[0].startswith(
        "NetworkPolicy egress admits")
    fenced = {"spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": HALVES}}]}]}}
    assert exposure.no_open_network_policy(exposure.NETWORK_POLICY, fenced, "dev") == []


# ---- pods ----------------------------------------------------------------------------------------

def test_a_compliant_pod_passes():
    for rule in (pods.no_privileged_containers, pods.no_host_namespaces, pods.no_host_path_volumes,
                 pods.no_added_capabilities, pods.no_token_automount):
        assert rule(DEPLOYMENT, deployment(), "prod") == [], rule.__name__


def test_privileged_is_caught():
    props = with_container(securityContext={"privileged": True})
    assert pods.no_privileged_containers(DEPLOYMENT, props, "dev") == [
        "container 'app' is privileged (securityContext.privileged: true): it has every device and capability "
        "of the node; remove it"]


@pytest.mark.parametrize("field", ["hostNetwork", "hostPID", "hostIPC"])
def test_host_namespaces_are_caught(field):
    assert pods.no_host_namespaces(DEPLOYMENT, deployment(**{field: True}), "dev") == [
        f"pod sets {field}: true and shares the node's namespace: remove {field}"]


def test_host_path_of_root_is_caught():
    props = deployment(volumes=[{"name": "root", "hostPath": {"path": "/"}}, {"name": "tmp", "emptyDir": {}}])
    (message,) = pods.no_host_path_volumes(DEPLOYMENT, props, "dev")
    assert message.startswith("volume 'root' mounts the node's / (hostPath)")


@pytest.mark.parametrize(("added", "caught"), [
    (["SYS_ADMIN"], "SYS_ADMIN"), (["CAP_NET_ADMIN", "NET_BIND_SERVICE"], "NET_ADMIN"), (["NET_BIND_SERVICE"], None)])
def test_added_capabilities_are_caught(added, caught):
    props = with_container(securityContext={"capabilities": {"drop": ["ALL"], "add": added}})
    found = pods.no_added_capabilities(DEPLOYMENT, props, "dev")
    assert (found == []) if caught is None else (f"adds capabilities {caught}:" in found[0])


def test_token_automount_is_caught_on_pods_and_service_accounts():
    props = deployment()
    del props["spec"]["template"]["spec"]["automountServiceAccountToken"]
    assert "automountServiceAccountToken: false" in pods.no_token_automount(DEPLOYMENT, props, "dev")[0]
    assert pods.no_token_automount(pods.SERVICE_ACCOUNT, {"metadata": {}}, "dev")
    assert pods.no_token_automount(pods.SERVICE_ACCOUNT, {"automountServiceAccountToken": False}, "dev") == []


@pytest.mark.parametrize("value", [
    "postgresql://u@h/db?password=hunter2",
    "host=db user=u password=hunter2",
    "jdbc:postgresql://db/features?user=u&pwd=hunter2",
    "postgresql://reader:hunter2@db:5432/features",
])
def test_credentials_in_env_literals_are_caught(value):
    props = with_container(env=[{"name": "APINODE_SQL_URL", "value": value}])
    assert k8s.no_secret_literals(DEPLOYMENT, props, "dev") == [
        "container 'app' sets env 'APINODE_SQL_URL' to a literal that looks like a secret: use valueFrom.secretKeyRef"]


@pytest.mark.parametrize("value", ["postgresql+psycopg://reader@db:5432/features?sslmode=require",
                                   "/var/run/secrets/apinode/password", "PASSWORD_FILE=/x"])
def test_references_to_credentials_pass(value):
    assert k8s.no_secret_literals(DEPLOYMENT, with_container(env=[{"name": "X_URL", "value": value}]), "dev") == []


# ---- namespaces ------------------------------------------------------------------------------------

def namespace(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}}


def test_every_namespace_enforces_restricted_except_node_agents():
    rule = namespaces.restricted_pod_security
    assert rule(namespaces.NAMESPACE, namespace("data-mesh", **{namespaces.ENFORCE: "restricted"}), "dev") == []
    assert rule(namespaces.NAMESPACE, namespace("istio-system", **{namespaces.ENFORCE: "privileged"}), "dev") == []
    assert "enforce: baseline" in rule(namespaces.NAMESPACE, namespace("data-mesh", **{namespaces.ENFORCE: "baseline"}),
                                       "dev")[0]
    assert "unset" in rule(namespaces.NAMESPACE, namespace("apps"), "dev")[0]
    assert rule(namespaces.NAMESPACE, namespace("apps", **{namespaces.ENFORCE: "privileged"}), "dev")


def _stack(*extra: tuple[str, dict]) -> list[tuple[str, dict]]:
    return [(DEPLOYMENT, deployment()),
            (namespaces.NAMESPACE, namespace("data-mesh", **{"istio.io/dataplane-mode": "ambient"})), *extra]


DENY_ALL = (namespaces.NETWORK_POLICY, {"metadata": {"namespace": "data-mesh", "name": "d"},
                                        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})


def _peer(namespace: str, mode: str, selector: dict | None = None) -> tuple[str, dict]:
    spec: dict = {"mtls": {"mode": mode}}
    if selector:
        spec["selector"] = selector
    return namespaces.PEER_AUTHENTICATION, {"metadata": {"namespace": namespace, "name": "default"}, "spec": spec}


def test_a_namespace_with_default_deny_and_strict_passes():
    assert stack_violations(_stack(DENY_ALL, _peer("data-mesh", "STRICT")), "dev") == []
    assert stack_violations(_stack(DENY_ALL, _peer("istio-system", "STRICT")), "dev") == [], "mesh-wide is enough"


def test_missing_default_deny_strict_or_enrolment_is_caught():
    messages = [m for _, m in stack_violations(_stack(), "dev")]
    assert any("without a default-deny NetworkPolicy" in m for m in messages)
    assert any("without STRICT mTLS" in m for m in messages)
    weakened = _stack(DENY_ALL, _peer("istio-system", "STRICT"), _peer("data-mesh", "PERMISSIVE"))
    assert [m for _, m in stack_violations(weakened, "dev")] == [
        "namespace 'data-mesh' runs pods without STRICT mTLS: add a PeerAuthentication with spec.mtls.mode STRICT "
        "in it (or keep the mesh-wide one and nothing weaker)"]
    only_workload = _stack(DENY_ALL, _peer("data-mesh", "STRICT", {"matchLabels": {"app": "x"}}))
    assert any("without STRICT mTLS" in m for _, m in stack_violations(only_workload, "dev"))
    not_enrolled = [(DEPLOYMENT, deployment()), DENY_ALL, _peer("data-mesh", "STRICT")]
    assert [m for _, m in stack_violations(not_enrolled, "dev")][0].startswith(
        "namespace 'data-mesh' runs pods outside the mesh")


def test_a_policy_that_allows_is_not_a_default_deny():
    allowing = (namespaces.NETWORK_POLICY, {"metadata": {"namespace": "data-mesh", "name": "d"}, "spec": {
        "podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [{}]}})
    assert any("default-deny" in m for _, m in stack_violations(_stack(allowing, _peer("data-mesh", "STRICT")), "dev"))
