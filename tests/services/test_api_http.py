"""The Dataiku API node user API over raw HTTP: shapes, auth, and a clear 4xx for each bad input."""

from __future__ import annotations

import httpx
import pytest

from tests.apinode_proc import API_KEY

FEATURES = "/public/api/v1/customer-features"
SCORING = "/public/api/v1/customer-scoring"


def post(server, path, body=None, auth=(API_KEY, ""), **kwargs):
    if body is not None:
        kwargs["json"] = body
    return httpx.post(server.url + path, auth=auth, timeout=10, **kwargs)


def assert_error(response, status, error_type, fragment=""):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errorType", "message", "detailedMessage"}
    assert body["errorType"] == error_type
    assert fragment in body["message"] + body["detailedMessage"]


def test_lookup_returns_the_customer_row(features_server):
    response = post(features_server, f"{FEATURES}/demographics/lookup", {"data": {"customer_id": "C0000042"}})
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["notFound"] is False
    row = result["data"]
    assert row["customer_id"] == "C0000042"
    assert set(row) == {
        "customer_id",
        "birthdate",
        "gender",
        "region",
        "campaign_status",
        "signup_date",
        "channel",
        "household_size",
        "income_band",
    }
    assert isinstance(row["household_size"], int) and len(row["birthdate"]) == 10


def test_lookup_multi_keeps_order_and_marks_unknown_ids(features_server):
    items = [{"data": {"customer_id": cid}} for cid in ("C0000007", "C0999999", "C0000001")]
    response = post(features_server, f"{FEATURES}/behavior/lookup-multi", {"items": items})
    results = response.json()["results"]
    assert [r["data"]["customer_id"] for r in results] == ["C0000007", "C0999999", "C0000001"]
    assert [r["notFound"] for r in results] == [False, True, False]
    assert results[1]["data"]["spend_12m"] is None
    assert isinstance(results[0]["data"]["spend_12m"], float)


def test_bearer_token_is_accepted(features_server):
    response = httpx.post(
        features_server.url + f"{FEATURES}/behavior/lookup",
        json={"data": {"customer_id": "C0000001"}},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "auth, status, error_type",
    [
        (None, 401, "Unauthorized"),
        (("wrong-key", ""), 403, "Forbidden"),
    ],
)
def test_api_key_is_required(features_server, auth, status, error_type):
    response = post(
        features_server, f"{FEATURES}/behavior/lookup", {"data": {"customer_id": "C0000001"}}, auth=auth
    )
    assert_error(response, status, error_type)


def test_predict_answers_prediction_and_probas(scoring_server):
    response = post(
        scoring_server, f"{SCORING}/high-spender/predict", {"features": {"customer_id": "C0000005"}}
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["prediction"] in ("0", "1")
    assert set(result["probas"]) == {"0", "1"}
    assert sum(result["probas"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["ignored"] is False


def test_predict_multi_marks_unscorable_items_ignored(scoring_server):
    items = [{"features": {"customer_id": "C0000005"}}, {"features": {"customer_id": "C0999999"}}]
    results = post(scoring_server, f"{SCORING}/high-spender/predict-multi", {"items": items}).json()[
        "results"
    ]
    assert results[0]["ignored"] is False and results[0]["prediction"] in ("0", "1")
    assert results[1]["ignored"] is True and results[1]["ignoreReason"] == "NO_LOOKUP_MATCH"
    assert "C0999999" in results[1]["message"] and results[1]["errorType"] == "RecordNotFound"


@pytest.mark.parametrize(
    "body, status, error_type, fragment",
    [
        ({"features": {"customer_id": "C0000005", "shoe_size": 42}}, 400, "InvalidFeatures", "shoe_size"),
        (
            {"features": {"customer_id": "C0000005", "orders_12m": "many"}},
            400,
            "InvalidFeatures",
            "orders_12m",
        ),
        (
            {"features": {"customer_id": "C0000005", "birthdate": "31/12/1980"}},
            400,
            "InvalidFeatures",
            "birthdate",
        ),
        ({"features": {"customer_id": "bob"}}, 400, "InvalidFeatures", "customer_id"),
        ({"features": {}}, 400, "InvalidFeatures", "empty"),
        ({"features": "C0000005"}, 400, "MalformedRequest", "features"),
        ({"record": {}}, 400, "MalformedRequest", "features"),
        ([1, 2], 400, "MalformedRequest", "object"),
    ],
)
def test_bad_prediction_requests_get_a_clear_4xx(scoring_server, body, status, error_type, fragment):
    assert_error(post(scoring_server, f"{SCORING}/high-spender/predict", body), status, error_type, fragment)


def test_malformed_json_is_400(scoring_server):
    response = post(
        scoring_server,
        f"{SCORING}/high-spender/predict",
        content=b'{"features": {',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "MalformedRequest", "JSON")


@pytest.mark.parametrize("content_type", ["application/xml", "multipart/form-data; boundary=x", "text/csv"])
def test_wrong_content_type_is_415(scoring_server, content_type):
    response = post(
        scoring_server,
        f"{SCORING}/high-spender/predict",
        content=b'{"features": {"customer_id": "C0000005"}}',
        headers={"content-type": content_type},
    )
    assert_error(response, 415, "UnsupportedMediaType", "application/json")


def test_a_real_form_body_is_a_400_not_a_crash(scoring_server):
    response = post(
        scoring_server,
        f"{SCORING}/high-spender/predict",
        content=b"customer_id=C0000005",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 400, "MalformedRequest", "JSON")


def test_oversized_body_is_413(scoring_server):
    padding = "x" * (1_100_000)
    response = post(scoring_server, f"{SCORING}/high-spender/predict", {"features": {"customer_id": padding}})
    assert_error(response, 413, "PayloadTooLarge")


def test_oversized_batch_is_413(scoring_server):
    items = [{"features": {"customer_id": "C0000001"}}] * 1001
    assert_error(
        post(scoring_server, f"{SCORING}/high-spender/predict-multi", {"items": items}),
        413,
        "PayloadTooLarge",
        "1000",
    )


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("/public/api/v1/customer-billing/x/predict", "customer-billing"),
        (f"{SCORING}/low-spender/predict", "low-spender"),
        (f"{SCORING}/high-spender/explain", "explain"),
        ("/admin", "/admin"),
    ],
)
def test_unknown_routes_are_404(scoring_server, path, fragment):
    assert_error(post(scoring_server, path, {"features": {}}), 404, "NotFound", fragment)


def test_get_on_a_predict_route_is_405(scoring_server):
    response = httpx.get(scoring_server.url + f"{SCORING}/high-spender/predict", auth=(API_KEY, ""))
    assert_error(response, 405, "MethodNotAllowed")


def test_probes(scoring_server):
    assert httpx.get(scoring_server.url + "/isAlive").status_code == 200
    assert httpx.get(scoring_server.url + "/healthz").status_code == 200
    assert httpx.get(scoring_server.url + "/readyz").json() == {"status": "ready"}


def test_deeply_nested_json_is_a_400_not_a_crash(scoring_server):
    body = b'{"features": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = post(
        scoring_server,
        f"{SCORING}/high-spender/predict",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "MalformedRequest")
    assert (
        post(
            scoring_server, f"{SCORING}/high-spender/predict", {"features": {"customer_id": "C0000005"}}
        ).status_code
        == 200
    )


def test_lookup_rejects_columns_other_than_the_key(features_server):
    response = post(
        features_server, f"{FEATURES}/behavior/lookup", {"data": {"customer_id": "C0000001", "region": "x"}}
    )
    assert_error(response, 400, "InvalidFeatures", "region")
    assert_error(post(features_server, f"{FEATURES}/behavior/lookup", {"data": {}}), 400, "MissingLookupKey")
