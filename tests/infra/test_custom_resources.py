"""Every custom resource the program declares validates against its CRD's schema, offline.

kubernetes-validate knows only Kubernetes' own kinds, so the Istio and Gateway API resources are
checked here against the openAPIV3Schema of their CRDs, copied into ``tests/infra/crds/`` as
``<group>/<kind>_<version>.json`` (from Istio's ``manifests/charts/base/files/crd-all.gen.yaml`` and
Gateway API's ``standard-install.yaml``). Unknown fields fail (the schemas close every object
with ``additionalProperties: false``), and so do wrong enum values: the checks are shown to fail on
broken copies.
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
from infra.render import manifests

CRDS = Path(__file__).with_name("crds")
STACKS = ("dev", "prod")
BUILT_IN_GROUPS = ("", "apps", "batch", "policy", "autoscaling", "networking.k8s.io")


@functools.cache
def _manifests(stack: str) -> tuple[dict[str, Any], ...]:
    return tuple(manifests(run_stack(stack).resources))


def schema_path(manifest: dict[str, Any]) -> Path:
    group, _, version = manifest["apiVersion"].rpartition("/")
    return CRDS / group / f"{manifest['kind'].lower()}_{version}.json"


def custom_resources(stack: str) -> list[dict[str, Any]]:
    return [m for m in _manifests(stack) if m["apiVersion"].rpartition("/")[0] not in BUILT_IN_GROUPS]


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    path = schema_path(manifest)
    if not path.exists():
        return [f"no schema {path.relative_to(CRDS)} for {manifest['kind']} {manifest['apiVersion']}"]
    validator = jsonschema.Draft7Validator(json.loads(path.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


@pytest.mark.parametrize("stack", STACKS)
def test_every_custom_resource_validates_against_its_crd(stack: str) -> None:
    found = custom_resources(stack)
    kinds = {m["kind"] for m in found}
    assert {"PeerAuthentication", "AuthorizationPolicy", "Gateway"} <= kinds, kinds
    problems = {f"{m['kind']}/{m['metadata']['name']}": schema_errors(m) for m in found}
    assert {name: errors for name, errors in problems.items() if errors} == {}


@pytest.mark.parametrize(("kind", "name", "change", "expected"), [
    ("PeerAuthentication", "default", lambda m: m["spec"]["mtls"].update(mode="STRCT"), "'STRCT' is not one of"),
    ("AuthorizationPolicy", "customer-features-callers",
     lambda m: m["spec"]["rules"][0]["from"][0]["source"].update(principal="x"), "Additional properties"),
    ("Gateway", "waypoint", lambda m: m["spec"].pop("gatewayClassName"), "'gatewayClassName' is a required"),
])
def test_a_broken_custom_resource_is_caught(kind: str, name: str, change: Any, expected: str) -> None:
    manifest = copy.deepcopy(next(m for m in custom_resources("prod")
                                  if m["kind"] == kind and m["metadata"]["name"] == name))
    assert schema_errors(manifest) == []
    change(manifest)
    assert any(expected in error for error in schema_errors(manifest)), schema_errors(manifest)


def test_an_unknown_custom_kind_has_no_schema_and_fails() -> None:
    manifest = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthenticationz", "metadata": {"name": "x"}}
    assert schema_errors(manifest) and "no schema" in schema_errors(manifest)[0]
