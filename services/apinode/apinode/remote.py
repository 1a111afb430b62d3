"""Lookups on another API node service over HTTP: one pooled client, timeouts, its own API key.

Nothing the other service answers is trusted: every result must carry the key it was asked
for and every row the columns and types the table declares here (per table, also for a
multi-table endpoint such as ``profile``). Whatever goes wrong (no answer, a broken response,
an error status, a wrong row) is a 503 ``SourceUnavailable`` with a fixed message: the
upstream's own text goes to the log, never to the caller.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping

import orjson

from .definition import RemoteSpec, ServiceDefinition, TableSpec
from .errors import SourceUnavailable
from .features import _checker, passthrough
from .coalesce import Coalescer
from .httpclient import HttpError, HttpPool
from .ratelog import RateLimitedWarning

log = logging.getLogger("apinode.remote")


class BadRows(Exception):
    """An answer that does not fit the tables' declarations."""


class RowChecker:
    """Checks a row from elsewhere against a declared table: every column present, its type."""

    def __init__(self, table: TableSpec) -> None:
        self.table = table
        self.key = table.key
        # Strict types; values of a type the checker returns unchanged skip the call (features.py).
        self._checks = tuple((c.name, c.type, _checker(c, False), passthrough(c)) for c in table.columns)

    def row(self, data: dict) -> dict:
        """The table's columns of ``data``, checked (null allowed); other columns are dropped."""
        row = {}
        for name, kind, check, unchanged in self._checks:
            if name not in data:
                raise BadRows(f"a {self.table.name} row without the declared column {name!r}")
            value = data[name]
            if value is not None and type(value) not in unchanged:
                try:
                    value = check(value)
                except (TypeError, ValueError):
                    raise BadRows(f"{self.table.name}.{name} is not the declared type {kind}") from None
            row[name] = value
        return row


def expected_tables(definition: ServiceDefinition, remote: str) -> dict[str, list[TableSpec]]:
    """Per remote endpoint, the tables this service declares for what it answers."""
    expected: dict[str, list[TableSpec]] = {}
    for endpoint in definition.predictions.values():
        for lookup in endpoint.lookups:
            if lookup.remote == remote:
                tables = expected.setdefault(lookup.remote_endpoint, [])
                if definition.tables[lookup.table] not in tables:
                    tables.append(definition.tables[lookup.table])
    return expected
from .tracing import outgoing_headers


class RemoteService:
    """A client for one remote service's lookup endpoints."""

    def __init__(self, spec: RemoteSpec, tables: Mapping[str, list[TableSpec]]) -> None:
        self.spec = spec
        token = base64.b64encode(f"{spec.api_key or ''}:".encode()).decode()
        self._client = HttpPool(
            f"{spec.url}/public/api/v1/{spec.name}",
            {"Authorization": f"Basic {token}", "Content-Type": "application/json"},
            spec.max_connections,
            spec.timeout_seconds,
            spec.max_response_bytes,
        )
        self._endpoint_tables = {endpoint: [t.name for t in specs] for endpoint, specs in tables.items()}
        self._checkers = {t.name: RowChecker(t) for specs in tables.values() for t in specs}
        self.failures = 0
        self.last_error: str | None = None
        self._warn = RateLimitedWarning(log)
        # Keys asked in the same loop turn share a call (coalesce.py).
        self._coalescer = Coalescer(self._rows_many, batches_in_flight=spec.batches_in_flight,
                                    batch_wait=spec.batch_wait_seconds)

    async def close(self) -> None:
        await self._client.close()

    async def rows_many(self, endpoint: str, keys: list[dict], tables: list[str] | None = None) -> list:
        """For each key mapping, the matching rows (empty when the remote reports notFound).

        With ``tables`` (a multi-table lookup such as ``profile``), for each key the rows by table.
        Other callers' keys asked of the same endpoint in this loop turn may go in the same call.
        """
        return await self._coalescer.rows_many(endpoint, keys, tables)

    async def _rows_many(self, endpoint: str, keys: list[dict], tables: list[str] | None,
                         contexts: list[dict | None] | None = None, since: float | None = None) -> list:
        """``rows_many`` in one call; ``contexts``, one per key, go with the keys' items; the call's
        timeout counts from ``since`` (loop time) when given."""
        name = f"{self.spec.name}/{endpoint}"
        wanted = tables if tables is not None else self._endpoint_tables.get(endpoint, [])
        if not wanted or any(table not in self._checkers for table in wanted) or (
            tables is None and len(wanted) != 1
        ):  # nothing declared to check its answers against: never trust it
            raise self._down(name, "no single declared table for this endpoint", "is not declared here")
        single = len(keys) == 1
        if single:
            body = {"data": keys[0]}
        elif contexts is None:
            body = {"items": [{"data": key} for key in keys]}
        else:
            body = {"items": [{"data": key, "context": context} for key, context in zip(keys, contexts)]}
        path = f"/{endpoint}/lookup" if single else f"/{endpoint}/lookup-multi"
        try:
            status, content = await self._client.post(path, orjson.dumps(body), outgoing_headers(), since)
        except HttpError as error:
            raise self._down(name, str(error), _transport_category(error)) from None
        if status != 200:
            category = f"refused our API key (HTTP {status})" if status in (401, 403) else f"answered HTTP {status}"
            raise self._down(name, f"answered HTTP {status}: {content[:200]!r}", category)
        try:
            results = orjson.loads(content)["results"]
            if type(results) is not list or len(results) != len(keys):
                count = len(results) if type(results) is list else "no"
                raise BadRows(f"{count} results for {len(keys)} keys")
            rows = [self._checked(key, result, wanted, tables is None) for key, result in zip(keys, results)]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._down(
                name, f"answered an unexpected body ({type(error).__name__})", "answered an unreadable body"
            ) from None
        except BadRows as error:
            raise self._down(name, f"answered {error}", "answered rows that do not match the table") from None
        self.last_error = None
        return rows

    def _checked(self, key: dict, result: object, tables: list[str], flat: bool):
        """One result: its key must be the one asked for; rows per table, each checked."""
        if type(result) is not dict:
            raise BadRows("a result that is not an object")
        not_found, data = result.get("notFound", False), result.get("data")
        missing = result.get("notFoundIn", [])
        if type(not_found) is not bool or type(data) is not dict or type(missing) is not list:
            raise BadRows("a result without notFound, data or notFoundIn of the right types")
        by_table = {}
        for table in tables:
            checker = self._checkers[table]
            asked = key[checker.key]
            if data.get(checker.key) != asked or type(data.get(checker.key)) is not type(asked):
                raise BadRows(f"a row for another {checker.key} than the one asked for")
            by_table[table] = [] if not_found or table in missing else [checker.row(data)]
        return by_table[tables[0]] if flat else by_table

    def _down(self, name: str, reason: str, category: str) -> SourceUnavailable:
        """The caller's 503: a fixed text per kind of failure; ``reason`` (upstream text) is only logged."""
        self.failures += 1
        self.last_error = reason
        self._warn(f"enrichment service {name}", reason)
        return SourceUnavailable(
            f"enrichment service {self.spec.name} unavailable",
            f"the enrichment service {self.spec.name} {category}; retry later",
        )


def _transport_category(error: HttpError) -> str:
    text = str(error)
    if text.startswith("cannot connect"):
        return "cannot be reached"
    if text.startswith("no answer within"):
        return f"gave {text}"  # our own timeout, e.g. "no answer within 1s"
    return "broke the HTTP protocol or the connection"
