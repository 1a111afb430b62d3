"""catalog-info.yaml (Backstage entities, ``make catalog``): current, well-formed, and carrying the
OpenAPI document each service really serves.

The rules checked are those of Backstage's entity schemas (packages/catalog-model/src/schema:
EntityMeta name pattern, Component and API required spec fields, an API definition as a string).
"""

from __future__ import annotations

import json
import re

import httpx
import yaml

from tools.catalog import OUTPUT, render

_NAME = re.compile(r"^[a-z0-9A-Z]+([-_.][a-z0-9A-Z]+)*$")
_REQUIRED = {"Component": {"type", "lifecycle", "owner"}, "API": {"type", "lifecycle", "owner", "definition"},
             "System": {"owner"}}


def _entities() -> list[dict]:
    return [e for e in yaml.safe_load_all(OUTPUT.read_text()) if e]


def test_the_committed_catalog_is_what_make_catalog_writes():
    assert OUTPUT.read_text() == render(), "catalog-info.yaml is stale: run `make catalog`"


def test_every_entity_has_what_backstage_requires_and_every_reference_resolves():
    entities = _entities()
    known = {f"{e['kind'].lower()}:{e['metadata']['name']}" for e in entities}
    for entity in entities:
        assert entity["apiVersion"] == "backstage.io/v1alpha1"
        name = entity["metadata"]["name"]
        assert _NAME.match(name) and len(name) <= 63
        assert _REQUIRED[entity["kind"]] <= set(entity["spec"]), entity["kind"]
        assert all(isinstance(v, str) for v in entity["metadata"].get("annotations", {}).values())
        refs = [*entity["spec"].get("providesApis", []), *entity["spec"].get("consumesApis", []),
                *entity["spec"].get("dependsOn", [])]
        if "system" in entity["spec"]:
            refs.append(f"system:{entity['spec']['system']}")
        assert set(refs) <= known, set(refs) - known
    kinds = sorted((e["kind"], e["metadata"]["name"]) for e in entities)
    assert kinds == [("API", "customer-features"), ("API", "customer-scoring"), ("Component", "customer-features"),
                     ("Component", "customer-scoring"), ("System", "data-mesh")]
    scoring = next(e for e in entities if e["kind"] == "Component" and e["metadata"]["name"] == "customer-scoring")
    assert scoring["spec"]["consumesApis"] == ["api:customer-features"]
    assert "generations 1, 2" in scoring["metadata"]["annotations"]["data-mesh/endpoints"]


def test_each_api_carries_the_openapi_document_the_service_serves(features_server, scoring_server):
    apis = {e["metadata"]["name"]: e for e in _entities() if e["kind"] == "API"}
    for server, service in ((features_server, "customer-features"), (scoring_server, "customer-scoring")):
        served = httpx.get(f"{server.url}/public/api/v1/{service}/swagger").json()
        assert isinstance(apis[service]["spec"]["definition"], str)
        assert json.loads(apis[service]["spec"]["definition"]) == served
