"""The service-to-service client's deadline without a timer per call (apinode/httpclient.py).

Each call's deadline is stamped and one sweep per pool fails the late ones, instead of
``asyncio.timeout`` arming and cancelling a timer around every call. These fail if a call to an
upstream that never answers is not cut near its timeout, if the cut connection is used again, if
the sweep does not start again after a quiet spell, or if a caller waiting for a free connection
(all of them busy) waits past its deadline. The upstream is a small asyncio server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from apinode.httpclient import HttpError, HttpPool

TIMEOUT = 0.4
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def upstream(mode: dict):
    """Answers each request at once, or never while ``mode["silent"]`` is set."""
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                if not mode["silent"]:
                    writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


def run(scenario):
    async def bounded():  # a deadline that never fires must fail the test, not hang it
        return await asyncio.wait_for(scenario(), 10)

    return asyncio.run(bounded())


def test_a_silent_upstream_is_cut_near_the_timeout_and_its_connection_not_reused():
    async def scenario():
        mode = {"silent": False}
        server, port, connections = await upstream(mode)
        pool = HttpPool(f"http://127.0.0.1:{port}/x", {}, 4, TIMEOUT)
        assert await pool.post("/a", b"{}") == (200, b"{}")
        mode["silent"] = True
        started = time.monotonic()
        with pytest.raises(HttpError, match=f"no answer within {TIMEOUT:g}s"):
            await pool.post("/a", b"{}")
        waited = time.monotonic() - started
        mode["silent"] = False
        assert await pool.post("/a", b"{}") == (200, b"{}")  # on a new connection
        await pool.close()
        server.close()
        return waited, len(connections)

    waited, opened = run(scenario)
    assert TIMEOUT - 0.05 <= waited <= TIMEOUT * 2 + 0.5, f"cut after {waited:.3f}s (timeout {TIMEOUT}s)"
    assert opened == 2, f"the timed-out connection was used again ({opened} connections opened)"


def test_the_deadline_holds_again_after_a_quiet_spell():
    async def scenario():
        mode = {"silent": False}
        server, port, _ = await upstream(mode)
        pool = HttpPool(f"http://127.0.0.1:{port}/x", {}, 4, TIMEOUT)
        await pool.post("/a", b"{}")
        await asyncio.sleep(3 * TIMEOUT)  # nothing in flight: the sweep has stopped
        mode["silent"] = True
        started = time.monotonic()
        with pytest.raises(HttpError, match="no answer within"):
            await pool.post("/a", b"{}")
        await pool.close()
        server.close()
        return time.monotonic() - started

    waited = run(scenario)
    assert waited <= TIMEOUT * 2 + 0.5, f"the late call was cut only after {waited:.3f}s"


def test_a_caller_waiting_for_a_busy_pool_is_cut_at_its_deadline_too():
    async def scenario():
        server, port, _ = await upstream({"silent": True})
        pool = HttpPool(f"http://127.0.0.1:{port}/x", {}, 1, TIMEOUT)
        first = asyncio.ensure_future(pool.post("/a", b"{}"))  # holds the only connection
        await asyncio.sleep(TIMEOUT / 2)
        started = time.monotonic()
        with pytest.raises(HttpError, match="no answer within"):
            await pool.post("/a", b"{}")  # waits for the slot, then would wait for the answer
        waited = time.monotonic() - started
        with pytest.raises(HttpError):
            await first
        await pool.close()
        server.close()
        return waited

    waited = run(scenario)
    assert waited <= TIMEOUT * 2 + 0.5, f"a caller waiting for a connection waited {waited:.3f}s"
