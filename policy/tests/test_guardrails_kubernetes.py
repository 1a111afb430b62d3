"""Each Kubernetes guardrail catches a crafted violation with a message that says how to fix it."""
import copy

import pytest

from policy.mesh_guardrails import kubernetes as k8s

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DIGEST = "sha256:" + "ab" * 32


def good_container(name: str = "app") -> dict:
    return {"name": name, "image": f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/app@{DIGEST}",
            "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
            "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "APINODE_API_KEYS_FILE", "value": "/var/run/secrets/apinode/api-keys"}]}


def good_pod_spec() -> dict:
    return {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
            "containers": [good_container()]}


def deployment(spec: dict) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": spec}}}


def change_container(**changes) -> dict:
    """A pod spec whose only container has the given fields replaced (None deletes one)."""
    spec = good_pod_spec()
    container = spec["containers"][0]
    for key, value in changes.items():
        if value is None:
            container.pop(key)
        else:
            container[key] = value
    return spec


def test_compliant_deployment_passes_every_pod_rule():
    props = deployment(good_pod_spec())
    for rule in (k8s.pods_run_as_non_root, k8s.containers_have_limits, k8s.images_by_digest,
                 k8s.no_secret_literals):
        assert rule(DEPLOYMENT, props, "prod") == [], rule.__name__


def test_root_by_default_is_caught():
    spec = good_pod_spec()
    del spec["securityContext"]
    messages = k8s.pods_run_as_non_root(DEPLOYMENT, deployment(spec), "dev")
    assert messages == ["container 'app' may run as root: set securityContext.runAsNonRoot: true "
                        "on the pod or the container"]


def test_container_overriding_the_pod_to_root_is_caught():
    spec = change_container(securityContext={"runAsNonRoot": False})
    assert "'app' may run as root" in k8s.pods_run_as_non_root(DEPLOYMENT, deployment(spec), "dev")[0]


def test_uid_zero_is_caught_even_with_run_as_non_root():
    spec = change_container(securityContext={"runAsUser": 0})
    assert "runs as root (runAsUser: 0)" in k8s.pods_run_as_non_root(DEPLOYMENT, deployment(spec), "dev")[0]


def test_init_containers_are_checked_too():
    spec = good_pod_spec()
    spec["initContainers"] = [{**good_container("migrate"), "securityContext": {"runAsUser": 0}}]
    messages = k8s.pods_run_as_non_root(DEPLOYMENT, deployment(spec), "dev")
    assert len(messages) == 1 and "'migrate'" in messages[0]


def test_container_level_non_root_is_enough():
    spec = change_container(securityContext={"runAsNonRoot": True})
    del spec["securityContext"]
    assert k8s.pods_run_as_non_root(DEPLOYMENT, deployment(spec), "dev") == []


@pytest.mark.parametrize("resources, missing", [
    ({}, "cpu or memory"),
    ({"requests": {"cpu": "1", "memory": "1Gi"}}, "cpu or memory"),
    ({"limits": {"cpu": "1"}}, "memory"),
    ({"limits": {"memory": "1Gi"}}, "cpu"),
])
def test_missing_limits_are_caught(resources, missing):
    spec = change_container(resources=resources)
    messages = k8s.containers_have_limits(DEPLOYMENT, deployment(spec), "dev")
    assert messages == [f"container 'app' has no {missing} limit: "
                        "set resources.limits.cpu and resources.limits.memory"]


@pytest.mark.parametrize("image", [
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1.0.0",
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:latest",
    "app",
    "app@sha256:short",
])
def test_images_by_tag_are_caught(image):
    messages = k8s.images_by_digest(DEPLOYMENT, deployment(change_container(image=image)), "dev")
    assert messages == [f"container 'app' image '{image}' is not pinned by digest: "
                        "reference it as <repository>@sha256:<digest>"]


@pytest.mark.parametrize("resource_type, props", [
    ("kubernetes:core/v1:Pod", {"spec": change_container(image="nginx:1.27")}),
    ("kubernetes:apps/v1:StatefulSet", deployment(change_container(image="nginx:1.27"))),
    ("kubernetes:batch/v1:CronJob",
     {"spec": {"jobTemplate": {"spec": {"template": {"spec": change_container(image="nginx:1.27")}}}}}),
])
def test_every_workload_kind_is_checked(resource_type, props):
    assert k8s.images_by_digest(resource_type, props, "dev") != []


def test_nodeport_is_caught_in_prod_only():
    service = {"spec": {"type": "NodePort", "ports": [{"port": 8080}]}}
    assert k8s.no_nodeport_in_prod(k8s.SERVICE, service, "dev") == []
    messages = k8s.no_nodeport_in_prod(k8s.SERVICE, service, "prod")
    assert messages == ["Service of type NodePort in stack 'prod' opens a port on every node: "
                        "use a LoadBalancer, or ClusterIP behind an Ingress"]


@pytest.mark.parametrize("service_type", ["LoadBalancer", "ClusterIP", None])
def test_other_service_types_pass_in_prod(service_type):
    assert k8s.no_nodeport_in_prod(k8s.SERVICE, {"spec": {"type": service_type}}, "prod") == []


@pytest.mark.parametrize("key, value", [
    ("DB_PASSWORD", "hunter2"),
    ("APINODE_API_KEYS", "k1,k2"),
    ("githubToken", "ghp_x"),
    ("client-secret", "s"),
    ("APINODE_SQL_URL", "postgresql://reader:hunter2@db:5432/features"),
])
def test_secret_in_config_map_is_caught(key, value):
    messages = k8s.no_secret_literals(k8s.CONFIG_MAP, {"data": {key: value, "LOG_LEVEL": "info"}}, "dev")
    assert messages == [f"ConfigMap key '{key}' holds what looks like a secret: move it to a Secret "
                        "and fill it from a stack secret (pulumi config set --secret)"]


@pytest.mark.parametrize("key, value", [
    ("APINODE_API_KEYS_FILE", "/var/run/secrets/apinode/api-keys"),
    ("SECRET_NAME", "db-credentials"),
    ("APINODE_SQL_URL", "postgresql+psycopg://reader@db:5432/features?sslmode=require"),
    ("DB_PASSWORD", ""),
])
def test_references_to_secrets_are_not_secrets(key, value):
    assert k8s.no_secret_literals(k8s.CONFIG_MAP, {"data": {key: value}}, "dev") == []


def test_secret_env_literal_is_caught():
    spec = change_container(env=[{"name": "APINODE_API_KEYS", "value": "local-dev-key"}])
    messages = k8s.no_secret_literals(DEPLOYMENT, deployment(spec), "dev")
    assert messages == ["container 'app' sets env 'APINODE_API_KEYS' to a literal that looks like a secret: "
                        "use valueFrom.secretKeyRef"]


def test_rules_ignore_other_resource_types():
    secret = {"stringData": {"DB_PASSWORD": "hunter2"}}
    for rule in (k8s.pods_run_as_non_root, k8s.containers_have_limits, k8s.images_by_digest,
                 k8s.no_nodeport_in_prod, k8s.no_secret_literals):
        assert rule("kubernetes:core/v1:Secret", copy.deepcopy(secret), "prod") == []
