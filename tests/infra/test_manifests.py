"""The rendered Kubernetes manifests of each stack: schema-valid for its Kubernetes version, checkov-clean,
and wired right.

The manifests come from ``infra.render`` (the same helper ``make render`` uses) applied to the
program run under mocks. Each check is shown to fail on a deliberately broken manifest.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.mocks import DUMMY_SECRETS, ROOT, run_stack, stack_config
from infra.policies import HBONE_PORT
from infra.render import SECRET_PLACEHOLDER, manifests, write

STACKS = ("dev", "prod")
SKIPS_FILE = Path(__file__).with_name("checkov-skips.yaml")


@functools.cache
def _manifests(stack: str) -> tuple[dict[str, Any], ...]:
    return tuple(manifests(run_stack(stack).resources))


@pytest.fixture(scope="module", params=STACKS)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Path]]:
    """One stack's manifests written to a folder, as ``make render`` writes them."""
    stack = request.param
    out = tmp_path_factory.mktemp(f"rendered-{stack}")
    return stack, write(stack, list(_manifests(stack)), out)


# ---- schema: kubernetes-validate --strict against the stack's own Kubernetes version --------------

def kubernetes_version(stack: str) -> str:
    """The cluster's version as the stack file sets it: the schema the API server will apply."""
    return stack_config(stack)["data-mesh:kubernetesVersion"]


def kubernetes_validate(paths: list[Path], version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", f"{version}.0",
                           *map(str, paths)], capture_output=True, text=True, timeout=300)


CRD_SCHEMAS = Path(__file__).with_name("crds")  # <group>/<kind>_<version>.json, see test_custom_resources.py


def built_in(paths: list[Path]) -> list[Path]:
    """Manifests of Kubernetes' own kinds: those whose API group has no schema folder under crds/."""
    custom = {folder.name for folder in CRD_SCHEMAS.iterdir() if folder.is_dir()}
    return [p for p in paths if yaml.safe_load(p.read_text())["apiVersion"].rpartition("/")[0] not in custom]


def test_every_manifest_validates_strictly_against_the_configured_kubernetes_version(
        rendered: tuple[str, list[Path]]) -> None:
    stack, paths = rendered
    paths = built_in(paths)
    version = kubernetes_version(stack)
    result = kubernetes_validate(paths, version)
    assert result.returncode == 0, f"{stack}:\n{result.stdout}{result.stderr}"
    passed = [line for line in result.stdout.splitlines() if " passed for resource " in line]
    assert len(passed) == len(paths), result.stdout
    assert all(f"against version {version}" in line for line in passed)


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    deployment = copy.deepcopy(next(m for m in _manifests("prod") if m["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    (path,) = write("prod", [deployment], tmp_path)
    result = kubernetes_validate([path], kubernetes_version("prod"))
    assert result.returncode != 0 and "readOnlyRootFs" in result.stdout + result.stderr


# ---- checkov, with the accepted findings listed (and explained) in checkov-skips.yaml ------------

def load_skips() -> list[dict[str, Any]]:
    skips = yaml.safe_load(SKIPS_FILE.read_text()) or []
    for skip in skips:
        assert set(skip) == {"check", "resource", "stacks", "reason"}, f"incomplete skip entry: {skip}"
        assert len(skip["reason"].split()) >= 8, f"{skip['check']}: say why it is accepted"
    return skips


def checkov(folder: Path) -> dict[str, Any]:
    result = subprocess.run([str(ROOT / "scripts" / "checkov"), "-d", str(folder), "--framework", "kubernetes",
                             "-o", "json", "--compact"], capture_output=True, text=True, timeout=900)
    assert result.returncode in (0, 1), f"checkov crashed:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return report


def test_checkov_finds_nothing_but_the_listed_exceptions(rendered: tuple[str, list[Path]]) -> None:
    stack, paths = rendered
    report = checkov(paths[0].parent)
    checked = {Path(c["file_path"]).name for key in ("passed_checks", "failed_checks")
               for c in report["results"][key]}
    # checkov has no checks for Namespace, NetworkPolicy, HPA, PDB, IngressClass or the add-ons' custom
    # kinds (those are validated against their CRD schemas instead); every other kind must be read.
    unchecked_kinds = ("namespace", "networkpolicy", "horizontalpodautoscaler", "poddisruptionbudget",
                       "peerauthentication", "authorizationpolicy", "gateway", "ingressclass",
                       "nodepool", "ec2nodeclass", "ingressclassparams", "destinationrule")
    expected = {p.name for p in paths if p.name.split("-", 2)[1] not in unchecked_kinds}
    assert checked == expected, "checkov must have checked every workload manifest"
    assert report["summary"]["passed"] >= 10 * len(expected), report["summary"]
    failed = {(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]}
    accepted = {(s["check"], s["resource"]) for s in load_skips() if stack in s["stacks"]}
    unexplained = sorted(failed - accepted)
    assert not unexplained, f"{stack}: checkov findings not in {SKIPS_FILE.name}: {unexplained}"
    stale = sorted(accepted - failed)
    assert not stale, f"{stack}: {SKIPS_FILE.name} lists findings checkov no longer reports: {stale}"


def test_checkov_reports_a_pod_that_drops_its_security_context(tmp_path: Path) -> None:
    deployment = copy.deepcopy(next(m for m in _manifests("dev") if m["kind"] == "Deployment"))
    del deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    write("dev", [deployment], tmp_path)
    failed = {c["check_id"] for c in checkov(tmp_path)["results"]["failed_checks"]}
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28"} <= failed  # privilege escalation, read-only fs, NET_RAW


# ---- selectors and references: every Service, policy and budget reaches the pods it means --------

def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if not {"In": lambda: labels.get(key) in values, "NotIn": lambda: labels.get(key) not in values,
                "Exists": lambda: key in labels, "DoesNotExist": lambda: key not in labels}[operator]():
            return False
    return True


def wiring_problems(items: list[dict[str, Any]]) -> list[str]:
    """Selectors that match no pod, and names or ports that point at nothing."""
    by_kind: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for item in items:
        meta = item["metadata"]
        by_kind.setdefault(item["kind"], {})[(meta.get("namespace", ""), meta["name"])] = item
    pods = [(ns, d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"])
            for (ns, _), d in by_kind.get("Deployment", {}).items()]
    # Istio deploys a waypoint's pods itself, labelled with the Gateway's name, listening on HBONE.
    pods += [(ns, {"gateway.networking.k8s.io/gateway-name": name},
              {"containers": [{"ports": [{"containerPort": HBONE_PORT}]}]})
             for (ns, name), g in by_kind.get("Gateway", {}).items() if g["spec"]["gatewayClassName"] == "istio-waypoint"]

    def matched(namespace: str, selector: dict[str, Any]) -> list[dict[str, Any]]:
        return [spec for ns, labels, spec in pods if ns == namespace and selects(selector, labels)]

    def ports(specs: list[dict[str, Any]]) -> set[Any]:
        # Every pod of an ambient namespace also takes HBONE on 15008 (ztunnel listens in its network namespace).
        return {p[k] for s in specs for c in s["containers"] for p in c.get("ports", []) for k in ("name",
                "containerPort") if k in p} | ({HBONE_PORT} if specs else set())

    problems = []
    for (ns, name), deployment in by_kind.get("Deployment", {}).items():
        template = deployment["spec"]["template"]
        if not selects(deployment["spec"]["selector"], template["metadata"]["labels"]):
            problems.append(f"Deployment {name}: selector does not match its own pod template")
        spec = template["spec"]
        for constraint in spec.get("topologySpreadConstraints", []):
            if not selects(constraint["labelSelector"], template["metadata"]["labels"]):
                problems.append(f"Deployment {name}: topology spread does not count its own pods")
        if (ns, spec["serviceAccountName"]) not in by_kind.get("ServiceAccount", {}):
            problems.append(f"Deployment {name}: no ServiceAccount {spec['serviceAccountName']}")
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                if (ns, source["configMapRef"]["name"]) not in by_kind.get("ConfigMap", {}):
                    problems.append(f"Deployment {name}: no ConfigMap {source['configMapRef']['name']}")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                secret = ref and by_kind.get("Secret", {}).get((ns, ref["name"]))
                if ref and (secret is None or ref["key"] not in secret.get("stringData", {})):
                    problems.append(f"Deployment {name}: env {env['name']} refers to a missing secret key")
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                secret = by_kind.get("Secret", {}).get((ns, volume["secret"]["secretName"]))
                keys = {i["key"] for i in volume["secret"].get("items", [])}
                if secret is None or not keys <= set(secret.get("stringData", {})):
                    problems.append(f"Deployment {name}: volume {volume['name']} refers to a missing secret key")
    for (ns, name), service in by_kind.get("Service", {}).items():
        targets = matched(ns, {"matchLabels": service["spec"]["selector"]})
        if not targets:
            problems.append(f"Service {name}: selector matches no pod")
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in ports(targets):
                problems.append(f"Service {name}: targetPort {port['targetPort']} is not a container port")
    ours = {ns for ns, _, _ in pods}
    for (ns, name), policy in by_kind.get("NetworkPolicy", {}).items():
        if ns not in ours:
            continue  # kube-system: policies for the add-on pods EKS runs, not rendered here
        targets = matched(ns, policy["spec"]["podSelector"])
        if not targets:
            problems.append(f"NetworkPolicy {name}: podSelector matches no pod")
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if port["port"] not in ports(targets):
                    problems.append(f"NetworkPolicy {name}: ingress port {port['port']} is not a port of its pods")
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer and not matched(ns, peer["podSelector"]):
                    problems.append(f"NetworkPolicy {name}: ingress peer matches no pod")
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    peers = matched(ns, peer["podSelector"])
                    if not peers:
                        problems.append(f"NetworkPolicy {name}: egress peer matches no pod")
                    elif not {p["port"] for p in rule.get("ports", [])} <= ports(peers):
                        problems.append(f"NetworkPolicy {name}: egress port is not a port of the peer pods")
    for (ns, name), budget in by_kind.get("PodDisruptionBudget", {}).items():
        if not matched(ns, budget["spec"]["selector"]):
            problems.append(f"PodDisruptionBudget {name}: selector matches no pod")
    for (ns, name), hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        if (ns, hpa["spec"]["scaleTargetRef"]["name"]) not in by_kind.get("Deployment", {}):
            problems.append(f"HorizontalPodAutoscaler {name}: no Deployment {hpa['spec']['scaleTargetRef']['name']}")
    for (ns, name), ingress in by_kind.get("Ingress", {}).items():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                if (ns, path["backend"]["service"]["name"]) not in by_kind.get("Service", {}):
                    problems.append(f"Ingress {name}: no Service {path['backend']['service']['name']}")
    return problems


@pytest.mark.parametrize("stack", STACKS)
def test_selectors_and_references_reach_their_targets(stack: str) -> None:
    assert wiring_problems(list(_manifests(stack))) == []


def test_ingress_exposure_is_wired_too() -> None:
    # Internet-facing: an internal ALB's addresses are in the pod subnets and are refused (test_zero_trust.py).
    exposure = {"type": "Ingress", "clientCidrs": ["10.40.0.0/16"], "host": "mesh.example.com", "internal": False}
    items = manifests(run_stack("prod", overrides={"data-mesh:exposure": json.dumps(exposure)}).resources)
    assert any(m["kind"] == "Ingress" for m in items)
    assert wiring_problems(items) == []


def _broken(stack: str, kind: str, name: str, change: Any) -> list[dict[str, Any]]:
    items = copy.deepcopy(list(_manifests(stack)))
    change(next(m for m in items if m["kind"] == kind and m["metadata"]["name"] == name))
    return items


@pytest.mark.parametrize(("kind", "name", "change", "expected"), [
    ("Service", "customer-scoring",
     lambda m: m["spec"]["selector"].update({"app.kubernetes.io/name": "customer-scorin"}),
     "Service customer-scoring: selector matches no pod"),
    ("NetworkPolicy", "allow-clients-to-customer-scoring",
     lambda m: m["spec"]["podSelector"]["matchLabels"].update({"app.kubernetes.io/name": "scoring"}),
     "podSelector matches no pod"),
    ("NetworkPolicy", "allow-customer-scoring-to-waypoint",
     lambda m: m["spec"]["egress"][0]["ports"][0].update({"port": 15009}),
     "egress port is not a port of the peer pods"),
    ("NetworkPolicy", "allow-hbone-to-waypoint",
     lambda m: m["spec"]["podSelector"]["matchLabels"].update({"gateway.networking.k8s.io/gateway-name": "wp"}),
     "podSelector matches no pod"),
    ("PodDisruptionBudget", "customer-features",
     lambda m: m["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/name": "x"}),
     "PodDisruptionBudget customer-features: selector matches no pod"),
    ("Deployment", "customer-features",
     lambda m: m["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"].update(
         {"key": "db-password"}),
     "refers to a missing secret key"),
])
def test_a_wrong_selector_or_reference_is_caught(kind: str, name: str, change: Any, expected: str) -> None:
    problems = wiring_problems(_broken("prod", kind, name, change))
    assert any(expected in problem for problem in problems), problems


# ---- make render -------------------------------------------------------------------------------

def test_render_writes_every_manifest_with_an_index_and_no_secret(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "infra.render", "--stack", "prod", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    files = sorted(tmp_path.glob("*.yaml"))
    assert len(files) == len(_manifests("prod"))
    index = (tmp_path / "index.md").read_text()
    assert all(f"[{f.name}]" in index for f in files)
    documents = [yaml.safe_load(f.read_text()) for f in files]
    kinds = {d["kind"] for d in documents}
    assert {"Namespace", "NetworkPolicy", "Deployment", "Service", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Secret"} <= kinds
    for secret in (d for d in documents if d["kind"] == "Secret"):
        assert set(secret["stringData"].values()) == {SECRET_PLACEHOLDER}
    text = "".join(f.read_text() for f in files)
    assert DUMMY_SECRETS["data-mesh:databasePassword"] not in text
    assert "@sha256:" in text
