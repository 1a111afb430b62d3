"""A small keep-alive HTTP/1.1 client for calling other apinode services, trusting nothing it reads.

Only what one apinode needs from another: POST with a JSON body, connections reused. Responses
are parsed by llhttp (httptools, already the server's parser) and bounded everywhere: the head
(size, header count), exactly one digits-only Content-Length or a chunked body, the body size.
A connection is reused only if it is idle and clean: a byte arriving while no request is
outstanding (an extra response, say) marks it broken at once, so an answer can never be read
as the answer to a later request. Any violation is an ``HttpError`` and the connection is
closed. A general client (httpx) costs about 1 ms of CPU per call here, more than the whole
lookup it asks for; this costs a few tens of µs (bench/client_micro.py).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from urllib.parse import urlsplit

import httptools

from .deadlines import Deadlines
from .sources import release_memory

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64
_TRIM_AFTER_BYTES = 1 << 20  # a refused answer this large left freed memory worth returning
_PEEK = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)  # an int: IntFlag's | is a Python call each time
_trimmed_at = float("-inf")


class HttpError(Exception):
    """The exchange failed: connection refused or reset, a timeout, or a response we cannot trust."""


class _Stale(HttpError):
    """A reused connection closed before any byte of the answer (the server timed it out): resend."""


class _Late(HttpError):
    """The answer did not come by the call's deadline."""


class _Violation(Exception):
    """Raised inside a parser callback: the response breaks a rule."""


class _Connection(asyncio.Protocol):
    """One connection and the parse of the response it is waiting for."""

    def __init__(self, max_body: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.broken = False
        self.reason = "closed"
        self._max_body = max_body
        self._waiter: asyncio.Future | None = None
        self._received = 0
        self._complete = True
        self._peek: socket.socket | None = None

    # Exchange -------------------------------------------------------------------------------

    def reusable(self) -> bool:
        return not self.broken and self.transport is not None and not self.transport.is_closing()

    def clean(self) -> bool:
        """Reusable, and nothing waiting in the kernel that the event loop has not delivered yet."""
        if not self.reusable():
            return False
        if self._peek is not None:
            try:
                waiting = self._peek.recv(1, _PEEK)
            except BlockingIOError:
                return True
            except OSError:
                waiting = b""
            self.close("unsolicited bytes from the server" if waiting else "closed by the server")
            return False
        return True

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self._waiter = asyncio.get_running_loop().create_future()
        self._received = self._head = self._headers = self._lengths = 0
        self._in_head, self._chunked, self._keep_alive, self._complete = True, False, True, False
        # One growing buffer rather than a list of pieces: a large one is a single mapping that goes
        # back to the system when freed, where thousands of 64 KiB pieces fragment the heap.
        self._body = bytearray()
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None
            if not self._complete:  # cancelled (timeout) or failed half-way: the stream is unknown
                self.close("abandoned mid-answer")
            elif not self._keep_alive:
                self.close("closed by the server")

    def close(self, reason: str) -> None:
        if not self.broken:
            self.broken, self.reason = True, reason
        if self._peek is not None:
            self._peek.detach()  # the transport owns the descriptor
            self._peek = None
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: HttpError) -> None:
        self.close(str(error))
        if len(self._body) >= _TRIM_AFTER_BYTES:
            self._body = bytearray()
            _give_back_memory()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    # asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A view of the transport's descriptor (not a duplicate) to peek before each reuse.
            self._peek = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done() or self.broken:
            # Bytes no request asked for: reading them later would shift every answer by one.
            self.close("unsolicited bytes from the server")
            return
        self._received += len(data)
        if self._in_head:
            self._head += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            cause = error.__context__
            reason = str(cause) if isinstance(cause, _Violation) else f"malformed response ({error})"
            self._fail(HttpError(reason))
            return
        if self._in_head and self._head > MAX_HEAD_BYTES:
            self._fail(HttpError(f"response head over {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self._peek is not None:
            self._peek.detach()
            self._peek = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._received == 0:
                waiter.set_exception(_Stale("connection closed before the answer"))
            else:
                waiter.set_exception(HttpError("connection closed mid-answer"))

    # llhttp callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise _Violation("unsolicited second response on the connection")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > MAX_HEADERS:
            raise _Violation(f"more than {MAX_HEADERS} response headers")
        name = name.lower()
        if name == b"content-length":
            self._lengths += 1
            digits = value.strip()
            if not digits.isdigit():  # llhttp also refuses it; no sign, no spaces inside
                raise _Violation("a Content-Length that is not digits")
            if len(digits) > 12 or int(digits) > self._max_body:  # refused before any of the body
                raise _Violation(f"a declared body over {self._max_body} bytes")
        elif name == b"transfer-encoding":
            self._chunked = value.strip().lower() == b"chunked"
        elif name == b"connection" and value.strip().lower() == b"close":
            self._keep_alive = False

    def on_headers_complete(self) -> None:
        self._in_head = False
        status = self.parser.get_status_code()
        if status < 200:
            raise _Violation(f"interim or invalid status {status}")
        if self._lengths > 1:
            raise _Violation("several Content-Length headers")
        if self._lengths == 0 and not self._chunked:
            raise _Violation("a response with neither Content-Length nor chunked body")
        if self._lengths and self._chunked:
            raise _Violation("both Content-Length and chunked")
        self._status = status
        if not self.parser.should_keep_alive():
            self._keep_alive = False

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > self._max_body:
            raise _Violation(f"response body over {self._max_body} bytes")
        self._body += body

    def on_message_complete(self) -> None:
        self._complete = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, bytes(self._body)))


def _give_back_memory() -> None:
    """glibc keeps the freed pieces of a refused huge answer; return them, at most once a second."""
    global _trimmed_at
    now = time.monotonic()
    if now - _trimmed_at >= 1.0:
        _trimmed_at = now
        release_memory()


class HttpPool:
    """Up to ``max_connections`` keep-alive connections to one origin; each call bounded by ``timeout``."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        max_connections: int,
        timeout: float,
        max_body: int = 4 * 1024 * 1024,
    ) -> None:
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
        self._max_body = max_body
        self._late = f"no answer within {timeout:g}s"
        # Exchanges in flight, cut at their deadline by one sweep (deadlines.py): a late answer is
        # cut at most timeout / 8 late, with no timer per call.
        self._deadlines = Deadlines(min(max(timeout / 8, 0.01), 0.25), self._cut)

    async def post(self, path: str, body: bytes, extra_headers: bytes = b"",
                   since: float | None = None) -> tuple[int, bytes]:
        """(status, body) of ``POST <base path><path>``; ``extra_headers``: whole lines (a traceparent);
        ``since``: the loop time the call's timeout counts from (default: now)."""
        request = (
            f"POST {self._prefix}{path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n".encode("latin-1")
            + extra_headers
            + self._head
            + b"\r\n"
            + body
        )
        loop = asyncio.get_running_loop()
        # The whole call: a free connection, connect, answer (and what the caller waited before).
        deadline = (loop.time() if since is None else since) + self._timeout
        try:
            if self._slots.locked():  # every connection busy: waiting for one counts too
                async with asyncio.timeout_at(deadline):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()
            try:
                return await self._exchange(request, loop, deadline)
            finally:
                self._slots.release()
        except TimeoutError:
            raise HttpError(self._late) from None

    async def _exchange(self, request: bytes, loop, deadline: float) -> tuple[int, bytes]:
        while self._idle:
            connection = self._idle.pop()
            if not connection.clean():  # checked before reuse: unsolicited bytes, closed
                connection.close(connection.reason)
                continue
            try:
                return self._keep(connection, await self._answer(connection, request, loop, deadline))
            except _Stale:
                continue  # the server closed an idle connection: a lookup is safe to resend
        try:
            async with asyncio.timeout_at(deadline):  # a timer only when a connection is opened
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._max_body), self._host, self._port
                )
        except OSError as error:
            raise HttpError(f"cannot connect ({error.strerror or type(error).__name__})") from None
        try:
            return self._keep(connection, await self._answer(connection, request, loop, deadline))
        except _Stale:
            raise HttpError("connection closed before the answer") from None

    async def _answer(self, connection: _Connection, request: bytes, loop, deadline: float) -> tuple[int, bytes]:
        """One exchange, cut at ``deadline`` by the sweep (no timer of its own)."""
        if deadline <= loop.time():
            raise TimeoutError
        self._deadlines.arm(connection, deadline, loop)
        try:
            return await connection.exchange(request)
        finally:
            self._deadlines.disarm(connection)

    def _cut(self, connection: _Connection) -> None:
        connection._fail(_Late(self._late))

    def _keep(self, connection: _Connection, answer: tuple[int, bytes]) -> tuple[int, bytes]:
        if connection.reusable():
            self._idle.append(connection)
        return answer

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close("pool closed")
