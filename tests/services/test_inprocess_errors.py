"""Handlers and validation in-process: each bad input gets its 4xx and a message naming what is wrong.

The same contract as test_api_http.py (which goes through a real server), run on the app object so
that `make mutate` sees it; the envelope errors of the batch routes are only here.
"""

from __future__ import annotations

import pytest


DEMOGRAPHICS = ("customer_id", "birthdate", "gender", "region", "campaign_status", "signup_date", "channel",
                "household_size", "income_band")




def assert_error(response, status: int, error_type: str, fragment: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errorType", "message", "detailedMessage"}, body
    assert body["errorType"] == error_type, body
    assert all(isinstance(body[k], str) and body[k] for k in body), body
    assert fragment in body["message"] + " " + body["detailedMessage"], body
    return body


PREDICT = [
    ("unknown-feature", {"features": {"customer_id": "C0000005", "shoe_size": 42}}, 400, "InvalidFeatures",
     "shoe_size"),
    ("wrong-type", {"features": {"customer_id": "C0000005", "orders_12m": "many"}}, 400, "InvalidFeatures",
     "features.orders_12m"),
    ("bad-date", {"features": {"customer_id": "C0000005", "birthdate": "31/12/1980"}}, 400, "InvalidFeatures",
     "birthdate"),
    ("bad-id", {"features": {"customer_id": "bob"}}, 400, "InvalidFeatures", "customer_id"),
    ("features-not-an-object", {"features": "C0000005"}, 400, "MalformedRequest", "features"),
    ("no-features", {"record": {}}, 400, "MalformedRequest", "features"),
    ("array-body", [1, 2], 400, "MalformedRequest", "object"),
]


@pytest.mark.parametrize("body,status,error_type,fragment", [c[1:] for c in PREDICT], ids=[c[0] for c in PREDICT])
def test_bad_predict_requests(scoring, body, status, error_type, fragment):
    assert_error(scoring.post("high-spender/predict", body), status, error_type, fragment)


# Record-level enrichment failures: answered 200 and ignored, with Dataiku's reason code.
UNSCORABLE = [
    ("no-key", {"gender": "F"}, "MissingLookupKey", "MISSING_LOOKUP_KEY", "customer_id"),
    ("unknown-id", {"customer_id": "C0999999"}, "RecordNotFound", "NO_LOOKUP_MATCH", "C0999999"),
]


@pytest.mark.parametrize("features,error_type,reason,fragment", [c[1:] for c in UNSCORABLE],
                         ids=[c[0] for c in UNSCORABLE])
def test_unscorable_records_are_answered_ignored(scoring, features, error_type, reason, fragment):
    response = scoring.post("high-spender/predict", {"features": features})
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["ignored"] is True and "prediction" not in result, result
    assert (result["errorType"], result["ignoreReason"]) == (error_type, reason), result
    assert fragment in result["message"], result


BATCH = [
    ("array-body", [], 400, "MalformedRequest", "JSON object"),
    ("no-items", {"features": {}}, 400, "MalformedRequest", "'items' must be an array"),
    ("items-not-an-array", {"items": {"features": {}}}, 400, "MalformedRequest", "'items' must be an array"),
    ("item-not-an-object", {"items": [{"features": {"customer_id": "C0000001"}}, "C0000002"]}, 400,
     "MalformedRequest", "items[1]"),
    ("item-without-features", {"items": [{"data": {"customer_id": "C0000001"}}]}, 400, "MalformedRequest",
     "items[0] must be an object with 'features'"),
    ("bad-feature-in-an-item", {"items": [{"features": {"customer_id": "C0000001"}},
                                          {"features": {"customer_id": "C0000002", "age": "old"}}]},
     400, "InvalidFeatures", "items[1].features.age"),
    ("too-many-items", {"items": [{"features": {"customer_id": "C0000001"}}] * 1001}, 413, "PayloadTooLarge",
     "1001 > 1000"),
]


@pytest.mark.parametrize("body,status,error_type,fragment", [c[1:] for c in BATCH], ids=[c[0] for c in BATCH])
def test_bad_predict_multi_requests(scoring, body, status, error_type, fragment):
    assert_error(scoring.post("high-spender/predict-multi", body), status, error_type, fragment)


def test_predict_multi_of_exactly_the_limit_and_of_nothing(scoring):
    full = scoring.post("high-spender/predict-multi", {"items": [{"features": {"customer_id": "C0000001"}}] * 1000})
    assert full.status_code == 200, full.text
    assert len(full.json()["results"]) == 1000
    empty = scoring.post("high-spender/predict-multi", {"items": []})
    assert empty.status_code == 200 and empty.json()["results"] == []


def test_answers_carry_the_api_context(scoring):
    context = {"serviceId": "customer-scoring", "endpointId": "high-spender", "serviceGeneration": "1"}
    single = scoring.post("high-spender/predict", {"features": {"customer_id": "C0000001"}}).json()
    assert single["apiContext"] == context
    assert single["result"]["ignored"] is False and single["result"]["prediction"] in ("0", "1")
    batch = scoring.post("high-spender/predict-multi", {"items": [{"features": {"customer_id": "C0000001"}}]}).json()
    assert batch["apiContext"] == context
    assert batch["results"][0]["probas"] == pytest.approx(single["result"]["probas"], abs=1e-6)


LOOKUP = [
    ("data-not-an-object", "demographics/lookup", {"data": "C0000001"}, 400, "MalformedRequest", "data"),
    ("no-data", "demographics/lookup", {"customer_id": "C0000001"}, 400, "MalformedRequest", "data"),
    ("array-body", "demographics/lookup", ["C0000001"], 400, "MalformedRequest", "JSON object"),
    ("missing-key", "demographics/lookup", {"data": {}}, 400, "MissingLookupKey", "customer_id"),
    ("other-column", "behavior/lookup", {"data": {"customer_id": "C0000001", "region": "x"}}, 400,
     "InvalidFeatures", "region"),
    ("bad-key", "behavior/lookup", {"data": {"customer_id": "C1"}}, 400, "InvalidFeatures", "customer_id"),
    ("multi-item-without-data", "behavior/lookup-multi", {"items": [{"features": {}}]}, 400, "MalformedRequest",
     "items[0] must be an object with 'data'"),
    ("multi-missing-key", "behavior/lookup-multi", {"items": [{"data": {"customer_id": "C0000001"}}, {"data": {}}]},
     400, "MissingLookupKey", "items[1].data"),
    ("multi-too-many", "behavior/lookup-multi", {"items": [{"data": {"customer_id": "C0000001"}}] * 1001}, 413,
     "PayloadTooLarge", "1000"),
]


@pytest.mark.parametrize("path,body,status,error_type,fragment", [c[1:] for c in LOOKUP],
                         ids=[c[0] for c in LOOKUP])
def test_bad_lookup_requests(features, path, body, status, error_type, fragment):
    assert_error(features.post(path, body), status, error_type, fragment)


def test_lookup_of_an_unknown_id_answers_null_columns(features):
    (result,) = features.post("demographics/lookup", {"data": {"customer_id": "C0999999"}}).json()["results"]
    assert result == {"data": {**{c: None for c in DEMOGRAPHICS}, "customer_id": "C0999999"}, "notFound": True}
    found, missing = features.post("demographics/lookup-multi", {"items": [
        {"data": {"customer_id": "C0000003"}}, {"data": {"customer_id": "C0999999"}}]}).json()["results"]
    assert found["notFound"] is False and set(found["data"]) == set(DEMOGRAPHICS)
    assert found["data"]["customer_id"] == "C0000003" and found["data"]["birthdate"] is not None
    assert missing == result
    assert features.post("demographics/lookup-multi", {"items": []}).json()["results"] == []


def test_api_key_is_checked(features):
    assert_error(features.post("behavior/lookup", {"data": {"customer_id": "C0000001"}}, auth=None), 401,
                 "Unauthorized")
    assert_error(features.post("behavior/lookup", {"data": {"customer_id": "C0000001"}}, auth=("nope", "")), 403,
                 "Forbidden")
