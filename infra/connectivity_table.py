"""The connectivity table of a stack: a fixed cast of callers against the services, from its manifests.

    python -m infra.connectivity_table --stack prod        (make render writes it into docs/kubernetes.md)
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.connectivity import Cluster, Endpoint, Target, Verdict, Waypoint, evaluate, public_address
from infra.policies import AMBIENT_PROBE_SOURCE, FEATURES, METADATA_ENDPOINT, MONITORING_NAMESPACE, SCORING
from infra.settings import StackSettings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "kubernetes.md"
OTHER_NAMESPACE = "other-team"
INTERNET = "203.0.113.10"  # a documentation address standing for anything outside
ENROLLED = {"istio.io/dataplane-mode": "ambient"}
COLUMNS = ("features", "scoring", "features /metrics", "scoring /metrics")
LOOKUP = "/public/api/v1/customer-features/demographics/lookup"
PREDICT = "/public/api/v1/customer-scoring/high-spender/predict"


def _host(cidr: str, index: int) -> str:
    return str(ipaddress.IPv4Network(cidr)[index])


def _pods(items: Sequence[Mapping[str, Any]], namespace: str, pod_subnet: str) -> dict[str, tuple[Endpoint, int]]:
    found = {}
    for index, item in enumerate(i for i in items if i["kind"] == "Deployment"
                                 and i["metadata"]["namespace"] == namespace):
        template = item["spec"]["template"]
        name = item["metadata"]["name"]
        port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
        found[name] = (Endpoint(f"{name} pod", _host(pod_subnet, 10 + index), namespace,
                                template["metadata"]["labels"], template["spec"]["serviceAccountName"], True), port)
    return found


def _waypoint(items: Sequence[Mapping[str, Any]], namespace: str, pod_subnet: str) -> Waypoint | None:
    for item in items:
        if item["kind"] == "Gateway" and item["metadata"]["namespace"] == namespace \
                and item["spec"]["gatewayClassName"] == "istio-waypoint":
            name = item["metadata"]["name"]
            pod = Endpoint("waypoint pod", _host(pod_subnet, 30), namespace,
                           {"gateway.networking.k8s.io/gateway-name": name}, name, True)
            return Waypoint(pod, name, (item["metadata"].get("labels") or {}).get("istio.io/waypoint-for", "service"))
    return None


def cast(settings: StackSettings, pod_subnets: Sequence[str], our: Mapping[str, tuple[Endpoint, int]]
         ) -> list[Endpoint]:
    """The callers of the table, in the order of the issue that asked for it."""
    namespace, first, second = settings.namespace, pod_subnets[0], pod_subnets[-1]
    callers = [our[s][0] for s in (SCORING, FEATURES) if s in our]
    callers.append(Endpoint("another pod of the namespace", _host(first, 20), namespace,
                            {"app.kubernetes.io/name": "debug"}, "default", True))
    callers.append(Endpoint(f"a pod of another namespace ({OTHER_NAMESPACE}, in the mesh)", _host(second, 21),
                            OTHER_NAMESPACE, {"app": "x"}, "default", True))
    for consumer in settings.mesh.consumers:
        callers.append(Endpoint(f"listed consumer {consumer.namespace}/{consumer.service_account}",
                                _host(second, 22), consumer.namespace, {"app": consumer.service_account},
                                consumer.service_account, True))
    callers.append(Endpoint(f"a pod of {MONITORING_NAMESPACE} (Prometheus)", _host(second, 23), MONITORING_NAMESPACE,
                            {"app.kubernetes.io/name": "prometheus"}, "prometheus", True))
    client = public_address(settings.exposure.client_cidrs, pod_subnets)
    if client is not None:
        callers.append(Endpoint(f"a listed client range ({client})", client))
    callers.append(Endpoint("the pods' own node", _host(first, 250), resident_node=True))
    callers.append(Endpoint("another node", _host(second, 251)))
    callers.append(Endpoint("the metadata endpoint (169.254.169.254)", METADATA_ENDPOINT))
    callers.append(Endpoint("kubelet probe via istio-cni (169.254.7.127)", AMBIENT_PROBE_SOURCE.split("/")[0],
                            probe=True))
    return callers


def compute(settings: StackSettings, items: Sequence[Mapping[str, Any]], pod_subnets: Sequence[str]
            ) -> tuple[list[tuple[str, dict[str, Verdict]]], list[tuple[str, dict[str, bool]]]]:
    """(ingress rows: caller -> column -> verdict, egress rows: our pod -> destination -> allowed)."""
    extra = {ns: ENROLLED for ns in (OTHER_NAMESPACE, MONITORING_NAMESPACE,
                                     *(c.namespace for c in settings.mesh.consumers))}
    cluster = Cluster(items, extra)
    our = _pods(items, settings.namespace, pod_subnets[0])
    waypoint = _waypoint(items, settings.namespace, pod_subnets[0])
    targets = {}
    if FEATURES in our:
        targets["features"] = Target(FEATURES, our[FEATURES][0], our[FEATURES][1], LOOKUP)
        targets["features /metrics"] = Target(FEATURES, our[FEATURES][0], our[FEATURES][1], "/metrics", "GET")
    if SCORING in our:
        targets["scoring"] = Target(SCORING, our[SCORING][0], our[SCORING][1], PREDICT)
        targets["scoring /metrics"] = Target(SCORING, our[SCORING][0], our[SCORING][1], "/metrics", "GET")
    ingress = [(caller.name, {column: evaluate(cluster, caller, target, waypoint)
                              for column, target in targets.items()})
               for caller in cast(settings, pod_subnets, our)]
    destinations = {"metadata endpoint :80": Endpoint("metadata", METADATA_ENDPOINT),
                    "the internet :443": Endpoint("internet", INTERNET)}
    if settings.database is not None:
        destinations[f"database {settings.database.cidr} :{settings.database.port}"] = Endpoint(
            "database", _host(settings.database.cidr, 10))
    egress = []
    for name, (pod, _) in our.items():
        row = {}
        for label, destination in destinations.items():
            port = int(label.rsplit(":", 1)[1])
            row[label] = cluster.network(pod, destination, port)
        egress.append((f"{name} pod", row))
    return ingress, egress


def markdown(stack: str, ingress: Sequence[tuple[str, Mapping[str, Verdict]]],
             egress: Sequence[tuple[str, Mapping[str, bool]]]) -> str:
    columns = list(ingress[0][1]) if ingress else list(COLUMNS)
    lines = [f"Stack `{stack}`, computed by `make render STACK={stack}` (`infra/connectivity_table.py`):", "",
             "| caller | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(str(row[c]) for c in columns) + " |" for name, row in ingress]
    destinations = list(egress[0][1]) if egress else []
    lines += ["", "| from | " + " | ".join(destinations) + " |", "|---|" + "---|" * len(destinations)]
    lines += [f"| {name} | " + " | ".join("allow" if row[d] else "deny" for d in destinations) + " |"
              for name, row in egress]
    return "\n".join(lines) + "\n"


def begin_marker(stack: str) -> str:
    return f"<!-- connectivity:{stack}:begin -->"


def end_marker(stack: str) -> str:
    return f"<!-- connectivity:{stack}:end -->"


def replace_section(text: str, stack: str, table: str) -> str:
    """The docs with the stack's section between its markers replaced; fails if the markers are missing."""
    pattern = re.compile(re.escape(begin_marker(stack)) + r".*?" + re.escape(end_marker(stack)), re.S)
    if not pattern.search(text):
        raise ValueError(f"docs/kubernetes.md has no {begin_marker(stack)} ... {end_marker(stack)} section")
    return pattern.sub(lambda _: f"{begin_marker(stack)}\n{table}{end_marker(stack)}", text)


def for_stack(stack: str) -> str:
    """Run the stack under mocks and return its table as markdown."""
    from infra.config import parse_settings
    from infra.mesh import subnets
    from infra.mocks import run_stack
    from infra.render import manifests

    run = run_stack(stack)
    settings = parse_settings(run.config, stack, frozenset(k for k in run.config if k.endswith(("Password", "ApiKey"))))
    pod_subnets, _ = subnets(settings)
    ingress, egress = compute(settings, manifests(run.resources), pod_subnets)
    return markdown(stack, ingress, egress)


def write_docs(stack: str, docs: Path = DOCS) -> None:
    docs.write_text(replace_section(docs.read_text(), stack, for_stack(stack)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.connectivity_table", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--write-docs", action="store_true", help="replace the stack's table in docs/kubernetes.md")
    args = parser.parse_args(argv)
    if args.write_docs:
        write_docs(args.stack)
    else:
        print(for_stack(args.stack), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
