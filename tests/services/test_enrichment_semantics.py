"""Enrichment rules a caller relies on, on every path that implements them.

Values the caller sent win over looked-up ones (DESIGN.md, "Enrichment"): the single bundled predict
fills from the in-memory table (``_Lookup.fill_now``), while predict-multi and every remote lookup go
through ``_Lookup.merge``; each path is checked here. A key that matches several rows follows the
endpoint's policy (scoring: ``on_several: fail`` -> the record is answered ignored, errorType
``SeveralMatches``, reason ``MULTIPLE_LOOKUP_MATCHES``; a lookup endpoint with ``fail`` -> 409
``SeveralMatches``; the features lookups as committed: ``first``). A batch answers position by position, whatever mix of scorable and unscorable items it holds.

Bundled paths run the real app in-process (tests/services/inprocess.py); remote paths run real
processes, scoring calling features over HTTP.
"""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from apinode.transforms import months_since_one, years_since_one
from apinode_fixtures import AS_OF, CATEGORICAL, NUMERIC, duplicated_service
from tests.apinode_proc import API_KEY
from tests.services.inprocess import InProcessService

MODEL_INPUTS = (*NUMERIC, *CATEGORICAL)
UNKNOWN = ("C0999999", "C0999998")




def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text}"
    return response.json()


def looked_up(features: InProcessService, customer_id: str) -> dict:
    row = {}
    for endpoint in ("demographics", "behavior"):
        (result,) = ok(features.post(f"{endpoint}/lookup", {"data": {"customer_id": customer_id}}))["results"]
        assert result["notFound"] is False, customer_id
        row.update(result["data"])
    return row


def complete_record(row: dict, sent: dict) -> dict:
    """The 11 model inputs a person would compute: the looked-up row, the caller's values over it."""
    merged = {**row, **sent}
    as_of = dt.date.fromisoformat(AS_OF)
    merged.setdefault("age", years_since_one(merged["birthdate"], as_of))
    merged.setdefault("tenure_months", months_since_one(merged["signup_date"], as_of))
    return {name: merged[name] for name in MODEL_INPUTS}


@pytest.fixture(scope="module")
def customer(features) -> str:
    """A customer whose looked-up values all differ from what the cases below send."""
    for number in range(1, 100):
        customer_id = f"C{number:07d}"
        row = looked_up(features, customer_id)
        if row["region"] != "west" and row["spend_12m"] > 300 and row["birthdate"] > "1945-01-01":
            return customer_id
    raise AssertionError("no suitable customer in the fixture data")


# (case id, what the caller sends besides customer_id)
SENT = [
    ("zero-numbers", {"spend_12m": 0.0, "orders_12m": 0, "avg_basket": 0.0}),
    ("category", {"region": "west"}),
    ("derived-input", {"age": 18}),
    ("preprocessing-input", {"birthdate": "1940-01-01"}),
    ("mixed", {"return_rate": 0.0, "gender": "X", "tenure_months": 0}),
]
SENT_IDS = [case[0] for case in SENT]
SENT_VALUES = [case[1] for case in SENT]


def expected_probas(scoring: InProcessService, features: InProcessService, customer_id: str, sent: dict) -> dict:
    """The score of the whole record sent explicitly (no lookup at all), checked to differ from by-id."""
    record = complete_record(looked_up(features, customer_id), sent)
    expected = ok(scoring.post("high-spender/predict", {"features": record}))["result"]["probas"]
    by_id = ok(scoring.post("high-spender/predict", {"features": {"customer_id": customer_id}}))["result"]
    assert abs(by_id["probas"]["1"] - expected["1"]) > 1e-4, "the case must change the score to show anything"
    return expected


def batch(customer_id: str, sent: dict) -> dict:
    """Caller-sent values on the middle item, plain ids around it (so a leak between items shows)."""
    return {"items": [{"features": {"customer_id": "C0000001"}},
                      {"features": {"customer_id": customer_id, **sent}},
                      {"features": {"customer_id": customer_id}}]}


@pytest.mark.parametrize("sent", SENT_VALUES, ids=SENT_IDS)
def test_caller_values_win_on_the_single_bundled_path(scoring, features, customer, sent):
    expected = expected_probas(scoring, features, customer, sent)
    result = ok(scoring.post("high-spender/predict", {"features": {"customer_id": customer, **sent}}))["result"]
    assert result["probas"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("sent", SENT_VALUES, ids=SENT_IDS)
def test_caller_values_win_through_predict_multi(scoring, features, customer, sent):
    expected = expected_probas(scoring, features, customer, sent)
    plain = ok(scoring.post("high-spender/predict", {"features": {"customer_id": customer}}))["result"]
    first, middle, last = ok(scoring.post("high-spender/predict-multi", batch(customer, sent)))["results"]
    assert middle["ignored"] is False and middle["probas"] == pytest.approx(expected, abs=1e-6)
    assert last["probas"] == pytest.approx(plain["probas"], abs=1e-6), "the sent values leaked to another item"
    assert first["ignored"] is False


def remote_post(server, action: str, body: dict) -> dict:
    return ok(httpx.post(f"{server.url}/public/api/v1/customer-scoring/high-spender/{action}", json=body,
                         auth=(API_KEY, ""), timeout=10))


@pytest.mark.parametrize("sent", SENT_VALUES, ids=SENT_IDS)
def test_caller_values_win_through_remote_enrichment(remote_scoring_server, scoring, features, customer, sent):
    expected = expected_probas(scoring, features, customer, sent)
    single = remote_post(remote_scoring_server, "predict", {"features": {"customer_id": customer, **sent}})
    assert single["result"]["probas"] == pytest.approx(expected, abs=1e-6), "remote predict"
    _, middle, last = remote_post(remote_scoring_server, "predict-multi", batch(customer, sent))["results"]
    assert middle["probas"] == pytest.approx(expected, abs=1e-6), "remote predict-multi"
    plain = ok(scoring.post("high-spender/predict", {"features": {"customer_id": customer}}))["result"]
    assert last["probas"] == pytest.approx(plain["probas"], abs=1e-6), "the sent values leaked to another item"


def _assert_position_by_position(results: list[dict], singles: dict[str, dict], order: list[str]) -> None:
    assert len(results) == len(order)
    for position, (customer_id, result) in enumerate(zip(order, results)):
        where = f"item {position} ({customer_id}): {result}"
        if customer_id in UNKNOWN:
            assert result["ignored"] is True, where
            assert result["errorType"] == "RecordNotFound", where
            assert result["ignoreReason"] == "NO_LOOKUP_MATCH", where
            assert customer_id in result["message"], where
            assert "prediction" not in result, where
        else:
            assert result["ignored"] is False, where
            assert result["prediction"] == singles[customer_id]["prediction"], where
            assert result["probas"] == pytest.approx(singles[customer_id]["probas"], abs=1e-6), where


ORDER = [UNKNOWN[0], "C0000005", UNKNOWN[1], "C0000007"]


def _items(order: list[str]) -> dict:
    return {"items": [{"features": {"customer_id": customer_id}} for customer_id in order]}


def test_mixed_batch_answers_position_by_position(scoring):
    singles = {cid: ok(scoring.post("high-spender/predict", {"features": {"customer_id": cid}}))["result"]
               for cid in ORDER if cid not in UNKNOWN}
    assert singles["C0000005"]["probas"] != singles["C0000007"]["probas"], "the two must be told apart"
    results = ok(scoring.post("high-spender/predict-multi", _items(ORDER)))["results"]
    _assert_position_by_position(results, singles, ORDER)


def test_mixed_batch_answers_position_by_position_through_remote(remote_scoring_server, scoring):
    singles = {cid: ok(scoring.post("high-spender/predict", {"features": {"customer_id": cid}}))["result"]
               for cid in ORDER if cid not in UNKNOWN}
    results = remote_post(remote_scoring_server, "predict-multi", _items(ORDER))["results"]
    _assert_position_by_position(results, singles, ORDER)


def test_a_remote_predict_answers_each_record_as_predict_multi_answers_it(remote_scoring_server):
    """The single remote predict has a path of its own (``Enricher._complete_one_remote``, one call
    for both tables without the batch's bookkeeping): record by record it answers what the batch
    path answers: found, not found, a caller's value kept, no key at all."""
    records = [{"customer_id": cid} for cid in ORDER] + [
        {"customer_id": "C0000005", "region": "wales", "orders_12m": 40}, {"gender": "F"}]
    batch = remote_post(remote_scoring_server, "predict-multi", {"items": [{"features": r} for r in records]})
    kinds = set()
    for record, item in zip(records, batch["results"]):
        answer = httpx.post(f"{remote_scoring_server.url}/public/api/v1/customer-scoring/high-spender/predict",
                            json={"features": record}, auth=(API_KEY, ""), timeout=10)
        kinds.add((answer.status_code, item.get("errorType")))
        if answer.status_code != 200:
            assert answer.json()["errorType"] == item["errorType"], (record, answer.text, item)
            continue
        single = answer.json()["result"]
        assert single["ignored"] == item["ignored"], (record, single, item)
        for field in ("prediction", "errorType", "ignoreReason"):
            assert single.get(field) == item.get(field), (record, field, single, item)
        if not item["ignored"]:
            assert single["probas"] == pytest.approx(item["probas"], abs=1e-9), record
    assert kinds == {(200, None), (200, "RecordNotFound"), (200, "MissingLookupKey")}, kinds


# A table where C0000001 is on rows 0 and 1 (C0000002 is gone): the duplicate a bad export produces.
DUPLICATED = "C0000001"


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("duplicated")
    services = {}
    for name in ("customer-features", "customer-scoring"):
        target, demographics = duplicated_service(root, name, DUPLICATED)
        services[name] = InProcessService(target)
    first_row = {column: values[0] for column, values in demographics.items()}
    assert first_row["birthdate"] != demographics["birthdate"][1], "the two rows must differ"
    return {"services": services, "first": first_row}


def test_duplicated_key_is_answered_ignored_several_matches_from_predict(duplicated):
    """``on_several: fail`` on a record: not scored, answered as Dataiku does (200, ignored, a reason code)."""
    scoring = duplicated["services"]["customer-scoring"]
    response = scoring.post("high-spender/predict", {"features": {"customer_id": DUPLICATED}})
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["ignored"] is True and "prediction" not in result and "probas" not in result, result
    assert result["errorType"] == "SeveralMatches", result
    assert result["ignoreReason"] == "MULTIPLE_LOOKUP_MATCHES", result
    assert result["message"] == f"2 demographics records match customer_id='{DUPLICATED}'", result
    # The other customers of the same table are still scored.
    other = ok(scoring.post("high-spender/predict", {"features": {"customer_id": "C0000003"}}))["result"]
    assert other["ignored"] is False and other["prediction"] in ("0", "1")


def test_duplicated_key_is_ignored_in_its_batch_position(duplicated):
    scoring = duplicated["services"]["customer-scoring"]
    results = ok(scoring.post("high-spender/predict-multi", _items(["C0000003", DUPLICATED, "C0000004"])))["results"]
    assert [r["ignored"] for r in results] == [False, True, False]
    assert results[1]["errorType"] == "SeveralMatches" and results[1]["ignoreReason"] == "MULTIPLE_LOOKUP_MATCHES"
    assert DUPLICATED in results[1]["message"]


def test_duplicated_key_sent_in_full_needs_no_lookup(duplicated):
    """The several-matches policy guards the lookup, not the customer: nothing to look up, nothing refused."""
    scoring = duplicated["services"]["customer-scoring"]
    first = duplicated["first"]
    sent = {name: str(first[name]) for name in ("birthdate", "signup_date", "gender", "region", "campaign_status")}
    result = ok(scoring.post("high-spender/predict", {"features": {"customer_id": DUPLICATED, **sent}}))["result"]
    assert result["ignored"] is False


def test_duplicated_key_lookup_answers_the_first_row(duplicated):
    """customer-features declares ``on_several: first``: the row stored first, every time."""
    features = duplicated["services"]["customer-features"]
    first = duplicated["first"]
    for _ in range(3):
        (result,) = ok(features.post("demographics/lookup", {"data": {"customer_id": DUPLICATED}}))["results"]
        assert result["notFound"] is False
        assert result["data"]["birthdate"] == first["birthdate"]
        assert result["data"]["signup_date"] == first["signup_date"]
        assert result["data"]["household_size"] == int(first["household_size"])
    results = ok(features.post("demographics/lookup-multi", _lookup_items([DUPLICATED, "C0000002", "C0000003"])))
    found, missing, other = results["results"]
    assert found["data"]["birthdate"] == first["birthdate"] and found["notFound"] is False
    assert missing["notFound"] is True and missing["data"]["customer_id"] == "C0000002"
    assert other["notFound"] is False and other["data"]["customer_id"] == "C0000003"


def _lookup_items(order: list[str]) -> dict:
    return {"items": [{"data": {"customer_id": customer_id}} for customer_id in order]}


@pytest.fixture(scope="module")
def strict_features(tmp_path_factory) -> InProcessService:
    """customer-features with the other policy: ``on_not_found: fail`` and ``on_several: fail``."""
    target, _ = duplicated_service(tmp_path_factory.mktemp("strict"), "customer-features", DUPLICATED,
                                   {'on_not_found: "null"': "on_not_found: fail", "on_several: first": "on_several: fail"})
    return InProcessService(target)


def test_lookup_with_the_fail_policy_answers_409_and_404(strict_features):
    several = strict_features.post("demographics/lookup", {"data": {"customer_id": DUPLICATED}})
    assert several.status_code == 409, several.text
    assert several.json()["errorType"] == "SeveralMatches"
    message = several.json()["message"]
    assert message.startswith("2 ") and f"customer_id='{DUPLICATED}'" in message, message
    missing = strict_features.post("demographics/lookup", {"data": {"customer_id": "C0000002"}})
    assert missing.status_code == 404, missing.text
    assert missing.json()["errorType"] == "RecordNotFound" and "C0000002" in missing.json()["message"]
    (unique,) = ok(strict_features.post("demographics/lookup", {"data": {"customer_id": "C0000003"}}))["results"]
    assert unique["notFound"] is False and unique["data"]["customer_id"] == "C0000003"
    batch = strict_features.post("demographics/lookup-multi", _lookup_items(["C0000003", DUPLICATED]))
    assert batch.status_code == 409 and batch.json()["errorType"] == "SeveralMatches", batch.text
