"""A cached SQL table refreshing under load: every answer comes from one whole table, and memory
returns to its level after the swaps.

Every row of the table carries a generation number; a writer bumps all rows to the next
generation in one transaction, again and again, while callers look up batches spread over the
whole table. A half-loaded or half-swapped table would show as a missing row or as two
generations in one answer; a swap going back in time as a generation older than one already
answered.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.pgcluster import throwaway_cluster
from tests.reliability.loadgen import Call, Load, describe
from tests.reliability.servers import API_KEY, Service, server_env

pytestmark = pytest.mark.postgres
ROWS = 100_000
SERVICE_YAML = """
service: generations
version: "1"
tables:
  rows:
    key: customer_id
    columns:
      customer_id: {type: string, pattern: "^C[0-9]{7}$"}
      generation: integer
      payload: string
    source: sql
    sql: {table: generation_rows, mode: cached, refresh_seconds: 0.5, timeout_seconds: 5}
endpoints:
  rows: {type: lookup, table: rows}
"""
PATH = "/public/api/v1/generations/rows/lookup-multi"


@pytest.fixture(scope="module")
def database():
    with throwaway_cluster() as db:
        db.create_table(
            "generation_rows",
            {"customer_id": "text", "generation": "bigint", "payload": "text"},
            "customer_id",
            ((f"C{i:07d}", 0, f"row {i} " + "x" * (i % 64)) for i in range(1, ROWS + 1)),
        )
        yield db


def batch(rng: random.Random) -> Call:
    ids = ["C0000001", f"C{ROWS:07d}"] + [f"C{rng.randint(1, ROWS):07d}" for _ in range(48)]

    def check(payload) -> str | None:
        results = payload.get("results") or []
        missing = [r["data"]["customer_id"] for r in results if r.get("notFound")]
        if len(results) != len(ids) or missing:
            return f"half-loaded table: {len(results)} results, missing {missing[:5]}"
        generations = {r["data"]["generation"] for r in results}
        if len(generations) != 1:
            return f"several generations in one answer: {sorted(generations)}"
        return None

    return Call(
        "lookup-multi",
        PATH,
        {"items": [{"data": {"customer_id": c}} for c in ids]},
        check=check,
        observe=lambda payload: payload["results"][0]["data"]["generation"],
    )


def went_back_in_time(outcomes) -> list[str]:
    """An answer older than one already complete before it started means a swap went backwards."""
    good = [o for o in outcomes if o.ok]
    finished = sorted(good, key=lambda o: o.started + o.latency)
    problems, newest, i = [], -1, 0
    for o in sorted(good, key=lambda o: o.started):
        while i < len(finished) and finished[i].started + finished[i].latency < o.started:
            newest = max(newest, finished[i].observed)
            i += 1
        if o.observed < newest:
            problems.append(f"t={o.started:.2f}s answered generation {o.observed} after {newest}")
    return problems


@pytest.mark.timeout(240)
def test_refresh_under_load_swaps_whole_tables_and_memory_returns(database, tmp_path, log_dir):
    (tmp_path / "service.yaml").write_text(SERVICE_YAML)
    env = server_env(APINODE_SQL_URL=database.url, APINODE_SQL_PASSWORD=database.password)

    async def writer(until: float) -> int:
        bumped = 0
        while time.monotonic() < until:
            bumped += 1
            await asyncio.to_thread(database.execute, "UPDATE generation_rows SET generation = %s", (bumped,))
            await asyncio.sleep(0.3)
        return bumped

    async def scenario(service: Service):
        load = Load(service.url, [batch], workers=6, api_key=API_KEY, timeout=30)
        await asyncio.sleep(3.0)  # a few swaps of the same data before measuring
        rss_before = service.rss_kib()
        running = asyncio.create_task(load.run(120))
        bumped = await writer(time.monotonic() + 20)
        load.stop()
        outcomes = await running
        await asyncio.sleep(3.0)  # let the last refreshes land and the old tables go
        return outcomes, bumped, rss_before, service.rss_kib()

    with Service(tmp_path, env, log_dir=log_dir, name="generations").start() as service:
        outcomes, bumped, rss_before, rss_after = asyncio.run(scenario(service))
        final = database.execute("SELECT count(*), min(generation), max(generation) FROM generation_rows")
    seen = {o.observed for o in outcomes if o.ok}
    print(
        f"refresh under load: {len(outcomes)} answers, {bumped} generations written, {len(seen)} answered, "
        f"RSS {rss_before // 1024} -> {rss_after // 1024} MiB"
    )
    assert final == [(ROWS, bumped, bumped)]
    assert len(outcomes) > 100, f"the load hardly ran ({len(outcomes)} requests)"
    assert all(o.ok for o in outcomes), describe(outcomes)
    assert len(seen) >= 5, f"only generations {sorted(seen)} answered: the refresh hardly ran under load"
    backwards = went_back_in_time(outcomes)
    assert not backwards, "\n".join(backwards[:10])
    # Generous: a copy of the table is alive during each load, and the allocator keeps some pages.
    assert rss_after < rss_before * 1.5 + 64 * 1024, (
        f"resident memory grew from {rss_before // 1024} MiB to {rss_after // 1024} MiB "
        f"over {bumped} refreshes"
    )
