"""The services on Kubernetes, per stack: what a platform reviewer checks in the declared resources.

Runs the real program under mocks (``infra.mocks``) for the committed dev and prod stacks and
asserts on the inputs of the Kubernetes resources, reconstructed as manifests (``infra.render``).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from infra.config import SERVICE_IDS, parse_settings, stack_file_config
from infra.mocks import DUMMY_SECRETS, ROOT, StackRun, run_stack
from infra.render import manifests
from infra.workload import NODE_PORTS, config_data

STACKS = ("dev", "prod")
NAMESPACE = "data-mesh"


@functools.cache
def _run(stack: str, with_secrets: bool = False) -> StackRun:
    """The stack under mocks; ``with_secrets`` also sets every optional stack secret (API keys)."""
    return run_stack(stack, secrets=dict(DUMMY_SECRETS) if with_secrets else None)


@functools.cache
def _manifests(stack: str) -> list[dict[str, Any]]:
    return manifests(_run(stack).resources)


def _settings(stack: str):
    secrets = {key: value for key, value in DUMMY_SECRETS.items()}
    return parse_settings({**stack_file_config(ROOT / f"Pulumi.{stack}.yaml"), **secrets}, stack,
                          frozenset(secrets))


def of_kind(stack: str, kind: str) -> dict[str, dict[str, Any]]:
    """Manifests of one kind by name."""
    return {m["metadata"]["name"]: m for m in _manifests(stack) if m["kind"] == kind}


def container(stack: str, service_id: str) -> dict[str, Any]:
    containers = of_kind(stack, "Deployment")[service_id]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod: the runtime"
    return containers[0]


@pytest.mark.parametrize("stack", STACKS)
def test_namespace_enforces_restricted_pod_security(stack: str) -> None:
    labels = of_kind(stack, "Namespace")[NAMESPACE]["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("service_id", SERVICE_IDS)
def test_each_service_has_its_resources_in_the_namespace(stack: str, service_id: str) -> None:
    for kind, name in [("ServiceAccount", service_id), ("ConfigMap", f"{service_id}-config"),
                       ("Secret", f"{service_id}-secrets"), ("Deployment", service_id), ("Service", service_id)]:
        manifest = of_kind(stack, kind).get(name)
        assert manifest is not None, f"{stack}: no {kind} {name}"
        assert manifest["metadata"]["namespace"] == NAMESPACE
    assert of_kind(stack, "ServiceAccount")[service_id]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("service_id", SERVICE_IDS)
def test_pods_are_restricted_read_only_and_by_digest(stack: str, service_id: str) -> None:
    pod = of_kind(stack, "Deployment")[service_id]["spec"]["template"]["spec"]
    main = container(stack, service_id)
    image_ref = _run(stack).outputs["imageRefs"][service_id]
    assert main["image"] == image_ref and "@sha256:" in image_ref and len(image_ref.split("@sha256:")[1]) == 64
    security = main["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == service_id
    # The one writable path: /tmp, an emptyDir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = next(m for m in main["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]
    assert all(m.get("readOnly") for m in main["volumeMounts"] if m["mountPath"] != "/tmp")
    # The rest of the restricted standard: no host namespaces, host ports or host paths.
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any("hostPort" in port for port in main["ports"])
    assert {kind for v in pod["volumes"] for kind in v if kind != "name"} <= {"emptyDir", "secret", "configMap",
                                                                                "projected"}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("service_id", SERVICE_IDS)
def test_pods_are_sized_probed_and_drain_on_shutdown(stack: str, service_id: str) -> None:
    main = container(stack, service_id)
    resources = _settings(stack).service(service_id).resources
    assert main["resources"] == {
        "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request},
        "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
    }
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/isAlive", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/isAlive"
    assert main["ports"] == [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]
    assert main["args"][-2:] == ["--port", "8080"]
    pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = of_kind(stack, "Deployment")[service_id]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = int(of_kind(stack, "ConfigMap")[f"{service_id}-config"]["data"]["APINODE_GRACE_SECONDS"])
    assert 0 < pre_stop and pre_stop + drain < grace, "the grace period must cover the pre-stop delay and drain"
    strategy = of_kind(stack, "Deployment")[service_id]["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_dev_is_one_nodeport_replica_without_autoscaling() -> None:
    assert of_kind("dev", "HorizontalPodAutoscaler") == {} and of_kind("dev", "PodDisruptionBudget") == {}
    for service_id in SERVICE_IDS:
        deployment = of_kind("dev", "Deployment")[service_id]
        assert deployment["spec"]["replicas"] == 1
        assert "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"]
        service = of_kind("dev", "Service")[service_id]["spec"]
        assert service["type"] == "NodePort"
        assert service["ports"][0]["nodePort"] == NODE_PORTS[service_id]
    assert _run("dev").outputs["serviceEndpoints"] == {
        sid: f"http://<node-private-ip>:{port}" for sid, port in NODE_PORTS.items()}


def test_prod_is_an_internal_load_balancer_limited_to_client_ranges() -> None:
    exposure = _settings("prod").exposure
    for service_id in SERVICE_IDS:
        service = of_kind("prod", "Service")[service_id]
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["spec"]["loadBalancerSourceRanges"] == list(exposure.client_cidrs)
        annotations = service["metadata"]["annotations"]
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"] == \
            "preserve_client_ip.enabled=true", "keeps client IPs for the policies"


@pytest.mark.parametrize("service_id", SERVICE_IDS)
def test_prod_scales_with_hpa_pdb_and_zone_spread(service_id: str) -> None:
    settings = _settings("prod").service(service_id)
    hpa = of_kind("prod", "HorizontalPodAutoscaler")[service_id]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service_id}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (settings.replicas,
                                                                       settings.autoscaling.max_replicas)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == \
        settings.autoscaling.cpu_utilization
    deployment = of_kind("prod", "Deployment")[service_id]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pdb = of_kind("prod", "PodDisruptionBudget")[service_id]["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    zone = next(c for c in spread if c["topologyKey"] == "topology.kubernetes.io/zone")
    assert zone["maxSkew"] == 1 and zone["whenUnsatisfiable"] == "DoNotSchedule"


def test_prod_database_password_only_by_secret_reference() -> None:
    main = container("prod", "customer-features")
    (password,) = [e for e in main["env"] if e["name"] == "APINODE_SQL_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "customer-features-secrets",
                                                     "key": "database-password"}
    assert "value" not in password
    features_secret = next(r for r in _run("prod").resources if r.type == "kubernetes:core/v1:Secret"
                           and r.get("metadata.name") == "customer-features-secrets")
    assert features_secret.get("stringData.database-password") == DUMMY_SECRETS["data-mesh:databasePassword"]
    assert "stringData" in features_secret.secret_inputs
    config = of_kind("prod", "ConfigMap")["customer-features-config"]["data"]
    assert config["APINODE_SOURCE"] == "sql"
    assert config["APINODE_SQL_URL"] == "postgresql+psycopg://features_reader@features-db.prod.internal:5432/" \
                                        "features?sslmode=verify-full" \
                                            "&sslrootcert=/etc/apinode/database-ca/ca.crt"
    assert "env" not in container("dev", "customer-features"), "dev reads bundled data: no password at all"


def test_scoring_calls_features_by_cluster_dns_with_its_own_key() -> None:
    for stack in STACKS:
        config = of_kind(stack, "ConfigMap")["customer-scoring-config"]["data"]
        assert config["APINODE_FEATURES_URL"] == "http://customer-features.data-mesh.svc.cluster.local:8080"
        assert config["APINODE_ENRICHMENT"] == "remote"
    secrets = {r.get("metadata.name"): r.get("stringData") for r in _run("prod", True).resources
               if r.type == "kubernetes:core/v1:Secret"}
    internal_key = secrets["customer-scoring-secrets"]["features-api-key"]
    accepted_by_features = secrets["customer-features-secrets"]["api-keys"].split("\n")
    assert internal_key in accepted_by_features
    client_keys = _run("prod", True).outputs["apiKeys"]
    assert internal_key not in client_keys.values(), "scoring must not borrow a client's key"
    assert accepted_by_features == [client_keys["customer-features"], internal_key]
    assert secrets["customer-scoring-secrets"]["api-keys"] == client_keys["customer-scoring"]


def test_api_keys_come_from_stack_secrets_or_are_generated() -> None:
    assert _run("prod", True).outputs["apiKeys"] == {
        "customer-features": DUMMY_SECRETS["data-mesh:customerFeaturesApiKey"],
        "customer-scoring": DUMMY_SECRETS["data-mesh:customerScoringApiKey"],
    }
    generated = _run("prod").outputs["apiKeys"]
    assert set(generated) == set(SERVICE_IDS) and all(generated.values())
    assert "apiKeys" in _run("prod").secret_outputs
    passwords = [r for r in _run("prod").resources if r.type == "random:index/randomPassword:RandomPassword"]
    assert {p.name for p in passwords} >= {f"mesh-{sid}-api-key" for sid in SERVICE_IDS}
    assert all(p.inputs["length"] >= 32 for p in passwords)


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_value_in_plain_text(stack: str) -> None:
    run = _run(stack, True)
    secret_resources = [r for r in run.resources if r.type == "kubernetes:core/v1:Secret"]
    values = {DUMMY_SECRETS["data-mesh:customerFeaturesApiKey"], DUMMY_SECRETS["data-mesh:customerScoringApiKey"]}
    if stack == "prod":
        values.add(DUMMY_SECRETS["data-mesh:databasePassword"])
    for secret in secret_resources:
        assert "stringData" in secret.secret_inputs, f"{secret.name}: values not marked secret"
        values |= {key for value in secret.get("stringData").values() for key in value.split("\n")}
    generated = _run(stack).outputs["apiKeys"].values()  # generated when the stack sets none
    values |= set(generated)
    assert all(len(value) >= 16 for value in values)
    # Every value is where it belongs (so the search below looks for real strings) ...
    in_secrets = json.dumps([s.inputs for s in secret_resources])
    assert all(value in in_secrets for value in values - set(generated))
    # ... and nowhere else: not in ConfigMaps, env literals, any other input, or a plain output.
    for label, text in [(f"{r.type} {r.name}", json.dumps(r.inputs, default=str))
                        for r in run.resources if r.type != "kubernetes:core/v1:Secret"] + \
                       [(f"output {key}", json.dumps(value, default=str)) for key, value in run.outputs.items()
                        if key not in run.secret_outputs]:
        leaked = [value for value in values if value in text]
        assert not leaked, f"{stack}: a secret value appears in plain text in {label}"


def test_config_data_names_secret_files_never_values() -> None:
    settings = _settings("prod")
    data = config_data(settings.service("customer-features"), settings.database, None)
    assert data["APINODE_API_KEYS_FILE"] == "/var/run/secrets/apinode/api-keys"
    assert DUMMY_SECRETS["data-mesh:databasePassword"] not in json.dumps(data)
    with pytest.raises(ValueError, match="reads from SQL"):
        config_data(settings.service("customer-features"), None, None)


def test_ingress_exposure_adds_one_path_per_service_behind_clusterip() -> None:
    overrides = {"data-mesh:exposure": json.dumps({"type": "Ingress", "clientCidrs": ["10.40.0.0/16"],
                                                   "host": "mesh.example.com", "ingressClass": "alb",
                                                   "internal": False})}  # internal ALBs: test_zero_trust.py
    run = run_stack("prod", overrides=overrides)
    found = {m["metadata"]["name"]: m for m in manifests(run.resources)}
    ingresses = [m for m in manifests(run.resources) if m["kind"] == "Ingress"]
    assert {i["metadata"]["name"] for i in ingresses} == set(SERVICE_IDS)
    for ingress in ingresses:
        sid = ingress["metadata"]["name"]
        path = ingress["spec"]["rules"][0]["http"]["paths"][0]
        assert path["path"] == f"/public/api/v1/{sid}" and path["backend"]["service"]["name"] == sid
        assert ingress["spec"]["ingressClassName"] == "alb"
        assert ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/inbound-cidrs"] == "10.40.0.0/16"
    services = [m for m in manifests(run.resources) if m["kind"] == "Service"]
    assert {s["spec"]["type"] for s in services} == {"ClusterIP"}
    assert found and run.outputs["serviceEndpoints"]["customer-scoring"] == \
        "http://mesh.example.com/public/api/v1/customer-scoring"


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_object_goes_to_the_stacks_cluster(stack: str) -> None:
    """Through the cluster's provider, never the ambient kubeconfig of whoever runs `pulumi up`."""
    providers = {r.provider for r in _run(stack).resources if r.custom and r.type.startswith("kubernetes:")
                 and not r.type.startswith("pulumi:providers")}
    assert len(providers) == 1
    (provider,) = providers
    assert provider is not None and "pulumi:providers:kubernetes::cluster-k8s::" in provider


def test_preview_declares_the_same_objects_as_up() -> None:
    """`pulumi preview` on a pull request (values unknown until apply) shows every object `up` makes."""
    preview = manifests(run_stack("prod", preview=True).resources)
    assert [(m["kind"], m["metadata"]["name"]) for m in preview] == \
        [(m["kind"], m["metadata"]["name"]) for m in _manifests("prod")]


def _pod_annotations(run: StackRun, service_id: str) -> dict[str, str]:
    (deployment,) = [m for m in manifests(run.resources)
                     if m["kind"] == "Deployment" and m["metadata"]["name"] == service_id]
    return deployment["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize("service_id", SERVICE_IDS)
def test_rotating_a_secret_rolls_the_pods_without_showing_it(service_id: str) -> None:
    before = _pod_annotations(_run("prod", True), service_id)
    rotated = {**DUMMY_SECRETS, "data-mesh:customerFeaturesApiKey": "rotated-features-key-0123456789abcdef"}
    after = _pod_annotations(run_stack("prod", secrets=rotated), service_id)
    assert before["checksum/config"] == after["checksum/config"], "the settings did not change"
    if service_id == "customer-features":  # scoring's own secrets do not hold the features client key
        assert before["checksum/secrets"] != after["checksum/secrets"], "a rotated key must roll the pods"
    else:
        assert before["checksum/secrets"] == after["checksum/secrets"], "an untouched service must not roll"
    assert len(after["checksum/secrets"]) == 64
    assert "rotated-features-key" not in json.dumps(after)


@pytest.mark.parametrize("stack", STACKS)
def test_data_product_pages_name_who_the_stack_admits(stack):
    """The product page (apinode/docs.py) reads APINODE_CONSUMERS: the same list the mesh admits."""
    settings = _settings(stack)
    features = of_kind(stack, "ConfigMap")["customer-features-config"]["data"]["APINODE_CONSUMERS"].split(",")
    assert features[0] == f"{NAMESPACE}/customer-scoring"
    assert features[1:] == [f"{c.namespace}/{c.service_account}" for c in settings.mesh.consumers]
    assert settings.mesh.consumers, f"{stack} lists no consumer: the page would show only scoring"
    scoring = of_kind(stack, "ConfigMap")["customer-scoring-config"]["data"]["APINODE_CONSUMERS"].split(",")
    assert scoring == [f"clients in {cidr}" for cidr in settings.exposure.client_cidrs]
