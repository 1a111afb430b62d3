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

A route that finds it must wait after all (explanations big enough for a worker thread, a
table not in memory) raises ``NotNow`` before it has done anything observable; the protocol
then starts the usual ASGI cycle with the body already received, and the app answers the
request from scratch.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE


class NotNow(Exception):
    """This request needs to wait for something: answer it through ASGI instead."""


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
