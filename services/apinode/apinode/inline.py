"""Answering a request in the protocol, as its last byte arrives, without an ASGI task.

Most requests need nothing to wait for: a lookup of tables held in memory, a score with bundled
enrichment. For those, going through ASGI costs more than the work: a request/response cycle
object, a task and its loop turn, the body handed over as a message, the answer as two more
messages whose headers are checked one by one, then the completion callback. uvicorn's own
machinery was about two thirds of the bare reference's CPU per lookup in-process
(bench/optimizations.md, fifth round).

So the protocol (protocol.py) asks the app for an *inline route* for each request head. When
there is one and the request is plain (POST, a Content-Length within the body limit, no
``Expect: 100-continue``, no request of the connection still being answered, the transport
not pushing back), it keeps the body itself and calls the route with the headers and the body
when the message completes. The route answers through ``write`` as the app's ASGI path
would, byte for byte but in one call, then does its bookkeeping (metrics, query records).

A route that has to wait (enrichment over HTTP, a live database, explanations big enough for a
worker thread, a batch) returns a coroutine instead; the protocol runs it as a task, with a
``Waiting`` stand-in as the connection's cycle until it writes its answer. Still no ASGI
messages. A route that finds out only while answering that it must wait raises ``NotNow``
(inside the app) before it has done anything observable, and is answered by the coroutine
from scratch.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE


class NotNow(Exception):
    """This request needs to wait for something: answer it from a task instead."""


class _Set:
    """Stands in for the cycle's ``message_event``, which the protocol sets on a lost connection."""

    @staticmethod
    def set() -> None:
        pass


class Waiting:
    """The connection's current cycle, as uvicorn's protocol sees it, while an inline route's task
    runs: pipelined requests queue behind it, a lost connection marks it, a graceful shutdown
    closes the connection after its answer, the answer's deadline logic sees it not started."""

    __slots__ = ("keep_alive", "disconnected", "response_started", "response_complete")
    message_event = _Set()

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.disconnected = self.response_started = self.response_complete = False


def answer_bytes(status: int, default_headers: list, headers: list, body: bytes, keep_alive: bool) -> bytes:
    """The whole answer as uvicorn's cycle writes it (status line, default headers, ours), then the body."""
    content = [STATUS_LINE[status]]
    for name, value in default_headers:
        content.extend((name, b": ", value, b"\r\n"))
    for name, value in headers:
        content.extend((name, b": ", value, b"\r\n"))
    if not keep_alive and (b"connection", b"close") not in headers:
        content.append(b"connection: close\r\n")
    content.extend((b"content-length: %d\r\n\r\n" % len(body), body))
    return b"".join(content)
