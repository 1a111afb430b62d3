"""Operating the services: metrics, the features service going down under scoring, graceful drain."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.apinode_proc import API_KEY, ApiNodeProcess, server_env

PREDICT = "/public/api/v1/customer-scoring/high-spender/predict"


def predict(server, customer_id="C0000003", timeout=10):
    return httpx.post(
        server.url + PREDICT,
        json={"features": {"customer_id": customer_id}},
        auth=(API_KEY, ""),
        timeout=timeout,
    )


def result_of(response: httpx.Response) -> dict:
    """The prediction of a 200 answer; any other status fails with the body, which says why."""
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text}"
    return response.json()["result"]


def error_of(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    body = response.json()
    assert body["errorType"] == error_type, body
    return body


def test_metrics_count_requests_errors_and_data_age(scoring_server, fixture_services):
    # The fixture data was written before the server started: its load is younger than the files.
    oldest_possible = time.time() - Path(fixture_services["customer-scoring"], "service.yaml").stat().st_mtime
    result_of(predict(scoring_server))
    error_of(predict(scoring_server, "bob"), 400, "InvalidFeatures")
    metrics = httpx.get(scoring_server.url + "/metrics")
    assert metrics.status_code == 200, metrics.text
    text = metrics.text
    assert (
        'apinode_requests_total{endpoint="high-spender/predict",generation="1",service="customer-scoring",status="200"}'
        in text
    )
    assert (
        'apinode_errors_total{endpoint="high-spender/predict",error_type="InvalidFeatures",service="customer-scoring"}'
        in text
    )
    assert 'apinode_request_duration_seconds_bucket{endpoint="high-spender/predict"' in text
    age = next(
        line
        for line in text.splitlines()
        if line.startswith("apinode_source_data_age_seconds") and 'source="behavior"' in line
    )
    # Seconds since the bundle was loaded: not NaN, not an epoch timestamp, not milliseconds.
    assert 0 <= float(age.split()[-1]) <= oldest_possible + 1, (age, oldest_possible)
    assert 'apinode_source_stale{kind="bundled",service="customer-scoring",source="behavior"} 0.0' in text


def test_features_service_down_gives_a_clear_503_then_scoring_recovers(fixture_services):
    features = ApiNodeProcess(fixture_services["customer-features"]).start()
    env = server_env(
        APINODE_ENRICHMENT="remote", APINODE_FEATURES_URL=features.url, APINODE_FEATURES_API_KEY=API_KEY
    )
    try:
        with ApiNodeProcess(fixture_services["customer-scoring"], env).start() as scoring:
            expected = result_of(predict(scoring))
            features.stop()
            body = error_of(predict(scoring), 503, "SourceUnavailable")
            assert "customer-features" in body["message"], body
            # Sent in full, a record needs no enrichment: it is still scored during the outage.
            complete = {
                "features": {
                    "age": 40,
                    "tenure_months": 12,
                    "orders_12m": 3,
                    "spend_12m": 120.0,
                    "avg_basket": 40.0,
                    "recency_days": 10,
                    "distinct_categories": 2,
                    "return_rate": 0.0,
                    "gender": "F",
                    "region": "north",
                    "campaign_status": "active",
                }
            }
            result_of(httpx.post(scoring.url + PREDICT, json=complete, auth=(API_KEY, "")))
            features = ApiNodeProcess(fixture_services["customer-features"], port=features.port).start()
            assert result_of(predict(scoring)) == expected
    finally:
        features.stop()


def test_wrong_features_key_is_a_503_not_a_caller_error(fixture_services, features_server):
    env = server_env(
        APINODE_ENRICHMENT="remote",
        APINODE_FEATURES_URL=features_server.url,
        APINODE_FEATURES_API_KEY="not-the-key",
    )
    with ApiNodeProcess(fixture_services["customer-scoring"], env).start() as scoring:
        body = error_of(predict(scoring), 503, "SourceUnavailable")
        assert "403" in body["detailedMessage"], body


def test_sigterm_drains_then_exits_0(fixture_services):
    env = server_env(APINODE_DRAIN_DELAY_SECONDS="1.5", APINODE_GRACE_SECONDS="5")
    server = ApiNodeProcess(fixture_services["customer-scoring"], env).start()
    try:
        with httpx.Client(auth=(API_KEY, "")) as client:
            result_of(client.post(server.url + PREDICT, json={"features": {"customer_id": "C0000003"}}))
            server.terminate()
            time.sleep(0.3)
            ready = client.get(server.url + "/readyz")
            assert "draining" in error_of(ready, 503, "NotReady")["detailedMessage"]
            # Still answering during the drain delay, so a load balancer has time to stop sending.
            result_of(client.post(server.url + PREDICT, json={"features": {"customer_id": "C0000003"}}))
        assert server.wait_exit(15) == 0, server.log()
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/healthz")
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_sigint_stops_at_once_with_code_0(fixture_services):
    server = ApiNodeProcess(fixture_services["customer-features"]).start()
    try:
        server.process.send_signal(signal.SIGINT)
        assert server.wait_exit(15) == 0, server.log()
    finally:
        server.stop()


def test_frozen_features_service_times_out_into_a_503_and_recovers(fixture_services):
    with ApiNodeProcess(fixture_services["customer-features"]).start() as features:
        env = server_env(
            APINODE_ENRICHMENT="remote", APINODE_FEATURES_URL=features.url, APINODE_FEATURES_API_KEY=API_KEY
        )
        with ApiNodeProcess(fixture_services["customer-scoring"], env).start() as scoring:
            expected = result_of(predict(scoring))
            features.process.send_signal(signal.SIGSTOP)
            try:
                response = predict(scoring, timeout=15)
            finally:
                features.process.send_signal(signal.SIGCONT)
            body = error_of(response, 503, "SourceUnavailable")
            assert "no answer within 1s" in body["detailedMessage"], body
            assert result_of(predict(scoring)) == expected


def _read_all(sock) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


@pytest.mark.parametrize(
    "sent, expected",
    [
        (
            b"POST /public/api/v1/customer-features/behavior/lookup HTTP/1.1\r\nHost: x\r\n",
            b"headers not received",
        ),
        (
            b"POST /public/api/v1/customer-features/behavior/lookup HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + API_KEY.encode() + b'\r\nContent-Length: 40\r\n\r\n{"data"',
            b"body not received",
        ),
        (b"", b""),
    ],
    ids=["slow-head", "slow-body", "silent"],
)
def test_slow_requests_get_408_and_the_connection_closes(fixture_services, sent, expected):
    import socket

    env = server_env(APINODE_HEADER_TIMEOUT_SECONDS="1", APINODE_BODY_TIMEOUT_SECONDS="1")
    with ApiNodeProcess(fixture_services["customer-features"], env).start() as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(sent)
            answer = _read_all(sock)
    if expected:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"errorType":"RequestTimeout"' in answer and expected in answer
    else:
        assert answer == b""
