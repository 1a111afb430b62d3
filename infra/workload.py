"""One service of the mesh on Kubernetes: identity, settings, secrets, pods, exposure and scaling.

The specs are built by small pure functions (camelCase dicts, exactly as in a manifest) so that
they can be tested without Pulumi; the ``Workload`` component only wires them into resources.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.load_balancer_controller import NLB_CLASS

LOAD_BALANCER_SUBNETS = "service.beta.kubernetes.io/aws-load-balancer-subnets"
from infra.policies import selector_labels
from infra.settings import DatabaseSettings, ExposureSettings, ServiceSettings

RUN_AS = 10001  # the image's apinode user and group
SECRETS_DIR = "/var/run/secrets/apinode"
# Secret keys mounted as files (the runtime reads <VAR>_FILE); the database password is the
# exception, handed over by reference as APINODE_SQL_PASSWORD, the runtime's default password_env.
API_KEYS = "api-keys"
FEATURES_API_KEY = "features-api-key"
DATABASE_PASSWORD = "database-password"
# The database's CA bundle (not secret: a ConfigMap), the sslrootcert libpq verifies the server against.
DATABASE_CA_DIR = "/etc/apinode/database-ca"
DATABASE_CA_KEY = "ca.crt"
# Fixed node ports mirror the local ports (scoring 8080, features 8081) so clients can rely on them.
NODE_PORTS = {"customer-scoring": 30080, "customer-features": 30081}
PRE_STOP_SECONDS = 5  # long enough for endpoints and load balancers to stop sending new requests
DRAIN_SECONDS = 20  # after SIGTERM, how long in-flight requests may take (APINODE_GRACE_SECONDS)
# How long the runtime keeps an idle keep-alive connection (APINODE_KEEP_ALIVE_SECONDS). The
# waypoint's connection pool must let go of idle connections before this (authz.py).
KEEP_ALIVE_SECONDS = 30
TERMINATION_GRACE_SECONDS = 30  # pre-stop delay + drain + a margin before the kubelet kills the pod


@dataclass(frozen=True, kw_only=True)
class Upstream:
    """Another service this one calls, by its cluster DNS name, with the key it presents there."""

    url: str
    api_key: pulumi.Input[str]


def cluster_url(service_id: str, namespace: str, port: int) -> str:
    """The in-cluster address of a service, stable across deployments."""
    return f"http://{service_id}.{namespace}.svc.cluster.local:{port}"


def config_data(service: ServiceSettings, database: DatabaseSettings | None,
                upstream_url: str | None, callers: Sequence[str] = ()) -> dict[str, str]:
    """Non-secret runtime settings (the ConfigMap): paths to secret files, never secret values."""
    data = {"APINODE_API_KEYS_FILE": f"{SECRETS_DIR}/{API_KEYS}", "APINODE_GRACE_SECONDS": str(DRAIN_SECONDS),
            "APINODE_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE_SECONDS)}
    if callers:  # shown on the service's data-product page (who may call it)
        data["APINODE_CONSUMERS"] = ",".join(callers)
    if service.enrichment is not None:
        data["APINODE_ENRICHMENT"] = service.enrichment
    if upstream_url is not None:
        data["APINODE_FEATURES_URL"] = upstream_url
        data["APINODE_FEATURES_API_KEY_FILE"] = f"{SECRETS_DIR}/{FEATURES_API_KEY}"
    if service.source == "sql":
        if database is None:
            raise ValueError(f"{service.id} reads from SQL but no database settings were given")
        url = database.url_without_password()
        if database.ca_bundle is not None:
            url += f"&sslrootcert={DATABASE_CA_DIR}/{DATABASE_CA_KEY}"  # libpq verifies the server against it
        data.update({
            "APINODE_SOURCE": "sql",
            "APINODE_SQL_URL": url,
            "APINODE_SQL_MODE": service.sql_mode,
            "APINODE_SQL_REFRESH_SECONDS": str(service.refresh_seconds),
        })
    data.update(service.runtime_env)
    return data


def container_security_context() -> dict[str, Any]:
    """What the `restricted` Pod Security Standard demands, and a read-only root filesystem."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def probes() -> dict[str, Any]:
    """Startup and liveness on /isAlive (process up), readiness on /readyz (data loaded, not draining)."""
    alive = {"httpGet": {"path": "/isAlive", "port": "http"}, "timeoutSeconds": 2}
    return {
        # Up to 2 minutes to load a large dataset before liveness starts counting.
        "startupProbe": {**alive, "periodSeconds": 2, "failureThreshold": 60},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "timeoutSeconds": 2,
                           "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**alive, "periodSeconds": 10, "failureThreshold": 3},
    }


def pod_spec(*, service: ServiceSettings, image: pulumi.Input[str], config_map: str, secret: str,
             has_upstream: bool, database_ca: str | None = None) -> dict[str, Any]:
    """The pod: restricted, read-only, probed, draining on shutdown, spread across zones when HA."""
    env: list[dict[str, Any]] = []
    if service.source == "sql":
        env.append({"name": "APINODE_SQL_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": DATABASE_PASSWORD}}})
    secret_files = [{"key": API_KEYS, "path": API_KEYS}]
    if has_upstream:
        secret_files.append({"key": FEATURES_API_KEY, "path": FEATURES_API_KEY})
    container = {
        "name": service.id,
        "image": image,
        # By digest, so Always only re-checks the manifest against the registry (and its credentials).
        "imagePullPolicy": "Always",
        "args": ["--host", "0.0.0.0", "--port", str(service.port)],
        "ports": [{"name": "http", "containerPort": service.port, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": config_map}}],
        **({"env": env} if env else {}),
        "resources": {
            "requests": {"cpu": service.resources.cpu_request, "memory": service.resources.memory_request},
            "limits": {"cpu": service.resources.cpu_limit, "memory": service.resources.memory_limit},
        },
        "securityContext": container_security_context(),
        **probes(),
        # Keep serving while the endpoint is removed from Services and load balancers; SIGTERM after.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
        ],
    }
    spec: dict[str, Any] = {
        "serviceAccountName": service.id,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "secrets", "secret": {"secretName": secret, "items": secret_files, "defaultMode": 0o440}},
        ],
    }
    if database_ca is not None:
        container["volumeMounts"].append({"name": "database-ca", "mountPath": DATABASE_CA_DIR, "readOnly": True})
        spec["volumes"].append({"name": "database-ca", "configMap": {
            "name": database_ca, "items": [{"key": DATABASE_CA_KEY, "path": DATABASE_CA_KEY}], "defaultMode": 0o444}})
    if service.highly_available:
        pods = {"matchLabels": selector_labels(service.id)}
        spec["topologySpreadConstraints"] = [
            # Hard across zones: losing a zone leaves the others serving.
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": pods, "matchLabelKeys": ["pod-template-hash"]},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": pods, "matchLabelKeys": ["pod-template-hash"]},
        ]
    return spec


def autoscaled(service: ServiceSettings) -> bool:
    return service.highly_available and service.autoscaling is not None


def deployment_spec(*, service: ServiceSettings, labels: Mapping[str, str], pod: dict[str, Any],
                    config_checksum: str, secrets_checksum: pulumi.Input[str] = "") -> dict[str, Any]:
    """Rolling updates that never go below the desired count; the HPA owns replicas when present."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(service.id)},
        "revisionHistoryLimit": 5,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            # A settings or secret change rolls the pods (they read both at start).
            "metadata": {"labels": dict(labels), "annotations": {
                "checksum/config": config_checksum, "checksum/secrets": secrets_checksum}},
            "spec": pod,
        },
    }
    if not autoscaled(service):
        spec["replicas"] = service.replicas
    return spec


def service_spec(service: ServiceSettings, exposure: ExposureSettings) -> tuple[dict[str, Any], dict[str, str]]:
    """Service spec and annotations for the stack's exposure type."""
    port = {"name": "http", "port": service.port, "targetPort": "http", "protocol": "TCP"}
    spec: dict[str, Any] = {"selector": selector_labels(service.id), "ports": [port]}
    annotations: dict[str, str] = {}
    if exposure.type == "NodePort":
        spec["type"] = "NodePort"
        # Local keeps the client address: with Cluster a node rewrites it to its own, an address of
        # the pod subnets, which no NetworkPolicy or mesh rule can tell apart from a pod.
        spec["externalTrafficPolicy"] = "Local"
        if service.id in NODE_PORTS:
            port["nodePort"] = NODE_PORTS[service.id]
    elif exposure.type == "LoadBalancer":
        spec["type"] = "LoadBalancer"
        # The AWS Load Balancer Controller provisions the NLB, not the legacy in-tree provisioner
        # (LBC docs/guide/service/nlb.md: spec.loadBalancerClass hands the Service over).
        spec["loadBalancerClass"] = NLB_CLASS
        spec["externalTrafficPolicy"] = "Local"
        spec["loadBalancerSourceRanges"] = list(exposure.client_cidrs)
        annotations = {
            "service.beta.kubernetes.io/aws-load-balancer-scheme":
                "internal" if exposure.internal else "internet-facing",
            # IP targets: the NLB sends to the pods' VPC addresses, bypassing node ports and kube-proxy.
            "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
            # IP targets hide the client address unless asked (LBC docs/guide/service/annotations.md);
            # the clients NetworkPolicy checks it.
            "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes": "preserve_client_ip.enabled=true",
            # A draining pod fails /readyz and leaves the target group before it stops serving.
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol": "http",
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path": "/readyz",
        }
    else:
        spec["type"] = "ClusterIP"
    return spec, annotations


def ingress_spec(service: ServiceSettings, exposure: ExposureSettings, namespace: str
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """An ALB path per service: the Dataiku API routes already start with the service id."""
    annotations = {
        "alb.ingress.kubernetes.io/scheme": "internal" if exposure.internal else "internet-facing",
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/inbound-cidrs": ",".join(exposure.client_cidrs),
        "alb.ingress.kubernetes.io/healthcheck-path": "/readyz",
        "alb.ingress.kubernetes.io/group.name": namespace,
    }
    spec = {
        "ingressClassName": exposure.ingress_class,
        "rules": [{"host": exposure.host, "http": {"paths": [{
            "path": f"/public/api/v1/{service.id}",
            "pathType": "Prefix",
            "backend": {"service": {"name": service.id, "port": {"name": "http"}}},
        }]}}],
    }
    return spec, annotations


def _endpoint(service: ServiceSettings, exposure: ExposureSettings, k8s_service: k8s.core.v1.Service,
              namespace: str) -> pulumi.Output[str]:
    if exposure.type == "NodePort" and service.id in NODE_PORTS:
        return pulumi.Output.from_input(f"http://<node-private-ip>:{NODE_PORTS[service.id]}")
    if exposure.type == "LoadBalancer":
        def hostname(status: Any) -> str:
            ingress = (getattr(getattr(status, "load_balancer", None), "ingress", None) or [None])[0]
            host = getattr(ingress, "hostname", None) or getattr(ingress, "ip", None)
            return f"http://{host}:{service.port}" if host else "<load balancer pending>"
        return k8s_service.status.apply(hostname)
    if exposure.type == "Ingress":
        return pulumi.Output.from_input(f"http://{exposure.host}/public/api/v1/{service.id}")
    return pulumi.Output.from_input(cluster_url(service.id, namespace, service.port))


@dataclass(frozen=True, kw_only=True)
class WorkloadArgs:
    """One service as deployed in one stack."""

    service: ServiceSettings
    namespace: str
    image: pulumi.Input[str]  # "<repository>@sha256:<digest>"
    exposure: ExposureSettings
    labels: Mapping[str, str]  # common labels; the service's own are added here
    accepted_api_keys: Sequence[pulumi.Input[str]]
    database: DatabaseSettings | None = None
    upstream: Upstream | None = None
    callers: Sequence[str] = ()  # who the mesh and the policies admit, for the data-product page
    # The load balancer controller's Release: its webhook admits the Service and the Ingress.
    exposure_depends_on: Sequence[pulumi.Resource] = ()
    load_balancer_subnet_ids: pulumi.Input[list[str]] | None = None  # where an NLB goes (the public subnets)


class Workload(pulumi.ComponentResource):
    """ServiceAccount, ConfigMap, Secret, Deployment, Service (+ Ingress), and HPA + PDB when HA."""

    endpoint: pulumi.Output[str]
    cluster_url: pulumi.Output[str]

    def __init__(self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mesh:k8s:Workload", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        service, sid = args.service, args.service.id
        labels = {**args.labels, **selector_labels(sid), "app.kubernetes.io/version": service.version}

        def meta(resource_name: str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
            metadata: dict[str, Any] = {"name": resource_name, "namespace": args.namespace, "labels": labels}
            if annotations:
                metadata["annotations"] = dict(annotations)
            return metadata

        account = k8s.core.v1.ServiceAccount(
            f"{name}-account", metadata=meta(sid), automount_service_account_token=False, opts=child)

        data = config_data(service, args.database, args.upstream.url if args.upstream else None, args.callers)
        checksum = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        config = k8s.core.v1.ConfigMap(f"{name}-config", metadata=meta(f"{sid}-config"), data=data, opts=child)

        secret_values: dict[str, pulumi.Input[str]] = {
            API_KEYS: pulumi.Output.all(*args.accepted_api_keys).apply(lambda keys: "\n".join(keys)),
        }
        if args.upstream is not None:
            secret_values[FEATURES_API_KEY] = args.upstream.api_key
        if service.source == "sql" and args.database is not None:
            secret_values[DATABASE_PASSWORD] = args.database.password.reveal()
        secret = k8s.core.v1.Secret(
            f"{name}-secret", metadata=meta(f"{sid}-secrets"), type="Opaque",
            string_data={key: pulumi.Output.secret(value) for key, value in secret_values.items()},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                additional_secret_outputs=["data", "stringData"])))

        # Safe to show: one digest over all of the workload's secrets, generated API keys included,
        # so it cannot be reversed to any of them; it changes when any secret is rotated.
        secrets_checksum = pulumi.Output.unsecret(pulumi.Output.all(*secret_values.values()).apply(
            lambda values: hashlib.sha256("\0".join(values).encode()).hexdigest()))
        pod_inputs: list[pulumi.Resource] = [account, config, secret]
        database_ca = None
        if service.source == "sql" and args.database is not None and args.database.ca_bundle is not None:
            database_ca = f"{sid}-database-ca"
            pod_inputs.append(k8s.core.v1.ConfigMap(
                f"{name}-database-ca", metadata=meta(database_ca),
                data={DATABASE_CA_KEY: args.database.ca_bundle}, opts=child))
            # A new CA bundle rolls the pods too (libpq reads it per connection, the pool keeps old ones).
            checksum = hashlib.sha256((checksum + args.database.ca_bundle).encode()).hexdigest()
        pod = pod_spec(service=service, image=args.image, config_map=f"{sid}-config", secret=f"{sid}-secrets",
                       has_upstream=args.upstream is not None, database_ca=database_ca)
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=meta(sid),
            spec=deployment_spec(service=service, labels=labels, pod=pod, config_checksum=checksum,
                                 secrets_checksum=secrets_checksum),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=pod_inputs)))

        spec, annotations = service_spec(service, args.exposure)
        if args.exposure.type == "LoadBalancer" and args.load_balancer_subnet_ids is not None:
            # Off the pod subnets, so the clients NetworkPolicy can admit the NLB's health checks
            # without admitting pods (LBC docs/guide/service/annotations.md, "subnets").
            annotations = {**annotations, LOAD_BALANCER_SUBNETS: pulumi.Output.from_input(
                args.load_balancer_subnet_ids).apply(",".join)}
        exposed = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            depends_on=list(args.exposure_depends_on)))
        k8s_service = k8s.core.v1.Service(f"{name}-service", metadata=meta(sid, annotations), spec=spec,
                                          opts=exposed)
        if args.exposure.type == "Ingress":
            ingress, ingress_annotations = ingress_spec(service, args.exposure, args.namespace)
            k8s.networking.v1.Ingress(f"{name}-ingress", metadata=meta(sid, ingress_annotations), spec=ingress,
                                      opts=pulumi.ResourceOptions.merge(exposed, pulumi.ResourceOptions(
                                          depends_on=[k8s_service])))

        if autoscaled(service):
            scaling = service.autoscaling
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-autoscaler", metadata=meta(sid),
                spec={
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": sid},
                    "minReplicas": scaling.min_replicas,
                    "maxReplicas": scaling.max_replicas,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                        "type": "Utilization", "averageUtilization": scaling.cpu_utilization}}}],
                    # Scale down slowly: a burst that just ended often comes back.
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
                },
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[deployment])))
        if service.highly_available:
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-disruption-budget", metadata=meta(sid),
                spec={"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(sid)},
                      "unhealthyPodEvictionPolicy": "AlwaysAllow"},
                opts=child)

        self.endpoint = _endpoint(service, args.exposure, k8s_service, args.namespace)
        self.cluster_url = pulumi.Output.from_input(cluster_url(sid, args.namespace, service.port))
        self.register_outputs({"endpoint": self.endpoint, "cluster_url": self.cluster_url})
