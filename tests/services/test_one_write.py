"""An answer leaves in one write: the head is held until its body (apinode/answers.py, OneWrite).

uvicorn writes an answer's head on ``http.response.start`` and its body on
``http.response.body``: two ``send()`` system calls and two TCP segments for every answer, which
the caller (customer-scoring's client, on the two-hop path) then reads as two. These drive the
runtime's protocol class with a transport that records each write, and fail if an answer is
split again, if a head with no body to follow (HEAD, an app that gives up) is never sent, or if
``100 Continue`` waits for the answer it is meant to precede.
"""

from __future__ import annotations

import asyncio

from uvicorn.config import Config
from uvicorn.server import ServerState

from apinode.definition import Limits
from apinode.protocol import guarded_protocol

BODY = b'{"results":[]}'


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def answer(scope, receive, send) -> None:
    await receive()
    if scope["path"] == "/gives-up":  # starts its answer, then fails before the body
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        raise RuntimeError("planted failure")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]})
    await send({"type": "http.response.body", "body": BODY})


def feed(*pieces: bytes) -> tuple[list[list[bytes]], bool]:
    """Feed the pieces on one connection, letting the app run after each; the writes the
    transport had seen after each piece, and whether it closed."""

    async def run() -> tuple[list[list[bytes]], bool]:
        protocol_class = guarded_protocol(Limits())
        config = Config(answer, http=protocol_class, lifespan="off", access_log=False, log_level="critical")
        config.load()
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = Recording()
        protocol.connection_made(transport)
        seen = []
        for piece in pieces:
            protocol.data_received(piece)
            for _ in range(5):
                await asyncio.sleep(0)
            seen.append(list(transport.writes))
        closed = transport.closed
        protocol.connection_lost(None)
        return seen, closed

    return asyncio.run(run())


def exchange(*requests: bytes) -> tuple[list[bytes], bool]:
    """Feed whole requests; every write the transport saw, and whether it closed."""
    seen, closed = feed(*requests)
    return seen[-1], closed


def post(path: bytes = b"/lookup", extra: bytes = b"", body: bytes = b"{}") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body) + extra
            + b"\r\n" + body)


def test_an_answer_is_one_write_with_its_head_and_body():
    writes, _ = exchange(post())
    assert len(writes) == 1, f"the answer took {len(writes)} writes: {writes}"
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == BODY, writes


def test_each_answer_on_a_keep_alive_connection_is_one_write():
    writes, closed = exchange(post(), post(), post())
    assert len(writes) == 3 and all(w.startswith(b"HTTP/1.1 200 ") and w.endswith(BODY) for w in writes), writes
    assert not closed


def test_a_head_answer_without_a_body_is_still_sent():
    request = b"HEAD /lookup HTTP/1.1\r\nHost: x\r\n\r\n"
    writes, _ = exchange(request)
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 "), writes
    assert writes[0].endswith(b"\r\n\r\n"), f"a HEAD answer carries no body: {writes}"


def test_a_head_whose_body_never_comes_is_sent_before_the_connection_closes():
    writes, closed = exchange(post(b"/gives-up"))
    assert closed, "an answer cut short must close the connection"
    assert writes and writes[0].startswith(b"HTTP/1.1 200 "), f"the held head was lost: {writes}"


def test_100_continue_is_not_held_until_the_answer():
    head = b"POST /lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    (before_body, writes), _ = feed(head, b"{}")
    assert before_body == [b"HTTP/1.1 100 Continue\r\n\r\n"], f"before the body the caller saw {before_body}"
    assert len(writes) == 2 and writes[1].startswith(b"HTTP/1.1 200 ") and writes[1].endswith(BODY), writes
