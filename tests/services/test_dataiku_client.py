"""The real dataikuapi client against the real artifacts; the headline: scoring by id alone equals
scoring with every feature sent, with bundled and with remote enrichment."""

from __future__ import annotations

import pytest
from dataikuapi import APINodeClient
from dataikuapi.utils import DataikuException

from tests.apinode_proc import API_KEY

CUSTOMERS = ["C0000001", "C0000004", "C0000007", "C0012345", "C0054321", "C0100000"]


def client(server, service):
    return APINodeClient(server.url, service, api_key=API_KEY)


def all_features(features_server, customer_id):
    """What a caller would assemble by hand: both lookups' rows merged."""
    features = client(features_server, "customer-features")
    merged = {}
    for endpoint in ("demographics", "behavior"):
        result = features.lookup_record(endpoint, {"customer_id": customer_id})
        assert result["notFound"] is False
        merged.update(result["data"])
    return merged


@pytest.mark.parametrize("scoring", ["real_scoring", "real_remote_scoring"])
def test_score_by_id_equals_score_with_all_features(request, real_features, scoring):
    server = request.getfixturevalue(scoring)
    scoring_client = client(server, "customer-scoring")
    predictions = set()
    for customer_id in CUSTOMERS:
        by_id = scoring_client.predict_record("high-spender", {"customer_id": customer_id})["result"]
        explicit = all_features(real_features, customer_id)
        without_id = {k: v for k, v in explicit.items() if k != "customer_id"}
        sent = scoring_client.predict_record("high-spender", without_id)["result"]
        assert by_id["prediction"] == sent["prediction"]
        assert by_id["probas"] == pytest.approx(sent["probas"], abs=1e-9)
        predictions.add(by_id["prediction"])
        assert by_id["ignored"] is False
    assert predictions == {"0", "1"}, "the sample should cover both classes"


def test_caller_values_win_over_looked_up_ones(real_scoring):
    scoring_client = client(real_scoring, "customer-scoring")
    base = scoring_client.predict_record("high-spender", {"customer_id": "C0000002"})["result"]
    rich = scoring_client.predict_record(
        "high-spender",
        {"customer_id": "C0000002", "spend_12m": 25000.0, "orders_12m": 60, "avg_basket": 400.0},
    )["result"]
    assert rich["probas"]["1"] > base["probas"]["1"]


def test_predict_records_batch_matches_single_calls(real_remote_scoring):
    scoring_client = client(real_remote_scoring, "customer-scoring")
    records = [{"features": {"customer_id": cid}} for cid in CUSTOMERS]
    batch = scoring_client.predict_records("high-spender", records)["results"]
    singles = [scoring_client.predict_record("high-spender", r["features"])["result"] for r in records]
    assert [b["prediction"] for b in batch] == [s["prediction"] for s in singles]
    for b, s in zip(batch, singles):
        assert b["probas"] == pytest.approx(s["probas"], abs=1e-9)


def test_lookup_records(real_features):
    answer = client(real_features, "customer-features").lookup_records(
        "behavior", [{"data": {"customer_id": cid}} for cid in CUSTOMERS]
    )
    assert [r["data"]["customer_id"] for r in answer["results"]] == CUSTOMERS
    assert all(isinstance(r["data"]["orders_12m"], int) for r in answer["results"])


def test_client_sees_error_type_and_message(real_scoring):
    with pytest.raises(DataikuException, match="InvalidFeatures.*customer_id"):
        client(real_scoring, "customer-scoring").predict_record("high-spender", {"customer_id": "C99"})
    with pytest.raises(DataikuException, match="Forbidden"):
        APINodeClient(real_scoring.url, "customer-scoring", api_key="nope").predict_record(
            "high-spender", {"customer_id": "C0000001"}
        )
