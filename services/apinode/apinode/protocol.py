"""uvicorn's httptools protocol with deadlines on reading each request: its head, then its body.

uvicorn bounds idle keep-alive connections but not a request that arrives a byte at a
time: without this a few slow clients hold connections for ever. Kept here rather than
in the app because a timer per request costs far less in the protocol (two C-level
timer calls) than an asyncio timeout around the app's ``receive`` (about 5 µs).
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import RequestTimeout, ServerBusy


def _answer(error: RequestTimeout) -> bytes:
    body = orjson.dumps(error.body())
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"dss-api-version: 1\r\nconnection: close\r\n"  # Dataiku sends it on every answer (app.py)
    )
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def _refusal(max_connections: int):
    """An ASGI app answering the JSON 503 of a full server (uvicorn's own answer is plain text)."""
    error = ServerBusy(
        "too many connections", f"the server holds at most {max_connections} connections; retry"
    )
    body = orjson.dumps(error.body())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"retry-after", b"1"),
        (b"dss-api-version", b"1"),
    ]

    async def refuse(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


def guarded_protocol(
    head_timeout: float, body_timeout: float, max_connections: int
) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` setting, with these read deadlines and connection limit."""
    refuse = _refusal(max_connections)
    head_answer = _answer(
        RequestTimeout(
            "request headers not received in time",
            f"the request line and headers must arrive within {head_timeout:g}s",
        )
    )
    body_answer = _answer(
        RequestTimeout(
            "body not received in time", f"the body must arrive within {body_timeout:g}s after the headers"
        )
    )

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """Answers 408 and closes when a request's head or body is late; silent connections just close."""

        _timer: asyncio.TimerHandle | None = None
        _late_answer: bytes | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(head_timeout, None)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(head_timeout, head_answer)

        def on_headers_complete(self) -> None:
            if len(self.connections) > max_connections or len(self.tasks) >= max_connections:
                app, self.app = self.app, refuse
                try:
                    super().on_headers_complete()
                finally:
                    self.app = app
            else:
                super().on_headers_complete()
            self._arm(body_timeout, body_answer)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, seconds: float, answer: bytes | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._late_answer = answer
            self._timer = self.loop.call_later(seconds, self._timed_out)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            # Answer only if the app has not started its own answer (it may have refused early, e.g. 413).
            if self._late_answer is not None and (cycle is None or not cycle.response_started):
                self.transport.write(self._late_answer)
            self.transport.close()

    return GuardedHttpToolsProtocol
