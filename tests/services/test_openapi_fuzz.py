"""The swagger of each service describes it truthfully: schemathesis finds no 5xx and no schema violation."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.schemathesis_cli import schemathesis_command


def test_swagger_has_the_real_feature_schema(real_scoring):
    document = httpx.get(real_scoring.url + "/public/api/v1/customer-scoring/swagger").json()
    request = document["paths"]["/public/api/v1/customer-scoring/high-spender/predict"]["post"]["requestBody"]
    features = request["content"]["application/json"]["schema"]["properties"]["features"]
    assert features["additionalProperties"] is False
    assert features["properties"]["customer_id"]["pattern"] == "^C[0-9]{7}$"
    assert features["properties"]["spend_12m"]["type"] == "number"
    assert features["properties"]["birthdate"]["format"] == "date"
    assert {"age", "gender", "orders_12m", "top_category"} <= set(features["properties"])


@pytest.mark.parametrize(
    "fixture, service", [("real_features", "customer-features"), ("real_scoring", "customer-scoring")]
)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(request, tmp_path, fixture, service):
    server = request.getfixturevalue(fixture)
    # positive_data_acceptance is left out on purpose: a schema cannot say "customer_id, or every
    # model input", so a schema-valid request without either is rightly a 400 MissingLookupKey.
    command = schemathesis_command(
        server.url,
        service,
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--seed",
        "20260630",
        "--max-examples",
        "60",
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
