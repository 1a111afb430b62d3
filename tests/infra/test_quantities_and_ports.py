"""Traps the committed stacks cannot show: quantities in different units, services on different ports.

Both committed stacks write every memory quantity in ``Mi`` and run both services on 8080, so a
limit compared with its request as text, or a NetworkPolicy built on the wrong service's port, passes
every test that only reads those stacks. These tests build variants of the real stack files.
"""

from __future__ import annotations

import json

import pytest

from infra.config import ConfigError, parse_settings
from infra.mocks import DUMMY_SECRETS, REQUIRED_SECRETS, stack_config
from infra.policies import FEATURES, SCORING, policy_specs

P = "data-mesh:"


def _services_with(stack: str, service_id: str, **changes: object) -> dict[str, str]:
    """The stack's config with some keys of one service replaced (``resources`` merged, not replaced)."""
    config = stack_config(stack)
    services = json.loads(config[f"{P}services"])
    target = services[service_id]
    for key, value in changes.items():
        if key == "resources":
            target["resources"] = {**target["resources"], **value}
        else:
            target[key] = value
    config[f"{P}services"] = json.dumps(services)
    secrets = {key: DUMMY_SECRETS[key] for key in REQUIRED_SECRETS[stack]}
    return {**config, **secrets}


def _parse(stack: str, service_id: str, **changes: object):
    raw = _services_with(stack, service_id, **changes)
    secret_keys = frozenset(DUMMY_SECRETS) & frozenset(raw)
    return parse_settings(raw, stack, secret_keys)


# A limit in a larger unit than its request: textual order says "1Gi" < "512Mi" ('1' < '5').
ACCEPTED = [
    ("1Gi-over-512Mi", {"memoryRequest": "512Mi", "memoryLimit": "1Gi"}),
    ("2Gi-over-1536Mi", {"memoryRequest": "1536Mi", "memoryLimit": "2Gi"}),
    ("1Mi-over-1024Ki", {"memoryRequest": "1024Ki", "memoryLimit": "1Mi"}),
    ("equal-across-units", {"memoryRequest": "1024Mi", "memoryLimit": "1Gi"}),
    ("cpu-2-over-1500m", {"cpuRequest": "1500m", "cpuLimit": "2"}),
    ("cpu-1.5-over-900m", {"cpuRequest": "900m", "cpuLimit": "1.5"}),
]
REJECTED = [
    # (case id, resources, key named, words)
    ("900Mi-under-1Gi", {"memoryRequest": "1Gi", "memoryLimit": "900Mi"}, "memoryLimit",
     "900Mi is below memoryRequest 1Gi"),
    ("1023Mi-under-1Gi", {"memoryRequest": "1Gi", "memoryLimit": "1023Mi"}, "memoryLimit",
     "1023Mi is below memoryRequest 1Gi"),
    ("512Ki-under-1Mi", {"memoryRequest": "1Mi", "memoryLimit": "512Ki"}, "memoryLimit",
     "512Ki is below memoryRequest 1Mi"),
    ("cpu-900m-under-1", {"cpuRequest": "1", "cpuLimit": "900m"}, "cpuLimit", "900m is below cpuRequest 1"),
    ("cpu-1-under-1500m", {"cpuRequest": "1500m", "cpuLimit": "1"}, "cpuLimit", "1 is below cpuRequest 1500m"),
]


@pytest.mark.parametrize("resources", [case[1] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED])
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_limit_in_a_larger_unit_than_its_request_is_accepted(stack: str, resources: dict[str, str]) -> None:
    settings = _parse(stack, FEATURES, resources=resources)
    features = next(s for s in settings.services if s.id == FEATURES)
    assert features.resources.memory_limit == resources.get("memoryLimit", features.resources.memory_limit)
    assert features.resources.cpu_limit == resources.get("cpuLimit", features.resources.cpu_limit)


@pytest.mark.parametrize("resources,key,words", [case[1:] for case in REJECTED], ids=[case[0] for case in REJECTED])
def test_limit_below_its_request_in_another_unit_is_refused(resources: dict[str, str], key: str,
                                                            words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse("dev", FEATURES, resources=resources)
    message = str(caught.value)
    assert f"'{P}services.{FEATURES}.resources.{key}'" in message, message
    assert words in message, message
    assert "pulumi config set" in message, message


def _subnets(settings) -> dict:
    from infra.mesh import subnets

    pod_subnets, public_subnets = subnets(settings)
    return {"pod_subnets": pod_subnets, "public_subnets": public_subnets}


def test_bundled_scoring_does_not_call_features() -> None:
    raw = _services_with("dev", SCORING, enrichment="bundled")
    settings = parse_settings(raw, "dev", frozenset())
    specs = policy_specs(services=settings.services, exposure=settings.exposure, database=settings.database,
                         **_subnets(settings))
    assert not [name for name in specs if FEATURES in name and SCORING in name], sorted(specs)


def test_sql_source_without_database_settings_is_refused() -> None:
    settings = _parse("prod", FEATURES)
    with pytest.raises(ValueError, match=f"{FEATURES} reads from SQL but the stack has no database settings"):
        policy_specs(services=settings.services, exposure=settings.exposure, database=None,
                     **_subnets(settings))
