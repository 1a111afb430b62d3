"""Lookups on another API node service over HTTP: one pooled client, timeouts, its own API key."""

from __future__ import annotations

import base64

import orjson

from .definition import RemoteSpec
from .errors import SourceUnavailable
from .httpclient import HttpError, HttpPool
from .tracing import outgoing_headers


class RemoteService:
    """A client for one remote service's lookup endpoints."""

    def __init__(self, spec: RemoteSpec) -> None:
        self.spec = spec
        token = base64.b64encode(f"{spec.api_key or ''}:".encode()).decode()
        self._client = HttpPool(
            f"{spec.url}/public/api/v1/{spec.name}",
            {"Authorization": f"Basic {token}", "Content-Type": "application/json"},
            spec.max_connections,
            spec.timeout_seconds,
        )
        self.failures = 0
        self.last_error: str | None = None

    async def close(self) -> None:
        await self._client.close()

    async def rows_many(self, endpoint: str, keys: list[dict], tables: list[str] | None = None) -> list:
        """For each key mapping, the matching rows (empty when the remote reports notFound).

        With ``tables`` (a multi-table lookup such as ``profile``), for each key the rows by table.
        """
        single = len(keys) == 1
        body = {"data": keys[0]} if single else {"items": [{"data": key} for key in keys]}
        path = f"/{endpoint}/lookup" if single else f"/{endpoint}/lookup-multi"
        name = f"{self.spec.name}/{endpoint}"
        try:
            status, content = await self._client.post(path, orjson.dumps(body), outgoing_headers())
        except HttpError as error:
            raise self._down(name, str(error)) from None
        if status != 200:
            try:
                reason = orjson.loads(content).get("message", "")
            except (orjson.JSONDecodeError, AttributeError):
                reason = ""
            raise self._down(name, f"answered HTTP {status} {reason}".rstrip())
        try:
            results = orjson.loads(content)["results"]
            rows = [_rows(result, tables) for result in results]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise self._down(name, "answered with an unexpected body") from None
        if len(rows) != len(keys):
            raise self._down(name, f"answered {len(rows)} results for {len(keys)} keys")
        self.last_error = None
        return rows

    def _down(self, name: str, reason: str) -> SourceUnavailable:
        self.failures += 1
        self.last_error = reason
        return SourceUnavailable(
            f"enrichment service {name} unavailable", f"enrichment service {name} {reason}"
        )


def _rows(result: dict, tables: list[str] | None) -> list[dict] | dict[str, list[dict]]:
    if tables is None:
        return [] if result.get("notFound") else [result["data"]]
    missing, data = result.get("notFoundIn", []), result["data"]
    if type(missing) is not list or type(data) is not dict:
        raise TypeError("notFoundIn must be a list and data an object")
    return {table: [] if result.get("notFound") or table in missing else [data] for table in tables}
