"""Both committed stacks run both services on 8080, so a policy built on the wrong service's port
(the caller's instead of the callee's) passes every test that reads only them. This variant gives
each service its own port and checks, through the whole program under mocks, that every port a
policy or a Service opens is the containerPort of the pods it leads to.

Replaces the issue-20 test of the scoring -> features policy, which went with the move of that flow
to HBONE through the waypoint (infra/policies.py): in the ambient mesh the service ports are opened
only to the ambient probe source, to scoring's clients, and by the Services themselves.
"""

from __future__ import annotations

import json

import pytest

from infra.mocks import run_stack, stack_config
from infra.policies import FEATURES, SCORING
from infra.render import manifests

P = "data-mesh:"
PORTS = {FEATURES: 9181, SCORING: 9080}


@pytest.fixture(scope="module", params=["dev", "prod"])
def split(request):
    config = stack_config(request.param)
    services = json.loads(config[f"{P}services"])
    for service_id, port in PORTS.items():
        services[service_id]["port"] = port
    items = manifests(run_stack(request.param, overrides={f"{P}services": json.dumps(services)}).resources)
    return {(m["kind"], m["metadata"]["name"]): m for m in items}


def _ports(rule: dict) -> list[int]:
    return [port["port"] for port in rule["ports"]]


def test_each_service_listens_on_its_own_port(split) -> None:
    for service_id, port in PORTS.items():
        container = split[("Deployment", service_id)]["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"][0]["containerPort"] == port, service_id
        (service_port,) = split[("Service", service_id)]["spec"]["ports"]
        assert service_port["targetPort"] in (port, container["ports"][0].get("name")), service_id


def test_probes_are_admitted_on_every_service_port(split) -> None:
    (rule,) = split[("NetworkPolicy", "allow-ambient-probes")]["spec"]["ingress"]
    assert _ports(rule) == sorted(PORTS.values())


def test_clients_are_admitted_on_the_callee_port_only(split) -> None:
    (rule,) = split[("NetworkPolicy", f"allow-clients-to-{SCORING}")]["spec"]["ingress"]
    assert _ports(rule) == [PORTS[SCORING]]
    assert ("NetworkPolicy", f"allow-clients-to-{FEATURES}") not in split, "features has no outside clients"


def test_scoring_calls_features_on_the_features_port(split) -> None:
    config = split[("ConfigMap", f"{SCORING}-config")]["data"]
    assert config["APINODE_FEATURES_URL"].endswith(f":{PORTS[FEATURES]}"), config["APINODE_FEATURES_URL"]
