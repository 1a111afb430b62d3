"""Zero trust that holds: policies admit only whom they name, shown on the rendered manifests.

Facts behind the rules, and where they come from:
- under the AWS VPC CNI pods take addresses of the VPC's subnets, so an ipBlock over the VPC range
  admits every pod (aws/amazon-vpc-cni-k8s README, "pods get VPC IP addresses");
- the VPC CNI network-policy agent always admits a pod's own node (aws/aws-network-policy-agent#65);
- ambient tunnels pod traffic as HBONE on 15008 and kubelet probes arrive from 169.254.7.127, both of
  which NetworkPolicies must admit (Istio, docs/ambient/usage/networkpolicy);
- ztunnel sees a waypoint's identity, not the caller's (Istio, docs/ambient/usage/waypoint).
"""

from __future__ import annotations

import functools
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from infra.config import ConfigError, parse_settings, stack_file_config
from infra.connectivity import Cluster, Endpoint, Target, evaluate
from infra.connectivity_table import begin_marker, compute, end_marker, for_stack, markdown
from infra.mesh import subnets
from infra.mocks import DUMMY_SECRETS, run_stack
from infra.policies import AMBIENT_PROBE_SOURCE, HBONE_PORT, METADATA_ENDPOINT, client_blocks
from infra.render import manifests
from infra.settings import ExposureSettings

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("dev", "prod")


@functools.cache
def _settings(stack: str):
    secrets = {"data-mesh:databasePassword": DUMMY_SECRETS["data-mesh:databasePassword"]}
    return parse_settings({**stack_file_config(ROOT / f"Pulumi.{stack}.yaml"), **secrets}, stack,
                          frozenset(secrets))


@functools.cache
def _manifests(stack: str) -> tuple[dict[str, Any], ...]:
    return tuple(manifests(run_stack(stack).resources))


def _kind(stack: str, kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in _manifests(stack) if m["kind"] == kind
            and m["metadata"].get("namespace") == _settings(stack).namespace}


def _admitted(block: dict[str, Any]) -> list[ipaddress.IPv4Network]:
    """What an ipBlock admits: its cidr minus its excepts."""
    rest = [ipaddress.IPv4Network(block["cidr"])]
    for excepted in map(ipaddress.IPv4Network, block.get("except", [])):
        rest = [piece for net in rest for piece in
                (net.address_exclude(excepted) if excepted.subnet_of(net) else
                 ([] if net.subnet_of(excepted) else [net]))]
    return rest


# ---- NetworkPolicies ------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_no_ipblock_admits_an_address_of_the_pod_subnets(stack: str) -> None:
    pod_subnets = [ipaddress.IPv4Network(c) for c in subnets(_settings(stack))[0]]
    blocks = [(name, peer["ipBlock"]) for name, policy in _kind(stack, "NetworkPolicy").items()
              for direction, key in (("ingress", "from"), ("egress", "to"))
              for rule in policy["spec"].get(direction, []) for peer in rule.get(key, []) if "ipBlock" in peer]
    assert blocks, "the clients and the probes are admitted by address"
    leaks = [(name, str(net), str(pods)) for name, block in blocks for net in _admitted(block)
             for pods in pod_subnets if net.overlaps(pods)]
    assert leaks == []


@pytest.mark.parametrize("stack", STACKS)
def test_the_vpc_range_client_entry_carries_every_pod_subnet_as_except(stack: str) -> None:
    settings = _settings(stack)
    clients = _kind(stack, "NetworkPolicy")["allow-clients-to-customer-scoring"]["spec"]["ingress"][0]
    vpc = next(p["ipBlock"] for p in clients["from"] if p["ipBlock"]["cidr"] == settings.network.cidr)
    assert vpc["except"] == subnets(settings)[0]
    assert "allow-clients-to-customer-features" not in _kind(stack, "NetworkPolicy"), \
        "features admits only mesh identities"


def test_a_client_range_inside_the_pod_subnets_is_refused() -> None:
    exposure = ExposureSettings(type="LoadBalancer", client_cidrs=("10.40.1.0/24",), internal=True,
                                ingress_class="alb", host=None)
    with pytest.raises(ConfigError, match=r"'data-mesh:exposure.clientCidrs': 10.40.1.0/24 lies inside the pod"):
        client_blocks(exposure, ["10.40.0.0/19"], ["10.40.224.0/22"])


def test_an_internal_alb_is_refused_its_addresses_are_pod_addresses() -> None:
    exposure = ExposureSettings(type="Ingress", client_cidrs=("10.50.0.0/16",), internal=True,
                                ingress_class="alb", host="mesh.example.com")
    with pytest.raises(ConfigError, match="'data-mesh:exposure.internal': an internal ALB"):
        client_blocks(exposure, ["10.40.0.0/19"], ["10.40.224.0/22"])
    internet_facing = ExposureSettings(type="Ingress", client_cidrs=("10.50.0.0/16",), internal=False,
                                       ingress_class="alb", host="mesh.example.com")
    assert client_blocks(internet_facing, ["10.40.0.0/19"], ["10.40.224.0/22"]) == [{"cidr": "10.40.224.0/22"}]


@pytest.mark.parametrize("stack", STACKS)
def test_hbone_and_the_ambient_probe_source_are_admitted(stack: str) -> None:
    policies = _kind(stack, "NetworkPolicy")
    probes = policies["allow-ambient-probes"]["spec"]["ingress"][0]
    assert probes["from"] == [{"ipBlock": {"cidr": AMBIENT_PROBE_SOURCE}}] == [{"ipBlock": {"cidr": "169.254.7.127/32"}}]
    assert {p["port"] for p in probes["ports"]} == {s.port for s in _settings(stack).services}
    hbone = policies["allow-hbone-from-waypoint"]["spec"]["ingress"][0]
    assert hbone["ports"] == [{"protocol": "TCP", "port": HBONE_PORT}] and HBONE_PORT == 15008
    assert hbone["from"] == [{"podSelector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "waypoint"}}}]


# ---- AuthorizationPolicies ------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_features_admits_scoring_and_the_listed_consumers_by_identity_only(stack: str) -> None:
    settings = _settings(stack)
    policies = _kind(stack, "AuthorizationPolicy")
    callers = policies["customer-features-callers"]["spec"]
    assert callers["targetRefs"] == [{"group": "", "kind": "Service", "name": "customer-features"}]
    assert callers["action"] == "ALLOW"
    (rule,) = callers["rules"]
    assert rule["from"] == [{"source": {"principals": [
        f"cluster.local/ns/{settings.namespace}/sa/customer-scoring",
        *(c.principal for c in settings.mesh.consumers)]}}]
    assert settings.mesh.consumers, "the stacks list a consumer, so the table shows one"
    assert rule["to"] == [{"operation": {"notPaths": ["/metrics"]}}]
    # Its pods admit only the waypoint: nothing can go around the identity and path checks.
    pods = policies["customer-features-via-waypoint"]["spec"]
    assert pods["rules"] == [{"from": [{"source": {"principals": [
        f"cluster.local/ns/{settings.namespace}/sa/waypoint"]}}]}]


def test_a_consumer_setting_reaches_the_policy_and_the_waypoints_networkpolicy() -> None:
    overrides = {"data-mesh:consumers": json.dumps(["billing/invoicer", "analytics/churn-model"])}
    items = manifests(run_stack("dev", overrides=overrides).resources)
    callers = next(m for m in items if m["metadata"]["name"] == "customer-features-callers")
    assert callers["spec"]["rules"][0]["from"][0]["source"]["principals"][1:] == [
        "cluster.local/ns/billing/sa/invoicer", "cluster.local/ns/analytics/sa/churn-model"]
    waypoint = next(m for m in items if m["metadata"]["name"] == "allow-hbone-to-waypoint")
    namespaces = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                  for p in waypoint["spec"]["ingress"][0]["from"] if "namespaceSelector" in p]
    assert namespaces == ["analytics", "billing", "monitoring"]


@pytest.mark.parametrize(("value", "expected"), [
    ("analytics", "must be a list of '<namespace>/<service account>' strings"),
    (["analytics"], "is not '<namespace>/<service account>'"),
    (["Analytics/x"], "'Analytics' in 'Analytics/x' is not a valid Kubernetes namespace name"),
    (["analytics/Churn_Model"], "is not a valid service account name"),
    (["kube-system/default"], "system namespace kube-system"),
    (["data-mesh/debug"], "the services' own namespace"),
    (["analytics/churn-model", "analytics/churn-model"], "listed twice"),
])
def test_a_bad_consumer_fails_naming_the_key(value: Any, expected: str) -> None:
    config = {**stack_file_config(ROOT / "Pulumi.dev.yaml"), "data-mesh:consumers": json.dumps(value)}
    with pytest.raises(ConfigError) as caught:
        parse_settings(config, "dev")
    message = str(caught.value)
    assert message.startswith("config key 'data-mesh:consumers': ") and expected in message
    assert "pulumi config set --path 'data-mesh:consumers'" in message


# ---- the evaluator on crafted policies (each rule of its model can fail) ---------------------------

POD_SUBNETS = ("10.40.0.0/19", "10.40.32.0/19")  # prod's first two private (pod) subnets


def address_in(cidr: str, index: int) -> str:
    """A host address of a subnet, as the VPC CNI hands one to a pod or a node: data for the offline
    evaluator, never dialled."""
    return str(ipaddress.ip_network(cidr)[index])


POD = Endpoint("features", address_in(POD_SUBNETS[0], 11), "ns", {"app": "f"}, "features", True)
OTHER = Endpoint("other", address_in(POD_SUBNETS[1], 5), "other", {"app": "x"}, "default", True)
PLAIN = Endpoint("other, outside the mesh", address_in(POD_SUBNETS[1], 5), "other", {"app": "x"}, "default",
                 False)
NODE_ADDRESS = address_in(POD_SUBNETS[0], 250)
TARGET = Target("features", POD, 8080, "/lookup")


def _netpol(spec: dict[str, Any], namespace: str = "ns") -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": namespace}, "spec": spec}


def _cluster(*items: dict[str, Any]) -> Cluster:
    return Cluster(items, {"ns": {}, "other": {"istio.io/dataplane-mode": "ambient"}})


def test_the_issues_finding_a_vpc_wide_ipblock_admits_a_pod_of_any_namespace() -> None:
    """The policy the seed shipped: clients from 10.40.0.0/16, no except. Every pod is such a client."""
    old = _netpol({"podSelector": {}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"ipBlock": {"cidr": "10.40.0.0/16"}}], "ports": [{"port": 8080}]}]})
    assert _cluster(old).network(PLAIN, POD, 8080)
    fixed = _netpol({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.40.0.0/16", "except": ["10.40.0.0/19", "10.40.32.0/19"]}}], "ports": [{"port": 8080}]}]})
    assert not _cluster(fixed).network(PLAIN, POD, 8080)


def test_namespace_selectors_ports_and_the_resident_node() -> None:
    policy = _netpol({"podSelector": {"matchLabels": {"app": "f"}}, "policyTypes": ["Ingress"], "ingress": [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "other"}}}],
        "ports": [{"port": 15008}]}]})
    cluster = _cluster(policy)
    assert cluster.network(OTHER, POD, 15008) and not cluster.network(OTHER, POD, 8080)
    assert not cluster.network(Endpoint("a node", NODE_ADDRESS), POD, 8080)
    assert cluster.network(Endpoint("its node", NODE_ADDRESS, resident_node=True), POD, 8080)


def _authz(spec: dict[str, Any], name: str = "a") -> dict[str, Any]:
    return {"kind": "AuthorizationPolicy", "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def test_authorization_deny_wins_allow_must_match_and_l7_fails_closed_on_ztunnel() -> None:
    allow_other = _authz({"selector": {"matchLabels": {"app": "f"}}, "rules": [
        {"from": [{"source": {"principals": ["cluster.local/ns/other/sa/default"]}}]}]})
    deny_other = _authz({"selector": {}, "action": "DENY", "rules": [
        {"from": [{"source": {"namespaces": ["other"]}}]}]}, "d")
    cluster = _cluster(allow_other)
    assert evaluate(cluster, OTHER, TARGET, None).allowed
    assert not evaluate(cluster, Endpoint("x", OTHER.ip, "other", {}, "x", True), TARGET, None).allowed
    assert not evaluate(cluster, PLAIN, TARGET, None).allowed, "no identity without mTLS"
    assert not evaluate(_cluster(allow_other, deny_other), OTHER, TARGET, None).allowed
    l7_on_ztunnel = _authz({"selector": {}, "rules": [{"to": [{"operation": {"paths": ["/lookup"]}}]}]})
    assert not evaluate(_cluster(l7_on_ztunnel), OTHER, TARGET, None).allowed


def test_strict_mtls_refuses_plaintext_unless_the_port_is_permissive() -> None:
    root = {"kind": "PeerAuthentication", "metadata": {"name": "default", "namespace": "istio-system"},
            "spec": {"mtls": {"mode": "STRICT"}}}
    port = {"kind": "PeerAuthentication", "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "f"}}, "mtls": {"mode": "STRICT"},
                     "portLevelMtls": {"8080": {"mode": "PERMISSIVE"}}}}
    assert evaluate(_cluster(), PLAIN, TARGET, None).allowed
    assert str(evaluate(_cluster(root), PLAIN, TARGET, None)) == "deny: mTLS STRICT refuses plaintext"
    assert evaluate(_cluster(root, port), PLAIN, TARGET, None).allowed
    assert not evaluate(_cluster(root, port), PLAIN, Target("features", POD, 9090, "/x"), None).allowed


# ---- the connectivity table of each stack ---------------------------------------------------------

A, D = "allow", "deny"
# caller -> (features, features /metrics, scoring, scoring /metrics): what a reviewer signs off.
EXPECTED = {
    "customer-scoring pod": (A, D, D, D),
    "customer-features pod": (D, D, D, D),
    "another pod of the namespace": (D, D, D, D),
    "a pod of another namespace (other-team, in the mesh)": (D, D, D, D),
    "listed consumer analytics/churn-model": (A, D, D, D),
    "a pod of monitoring (Prometheus)": (D, A, D, A),
    "a listed client range": (D, D, A, A),
    "the pods' own node": (D, D, D, D),
    "another node": (D, D, D, D),
    "the metadata endpoint (169.254.169.254)": (D, D, D, D),
    "kubelet probe via istio-cni (169.254.7.127)": (A, A, A, A),
}
COLUMNS = ("features", "features /metrics", "scoring", "scoring /metrics")


def _table(stack: str):
    settings = _settings(stack)
    return compute(settings, _manifests(stack), subnets(settings)[0])


@pytest.mark.parametrize("stack", STACKS)
def test_connectivity_table_holds(stack: str) -> None:
    ingress, egress = _table(stack)
    found = {name.split(" (1")[0] if name.startswith("a listed client range") else name:
             tuple("allow" if row[c].allowed else "deny" for c in COLUMNS) for name, row in ingress}
    assert found == EXPECTED
    for pod, row in egress:
        assert row["metadata endpoint :80"] is False, f"{pod} reaches {METADATA_ENDPOINT}"
        assert row["the internet :443"] is False
    database = {pod: allowed for pod, row in egress for key, allowed in row.items() if key.startswith("database")}
    assert database == ({"customer-features pod": True, "customer-scoring pod": False} if stack == "prod" else {})


@pytest.mark.parametrize("stack", STACKS)
def test_docs_show_the_current_table(stack: str) -> None:
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    section = text.split(begin_marker(stack), 1)[1].split(end_marker(stack), 1)[0]
    assert section.strip() == markdown(stack, *_table(stack)).strip(), \
        f"docs/kubernetes.md is stale: run make render STACK={stack}"
    assert for_stack(stack).strip() == section.strip()


def test_nodeport_keeps_the_client_address_so_the_client_rule_means_something() -> None:
    """With externalTrafficPolicy: Cluster a node SNATs NodePort traffic to its own address
    (kubernetes.io/docs/tutorials/services/source-ip, "Source IP for Services with Type=NodePort"):
    under the VPC CNI that is an address of the pod subnets, which the client rule must refuse, so
    dev's clients would be refused while any node could pass for a client. Local keeps the client's."""
    services = {m["metadata"]["name"]: m for m in _manifests("dev") if m["kind"] == "Service"}
    assert {s["spec"]["type"] for s in services.values()} == {"NodePort"}
    assert {s["spec"]["externalTrafficPolicy"] for s in services.values()} == {"Local"}


# ---- The waypoint's connection pool ---------------------------------------------------------------

def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    unit = next(u for u in ("ms", "s", "m", "h") if duration.endswith(u))
    return float(duration[: -len(unit)]) * units[unit]


@pytest.mark.parametrize("stack", STACKS)
def test_the_waypoint_lets_go_of_idle_connections_before_the_pods_close_them(stack: str) -> None:
    """Envoy keeps idle upstream connections for 1 hour by default (Envoy's FAQ, "How do I configure
    timeouts?"); the runtime closes a keep-alive connection idle for APINODE_KEEP_ALIVE_SECONDS. With
    no DestinationRule the waypoint reuses connections the pods have closed, and the request sent at
    that moment fails. Every service the waypoint carries needs an idleTimeout below its pods'."""
    namespace = _settings(stack).namespace
    rules = {m["spec"]["host"]: m["spec"] for m in _kind(stack, "DestinationRule").values()}
    for name, config in _kind(stack, "ConfigMap").items():
        if not name.endswith("-config"):
            continue
        service = name.removesuffix("-config")
        keep_alive = float(config["data"]["APINODE_KEEP_ALIVE_SECONDS"])
        host = f"{service}.{namespace}.svc.cluster.local"
        assert host in rules, f"no DestinationRule for {host}: the waypoint keeps idle connections 1 h"
        idle = rules[host]["trafficPolicy"]["connectionPool"]["http"]["idleTimeout"]
        assert 0 < _seconds(idle) < keep_alive, f"{host}: waypoint idle {idle} against the pod's {keep_alive:g} s"
