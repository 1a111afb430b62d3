"""What a team moving off Dataiku reads in answers, through the real dataikuapi client where it can
express it, raw HTTP otherwise. Facts from Dataiku's API node user API reference
(doc.dataiku.com/dss/api/13/apinode-user: DSS-API-Version on every answer, probaPercentile,
explanations, ignoreReason MULTIPLE_LOOKUP_MATCHES) and from dataikuapi/apinode_client.py (the
request envelope: features, explanations with null defaults, dispatch, context)."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest
from dataikuapi import APINodeClient
from dataikuapi.utils import DataikuException

from apinode.bundle import write_bundle
from apinode_fixtures import tables
from tests.apinode_proc import API_KEY, ApiNodeProcess, server_env

SCORING = "/public/api/v1/customer-scoring"
FEATURES = "/public/api/v1/customer-features"
TIMING_KEYS = {"preProcessing", "wait", "enrich", "preparation", "prediction", "postProcessing"}


def scoring_client(server):
    return APINodeClient(server.url, "customer-scoring", api_key=API_KEY)


def features_client(server):
    return APINodeClient(server.url, "customer-features", api_key=API_KEY)


def post(server, path, body, **kwargs):
    return httpx.post(server.url + path, json=body, auth=(API_KEY, ""), timeout=20, **kwargs)


def reference(fixture_services) -> dict:
    path = fixture_services["customer-scoring"] / "model" / "high-spender.reference.json"
    return json.loads(path.read_text())


def log_odds(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p) - math.log1p(-p)


# --- answers shaped like Dataiku's ---------------------------------------------------------------


def test_every_answer_carries_dss_api_version(scoring_server):
    answers = [
        post(scoring_server, f"{SCORING}/high-spender/predict", {"features": {"customer_id": "C0000001"}}),
        post(scoring_server, f"{SCORING}/high-spender/predict", {"features": {"customer_id": "bob"}}),
        httpx.post(scoring_server.url + f"{SCORING}/high-spender/predict", json={}),  # 401
        post(scoring_server, f"{SCORING}/nope/predict", {}),  # 404
        httpx.get(scoring_server.url + f"{SCORING}/high-spender/predict", auth=(API_KEY, "")),  # 405
        httpx.get(scoring_server.url + "/readyz"),
        httpx.get(scoring_server.url + "/metrics"),
        httpx.get(scoring_server.url + f"{SCORING}/swagger"),
    ]
    assert [a.headers.get("DSS-API-Version") for a in answers] == ["1"] * len(answers)
    assert [a.status_code for a in answers] == [200, 400, 401, 404, 405, 200, 200, 200]


def test_predict_answer_has_percentile_timing_and_api_context(scoring_server, fixture_services):
    answer = scoring_client(scoring_server).predict_record("high-spender", {"customer_id": "C0000005"})
    result = answer["result"]
    cuts = reference(fixture_services)["proba_percentiles"]
    expected = 1 + sum(cut < result["probas"]["1"] for cut in cuts)
    assert result["probaPercentile"] == expected and 1 <= expected <= 100
    assert set(answer["timing"]) == TIMING_KEYS
    assert all(type(v) is int and v >= 0 for v in answer["timing"].values())
    assert answer["apiContext"] == {
        "serviceId": "customer-scoring",
        "endpointId": "high-spender",
        "serviceGeneration": "1",
    }


def test_proba_percentile_rises_with_the_probability(scoring_server):
    records = [{"features": {"customer_id": f"C{n:07d}"}} for n in range(1, 120)]
    results = scoring_client(scoring_server).predict_records("high-spender", records)["results"]
    pairs = sorted((r["probas"]["1"], r["probaPercentile"]) for r in results)
    percentiles = [p for _, p in pairs]
    assert percentiles == sorted(percentiles)
    assert percentiles[0] < 20 and percentiles[-1] > 80, "the fixture's own customers span the holdout"


def test_multi_and_lookup_answers_have_timing_and_api_context(scoring_server, features_server):
    multi = scoring_client(scoring_server).predict_records(
        "high-spender", [{"features": {"customer_id": "C0000001"}}]
    )
    assert set(multi["timing"]) == TIMING_KEYS and multi["apiContext"]["endpointId"] == "high-spender"
    lookup = features_client(features_server).lookup_records("behavior", [{"data": {"customer_id": "C0000001"}}])
    assert set(lookup["timing"]) == TIMING_KEYS
    assert lookup["apiContext"] == {
        "serviceId": "customer-features",
        "endpointId": "behavior",
        "serviceGeneration": "1",
    }


# --- lenient typing -----------------------------------------------------------------------------


def test_numbers_as_strings_and_timestamps_score_like_native_values(scoring_server):
    client = scoring_client(scoring_server)
    native = {"customer_id": "C0000009", "orders_12m": 3, "spend_12m": 120.5, "birthdate": "1971-11-29"}
    # As Dataiku's own samples send them: numbers in strings, a date as its timestamp.
    texts = {
        "customer_id": "C0000009",
        "orders_12m": "3",
        "spend_12m": "120.5",
        "birthdate": "1971-11-29T00:00:00.000Z",
    }
    a = client.predict_record("high-spender", native)["result"]
    b = client.predict_record("high-spender", texts)["result"]
    assert a["probas"] == b["probas"] and a["ignored"] is False


def test_a_timestamp_with_an_offset_is_its_utc_date(scoring_server):
    client = scoring_client(scoring_server)
    # 00:30 at +02:00 is 22:30 UTC the day before: the day before's age.
    late = client.predict_record("high-spender", {"customer_id": "C0000009", "birthdate": "1956-07-01T00:30:00+02:00"})
    utc = client.predict_record("high-spender", {"customer_id": "C0000009", "birthdate": "1956-06-30"})
    assert late["result"]["probas"] == utc["result"]["probas"]


@pytest.mark.parametrize(
    "field, value",
    [("orders_12m", "three"), ("orders_12m", "3.5"), ("spend_12m", "1e999"), ("birthdate", "29/11/1971"),
     ("birthdate", "1971-13-29T00:00:00Z"), ("orders_12m", "9" * 30), ("spend_12m", "١٢")],
)
def test_values_that_cannot_be_coerced_are_a_400_naming_the_field(scoring_server, field, value):
    with pytest.raises(DataikuException, match=f"InvalidFeatures.*{field}"):
        scoring_client(scoring_server).predict_record("high-spender", {"customer_id": "C0000009", field: value})


@pytest.fixture(scope="module")
def strict_scoring(fixture_services, tmp_path_factory):
    overlay = tmp_path_factory.mktemp("strict") / "overlay.yaml"
    overlay.write_text("endpoints:\n  high-spender:\n    strict_types: true\n")
    env = server_env(APINODE_OVERLAY=str(overlay))
    with ApiNodeProcess(fixture_services["customer-scoring"], env).start() as server:
        yield server


def test_strict_types_refuses_what_lenient_coerces(strict_scoring):
    client = scoring_client(strict_scoring)
    assert client.predict_record("high-spender", {"customer_id": "C0000009", "orders_12m": 3})["result"]["ignored"] is False
    for field, value in [("orders_12m", "3"), ("birthdate", "1971-11-29T00:00:00.000Z")]:
        with pytest.raises(DataikuException, match=f"InvalidFeatures.*{field}"):
            client.predict_record("high-spender", {"customer_id": "C0000009", field: value})


# --- content types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "application/x-www-form-urlencoded"}, {}, {"content-type": "application/json; charset=utf-8"}],
    ids=["curl --data", "none", "json"],
)
def test_a_json_body_is_read_whatever_curl_declares(scoring_server, headers):
    """`curl --data '{...}'` declares application/x-www-form-urlencoded (Dataiku's samples do this)."""
    body = b'{"features": {"customer_id": "C0000005"}}'
    response = httpx.post(
        scoring_server.url + f"{SCORING}/high-spender/predict", content=body, headers=headers, auth=(API_KEY, "")
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["ignored"] is False


# --- enrichment semantics -----------------------------------------------------------------------


def test_unknown_customer_and_missing_key_are_answered_ignored_as_dataiku_does(scoring_server):
    client = scoring_client(scoring_server)
    unknown = client.predict_record("high-spender", {"customer_id": "C0999999"})["result"]
    assert unknown["ignored"] is True and unknown["ignoreReason"] == "NO_LOOKUP_MATCH"
    assert "C0999999" in unknown["message"]
    no_key = client.predict_record("high-spender", {"gender": "F"})["result"]
    assert no_key["ignored"] is True and no_key["ignoreReason"] == "MISSING_LOOKUP_KEY"
    assert "prediction" not in unknown and "probaPercentile" not in unknown


@pytest.fixture(scope="module")
def duplicated_scoring(fixture_services, tmp_path_factory):
    """customer-scoring whose behavior table holds C0000003 twice."""
    import shutil

    root = tmp_path_factory.mktemp("dupes") / "customer-scoring"
    shutil.copytree(fixture_services["customer-scoring"], root)
    bundle = root / "data" / "behavior.npz"
    _, behavior = tables(500)
    columns = {name: np.concatenate([column, column[2:3]]) for name, column in behavior.items()}
    write_bundle(bundle, columns)
    overlay = root / "error-policy.yaml"
    overlay.write_text(
        "endpoints:\n  high-spender:\n    enrichment:\n      lookups:\n"
        + "".join(
            f"        - {{table: {t}, remote: {{service: customer-features, endpoint: {t}}}, "
            "on_missing_key: error, on_not_found: error, on_several: error}\n"
            for t in ("demographics", "behavior")
        )
    )
    return root


def test_several_matches_are_answered_ignored_multiple_lookup_matches(duplicated_scoring):
    with ApiNodeProcess(duplicated_scoring).start() as server:
        result = scoring_client(server).predict_record("high-spender", {"customer_id": "C0000003"})["result"]
        assert result == {**result, "ignored": True, "ignoreReason": "MULTIPLE_LOOKUP_MATCHES"}
        batch = scoring_client(server).predict_records(
            "high-spender", [{"features": {"customer_id": c}} for c in ("C0000002", "C0000003")]
        )["results"]
        assert [r["ignored"] for r in batch] == [False, True]


def test_policy_error_keeps_http_errors_for_predict(duplicated_scoring):
    env = server_env(APINODE_OVERLAY=str(duplicated_scoring / "error-policy.yaml"))
    with ApiNodeProcess(duplicated_scoring, env).start() as server:
        client = scoring_client(server)
        for features, error in [
            ({"customer_id": "C0000003"}, "SeveralMatches"),
            ({"customer_id": "C0999999"}, "RecordNotFound"),
            ({"gender": "F"}, "MissingLookupKey"),
        ]:
            with pytest.raises(DataikuException, match=error):
                client.predict_record("high-spender", features)
        # predict-multi still answers the other records: the failing one is ignored.
        batch = client.predict_records("high-spender", [{"features": {"customer_id": "C0999999"}}])["results"]
        assert batch[0]["ignoreReason"] == "NO_LOOKUP_MATCH"


# --- profile ------------------------------------------------------------------------------------


def test_profile_answers_demographics_and_behavior_in_one_call(features_server):
    client = features_client(features_server)
    profile = client.lookup_record("profile", {"customer_id": "C0000042"})
    demographics = client.lookup_record("demographics", {"customer_id": "C0000042"})["data"]
    behavior = client.lookup_record("behavior", {"customer_id": "C0000042"})["data"]
    assert profile["data"] == {**demographics, **behavior}
    assert profile["notFound"] is False and profile["notFoundIn"] == []
    many = client.lookup_records("profile", [{"data": {"customer_id": c}} for c in ("C0000001", "C0999999")])
    assert [r["notFound"] for r in many["results"]] == [False, True]
    assert many["results"][1]["notFoundIn"] == ["demographics", "behavior"]
    assert many["results"][1]["data"]["spend_12m"] is None


# --- explanations -------------------------------------------------------------------------------


def test_explanations_through_the_client_for_both_methods(scoring_server):
    client = scoring_client(scoring_server)
    for method in ("ICE", "SHAPLEY"):
        result = client.predict_record(
            "high-spender", {"customer_id": "C0000011"}, with_explanations=True, explanation_method=method,
            n_explanations=4, n_explanations_mc_steps=50,
        )["result"]
        explanations = result["explanations"]
        assert len(explanations) == 4
        sizes = [abs(v) for v in explanations.values()]
        assert sizes == sorted(sizes, reverse=True), "the top features, largest contribution first"
    plain = client.predict_record("high-spender", {"customer_id": "C0000011"})["result"]
    assert "explanations" not in plain, "off by default (the endpoint's explanations.enabled)"


def test_shapley_contributions_add_up_to_prediction_minus_reference(scoring_server, fixture_services):
    """Dataiku: for classifiers, Shapley values are in log-odds and add up to the record's log-odds
    minus the mean log-odds of the sample (doc.dataiku.com/dss/latest/machine-learning/supervised/
    explanations.html, and a Dataiku engineer's answer on its community)."""
    client = scoring_client(scoring_server)
    background = reference(fixture_services)["background"]
    scores = client.predict_records("high-spender", [{"features": row} for row in background])["results"]
    background_log_odds = np.array([log_odds(r["probas"]["1"]) for r in scores])
    reference_prediction = background_log_odds.mean()
    for customer, steps in [("C0000011", 100), ("C0000012", 200), ("C0000013", 50)]:
        result = client.predict_record(
            "high-spender", {"customer_id": customer}, with_explanations=True, explanation_method="SHAPLEY",
            n_explanations=11, n_explanations_mc_steps=steps,
        )["result"]
        total = sum(result["explanations"].values())
        gap = log_odds(result["probas"]["1"]) - reference_prediction
        # Steps that cycle the whole background exactly once or twice: exact up to float32 scoring.
        # Otherwise the rows drawn are a sample of it: within 4 standard errors of their mean.
        tolerance = 1e-3 if steps % len(background) == 0 else 4 * background_log_odds.std() / math.sqrt(steps)
        assert total == pytest.approx(gap, abs=tolerance), (customer, steps)


def test_the_same_request_gets_the_same_explanations_alone_or_in_a_batch(scoring_server):
    client = scoring_client(scoring_server)
    kwargs = {"with_explanations": True, "explanation_method": "SHAPLEY", "n_explanations": 5}
    first = client.predict_record("high-spender", {"customer_id": "C0000021"}, **kwargs)["result"]
    again = client.predict_record("high-spender", {"customer_id": "C0000021"}, **kwargs)["result"]
    batch = client.predict_records(
        "high-spender", [{"features": {"customer_id": c}} for c in ("C0000020", "C0000021")], **kwargs
    )["results"]
    assert first["explanations"] == again["explanations"] == batch[1]["explanations"]


@pytest.mark.parametrize(
    "explanations, fragment",
    [
        ({"enabled": True, "method": "LIME"}, "LIME"),
        ({"enabled": True, "nExplanations": 0}, "nExplanations"),
        ({"enabled": True, "nExplanations": 12}, "nExplanations"),
        ({"enabled": True, "method": "SHAPLEY", "nMonteCarloSteps": 10}, "nMonteCarloSteps"),
        ({"enabled": True, "nMonteCarloSteps": 1001}, "nMonteCarloSteps"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": True, "colour": "red"}, "colour"),
    ],
)
def test_invalid_explanation_settings_are_a_400(scoring_server, explanations, fragment):
    response = post(
        scoring_server,
        f"{SCORING}/high-spender/predict",
        {"features": {"customer_id": "C0000001"}, "explanations": explanations},
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["errorType"] == "InvalidExplanations" and fragment in body["message"] + body["detailedMessage"]


def test_the_client_gets_a_400_for_an_unknown_method(scoring_server):
    with pytest.raises(DataikuException, match="InvalidExplanations"):
        scoring_client(scoring_server).predict_record(
            "high-spender", {"customer_id": "C0000001"}, with_explanations=True, explanation_method="LIME"
        )


def test_explanations_over_the_cost_limit_are_a_413(scoring_server):
    records = [{"features": {"customer_id": "C0000001"}}] * 500
    with pytest.raises(DataikuException, match="PayloadTooLarge"):
        scoring_client(scoring_server).predict_records(
            "high-spender", records, with_explanations=True, explanation_method="SHAPLEY", n_explanations_mc_steps=1000
        )


# --- remote enrichment through profile ----------------------------------------------------------


def upstream_calls(features_server) -> dict[str, float]:
    """customer-features' own request counter, by endpoint route (its /metrics)."""
    counts: dict[str, float] = {}
    for line in httpx.get(features_server.url + "/metrics").text.splitlines():
        if line.startswith("apinode_requests_total{"):
            endpoint = line.split('endpoint="', 1)[1].split('"', 1)[0]
            counts[endpoint] = counts.get(endpoint, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def calls_made(features_server, action) -> dict[str, float]:
    before = upstream_calls(features_server)
    action()
    after = upstream_calls(features_server)
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def test_remote_enrichment_asks_customer_features_once_per_prediction(remote_scoring_server, features_server):
    client = scoring_client(remote_scoring_server)
    single = calls_made(features_server, lambda: client.predict_record("high-spender", {"customer_id": "C0000031"}))
    assert single == {"profile/lookup": 1}
    records = [{"features": {"customer_id": f"C{n:07d}"}} for n in range(40, 90)]
    batch = calls_made(features_server, lambda: client.predict_records("high-spender", records))
    assert batch == {"profile/lookup-multi": 1}


def test_remote_enrichment_through_profile_scores_like_bundled(remote_scoring_server, scoring_server):
    records = [{"features": {"customer_id": f"C{n:07d}"}} for n in (1, 2, 3, 999999)]
    remote = scoring_client(remote_scoring_server).predict_records("high-spender", records)["results"]
    bundled = scoring_client(scoring_server).predict_records("high-spender", records)["results"]
    for a, b in zip(remote, bundled):
        assert {k: v for k, v in a.items() if k != "message"} == {k: v for k, v in b.items() if k != "message"}
    assert remote[3]["ignoreReason"] == "NO_LOOKUP_MATCH"
