"""SQL sources: a table cached in memory and refreshed in the background, or a live query per request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from .definition import TableSpec
from .errors import SourceUnavailable
from .ratelog import RateLimitedWarning
from .sources import MemorySource
from .sql import columns_from_rows, describe, full_query, keyed_query, make_engine, plain
from .table import Table, TableError

log = logging.getLogger("apinode.sources")


class SqlCachedSource(MemorySource):
    """A SQL table loaded into memory and reloaded every ``refresh_seconds`` with an atomic swap."""

    kind = "sql-cached"

    def __init__(self, spec: TableSpec, env: Mapping[str, str]) -> None:
        super().__init__(spec)
        self._engine = make_engine(spec.sql, env, live=False)
        self._task: asyncio.Task | None = None
        self._loading_since: float | None = None
        # A load still running this long after it began is overdue: a database that accepts
        # connections but never answers (frozen, partitioned) must show up as stale too.
        self._overdue_after = spec.sql.refresh_seconds + spec.sql.timeout_seconds

    @property
    def stale(self) -> bool:
        since = self._loading_since
        overdue = since is not None and time.monotonic() - since > self._overdue_after
        return self.table is not None and (self.refresh_failed or overdue)

    def load(self) -> Table:
        with self._engine.connect() as connection:
            result = connection.execute(full_query(self.spec.sql, self.spec))
            names, rows = list(result.keys()), result.fetchall()
        return Table(self.spec, columns_from_rows(self.spec, names, rows), f"sql table {self.spec.name}")

    async def refresh(self) -> bool:
        """Reload once; on failure keep serving the old table and report it stale."""
        self._loading_since = time.monotonic()
        try:
            table = await asyncio.to_thread(self.load)
        except (sa.exc.SQLAlchemyError, TableError, OSError) as error:
            self.refresh_failures += 1
            self.refresh_failed = True
            self.last_error = describe(error)
            log.warning(
                "table %s: refresh failed (%s); %s",
                self.spec.name,
                self.last_error,
                "serving stale data" if self.table is not None else "not ready",
            )
            return False
        finally:
            self._loading_since = None
        self.install(table)
        return True

    async def _loop(self) -> None:
        # One load at a time: a hung load delays the next rather than piling up threads.
        while True:
            await self.refresh()
            await asyncio.sleep(
                self.spec.sql.refresh_seconds
                if self.table is not None
                else min(self.spec.sql.refresh_seconds, 1.0)
            )

    async def start(self) -> None:
        # The first load runs in the background: a database that is down or frozen at start-up
        # must not stop the server from listening; readiness waits for the data instead.
        self._task = asyncio.create_task(self._loop(), name=f"refresh-{self.spec.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await asyncio.to_thread(self._engine.dispose)


class SqlLiveSource:
    """A parameterised query per request, in a bounded thread pool with a timeout."""

    in_memory = False
    kind = "sql-live"
    ready = True
    stale = False
    table = None

    def __init__(self, spec: TableSpec, env: Mapping[str, str], request_timeout: float) -> None:
        self.spec = spec
        self._engine = make_engine(spec.sql, env, live=True)
        self._query = keyed_query(spec.sql, spec)
        self._executor = ThreadPoolExecutor(spec.sql.pool_size, thread_name_prefix=f"sql-{spec.name}")
        self._timeout = min(request_timeout, spec.sql.timeout_seconds * 2)
        self.last_error: str | None = None
        self.refresh_failures = 0
        self._warn = RateLimitedWarning(log)

    def age_seconds(self) -> float:
        return 0.0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._engine.dispose)

    def _fetch(self, keys: list) -> list[list[dict]]:
        with self._engine.connect() as connection:
            if self.spec.sql.query:
                results = []
                for key in keys:
                    result = connection.execute(self._query, {"key": key})
                    names = list(result.keys())
                    results.append([dict(zip(names, map(plain, row))) for row in result])
                return results
            result = connection.execute(self._query, {"keys": list(dict.fromkeys(keys))})
            names = list(result.keys())
            key_at = names.index(self.spec.key)
            found: dict[object, list[dict]] = {}
            for row in result:
                found.setdefault(row[key_at], []).append(dict(zip(names, map(plain, row))))
        return [found.get(key, []) for key in keys]

    async def rows_many(self, keys: list) -> list[list[dict]]:
        loop = asyncio.get_running_loop()
        try:
            rows = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._fetch, keys), self._timeout
            )
        except asyncio.TimeoutError:
            raise self._unavailable(f"no answer within {self._timeout:g}s") from None
        except (sa.exc.SQLAlchemyError, OSError) as error:
            raise self._unavailable(describe(error)) from None
        self.last_error = None
        return rows

    def _unavailable(self, reason: str) -> SourceUnavailable:
        """The caller learns that the database is unavailable, not where it is: details go to the log."""
        self.refresh_failures += 1
        self.last_error = reason
        self._warn(f"table {self.spec.name}: live query failed", reason)
        return SourceUnavailable(
            f"table {self.spec.name}: database unavailable",
            f"the database behind table {self.spec.name} cannot answer now; retry later",
        )
