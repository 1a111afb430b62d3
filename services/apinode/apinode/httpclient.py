"""A minimal keep-alive HTTP/1.1 client for calling other apinode services.

Only what one apinode needs from another: POST with a JSON body, a response with
Content-Length, connections reused. A general client (httpx) costs about 1 ms of CPU
per call here, more than the whole lookup it asks for; this costs a few tens of µs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import urlsplit


class HttpError(Exception):
    """The exchange failed: connection refused or reset, a timeout, or a response we cannot read."""


class _Connection:
    """One open connection."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """Up to ``max_connections`` keep-alive connections to one origin; each call bounded by ``timeout``."""

    def __init__(self, base_url: str, headers: dict[str, str], max_connections: int, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http://host:port URLs are supported, got {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._prefix = parts.path.rstrip("/")
        host_header = f"{self._host}:{self._port}"
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host_header, **headers}.items()).encode(
            "latin-1"
        )
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._timeout = timeout

    async def post(self, path: str, body: bytes, extra_headers: bytes = b"") -> tuple[int, bytes]:
        """(status, body) of ``POST <base path><path>``; ``extra_headers``: whole lines (a traceparent)."""
        request = (
            f"POST {self._prefix}{path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n".encode("latin-1")
            + extra_headers
            + self._head
            + b"\r\n"
            + body
        )
        try:
            async with asyncio.timeout(self._timeout):
                async with self._slots:
                    return await self._exchange(request)
        except TimeoutError:
            raise HttpError(f"no answer within {self._timeout:g}s") from None

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        while self._idle:
            connection = self._idle.pop()
            try:
                return await self._send(connection, request)
            except (OSError, asyncio.IncompleteReadError, HttpError):
                # The server may close an idle connection at any time: a lookup is safe to resend.
                connection.close()
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as error:
            raise HttpError(f"cannot connect ({error.strerror or type(error).__name__})") from None
        try:
            return await self._send(_Connection(reader, writer), request)
        except (OSError, asyncio.IncompleteReadError) as error:
            writer.close()
            raise HttpError(f"connection lost ({type(error).__name__})") from None

    async def _send(self, connection: _Connection, request: bytes) -> tuple[int, bytes]:
        connection.writer.write(request)
        try:
            head = await connection.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            connection.close()
            raise HttpError("response headers too large") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            connection.close()
            raise HttpError(f"not an HTTP response: {lines[0][:60]!r}") from None
        length, keep_alive = None, True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep_alive = False
        if length is None:
            connection.close()
            raise HttpError("response without Content-Length")
        body = await connection.reader.readexactly(length)
        if keep_alive:
            self._idle.append(connection)
        else:
            connection.close()
        return status, body

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
