"""Query audit records (APINODE_QUERY_LOG) and the trace id that ties scoring's records to the
lookups customer-features served for them: real processes, the real dataikuapi client."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from dataikuapi import APINodeClient

from tests.apinode_proc import API_KEY, ApiNodeProcess, server_env

SCORING = "/public/api/v1/customer-scoring/high-spender"
FEATURES = "/public/api/v1/customer-features"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def read_records(path, at_least: int, timeout: float = 10.0) -> list[dict]:
    """The records written so far, waiting (bounded) for the writer thread to catch up."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= at_least or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def logged_pair(fixture_services, tmp_path_factory):
    """customer-features and customer-scoring (remote enrichment), each logging to its own file."""
    logs = tmp_path_factory.mktemp("query-logs")
    features_log, scoring_log = logs / "features.jsonl", logs / "scoring.jsonl"
    features = ApiNodeProcess(
        fixture_services["customer-features"], server_env(APINODE_QUERY_LOG=str(features_log))
    ).start()
    env = server_env(
        APINODE_QUERY_LOG=str(scoring_log),
        APINODE_ENRICHMENT="remote",
        APINODE_FEATURES_URL=features.url,
        APINODE_FEATURES_API_KEY=API_KEY,
    )
    try:
        with ApiNodeProcess(fixture_services["customer-scoring"], env).start() as scoring:
            yield scoring, scoring_log, features, features_log
    finally:
        features.stop()


def test_three_predictions_with_context_leave_three_records_and_features_carry_the_trace(logged_pair):
    """The issue's done-when: records carry the caller's context, and the lookups customer-features
    served for them carry the caller's trace id (W3C traceparent handed on by scoring)."""
    scoring, scoring_log, _, features_log = logged_pair
    before_scoring = len(read_records(scoring_log, 0, 0))
    before_features = len(read_records(features_log, 0, 0))
    client = APINodeClient(scoring.url, "customer-scoring", api_key=API_KEY)
    client._session.headers["traceparent"] = TRACEPARENT  # requests.Session of DSSBaseClient
    for n, customer in enumerate(["C0000001", "C0000002", "C0000003"]):
        answer = client.predict_record("high-spender", {"customer_id": customer}, context={"ticket": f"T-{n}"})
        assert answer["result"]["ignored"] is False
    records = read_records(scoring_log, before_scoring + 3)[before_scoring:]
    assert [r["context"] for r in records] == [{"ticket": "T-0"}, {"ticket": "T-1"}, {"ticket": "T-2"}]
    for record, customer in zip(records, ["C0000001", "C0000002", "C0000003"]):
        assert record["service"] == "customer-scoring" and record["endpoint"] == "high-spender"
        assert record["kind"] == "predict" and record["status"] == 200 and record["errorType"] is None
        assert record["features"] == {"customer_id": customer}
        assert {"age", "orders_12m", "region"} <= set(record["enriched"])
        assert record["result"]["prediction"] in ("0", "1")
        assert set(record["result"]["probas"]) == {"0", "1"}
        assert record["traceId"] == TRACE and record["parentSpanId"] == "00f067aa0ba902b7"
        assert record["generation"] == "1" and record["apiKeyId"].startswith("k-")
        assert record["durationMs"] > 0 and record["time"].endswith("Z")
    # One profile lookup (demographics and behavior together) per prediction, each under the
    # caller's trace, whose parent is the span of the scoring request that made it.
    lookups = read_records(features_log, before_features + 3)[before_features:]
    assert len(lookups) == 3
    assert {r["traceId"] for r in lookups} == {TRACE}
    assert [r["parentSpanId"] for r in lookups] == [r["spanId"] for r in records]
    assert [r["data"] for r in lookups] == [{"customer_id": c} for c in ("C0000001", "C0000002", "C0000003")]
    assert {r["endpoint"] for r in lookups} == {"profile"}
    assert all(r["result"] == {"found": True, "notFoundIn": []} for r in lookups)


def test_records_never_hold_the_api_key_and_redact_the_birthdate(logged_pair):
    scoring, scoring_log, _, _ = logged_pair
    before = len(read_records(scoring_log, 0, 0))
    answer = httpx.post(
        scoring.url + SCORING + "/predict",
        json={"features": {"customer_id": "C0000004", "birthdate": "1980-02-03"}},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert answer.status_code == 200
    (record,) = read_records(scoring_log, before + 1)[before:]
    assert record["features"] == {"customer_id": "C0000004"}
    assert record["redacted"] == ["birthdate"]
    assert "1980-02-03" not in json.dumps(record)
    assert API_KEY not in scoring_log.read_text()
    # One-way but stable: the same key, whichever way it is sent, has the same id.
    basic = httpx.post(
        scoring.url + SCORING + "/predict", json={"features": {"customer_id": "C0000004"}}, auth=(API_KEY, "")
    )
    assert basic.status_code == 200
    ids = {r["apiKeyId"] for r in read_records(scoring_log, before + 2)[before:]}
    assert len(ids) == 1


def test_predict_multi_leaves_one_record_per_item_with_its_own_context(logged_pair):
    scoring, scoring_log, _, _ = logged_pair
    before = len(read_records(scoring_log, 0, 0))
    body = {
        "items": [
            {"features": {"customer_id": "C0000005"}, "context": {"row": 1}},
            {"features": {"customer_id": "C0999999"}, "context": {"row": 2}},
            {"features": {"customer_id": "C0000006"}},
        ],
        "context": {"batch": "b-1"},
    }
    answer = httpx.post(scoring.url + SCORING + "/predict-multi", json=body, auth=(API_KEY, ""))
    assert answer.status_code == 200
    records = read_records(scoring_log, before + 3)[before:]
    assert [r["item"] for r in records] == [0, 1, 2]
    assert [r["context"] for r in records] == [{"row": 1}, {"row": 2}, {"batch": "b-1"}]
    assert records[0]["result"]["prediction"] in ("0", "1")
    assert records[1]["result"]["ignored"] is True
    assert records[1]["result"]["errorType"] == "RecordNotFound"
    assert {r["kind"] for r in records} == {"predict-multi"}


def test_lookups_and_refusals_are_recorded_too(logged_pair):
    _, _, features, features_log = logged_pair
    before = len(read_records(features_log, 0, 0))
    auth = (API_KEY, "")
    httpx.post(features.url + FEATURES + "/demographics/lookup", json={"data": {"customer_id": "C0999999"}},
               auth=auth)
    httpx.post(features.url + FEATURES + "/behavior/lookup-multi",
               json={"items": [{"data": {"customer_id": "C0000001"}}, {"data": {"customer_id": "C0999998"}}]},
               auth=auth)
    refused = httpx.post(features.url + FEATURES + "/behavior/lookup",
                         json={"data": {"customer_id": "C0000001"}}, auth=("wrong-key", ""))
    assert refused.status_code == 403
    records = read_records(features_log, before + 4)[before:]
    assert [(r["kind"], r["result"]) for r in records[:3]] == [
        ("lookup", {"found": False}), ("lookup-multi", {"found": True}), ("lookup-multi", {"found": False})
    ]
    assert records[0]["data"] == {"customer_id": "C0999999"}
    assert records[3]["status"] == 403 and records[3]["errorType"] == "Forbidden"
    assert records[3]["apiKeyId"] is None
    assert "wrong-key" not in features_log.read_text()


def test_a_broken_destination_never_fails_a_query(fixture_services):
    """/dev/full answers every write with ENOSPC: the queries go on, the failures are counted."""
    env = server_env(APINODE_QUERY_LOG="/dev/full")
    with ApiNodeProcess(fixture_services["customer-features"], env).start() as server:
        for _ in range(5):
            answer = httpx.post(server.url + FEATURES + "/demographics/lookup",
                                json={"data": {"customer_id": "C0000001"}}, auth=(API_KEY, ""))
            assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = httpx.get(server.url + "/metrics").text
            if 'apinode_query_log_records_total{outcome="failed",service="customer-features"} 5.0' in text:
                break
            time.sleep(0.05)
        assert 'apinode_query_log_records_total{outcome="failed",service="customer-features"} 5.0' in text


def test_default_destination_is_stdout_and_off_writes_nothing(fixture_services):
    body = {"data": {"customer_id": "C0000002"}}
    with ApiNodeProcess(fixture_services["customer-features"], server_env()).start() as server:
        httpx.post(server.url + FEATURES + "/demographics/lookup", json=body, auth=(API_KEY, ""))
        deadline = time.monotonic() + 10
        while '"kind":"lookup"' not in server.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(line for line in server.output().splitlines() if '"kind":"lookup"' in line)
        assert json.loads(line)["data"] == {"customer_id": "C0000002"}
    with ApiNodeProcess(fixture_services["customer-features"], server_env(APINODE_QUERY_LOG="off")).start() as server:
        assert httpx.post(server.url + FEATURES + "/demographics/lookup", json=body,
                          auth=(API_KEY, "")).status_code == 200
        server.stop()
        assert '"kind":' not in server.output()


def test_an_unwritable_query_log_path_stops_the_start_naming_the_variable(fixture_services, tmp_path):
    env = server_env(APINODE_QUERY_LOG=str(tmp_path / "missing-folder" / "queries.jsonl"))
    server = ApiNodeProcess(fixture_services["customer-features"], env)
    server.start(wait_ready=False)
    assert server.wait_exit(60) == 2
    assert "APINODE_QUERY_LOG" in server.output()


def test_sampling_keeps_or_drops_a_whole_trace(fixture_services, tmp_path):
    """sample: 0.5 keeps the traces whose id falls in the lower half, in every service alike."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("endpoints:\n  demographics:\n    query_log: {sample: 0.5}\n")
    log = tmp_path / "q.jsonl"
    env = server_env(APINODE_QUERY_LOG=str(log), APINODE_OVERLAY=str(overlay))
    with ApiNodeProcess(fixture_services["customer-features"], env).start() as server:
        for trace in ("0" * 31 + "1", "7" + "f" * 31, "8" + "0" * 31, "f" * 32):
            answer = httpx.post(
                server.url + FEATURES + "/demographics/lookup", json={"data": {"customer_id": "C0000001"}},
                auth=(API_KEY, ""), headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
            )
            assert answer.status_code == 200
        httpx.post(server.url + FEATURES + "/behavior/lookup", json={"data": {"customer_id": "C0000001"}},
                   auth=(API_KEY, ""), headers={"traceparent": f"00-{'f' * 32}-00f067aa0ba902b7-01"})
        records = read_records(log, 3)
        time.sleep(0.3)
        records = read_records(log, 3)
    kept = [(r["endpoint"], r["traceId"][0]) for r in records]
    assert kept == [("demographics", "0"), ("demographics", "7"), ("behavior", "f")]


def test_an_invalid_traceparent_starts_a_new_trace(logged_pair):
    _, _, features, features_log = logged_pair
    before = len(read_records(features_log, 0, 0))
    for header in ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", "garbage", "ff-" + TRACE + "-00f067aa0ba902b7-01"):
        answer = httpx.post(features.url + FEATURES + "/behavior/lookup",
                            json={"data": {"customer_id": "C0000001"}}, auth=(API_KEY, ""),
                            headers={"traceparent": header})
        assert answer.status_code == 200
    records = read_records(features_log, before + 3)[before:]
    ids = [r["traceId"] for r in records]
    assert len(set(ids)) == 3 and TRACE not in ids and "0" * 32 not in ids
    assert all(len(i) == 32 and r["parentSpanId"] is None for i, r in zip(ids, records))


def test_scores_sent_together_keep_the_audit_link_to_their_own_lookups(logged_pair):
    """Scores that arrive together may have their lookups sent as one lookup-multi (coalesce.py):
    each lookup's record must still carry the trace of the score it was made for, its parent the
    span of that scoring request, whether or not the lookups shared a call."""
    import asyncio

    scoring, scoring_log, _, features_log = logged_pair
    before_scoring = len(read_records(scoring_log, 0, 0))
    before_features = len(read_records(features_log, 0, 0))
    customers = [f"C{n:07d}" for n in range(101, 125)]

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(base_url=scoring.url, auth=(API_KEY, ""), limits=limits) as client:
            answers = await asyncio.gather(*(
                client.post(f"{SCORING}/predict", json={"features": {"customer_id": customer}},
                            headers={"traceparent": f"00-{n + 1:032x}-{n + 1:016x}-01"})
                for n, customer in enumerate(customers)))
        return [answer.status_code for answer in answers]

    assert asyncio.run(burst()) == [200] * len(customers)
    scores = read_records(scoring_log, before_scoring + len(customers))[before_scoring:]
    lookups = read_records(features_log, before_features + len(customers))[before_features:]
    made_for = {(r["features"]["customer_id"], r["traceId"], r["spanId"]) for r in scores}
    assert {(r["data"]["customer_id"], r["traceId"], r["parentSpanId"]) for r in lookups} == made_for
    assert {trace for _, trace, _ in made_for} == {f"{n + 1:032x}" for n in range(len(customers))}
    shared = sum(r["kind"] == "lookup-multi" for r in lookups)
    print(f"{shared} of {len(lookups)} lookups went in a shared call")
