"""SQL sources on a real PostgreSQL: cached (refresh, stale on outage) and live (at once, 503 on outage)."""

from __future__ import annotations

import time

import httpx
import pytest

from apinode_fixtures import tables
from tests.apinode_proc import API_KEY, ApiNodeProcess, server_env
from tests.pgcluster import PgCluster, throwaway_cluster

pytestmark = pytest.mark.postgres
LOOKUP = "/public/api/v1/customer-features/behavior/lookup"
SQL_TYPES = {"i": "integer", "f": "double precision", "U": "text"}
DATE_COLUMNS = {"birthdate", "signup_date"}


@pytest.fixture(scope="module")
def database():
    with throwaway_cluster() as db:
        for name, columns in zip(("demographics", "behavior"), tables(200)):
            types = {c: "date" if c in DATE_COLUMNS else SQL_TYPES[v.dtype.kind] for c, v in columns.items()}
            db.create_table(name, types, "customer_id", zip(*(v.tolist() for v in columns.values())))
        yield db


def sql_env(db: PgCluster, mode: str) -> dict[str, str]:
    return server_env(
        APINODE_SOURCE="sql",
        APINODE_SQL_URL=db.url,
        APINODE_SQL_PASSWORD=db.password,
        APINODE_SQL_MODE=mode,
        APINODE_SQL_REFRESH_SECONDS="0.5",
        APINODE_SQL_TIMEOUT_SECONDS="1",
    )


def lookup(server, customer_id="C0000010"):
    return httpx.post(
        server.url + LOOKUP, json={"data": {"customer_id": customer_id}}, auth=(API_KEY, ""), timeout=10
    )


def eventually(condition, what: str, limit: float = 20.0):
    """Wait for a background effect (a refresh, a reconnection); fails with ``what`` if it never comes."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"never happened within {limit:g}s: {what}")


def stale_metric(server) -> str:
    text = httpx.get(server.url + "/metrics").text
    return next(
        line for line in text.splitlines() if line.startswith("apinode_source_stale") and "behavior" in line
    )


def test_cached_refresh_then_stale_on_outage_then_recovery(database, fixture_services):
    database.execute("UPDATE behavior SET orders_12m = 5 WHERE customer_id = 'C0000010'")
    with ApiNodeProcess(fixture_services["customer-features"], sql_env(database, "cached")).start() as server:
        assert lookup(server).json()["results"][0]["data"]["orders_12m"] == 5

        database.execute("UPDATE behavior SET orders_12m = 77 WHERE customer_id = 'C0000010'")
        eventually(
            lambda: lookup(server).json()["results"][0]["data"]["orders_12m"] == 77,
            "the changed row is served after a refresh",
        )

        database.stop()
        eventually(lambda: stale_metric(server).endswith(" 1.0"), "the cached table is reported stale")
        response = lookup(server)
        assert response.status_code == 200
        assert response.json()["results"][0]["data"]["orders_12m"] == 77
        assert response.headers["x-apinode-stale-data"] == "behavior"
        assert httpx.get(server.url + "/readyz").status_code == 200

        database.start()
        database.execute("UPDATE behavior SET orders_12m = 78 WHERE customer_id = 'C0000010'")
        eventually(
            lambda: lookup(server).json()["results"][0]["data"]["orders_12m"] == 78,
            "the cache recovers and serves fresh data",
        )
        assert "x-apinode-stale-data" not in lookup(server).headers
        assert stale_metric(server).endswith(" 0.0")
    assert database.password not in server.log()


def test_live_sees_changes_at_once_503_on_outage_then_recovers(database, fixture_services):
    with ApiNodeProcess(fixture_services["customer-features"], sql_env(database, "live")).start() as server:
        database.execute("UPDATE behavior SET spend_12m = 1234.5 WHERE customer_id = 'C0000010'")
        assert lookup(server).json()["results"][0]["data"]["spend_12m"] == 1234.5
        database.execute("UPDATE behavior SET spend_12m = 99.25 WHERE customer_id = 'C0000010'")
        assert lookup(server).json()["results"][0]["data"]["spend_12m"] == 99.25
        assert lookup(server, "C0999999").json()["results"][0]["notFound"] is True
        many = httpx.post(
            server.url + LOOKUP + "-multi",
            auth=(API_KEY, ""),
            json={
                "items": [
                    {"data": {"customer_id": c}} for c in ("C0000002", "C0999999", "C0000001", "C0000002")
                ]
            },
        )
        assert [r["notFound"] for r in many.json()["results"]] == [False, True, False, False]

        database.stop()
        response = lookup(server)
        assert response.status_code == 503
        body = response.json()
        assert body["errorType"] == "SourceUnavailable"
        assert "database unavailable" in body["message"] and "behavior" in body["message"]

        database.start()
        eventually(lambda: lookup(server).status_code == 200, "live lookups recover without a restart")
        assert lookup(server).json()["results"][0]["data"]["spend_12m"] == 99.25
    assert database.password not in server.log()


def test_scoring_enriches_from_live_sql(database, fixture_services):
    env = sql_env(database, "live")
    with ApiNodeProcess(fixture_services["customer-scoring"], env).start() as server:
        path = "/public/api/v1/customer-scoring/high-spender/predict"
        response = httpx.post(
            server.url + path, json={"features": {"customer_id": "C0000003"}}, auth=(API_KEY, "")
        )
        assert response.status_code == 200, response.text
        database.stop()
        try:
            response = httpx.post(
                server.url + path, json={"features": {"customer_id": "C0000003"}}, auth=(API_KEY, "")
            )
            assert response.status_code == 503 and response.json()["errorType"] == "SourceUnavailable"
        finally:
            database.start()
