"""One test per config validation rule: the message names the key, what is wrong and how to fix it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from infra.config import ConfigError, parse_settings, stack_file_config

ROOT = Path(__file__).resolve().parents[2]
P = "data-mesh:"
SECRET = {f"{P}databasePassword": "pw"}


def _document(stack: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())


def _parse(stack: str, edit: Callable[[dict[str, Any]], None], tmp_path: Path,
           secrets: dict[str, str] | None = None, plain: dict[str, str] | None = None):
    document = copy.deepcopy(_document(stack))
    edit(document["config"])
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(document))
    secrets = SECRET if secrets is None else secrets
    raw = {**stack_file_config(path), **secrets, **(plain or {})}
    return parse_settings(raw, stack, frozenset(secrets))


def _error(stack: str, edit: Callable[[dict[str, Any]], None], tmp_path: Path, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        _parse(stack, edit, tmp_path, **kwargs)
    return str(caught.value)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Edit one (possibly nested) key: ``_set("data-mesh:nodeGroup.minSize", 0)``."""
    def edit(config: dict[str, Any]) -> None:
        top, *rest = path.split(".")
        target = config
        keys = [top, *rest]
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        if value is _DELETE:
            target.pop(keys[-1], None)
        else:
            target[keys[-1]] = value
    return edit


_DELETE = object()

# (case id, stack, edit, key the message must name, words the message must contain)
RULES = [
    ("missing-key", "dev", _set(f"{P}vpcCidr", _DELETE), f"{P}vpcCidr", ["required", "pulumi config set"]),
    ("missing-region", "dev", _set("aws:region", _DELETE), "aws:region", ["required", "pulumi config set aws:region"]),
    ("misspelled-key", "dev", lambda c: c.update({f"{P}vpcCdir": c.pop(f"{P}vpcCidr")}), f"{P}vpcCdir",
     ["did you mean 'data-mesh:vpcCidr'", "pulumi config rm"]),
    ("misspelled-nested-key", "prod", _set(f"{P}nodeGroup.maxSzie", 6), f"{P}nodeGroup.maxSzie",
     ["did you mean 'data-mesh:nodeGroup.maxSize'"]),
    ("bad-cidr", "dev", _set(f"{P}vpcCidr", "10.20.0.300/16"), f"{P}vpcCidr", ["not a valid IPv4 CIDR"]),
    ("cidr-host-bits", "dev", _set(f"{P}vpcCidr", "10.20.1.0/16"), f"{P}vpcCidr", ["not a valid IPv4 CIDR"]),
    ("vpc-too-small", "dev", _set(f"{P}vpcCidr", "10.20.0.0/24"), f"{P}vpcCidr", ["between /16 and /20"]),
    ("public-endpoint-anywhere", "dev", _set(f"{P}publicEndpointCidrs", ["0.0.0.0/0"]), f"{P}publicEndpointCidrs",
     ["whole internet"]),
    ("client-cidrs-anywhere", "prod", _set(f"{P}exposure.clientCidrs", ["0.0.0.0/0"]), f"{P}exposure.clientCidrs",
     ["whole internet"]),
    ("wrong-type-integer", "dev", _set(f"{P}nodeGroup.minSize", "two"), f"{P}nodeGroup.minSize",
     ["whole number"]),
    ("integer-out-of-range", "dev", _set(f"{P}availabilityZones", 9), f"{P}availabilityZones", ["between 2 and 6"]),
    ("wrong-type-boolean", "dev", _set(f"{P}ecr.forceDelete", "yes"), f"{P}ecr.forceDelete", ["true or false"]),
    ("wrong-type-object", "dev", _set(f"{P}nodeGroup", "t3.large"), f"{P}nodeGroup", ["must be an object"]),
    ("wrong-type-list", "dev", _set(f"{P}clusterAdminRoleArns", "arn:aws:iam::123456789012:role/x"),
     f"{P}clusterAdminRoleArns", ["list of strings"]),
    ("wrong-type-tags", "dev", _set(f"{P}tags", {"team": 3}), f"{P}tags", ["string values"]),
    ("node-size-ordering", "prod", _set(f"{P}nodeGroup.desiredSize", 9), f"{P}nodeGroup.desiredSize",
     ["between minSize (2) and maxSize (6)"]),
    ("bad-instance-type", "dev", _set(f"{P}nodeGroup.instanceTypes", ["large"]), f"{P}nodeGroup.instanceTypes",
     ["not an EC2 instance type"]),
    ("bad-capacity-type", "dev", _set(f"{P}nodeGroup.capacityType", "SPOTT"), f"{P}nodeGroup.capacityType",
     ["did you mean 'SPOT'"]),
    ("bad-kubernetes-version", "dev", _set(f"{P}kubernetesVersion", "1.13"), f"{P}kubernetesVersion",
     ["not a Kubernetes version this program supports", "1.35", "extended support"]),
    ("bad-nat-layout", "dev", _set(f"{P}natGateways", "per-zone"), f"{P}natGateways", ["single, per-az"]),
    ("bad-role-arn", "dev", _set(f"{P}clusterAdminRoleArns", ["arn:aws:iam::123:user/bob"]),
     f"{P}clusterAdminRoleArns", ["not an IAM role ARN"]),
    ("bad-namespace", "dev", _set(f"{P}namespace", "Data_Mesh"), f"{P}namespace", ["namespace name"]),
    ("bad-exposure-type", "dev", _set(f"{P}exposure.type", "Nodeport"), f"{P}exposure.type",
     ["did you mean 'NodePort'"]),
    ("ingress-without-host", "prod", _set(f"{P}exposure.type", "Ingress"), f"{P}exposure.host",
     ["required when exposure.type is Ingress"]),
    ("unknown-service", "dev", _set(f"{P}services.customer-sorting", {"version": "1.0.0"}),
     f"{P}services.customer-sorting", ["did you mean 'data-mesh:services.customer-scoring'"]),
    ("missing-service", "dev", _set(f"{P}services.customer-scoring", _DELETE), f"{P}services.customer-scoring",
     ["required"]),
    ("bad-version", "dev", _set(f"{P}services.customer-scoring.version", "v1"),
     f"{P}services.customer-scoring.version", ["semantic version"]),
    ("bad-source", "dev", _set(f"{P}services.customer-features.source", "postgres"),
     f"{P}services.customer-features.source", ["bundled, sql"]),
    ("enrichment-on-features", "dev", _set(f"{P}services.customer-features.enrichment", "remote"),
     f"{P}services.customer-features.enrichment", ["only applies to customer-scoring"]),
    ("bad-cpu-quantity", "dev", _set(f"{P}services.customer-features.resources.cpuRequest", "250 millicores"),
     f"{P}services.customer-features.resources.cpuRequest", ["Kubernetes quantity"]),
    ("bad-memory-quantity", "dev", _set(f"{P}services.customer-features.resources.memoryLimit", "512MB"),
     f"{P}services.customer-features.resources.memoryLimit", ["Kubernetes quantity"]),
    ("cpu-limit-below-request", "dev", _set(f"{P}services.customer-features.resources.cpuLimit", "100m"),
     f"{P}services.customer-features.resources.cpuLimit", ["below cpuRequest 250m"]),
    ("memory-limit-below-request", "dev", _set(f"{P}services.customer-features.resources.memoryLimit", "128Mi"),
     f"{P}services.customer-features.resources.memoryLimit", ["below memoryRequest 256Mi"]),
    ("max-replicas-below-replicas", "prod", _set(f"{P}services.customer-scoring.autoscaling.maxReplicas", 2),
     f"{P}services.customer-scoring.autoscaling.maxReplicas", ["below the service's replicas (3)"]),
    ("database-without-sql-source", "dev", _set(f"{P}database", {"host": "db", "cidr": "10.60.0.0/24"}),
     f"{P}database", ["no service has source sql"]),
    ("database-bad-cidr", "prod", _set(f"{P}database.cidr", "10.60.0.0/33"), f"{P}database.cidr",
     ["not a valid IPv4 CIDR"]),
    ("database-missing-host", "prod", _set(f"{P}database.host", _DELETE), f"{P}database.host", ["required"]),
    ("source-repository-not-https", "dev", _set(f"{P}sourceRepository", "git@github.com:acme/data-mesh.git"),
     f"{P}sourceRepository", ["not an https URL"]),
]


@pytest.mark.parametrize("stack,edit,key,words", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule_names_the_key_and_the_fix(stack: str, edit: Callable, key: str, words: list[str],
                                        tmp_path: Path) -> None:
    message = _error(stack, edit, tmp_path)
    assert f"'{key}'" in message
    assert "pulumi config" in message, "the message must say how to fix it"
    for word in words:
        assert word in message
    assert "Traceback" not in message and "\n" not in message


def test_committed_stacks_are_valid(tmp_path: Path) -> None:
    for stack in ("dev", "prod"):
        settings = _parse(stack, lambda config: None, tmp_path)
        assert settings.stack == stack


def test_secret_stored_in_plain_text_is_rejected(tmp_path: Path) -> None:
    message = _error("prod", lambda config: None, tmp_path, secrets={}, plain={f"{P}databasePassword": "pw"})
    assert f"'{P}databasePassword'" in message and "plain text" in message
    assert f"pulumi config set --secret {P}databasePassword" in message


def test_plain_text_api_key_is_rejected(tmp_path: Path) -> None:
    message = _error("dev", lambda config: None, tmp_path, plain={f"{P}customerScoringApiKey": "k"})
    assert f"'{P}customerScoringApiKey'" in message and "--secret" in message


def test_sql_source_without_database_password(tmp_path: Path) -> None:
    message = _error("prod", lambda config: None, tmp_path, secrets={})
    assert f"'{P}databasePassword'" in message and "reads from SQL" in message
    assert f"pulumi config set --secret {P}databasePassword" in message and "--stack prod" in message


def test_secret_values_never_show_in_settings_repr(tmp_path: Path) -> None:
    settings = _parse("prod", lambda config: None, tmp_path, secrets={f"{P}databasePassword": "hunter2-secret"})
    assert settings.database is not None and settings.database.password.reveal() == "hunter2-secret"
    assert "hunter2-secret" not in repr(settings)
