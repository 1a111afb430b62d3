"""The add-ons' custom resources validate against their CRDs' schemas (tests/infra/crds).

kubernetes-validate knows only the built-in kinds and skips a NodePool with a warning; a misspelt
field there would reach the cluster and be refused by the API server (or, where the CRD is open,
silently ignored). The schemas come from datreeio/CRDs-catalog (see tests/infra/crds/README.md).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from infra.mocks import run_stack
from infra.render import custom_resources

SCHEMAS = Path(__file__).with_name("crds")
# Internet-facing: an internal ALB would sit in the pod subnets, which infra/policies.py refuses.
INGRESS = json.dumps({"type": "Ingress", "internal": False, "clientCidrs": ["198.51.100.0/24"],
                      "host": "mesh.example.com"})


@functools.cache
def _custom(stack: str, ingress: bool = False) -> tuple[dict[str, Any], ...]:
    overrides = {"data-mesh:exposure": INGRESS} if ingress else None
    return tuple(custom_resources(run_stack(stack, overrides=overrides).resources))


def schema_of(manifest: dict[str, Any]) -> dict[str, Any]:
    group, version = manifest["apiVersion"].split("/")
    path = SCHEMAS / group / f"{manifest['kind'].lower()}_{version}.json"
    assert path.exists(), f"no schema for {manifest['kind']} {manifest['apiVersion']}: add {path.name} to {SCHEMAS}"
    return json.loads(path.read_text())


def problems(manifest: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema_of(manifest))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


CASES = [("prod", False), ("dev", True)]


@pytest.mark.parametrize(("stack", "ingress"), CASES, ids=["prod", "dev-ingress"])
def test_every_custom_resource_validates_against_its_crd_schema(stack: str, ingress: bool) -> None:
    items = _custom(stack, ingress)
    assert items, "the stack declares no custom resources"
    for manifest in items:
        assert problems(manifest) == [], f"{manifest['kind']} {manifest['metadata']['name']}"


def test_prod_declares_the_node_pool_its_class_and_the_ingress_class_parameters() -> None:
    kinds = {(m["apiVersion"], m["kind"]) for m in _custom("prod")}
    assert kinds >= {("karpenter.sh/v1", "NodePool"), ("karpenter.k8s.aws/v1", "EC2NodeClass"),
                     ("elbv2.k8s.aws/v1beta1", "IngressClassParams")}


@pytest.mark.parametrize(("kind", "change", "field"), [
    ("NodePool", lambda m: m["spec"]["template"]["spec"].update({"startupTaint": []}), "startupTaint"),
    ("EC2NodeClass", lambda m: m["spec"]["metadataOptions"].update({"httpTokens": "optional-ish"}), "httpTokens"),
    ("IngressClassParams", lambda m: m["spec"].update({"scheme": "public"}), "scheme"),
])
def test_schema_validation_catches_a_misspelt_or_wrong_field(kind: str, change: Any, field: str) -> None:
    manifest = copy.deepcopy(next(m for m in _custom("prod") if m["kind"] == kind))
    change(manifest)
    found = problems(manifest)
    assert found and any(field in problem for problem in found), found
