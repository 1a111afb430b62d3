"""The docs and data-product pages over HTTP: served by the service, from the pinned package, with
examples that work against the server, and a product page that tells the truth about its sources."""

from __future__ import annotations

import re
import types

import httpx
import pytest
import swagger_ui_bundle

from apinode.definition import ServiceDefinition
from apinode.docs import DocsPages
from apinode.loader import load_definition
from tests.apinode_proc import API_KEY, REPO

FEATURES = "/public/api/v1/customer-features"
SCORING = "/public/api/v1/customer-scoring"


def get(server, path):
    return httpx.get(server.url + path, timeout=10)


@pytest.mark.parametrize("base", [FEATURES, SCORING], ids=["features", "scoring"])
def test_docs_page_is_html_that_loads_only_this_servers_assets(features_server, scoring_server, base):
    server = features_server if base == FEATURES else scoring_server
    response = get(server, f"{base}/docs")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy, policy
    assert not re.search(r"(src|href)=['\"](https?:)?//", response.text), "the page references another host"
    for asset in re.findall(r"(?:src|href)='(docs/assets/[^']+)'", response.text):
        served = get(server, f"{base}/{asset}")
        assert served.status_code == 200, asset
        assert served.headers["x-content-type-options"] == "nosniff"


def test_swagger_ui_is_the_pinned_packages_file_not_a_copy(features_server):
    served = get(features_server, f"{FEATURES}/docs/assets/swagger-ui-bundle.js")
    with open(f"{swagger_ui_bundle.swagger_ui_path}/swagger-ui-bundle.js", "rb") as original:
        assert served.content == original.read()
    assert served.headers["content-type"].startswith("text/javascript")


def test_docs_init_turns_off_the_validator_badge_that_would_call_an_outside_host(features_server):
    script = get(features_server, f"{FEATURES}/docs/assets/docs.js").text
    assert "validatorUrl: null" in script and 'url: "swagger"' in script


def test_unknown_asset_is_a_json_404(features_server):
    response = get(features_server, f"{FEATURES}/docs/assets/swagger-editor.js")
    assert response.status_code == 404 and response.json()["errorType"] == "NotFound"


@pytest.mark.parametrize(
    "base, action",
    [(FEATURES, "demographics/lookup"), (FEATURES, "behavior/lookup-multi"),
     (SCORING, "high-spender/predict"), (SCORING, "high-spender/predict-multi")],
    ids=lambda value: value.rsplit("/", 1)[-1],
)
def test_every_request_example_in_the_document_is_answered_200(features_server, scoring_server, base, action):
    server = features_server if base == FEATURES else scoring_server
    document = get(server, f"{base}/swagger").json()
    media = document["paths"][f"{base}/{action}"]["post"]["requestBody"]["content"]["application/json"]
    assert "example" in media, f"{action} has no request example for 'try it'"
    answer = httpx.post(server.url + f"{base}/{action}", json=media["example"], auth=(API_KEY, ""), timeout=10)
    assert answer.status_code == 200, answer.text
    text = answer.text
    assert '"notFound":true' not in text and '"ignored":true' not in text, text


def test_scoring_example_sends_only_the_lookup_key(scoring_server):
    document = get(scoring_server, f"{SCORING}/swagger").json()
    media = document["paths"][f"{SCORING}/high-spender/predict"]["post"]["requestBody"]["content"]
    assert media["application/json"]["example"] == {"features": {"customer_id": "C0000001"}}


def test_product_page_lists_every_table_column_and_its_source(features_server):
    response = get(features_server, f"{FEATURES}/product")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    definition = load_definition(REPO / "services" / "customer-features", {})
    for table in definition.tables.values():
        assert f"id='table-{table.name}'" in page
        for column in table.columns:
            assert f"<code>{column.name}</code></td><td>{column.type}</td>" in page, column.name
    assert page.count("bundled with the image, held in memory") == len(definition.tables)
    assert "href='docs'" in page and "href='swagger'" in page and "href='/metrics'" in page


def _fake_runtime(definition: ServiceDefinition, kind: str, stale: bool, age: float):
    source = types.SimpleNamespace(
        kind=kind, stale=stale, loaded_at=1_764_547_200.0, table=types.SimpleNamespace(size=1234),
        age_seconds=lambda: age, spec=None,
    )
    return types.SimpleNamespace(sources={name: source for name in definition.tables})


def test_product_page_reports_a_stale_sql_cache_and_its_refresh_interval():
    definition = load_definition(
        REPO / "services" / "customer-features",
        {"APINODE_SOURCE": "sql", "APINODE_SQL_URL": "postgresql://reader@127.0.0.1:1/features"},
    )
    page = DocsPages(definition, _fake_runtime(definition, "sql-cached", True, 5400.0), {}).product_page().decode()
    assert page.count("SQL, cached in memory and refreshed") == 2
    assert "stale: the last refresh failed" in page and "90 min" in page and "1,234" in page
    assert "every 60 s" in page
    assert "2025-12-01 00:00:00 UTC" in page
    assert "127.0.0.1:1" not in page, "the page must not show where the database is"


def test_product_page_names_the_consumers_the_stack_admits():
    definition = load_definition(REPO / "services" / "customer-features", {})
    env = {"APINODE_CONSUMERS": "data-mesh/customer-scoring, marketing/campaigns"}
    page = DocsPages(definition, _fake_runtime(definition, "bundled", False, 3.0), env).product_page().decode()
    assert "<code>data-mesh/customer-scoring</code>" in page and "<code>marketing/campaigns</code>" in page
    alone = DocsPages(definition, _fake_runtime(definition, "bundled", False, 3.0), {}).product_page().decode()
    assert "No consumers listed" in alone


def test_scoring_product_page_says_where_remote_features_come_from():
    definition = load_definition(REPO / "services" / "customer-scoring", {"APINODE_ENRICHMENT": "remote", "APINODE_FEATURES_API_KEY": "k"})
    runtime = types.SimpleNamespace(sources={})
    page = DocsPages(definition, runtime, {}).product_page().decode()
    assert "looked up from <code>customer-features</code> endpoint <code>profile</code>" in page  # both lookups share profile
    assert "<code>high-spender.onnx</code>" in page


def test_scoring_product_page_shows_each_generation_and_its_dispatch_weight():
    env = {"APINODE_DISPATCH": '{"high-spender": {"1": 90, "2": 10}}'}
    definition = load_definition(REPO / "services" / "customer-scoring", env)
    page = DocsPages(definition, types.SimpleNamespace(sources={}), {}).product_page().decode()
    endpoint = definition.predictions["high-spender"]
    assert len(endpoint.generations) == 2
    for generation, weight in (("1", 90), ("2", 10)):
        model = next(g for g in endpoint.generations if g.id == generation).model_path.name
        assert f"<tr><td><code>{generation}</code></td><td><code>{model}</code></td><td>{weight}</td></tr>" in page
