"""Traps the committed stacks cannot show: quantities in different units, services on different ports.

Both committed stacks write every memory quantity in ``Mi`` and run both services on 8080, so a
limit compared with its request as text, or a NetworkPolicy built on the wrong service's port, passes
every test that only reads those stacks. These tests build variants of the real stack files.
"""

from __future__ import annotations

import json

import pytest

from infra.config import ConfigError, parse_settings
from infra.mocks import DUMMY_SECRETS, REQUIRED_SECRETS, run_stack, stack_config
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


# customer-features on 8081 and customer-scoring on 8080: the flow scoring -> features must open 8081.
PORTS = {FEATURES: 8081, SCORING: 8080}


@pytest.fixture(scope="module", params=["dev", "prod"])
def split_ports(request: pytest.FixtureRequest):
    """Settings of a stack variant whose two services listen on different ports."""
    stack = request.param
    raw = _services_with(stack, FEATURES, port=PORTS[FEATURES])
    services = json.loads(raw[f"{P}services"])
    services[SCORING]["port"] = PORTS[SCORING]
    raw[f"{P}services"] = json.dumps(services)
    settings = parse_settings(raw, stack, frozenset(DUMMY_SECRETS) & frozenset(raw))
    return stack, raw, settings


def _ports(rule: dict) -> list[int]:
    return [port["port"] for port in rule["ports"]]


def test_features_allow_policies_use_the_callee_port(split_ports) -> None:
    _, _, settings = split_ports
    specs = policy_specs(services=settings.services, exposure=settings.exposure, database=settings.database,
                         vpc_cidr=settings.network.cidr)
    (egress,) = specs[f"allow-{SCORING}-to-{FEATURES}"]["egress"]
    (ingress,) = specs[f"allow-{FEATURES}-from-{SCORING}"]["ingress"]
    assert _ports(egress) == [PORTS[FEATURES]], "scoring must be let out to the features port"
    assert _ports(ingress) == [PORTS[FEATURES]], "features must let scoring in on its own port"
    for service_id, port in PORTS.items():
        (clients,) = specs[f"allow-clients-to-{service_id}"]["ingress"]
        assert _ports(clients) == [port], service_id


def test_declared_policies_match_the_ports_the_pods_listen_on(split_ports) -> None:
    """Through the whole program: each allowed port is the containerPort of the pods it admits into."""
    stack, raw, _ = split_ports
    secrets = {key: DUMMY_SECRETS[key] for key in REQUIRED_SECRETS[stack]}
    overrides = {k: v for k, v in raw.items() if k not in secrets}
    run = run_stack(stack, overrides=overrides, secrets=secrets)
    listening = {}
    for deployment in run.of_type("kubernetes:apps/v1:Deployment"):
        service_id = deployment.get("metadata.name")
        (main,) = [c for c in deployment.get("spec.template.spec.containers") if c["name"] == service_id]
        listening[service_id] = main["ports"][0]["containerPort"]
    assert listening == PORTS
    policies = {policy.get("metadata.name"): policy.get("spec")
                for policy in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    (egress,) = policies[f"allow-{SCORING}-to-{FEATURES}"]["egress"]
    (ingress,) = policies[f"allow-{FEATURES}-from-{SCORING}"]["ingress"]
    assert _ports(egress) == _ports(ingress) == [listening[FEATURES]]
    scoring_config = next(c for c in run.of_type("kubernetes:core/v1:ConfigMap")
                          if c.get("metadata.name") == f"{SCORING}-config")
    assert scoring_config.get("data.APINODE_FEATURES_URL").endswith(f":{PORTS[FEATURES]}")


def _pods(service_id: str) -> dict:
    return {"matchLabels": {"app.kubernetes.io/name": service_id}}


# The flows each committed stack must permit, written out by hand: policy -> (selected pods, direction,
# peers, ports that must be open). More policies or more ports may be added (the mesh's own ports),
# but none of these may change.
DNS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
FLOWS = {
    "dev": {
        "allow-dns": ({}, "Egress", [DNS_PEER], [("UDP", 53), ("TCP", 53)]),
        f"allow-clients-to-{FEATURES}": (_pods(FEATURES), "Ingress", [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                                         [("TCP", 8080)]),
        f"allow-clients-to-{SCORING}": (_pods(SCORING), "Ingress", [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                                        [("TCP", 8080)]),
        f"allow-{SCORING}-to-{FEATURES}": (_pods(SCORING), "Egress", [{"podSelector": _pods(FEATURES)}],
                                           [("TCP", 8080)]),
        f"allow-{FEATURES}-from-{SCORING}": (_pods(FEATURES), "Ingress", [{"podSelector": _pods(SCORING)}],
                                             [("TCP", 8080)]),
    },
    "prod": {
        "allow-dns": ({}, "Egress", [DNS_PEER], [("UDP", 53), ("TCP", 53)]),
        f"allow-clients-to-{FEATURES}": (_pods(FEATURES), "Ingress", [{"ipBlock": {"cidr": "10.40.0.0/16"}},
                                                                      {"ipBlock": {"cidr": "10.50.0.0/16"}}],
                                         [("TCP", 8080)]),
        f"allow-clients-to-{SCORING}": (_pods(SCORING), "Ingress", [{"ipBlock": {"cidr": "10.40.0.0/16"}},
                                                                    {"ipBlock": {"cidr": "10.50.0.0/16"}}],
                                        [("TCP", 8080)]),
        f"allow-{SCORING}-to-{FEATURES}": (_pods(SCORING), "Egress", [{"podSelector": _pods(FEATURES)}],
                                           [("TCP", 8080)]),
        f"allow-{FEATURES}-from-{SCORING}": (_pods(FEATURES), "Ingress", [{"podSelector": _pods(SCORING)}],
                                             [("TCP", 8080)]),
        f"allow-{FEATURES}-to-database": (_pods(FEATURES), "Egress", [{"ipBlock": {"cidr": "10.60.0.0/24"}}],
                                          [("TCP", 5432)]),
    },
}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stacks_permit_exactly_their_flows(stack: str) -> None:
    raw = _services_with(stack, FEATURES)
    settings = parse_settings(raw, stack, frozenset(DUMMY_SECRETS) & frozenset(raw))
    specs = policy_specs(services=settings.services, exposure=settings.exposure, database=settings.database,
                         vpc_cidr=settings.network.cidr)
    assert specs["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for name, (pods, direction, peers, ports) in FLOWS[stack].items():
        spec = specs.get(name)
        assert spec is not None, f"{stack}: no policy {name}; have {sorted(specs)}"
        assert spec["podSelector"] == pods, name
        assert spec["policyTypes"] == [direction], name
        (rule,) = spec[direction.lower()]
        assert rule["from" if direction == "Ingress" else "to"] == peers, name
        opened = {(port["protocol"], port["port"]) for port in rule["ports"]}
        assert set(ports) <= opened, f"{name}: {sorted(opened)}"
    # No flow to the database from a service that does not read SQL, none from scoring to itself.
    assert not [n for n in specs if n.endswith("-to-database") and n not in FLOWS[stack]], sorted(specs)
    assert f"allow-{FEATURES}-to-{SCORING}" not in specs and f"allow-{SCORING}-from-{FEATURES}" not in specs


def test_bundled_scoring_does_not_call_features() -> None:
    raw = _services_with("dev", SCORING, enrichment="bundled")
    settings = parse_settings(raw, "dev", frozenset())
    specs = policy_specs(services=settings.services, exposure=settings.exposure, database=settings.database,
                         vpc_cidr=settings.network.cidr)
    assert not [name for name in specs if FEATURES in name and SCORING in name], sorted(specs)


def test_sql_source_without_database_settings_is_refused() -> None:
    settings = _parse("prod", FEATURES)
    with pytest.raises(ValueError, match=f"{FEATURES} reads from SQL but the stack has no database settings"):
        policy_specs(services=settings.services, exposure=settings.exposure, database=None,
                     vpc_cidr=settings.network.cidr)


@pytest.mark.parametrize(
    "exposure_type, expected",
    [("LoadBalancer", ["10.40.0.0/16", "10.50.0.0/16"]),
     ("NodePort", ["10.40.0.0/16", "10.50.0.0/16"]),
     ("Ingress", ["10.40.0.0/16", "10.50.0.0/16"])],
)
def test_client_sources_per_exposure(exposure_type: str, expected: list[str]) -> None:
    """A LoadBalancer keeps client addresses; NodePort and Ingress arrive from the VPC (here 10.40/16, listed)."""
    from infra.policies import client_sources
    from infra.settings import ExposureSettings

    exposure = ExposureSettings(type=exposure_type, client_cidrs=("10.50.0.0/16",), internal=True,
                                ingress_class="alb", host=None)
    sources = client_sources(exposure, "10.40.0.0/16")
    if exposure_type == "LoadBalancer":
        assert sources == ["10.50.0.0/16"]
    else:
        assert sources == ["10.50.0.0/16", "10.40.0.0/16"]
    already = ExposureSettings(type=exposure_type, client_cidrs=("10.40.0.0/16", "10.50.0.0/16"), internal=True,
                               ingress_class="alb", host=None)
    assert client_sources(already, "10.40.0.0/16") == expected, "the VPC range is not listed twice"
