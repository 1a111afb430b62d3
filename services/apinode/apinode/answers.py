"""How the protocol's own answers leave: refusals as complete JSON answers, and a head held until its body.

Split from protocol.py (which uses them) to keep each file to one concern.
"""

from __future__ import annotations

import asyncio

import orjson

from .errors import ApiError, ServerBusy

_REASONS = {400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class HeadTooLarge(ApiError):
    """The request line or the header section is over its limit."""

    status = 431
    error_type = "RequestHeaderFieldsTooLarge"


class UriTooLong(ApiError):
    """The request line is over its limit."""

    status = 414
    error_type = "UriTooLong"


def answer(error: ApiError, extra: bytes = b"") -> bytes:
    """A complete HTTP/1.1 answer that closes the connection, with the JSON error body."""
    body = orjson.dumps(error.body())
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
        b"dss-api-version: 1\r\nconnection: close\r\n"  # Dataiku sends it on every answer (app.py)
        % (error.status, _REASONS[error.status].encode())
    )
    return head + extra + b"content-length: %d\r\n\r\n" % len(body) + body


class Refused(Exception):
    """Raised from a parser callback to stop reading a request; carries the answer to send."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer


def refusal(max_connections: int):
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


class OneWrite:
    """The transport as a request's answer sees it: the head is held until the body is written,
    so a small answer leaves in one ``send()`` (one TCP segment) instead of two.

    uvicorn writes the head on ``http.response.start`` and the body on ``http.response.body``:
    two system calls per answer, and two segments for the caller to read. The head is let go at
    the next write (the body, joined to it), at close, or when the answer completes (a HEAD
    answer has no body). ``100 Continue`` is never held.
    """

    __slots__ = ("transport", "held")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held + data)
        elif data[:9] == b"HTTP/1.1 " and data[9:12] != b"100" and data[-4:] == b"\r\n\r\n":
            self.held = data
        else:
            self.transport.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str):
        return getattr(self.transport, name)
