"""Stack settings: every config key parsed once, validated, into frozen dataclasses.

Pulumi hands config to the program as strings (objects as JSON strings). This
module turns that flat mapping into typed settings, or fails before any
resource is declared with one message that names the key, says what is wrong
and how to fix it. Nothing else in ``infra/`` reads ``pulumi.Config``.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from infra import config_cluster
from infra.config_mesh import parse_consumers
from infra.config_platform import PLATFORM_KEYS, platform_settings
from infra.config_images import IMAGE_KEYS, image_settings
from infra.config_governance import KEYS as GOVERNANCE_KEYS
from infra.config_governance import parse_governance
from infra.settings import (
    AutoscalingSettings,
    ClusterSettings,
    DatabaseSettings,
    ExposureSettings,
    NetworkSettings,
    NodeGroupSettings,
    RegistrySettings,
    ResourceSettings,
    Secret,
    ServiceSettings,
    StackSettings,
)

PROJECT = "data-mesh"
SERVICE_IDS = ("customer-features", "customer-scoring")
KUBERNETES_VERSIONS = tuple(config_cluster.ADDON_VERSIONS)
EXPOSURE_TYPES = ("NodePort", "LoadBalancer", "Ingress")
SOURCES = ("bundled", "sql")
SQL_MODES = ("cached", "live")
ENRICHMENTS = ("bundled", "remote")


def api_key_config_key(service_id: str) -> str:
    """Config key (without namespace) of a service's client API key: ``customerScoringApiKey``."""
    head, *rest = service_id.split("-")
    return head + "".join(word.title() for word in rest) + "ApiKey"


# Every key of the project namespace; anything else is a typo worth stopping for.
KNOWN_KEYS = {
    "vpcCidr", "availabilityZones", "natGateways", "kubernetesVersion", "nodeGroup",
    "clusterAdminRoleArns", "publicEndpointCidrs", "ecr", "namespace", "exposure",
    "database", "databasePassword", "services", "tags", "sourceRepository",
    "apiAccess", "protect", "clusterLogRetentionDays",
    "consumers",
    *PLATFORM_KEYS,
    *(api_key_config_key(service_id) for service_id in SERVICE_IDS),
    *IMAGE_KEYS,
}
KNOWN_KEYS |= GOVERNANCE_KEYS  # infra/config_governance.py
SECRET_KEYS = {"databasePassword", *(k for k in KNOWN_KEYS if k.endswith("ApiKey"))}
_QUANTITY_CPU = re.compile(r"^\d+(\.\d+)?m?$")
_QUANTITY_MEMORY = re.compile(r"^\d+(Ki|Mi|Gi)$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """A stack setting is missing or wrong; the message names the key and the fix."""


@dataclass(frozen=True)
class _Reader:
    """Typed access to one config object, with errors that name the full key."""

    prefix: str
    values: Mapping[str, Any]
    stack: str

    def fail(self, key: str, problem: str, example: str | None = None) -> ConfigError:
        full = f"{self.prefix}{key}"
        fix = f" Fix: pulumi config set --path '{full}' {example} --stack {self.stack}" if example else ""
        return ConfigError(f"config key '{full}': {problem}.{fix}")

    def remove(self, key: str, problem: str) -> ConfigError:
        """A key that must go: the fix is ``pulumi config rm``."""
        full = f"{self.prefix}{key}"
        return ConfigError(f"config key '{full}': {problem}. "
                           f"Fix: pulumi config rm --path '{full}' --stack {self.stack}")

    def has(self, key: str) -> bool:
        return self.values.get(key) is not None

    def raw(self, key: str, example: str, default: Any = ...) -> Any:
        if self.values.get(key) is None:
            if default is ...:
                raise self.fail(key, "is required but not set", example)
            return default
        return self.values[key]

    def string(self, key: str, example: str, default: Any = ..., choices: tuple[str, ...] = ()) -> str:
        value = self.raw(key, example, default)
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}", example)
        if choices and value not in choices:
            hint = difflib.get_close_matches(value, choices, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise self.fail(key, f"must be one of {', '.join(choices)}; got '{value}'{extra}", choices[0])
        return value

    def integer(self, key: str, example: str, default: Any = ..., low: int = 0, high: int = 10**6) -> int:
        value = self.raw(key, example, default)
        try:
            number = int(str(value), 10)
        except ValueError:
            raise self.fail(key, f"must be a whole number, got {value!r}", example) from None
        if not low <= number <= high:
            raise self.fail(key, f"must be between {low} and {high}, got {number}", example)
        return number

    def boolean(self, key: str, example: str, default: Any = ...) -> bool:
        value = self.raw(key, example, default)
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise self.fail(key, f"must be true or false, got {value!r}", example)

    def strings(self, key: str, example: str, default: Any = ...) -> tuple[str, ...]:
        value = self.raw(key, example, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, f"must be a list of strings, got {value!r}", example)
        return tuple(value)

    def cidrs(self, key: str, example: str, default: Any = ..., allow_anywhere: bool = False) -> tuple[str, ...]:
        values = self.strings(key, example, default)
        for value in values:
            cidr = self.cidr_value(key, value, example)
            if cidr.prefixlen == 0 and not allow_anywhere:
                raise self.fail(key, f"{value} opens this to the whole internet; list the networks that need it",
                                example)
        return values

    def cidr_value(self, key: str, value: str, example: str) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise self.fail(key, f"'{value}' is not a valid IPv4 CIDR ({exc})", example) from None

    def child(self, key: str, example: str, default: Any = ...) -> _Reader:
        value = self.raw(key, example, default)
        if not isinstance(value, dict):
            raise self.fail(key, f"must be an object, got {value!r}", example)
        return _Reader(f"{self.prefix}{key}.", value, self.stack)

    def only(self, allowed: set[str]) -> None:
        for key in self.values:
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                extra = f"; did you mean '{self.prefix}{hint[0]}'?" if hint else ""
                raise ConfigError(
                    f"config key '{self.prefix}{key}' is not a setting of this program{extra} "
                    f"Known keys here: {', '.join(sorted(allowed))}. "
                    f"Remove it with: pulumi config rm --path '{self.prefix}{key}' --stack {self.stack}"
                )


def _decode(value: Any) -> Any:
    """Pulumi passes objects and lists as JSON strings; scalars stay strings."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _quantity(reader: _Reader, key: str, pattern: re.Pattern[str], example: str) -> str:
    value = reader.string(key, example)
    if not pattern.match(value):
        raise reader.fail(key, f"'{value}' is not a Kubernetes quantity like {example}", example)
    return value


def _cpu_millis(value: str) -> float:
    return float(value[:-1]) if value.endswith("m") else float(value) * 1000


def _memory_mib(value: str) -> float:
    number, unit = float(value[:-2]), value[-2:]
    return number * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[unit]


def _resources(reader: _Reader) -> ResourceSettings:
    reader.only({"cpuRequest", "memoryRequest", "cpuLimit", "memoryLimit"})
    settings = ResourceSettings(
        cpu_request=_quantity(reader, "cpuRequest", _QUANTITY_CPU, "250m"),
        memory_request=_quantity(reader, "memoryRequest", _QUANTITY_MEMORY, "256Mi"),
        cpu_limit=_quantity(reader, "cpuLimit", _QUANTITY_CPU, "1"),
        memory_limit=_quantity(reader, "memoryLimit", _QUANTITY_MEMORY, "512Mi"),
    )
    if _cpu_millis(settings.cpu_limit) < _cpu_millis(settings.cpu_request):
        raise reader.fail("cpuLimit", f"{settings.cpu_limit} is below cpuRequest {settings.cpu_request}",
                          settings.cpu_request)
    if _memory_mib(settings.memory_limit) < _memory_mib(settings.memory_request):
        raise reader.fail("memoryLimit", f"{settings.memory_limit} is below memoryRequest "
                          f"{settings.memory_request}", settings.memory_request)
    return settings


def _autoscaling(reader: _Reader, replicas: int) -> AutoscalingSettings | None:
    if not reader.has("autoscaling"):
        return None
    scaling = reader.child("autoscaling", "'{\"maxReplicas\": 6}'")
    scaling.only({"maxReplicas", "cpuUtilization"})
    max_replicas = scaling.integer("maxReplicas", "6", low=1, high=100)
    if max_replicas < replicas:
        raise scaling.fail("maxReplicas", f"{max_replicas} is below the service's replicas ({replicas})",
                           str(replicas))
    return AutoscalingSettings(
        min_replicas=replicas,
        max_replicas=max_replicas,
        cpu_utilization=scaling.integer("cpuUtilization", "70", default=70, low=10, high=100),
    )


def _service(reader: _Reader, service_id: str, secrets: Mapping[str, Secret | None]) -> ServiceSettings:
    reader.only({"version", "replicas", "autoscaling", "resources", "source", "sqlMode", "refreshSeconds",
                 "enrichment", "port"})
    version = reader.string("version", "1.0.0")
    if not _VERSION.match(version):
        raise reader.fail("version", f"'{version}' is not a semantic version like 1.2.3", "1.0.0")
    replicas = reader.integer("replicas", "2", low=1, high=100)
    source = reader.string("source", "bundled", default="bundled", choices=SOURCES)
    enrichment = None
    if service_id == "customer-scoring":
        enrichment = reader.string("enrichment", "remote", default="remote", choices=ENRICHMENTS)
    elif reader.has("enrichment"):
        raise reader.remove("enrichment", "only applies to customer-scoring")
    return ServiceSettings(
        id=service_id,
        version=version,
        replicas=replicas,
        port=reader.integer("port", "8080", default=8080, low=1024, high=65535),
        resources=_resources(reader.child("resources", "'{\"cpuRequest\": \"250m\", ...}'")),
        autoscaling=_autoscaling(reader, replicas),
        source=source,
        sql_mode=reader.string("sqlMode", "cached", default="cached", choices=SQL_MODES),
        refresh_seconds=reader.integer("refreshSeconds", "300", default=300, low=5, high=86400),
        enrichment=enrichment,
        api_key=secrets.get(api_key_config_key(service_id)),
    )


def _database(reader: _Reader, password: Secret | None, stack: str) -> DatabaseSettings:
    reader.only({"host", "port", "name", "user", "sslMode", "cidr", "caBundleFile"})
    if password is None:
        raise ConfigError(
            f"config key '{PROJECT}:databasePassword': is required because a service reads from SQL. "
            f"Fix: pulumi config set --secret {PROJECT}:databasePassword <password> --stack {stack}"
        )
    cidr = reader.string("cidr", "10.30.0.0/24")
    reader.cidr_value("cidr", cidr, "10.30.0.0/24")
    # verify-full: the server's certificate must chain to caBundleFile and name the host we dialled.
    ssl_mode = reader.string("sslMode", "verify-full", default="verify-full",
                             choices=("verify-full", "verify-ca", "require", "prefer", "disable"))
    return DatabaseSettings(
        host=reader.string("host", "features.example.internal"),
        port=reader.integer("port", "5432", default=5432, low=1, high=65535),
        name=reader.string("name", "features"),
        user=reader.string("user", "features_reader"),
        ssl_mode=ssl_mode,
        cidr=cidr,
        password=password,
        ca_bundle=config_cluster.database_ca_bundle(reader, ssl_mode),
    )


def parse_settings(raw: Mapping[str, Any], stack: str, secret_keys: frozenset[str] = frozenset()) -> StackSettings:
    """Turn Pulumi's flat config (``namespace:key`` -> string) into validated settings."""
    ours = {key.split(":", 1)[1]: _decode(value) for key, value in raw.items() if key.startswith(f"{PROJECT}:")}
    top = _Reader(f"{PROJECT}:", ours, stack)
    top.only(KNOWN_KEYS)
    region = raw.get("aws:region")
    if not region:
        raise ConfigError(f"config key 'aws:region': is required but not set. "
                          f"Fix: pulumi config set aws:region eu-west-1 --stack {stack}")

    secrets: dict[str, Secret | None] = {}
    for key in sorted(SECRET_KEYS):
        if ours.get(key) is None:
            secrets[key] = None
        elif f"{PROJECT}:{key}" not in secret_keys:
            raise ConfigError(
                f"config key '{PROJECT}:{key}': is stored in plain text. It must be a secret. "
                f"Fix: pulumi config rm {PROJECT}:{key} --stack {stack} && "
                f"pulumi config set --secret {PROJECT}:{key} <value> --stack {stack}"
            )
        else:
            secrets[key] = Secret(str(ours[key]))

    cidr = top.string("vpcCidr", "10.20.0.0/16")
    network = top.cidr_value("vpcCidr", cidr, "10.20.0.0/16")
    if not 16 <= network.prefixlen <= 20:
        raise top.fail("vpcCidr", f"prefix /{network.prefixlen} must be between /16 and /20 to fit "
                       "one public and one private subnet per zone", "10.20.0.0/16")

    nodes = top.child("nodeGroup", "'{\"instanceTypes\": [\"t3.large\"], ...}'")
    nodes.only({"instanceTypes", "minSize", "desiredSize", "maxSize", "diskSizeGb", "capacityType"})
    instance_types = nodes.strings("instanceTypes", "'[\"t3.large\"]'")
    for instance_type in instance_types:
        if not _INSTANCE_TYPE.match(instance_type):
            raise nodes.fail("instanceTypes", f"'{instance_type}' is not an EC2 instance type like t3.large",
                             "'[\"t3.large\"]'")
    min_size = nodes.integer("minSize", "1", low=1, high=100)
    max_size = nodes.integer("maxSize", str(max(min_size, 4)), low=1, high=100)
    node_group = NodeGroupSettings(
        instance_types=instance_types,
        min_size=min_size,
        desired_size=nodes.integer("desiredSize", str(min_size), low=1, high=100),  # the example fits
        max_size=max_size,
        disk_size_gb=nodes.integer("diskSizeGb", "40", default=40, low=20, high=1000),
        capacity_type=nodes.string("capacityType", "ON_DEMAND", default="ON_DEMAND",
                                   choices=("ON_DEMAND", "SPOT")),
    )
    if not node_group.min_size <= node_group.desired_size <= node_group.max_size:
        raise nodes.fail("desiredSize", f"must lie between minSize ({node_group.min_size}) and maxSize "
                         f"({node_group.max_size}), got {node_group.desired_size}", str(node_group.min_size))

    version = config_cluster.kubernetes_version(top)
    admin_arns = top.strings("clusterAdminRoleArns", "'[\"arn:aws:iam::123456789012:role/platform-admin\"]'",
                             default=[])
    for arn in admin_arns:
        if not _ROLE_ARN.match(arn):
            raise top.fail("clusterAdminRoleArns", f"'{arn}' is not an IAM role ARN",
                           "'[\"arn:aws:iam::123456789012:role/platform-admin\"]'")
    public_cidrs = top.cidrs("publicEndpointCidrs", "'[\"203.0.113.0/24\"]'", default=[])
    api_cidrs, api_groups = config_cluster.api_access(top, public_cidrs)
    cluster = ClusterSettings(
        kubernetes_version=version,
        admin_role_arns=admin_arns,
        public_endpoint_cidrs=public_cidrs,
        node_group=node_group,
        api_private_cidrs=api_cidrs,
        api_security_group_ids=api_groups,
        log_retention_days=config_cluster.log_retention_days(top),
    )

    ecr = top.child("ecr", "'{\"immutableTags\": true}'", default={})
    ecr.only({"immutableTags", "forceDelete", "keepImages"})
    registry = RegistrySettings(
        immutable_tags=ecr.boolean("immutableTags", "true", default=True),
        force_delete=ecr.boolean("forceDelete", "false", default=False),
        keep_images=ecr.integer("keepImages", "20", default=20, low=1, high=1000),
    )

    namespace = top.string("namespace", "data-mesh", default="data-mesh")
    if not _DNS_LABEL.match(namespace):
        raise top.fail("namespace", f"'{namespace}' is not a valid Kubernetes namespace name", "data-mesh")
    exposure_reader = top.child("exposure", "'{\"type\": \"LoadBalancer\", \"clientCidrs\": [...]}'")
    exposure_reader.only({"type", "clientCidrs", "internal", "ingressClass", "host"})
    exposure = ExposureSettings(
        type=exposure_reader.string("type", "LoadBalancer", choices=EXPOSURE_TYPES),
        client_cidrs=exposure_reader.cidrs("clientCidrs", "'[\"10.20.0.0/16\"]'"),
        internal=exposure_reader.boolean("internal", "true", default=True),
        ingress_class=exposure_reader.string("ingressClass", "alb", default="alb"),
        host=exposure_reader.string("host", "mesh.example.com", default=None)
        if exposure_reader.has("host") else None,
    )
    if exposure.type == "Ingress" and exposure.host is None:
        raise exposure_reader.fail("host", "is required when exposure.type is Ingress", "mesh.example.com")

    services_reader = top.child("services", "'{\"customer-features\": {...}}'")
    services_reader.only(set(SERVICE_IDS))
    services = tuple(_service(services_reader.child(sid, "'{\"version\": \"1.0.0\", ...}'"), sid, secrets)
                     for sid in SERVICE_IDS)
    services, governance = parse_governance(top, services)
    database = None
    if any(service.source == "sql" for service in services):
        database = _database(top.child("database", "'{\"host\": ..., \"cidr\": ...}'"),
                             secrets["databasePassword"], stack)
    elif top.has("database"):
        raise top.remove("database", "is set but no service has source sql (or set a service's source to sql)")

    tags = top.raw("tags", "'{\"team\": \"data\"}'", default={})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise top.fail("tags", f"must be an object of string values, got {tags!r}", "'{\"team\": \"data\"}'")

    source_repository = None
    if top.has("sourceRepository"):
        source_repository = top.string("sourceRepository", "https://github.com/acme/data-mesh")
        if not re.match(r"^https://[\w.-]+/[\w./-]+$", source_repository):
            raise top.fail("sourceRepository", f"'{source_repository}' is not an https URL of a repository",
                           "https://github.com/acme/data-mesh")

    return StackSettings(
        project=PROJECT,
        stack=stack,
        region=str(region),
        tags={"project": PROJECT, "stack": stack, "managed-by": "pulumi", **tags},
        network=NetworkSettings(
            cidr=cidr,
            availability_zones=top.integer("availabilityZones", "3", low=2, high=6),
            nat_gateways=top.string("natGateways", "per-az", choices=("single", "per-az")),
        ),
        cluster=cluster,
        registry=registry,
        namespace=namespace,
        exposure=exposure,
        database=database,
        services=services,
        source_repository=source_repository,
        protect=config_cluster.protect(top),
        mesh=parse_consumers(ours, project=PROJECT, stack=stack, own_namespace=namespace),
        **platform_settings(top, services, cidr, exposure, database),
        images=image_settings(top, stack, SERVICE_IDS),
        governance=governance,
    )


def stack_file_config(path: str | Path) -> dict[str, str]:
    """The flat config Pulumi would pass for a stack file (objects as JSON strings)."""
    import yaml  # local: only tests and the renderer read stack files directly

    document = yaml.safe_load(Path(path).read_text()) or {}
    flat: dict[str, str] = {}
    for key, value in (document.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            continue  # encrypted secrets: the engine decrypts them, files alone cannot
        flat[key] = json.dumps(value) if isinstance(value, (dict, list)) else str(value).lower() \
            if isinstance(value, bool) else str(value)
    return flat


def settings_from_pulumi() -> StackSettings:
    """Read the running program's config (the only place ``pulumi`` config is read)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = frozenset(k for k in raw if runtime_config.is_config_secret(k)) | frozenset(
        runtime_config.get_config_secret_keys_env())
    return parse_settings(raw, pulumi.get_stack(), secret_keys)
