"""Where a table's rows come from: a bundled file, a SQL table cached in memory, or live SQL."""

from __future__ import annotations

import asyncio
import logging
import time
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from .bundle import read_bundle
from .definition import TableSpec
from .errors import SourceUnavailable
from .sql import columns_from_rows, describe, full_query, keyed_query, make_engine, plain
from .table import Table, TableError

log = logging.getLogger("apinode.sources")


class MemorySource:
    """A table held in memory: bundled (loaded once) or SQL cached (refreshed in the background)."""

    in_memory = True
    kind = "bundled"

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.table: Table | None = None
        self.loaded_at: float | None = None
        self.stale = False
        self.last_error: str | None = None
        self.refresh_failures = 0

    @property
    def ready(self) -> bool:
        return self.table is not None

    def age_seconds(self) -> float:
        return time.time() - self.loaded_at if self.loaded_at else float("nan")

    def load(self) -> Table:
        path = self.spec.bundled_path
        try:
            columns = read_bundle(path)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise TableError(f"{path}: cannot read bundle: {error}") from None
        return Table(self.spec, columns, str(path))

    def install(self, table: Table) -> None:
        # One assignment: readers see the old table or the new one, never a mix.
        self.table = table
        self.loaded_at = time.time()
        self.stale = False
        self.last_error = None

    async def start(self) -> None:
        self.install(await asyncio.to_thread(self.load))

    async def stop(self) -> None:
        pass

    def rows(self, key: object) -> list[dict]:
        table = self.table
        if table is None:
            raise SourceUnavailable(f"table {self.spec.name} is not loaded yet")
        return [table.row(i) for i in table.rows(key)]

    async def rows_many(self, keys: list) -> list[list[dict]]:
        return [self.rows(key) for key in keys]


class SqlCachedSource(MemorySource):
    """A SQL table loaded into memory and reloaded every ``refresh_seconds`` with an atomic swap."""

    kind = "sql-cached"

    def __init__(self, spec: TableSpec, env: Mapping[str, str]) -> None:
        super().__init__(spec)
        self._engine = make_engine(spec.sql, env, live=False)
        self._task: asyncio.Task | None = None

    def load(self) -> Table:
        with self._engine.connect() as connection:
            result = connection.execute(full_query(self.spec.sql, self.spec))
            names, rows = list(result.keys()), result.fetchall()
        return Table(self.spec, columns_from_rows(self.spec, names, rows), f"sql table {self.spec.name}")

    async def refresh(self) -> bool:
        """Reload once; on failure keep serving the old table and report it stale."""
        try:
            table = await asyncio.to_thread(self.load)
        except (sa.exc.SQLAlchemyError, TableError, OSError) as error:
            self.refresh_failures += 1
            self.stale = self.table is not None
            self.last_error = describe(error)
            log.warning("table %s: refresh failed (%s); %s", self.spec.name, self.last_error,
                        "serving stale data" if self.table is not None else "not ready")
            return False
        self.install(table)
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.spec.sql.refresh_seconds if self.table is not None
                                else min(self.spec.sql.refresh_seconds, 1.0))
            await self.refresh()

    async def start(self) -> None:
        # A database that is down at start-up must not stop the server: readiness waits for it.
        await self.refresh()
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
            rows = await asyncio.wait_for(loop.run_in_executor(self._executor, self._fetch, keys), self._timeout)
        except asyncio.TimeoutError:
            self.refresh_failures += 1
            self.last_error = f"no answer within {self._timeout:g}s"
            raise SourceUnavailable(f"table {self.spec.name}: database unavailable",
                                    f"table {self.spec.name}: the database gave no answer within {self._timeout:g}s") from None
        except (sa.exc.SQLAlchemyError, OSError) as error:
            self.refresh_failures += 1
            self.last_error = describe(error)
            raise SourceUnavailable(f"table {self.spec.name}: database unavailable",
                                    f"table {self.spec.name}: database unavailable ({self.last_error})") from None
        self.last_error = None
        return rows


def make_source(spec: TableSpec, env: Mapping[str, str], request_timeout: float):
    if spec.source == "bundled":
        return MemorySource(spec)
    if spec.sql.mode == "cached":
        return SqlCachedSource(spec, env)
    return SqlLiveSource(spec, env, request_timeout)
