"""customer-features on PostgreSQL, under load, while the database is stopped (connections refused)
or frozen (SIGSTOP: connections accepted, never answered), then back.

Cached: every answer stays right (stale data), the staleness is reported (header and metric),
and it clears by itself. Live: a clear 503 within the timeout during the outage, then recovery
without restarting the service.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.pgcluster import PgCluster, load_bundles, throwaway_cluster
from tests.reliability.loadgen import Load, describe, outage_problems
from tests.reliability.servers import API_KEY, FEATURES_DIR, Service, server_env

pytestmark = pytest.mark.postgres
SQL_TIMEOUT = 1.0
REQUEST_TIMEOUT = 3.0
MARGIN = 4.0  # a loaded 2-core box; not a performance bound
BOUND = 20.0  # for background effects: a refresh noticing the outage, a reconnection


def postgres_pids(db: PgCluster) -> list[int]:
    """The postmaster of our throwaway cluster and its children (backends, background workers)."""
    master = int((db.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == master:
                children.append(int(entry.name))
    return [master, *children]


class Outage:
    """Stopped: the database shuts down (connections refused). Frozen: every PostgreSQL process is
    stopped with SIGSTOP, so connections are accepted and queries sent but nothing ever answers."""

    def __init__(self, db: PgCluster, kind: str) -> None:
        self.db, self.kind, self.frozen = db, kind, []

    def begin(self) -> None:
        if self.kind == "stopped":
            self.db.stop()
            return
        self.frozen = postgres_pids(self.db)
        for pid in self.frozen:
            os.kill(pid, signal.SIGSTOP)

    def end(self) -> None:
        if self.kind == "stopped":
            self.db.start()
            return
        for pid in self.frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def database():
    with throwaway_cluster() as db:
        load_bundles(db, FEATURES_DIR)
        yield db


def sql_features(db: PgCluster, mode: str, log_dir) -> Service:
    env = server_env(
        APINODE_SOURCE="sql",
        APINODE_SQL_URL=db.url,
        APINODE_SQL_PASSWORD=db.password,
        APINODE_SQL_MODE=mode,
        APINODE_SQL_REFRESH_SECONDS="1",
        APINODE_SQL_POOL_SIZE="4",
        APINODE_SQL_TIMEOUT_SECONDS=str(SQL_TIMEOUT),
        APINODE_REQUEST_TIMEOUT_SECONDS=str(REQUEST_TIMEOUT),
    )
    return Service(FEATURES_DIR, env, log_dir=log_dir, name=f"sql-{mode}-features")


def stale_tables(service: Service) -> set[str]:
    text = httpx.get(service.url + "/metrics", timeout=5).text
    return {
        line.split('source="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("apinode_source_stale{") and line.rstrip().endswith(" 1.0")
    }


async def wait_for(condition, what: str) -> float:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return time.monotonic()
        await asyncio.sleep(0.25)
    raise AssertionError(f"never happened within {BOUND:g}s: {what}")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["stopped", "frozen"])
def test_cached_source_serves_stale_data_through_a_database_outage(kind, database, golden, log_dir):
    outage = Outage(database, kind)

    async def scenario(service: Service):
        load = Load(service.url, golden.features_calls(), workers=6, api_key=API_KEY, timeout=30)
        running = asyncio.create_task(load.run(150))
        clock = lambda: time.monotonic() - load.origin  # noqa: E731
        try:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(outage.begin)
            await wait_for(
                lambda: stale_tables(service) == {"demographics", "behavior"},
                "/metrics reports both tables stale while the database is down",
            )
            stale_since = clock()
            await asyncio.sleep(2.0)
        finally:
            restart_at = clock()
            await asyncio.to_thread(outage.end)
        await wait_for(lambda: not stale_tables(service), "the staleness clears once the database is back")
        fresh_since = clock()
        await asyncio.sleep(2.0)
        load.stop()
        return await running, (stale_since, restart_at, fresh_since)

    with sql_features(database, "cached", log_dir).start() as service:
        outcomes, (stale_since, restart_at, fresh_since) = asyncio.run(scenario(service))
    assert all(o.ok for o in outcomes), "a cached source must keep answering right:\n" + describe(outcomes)
    during = [o for o in outcomes if o.started > stale_since + 0.5 and o.started + o.latency < restart_at]
    assert during and all(o.stale for o in during), (
        f"{sum(not o.stale for o in during)} of {len(during)} answers served from stale data "
        "lack the X-Apinode-Stale-Data header"
    )
    after = [o for o in outcomes if o.started > fresh_since + 0.5]
    assert after and not any(o.stale for o in after), "answers still flagged stale after recovery"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["stopped", "frozen"])
def test_live_source_answers_503_during_a_database_outage_then_recovers(kind, database, golden, log_dir):
    outage = Outage(database, kind)

    async def scenario(service: Service):
        load = Load(service.url, golden.features_calls(), workers=6, api_key=API_KEY, timeout=30)
        running = asyncio.create_task(load.run(150))
        clock = lambda: time.monotonic() - load.origin  # noqa: E731
        try:
            await asyncio.sleep(2.0)
            down_at = clock()
            await asyncio.to_thread(outage.begin)
            await asyncio.sleep(3.0)
            # Hold the outage until callers have met it (a starved CI box may need longer).
            await wait_for(
                lambda: any(o.status == 503 for o in load.outcomes if o.started >= down_at),
                "a 503 while the database is down",
            )
        finally:
            await asyncio.to_thread(outage.end)
        up_at = clock()

        def recovered() -> bool:
            recent = [o for o in load.outcomes if o.started > up_at]
            return len(recent) >= 20 and all(o.ok for o in recent[-20:])

        recovered_at = await wait_for(recovered, "live lookups answer right again after the database is back")
        await asyncio.sleep(2.0)
        load.stop()
        return await running, down_at, up_at, recovered_at - load.origin

    with sql_features(database, "live", log_dir).start() as service:
        outcomes, down_at, up_at, recovered_at = asyncio.run(scenario(service))
        log = service.log_tail(10)
    healthy = [o for o in outcomes if o.started + o.latency < down_at]
    assert healthy and all(o.ok for o in healthy), "before the outage:\n" + describe(healthy)
    bound = min(REQUEST_TIMEOUT, 2 * SQL_TIMEOUT) + MARGIN
    problems = outage_problems(outcomes, down_at, recovered_at, bound)
    assert not problems, "\n".join(problems[:10]) + "\n" + describe(outcomes) + "\n" + log
    unavailable = [o for o in outcomes if down_at <= o.started < up_at and o.status == 503]
    window = [o for o in outcomes if down_at <= o.started < up_at]
    assert unavailable, (
        f"no 503 while the database was down ({down_at:.1f}s to {up_at:.1f}s): {describe(window)}, "
        f"statuses {sorted({o.status for o in window}, key=str)}\n{log}"
    )
    assert all(o.error_type == "SourceUnavailable" for o in unavailable), {o.error_type for o in unavailable}
    assert all(o.ok for o in outcomes if o.started > recovered_at), "after recovery:\n" + describe(outcomes)
