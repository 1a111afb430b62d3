"""Where a table's rows come from: a bundled file held in memory (SQL sources live in sqlsources)."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import time
import zipfile
from collections.abc import Mapping

from .bundle import read_bundle
from .definition import TableSpec
from .errors import SourceUnavailable
from .table import Table, TableError


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def release_memory() -> None:
    """Give the loader's freed temporaries back to the system (glibc keeps them otherwise):
    about 100 MB of resident memory on a 1M-row load, and flat memory across refreshes."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class MemorySource:
    """A table held in memory: bundled (loaded once) or SQL cached (refreshed in the background)."""

    in_memory = True
    kind = "bundled"

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.table: Table | None = None
        self.loaded_at: float | None = None
        self.refresh_failed = False
        self.last_error: str | None = None
        self.refresh_failures = 0

    @property
    def ready(self) -> bool:
        return self.table is not None

    @property
    def stale(self) -> bool:
        """True while the data served is older than it should be (its last refresh failed)."""
        return self.refresh_failed

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
        previous, self.table = self.table, table
        self.loaded_at = time.time()
        self.refresh_failed = False
        self.last_error = None
        del previous
        release_memory()

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


def make_source(spec: TableSpec, env: Mapping[str, str], request_timeout: float):
    if spec.source == "bundled":
        return MemorySource(spec)
    # SQLAlchemy costs half a second of start-up: imported only by services that use SQL.
    from .sqlsources import SqlCachedSource, SqlLiveSource

    if spec.sql.mode == "cached":
        return SqlCachedSource(spec, env)
    return SqlLiveSource(spec, env, request_timeout)
