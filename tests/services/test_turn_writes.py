"""Inline answers of one turn of the event loop leave together at its end, but the turn's first.

Why (apinode/protocol.py, ``end_turn``): a write wakes the caller waiting to read, and on loopback
(a mesh's sidecar proxy, the bench's load generator) the writer pays for that wake-up in its
write system call. Answered one by one between the handling of the next requests, eight
keep-alive callers were woken 0.96 times per answer; held to the end of the turn, the answers
leave back to back and wake them about once for all (bench/optimizations.md, ninth round).

The traps of holding an answer, each tested here: an answer held on a connection must leave
before anything else written to that connection (a refusal of its next, pipelined request, a
read deadline's 408) and before it is closed (eviction to make room, a graceful shutdown), or
the caller gets answers out of order or loses one; a connection lost meanwhile gets no write;
and the turn's first answer must still leave at once, or a lone caller waits a turn longer.
"""

from __future__ import annotations

import asyncio

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from apinode.definition import Limits
from apinode.protocol import guarded_protocol
from tests.apinode_proc import REPO
from tests.services.inprocess import InProcessService
from tests.services.test_inline import answers, http_request
from tests.services.test_one_write import Recording

LOOKUP = "/public/api/v1/customer-features/demographics/lookup"


@pytest.fixture(scope="module")
def features():
    return InProcessService(REPO / "services" / "customer-features")


def lookup(key: str) -> bytes:
    return http_request(LOOKUP, {"data": {"customer_id": key}})


def connections(app, count: int, limits: Limits | None = None):
    """``count`` connections to one server (one protocol class, as one uvicorn server has)."""
    protocol_class = guarded_protocol(limits or app.settings.definition.limits, app.inline)
    config = Config(app, http=protocol_class, lifespan="off", access_log=False, log_level="critical")
    config.load()
    state = ServerState()
    made = []
    for _ in range(count):
        protocol = protocol_class(config=config, server_state=state, app_state={})
        transport = Recording()  # a caller on 127.0.0.1
        protocol.connection_made(transport)
        made.append((protocol, transport))
    return made


def keys_in(raw: bytes) -> list[str]:
    return [answer["results"][0]["data"]["customer_id"] for _, _, answer in answers(raw) if answer and "results" in answer]


def keys_answered(transport: Recording) -> list[str]:
    return keys_in(b"".join(transport.writes))


async def next_turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_the_turns_first_answer_leaves_at_once_the_others_together_at_its_end(features):
    async def run():
        made = connections(features.app, 4)
        for n, (protocol, _) in enumerate(made):  # four callers' requests read in one turn
            protocol.data_received(lookup(f"C000000{n + 1}"))
        during = [len(transport.writes) for _, transport in made]
        await next_turn()
        after = [keys_answered(transport) for _, transport in made]
        # The next turn starts over: its first answer leaves at once again.
        made[2][0].data_received(lookup("C0000009"))
        again = len(made[2][1].writes)
        return during, after, again

    during, after, again = asyncio.run(run())
    assert during == [1, 0, 0, 0], "the first answer at once, the three others held"
    assert after == [["C0000001"], ["C0000002"], ["C0000003"], ["C0000004"]]
    assert again == 2


def test_pipelined_answers_held_in_one_turn_leave_in_order_in_one_write(features):
    async def run():
        (first, _), (protocol, transport) = connections(features.app, 2)
        first.data_received(lookup("C0000001"))  # takes the turn's first write
        protocol.data_received(b"".join(lookup(f"C000000{n}") for n in range(2, 6)))
        held = list(transport.writes)
        await next_turn()
        return held, transport

    held, transport = asyncio.run(run())
    assert held == [] and len(transport.writes) == 1
    assert keys_answered(transport) == ["C0000002", "C0000003", "C0000004", "C0000005"]


def test_a_held_answer_leaves_before_the_refusal_of_the_next_request_on_its_connection(features):
    """A good request then a malformed one in the same bytes: the 200, then the 400 and the close.
    Written at once, the refusal would overtake the held answer, which then finds the connection
    closed and is lost."""

    async def run():
        (first, _), (protocol, transport) = connections(features.app, 2)
        first.data_received(lookup("C0000001"))
        protocol.data_received(lookup("C0000002") + b"BOGUS /x HTTP/1.1\r\n\r\n")
        await next_turn()
        return b"".join(transport.writes), transport.closed

    written, closed = asyncio.run(run())
    statuses = [status for status, _, _ in answers(written)]
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request"] and closed
    assert keys_in(written.split(b"HTTP/1.1 400")[0]) == ["C0000002"]


def test_a_held_answer_leaves_before_its_connection_is_closed_by_a_graceful_shutdown(features):
    async def run():
        (first, _), (protocol, transport) = connections(features.app, 2)
        first.data_received(lookup("C0000001"))
        protocol.data_received(lookup("C0000002"))
        protocol.shutdown()  # uvicorn's, on SIGTERM: closes a connection whose answer is complete
        await next_turn()
        return transport

    transport = asyncio.run(run())
    assert keys_answered(transport) == ["C0000002"] and transport.closed


def test_a_held_answer_leaves_before_its_idle_connection_is_evicted_for_a_newcomer(features):
    """Near the connection limit the longest-idle connection is closed to make room; a connection
    answered in this turn is idle at once, and its answer must reach it before the close."""
    limits = Limits(max_connections=4, max_connections_per_client=10)  # evicts from the 4th on

    async def run():
        (victim, transport), (first, _), (busy, _) = connections(features.app, 3, limits)
        busy.data_received(lookup("C0000003")[:20])  # mid-head: not idle
        first.data_received(lookup("C0000001") + lookup("C0000004")[:20])  # the turn's first; then mid-head
        victim.data_received(lookup("C0000002"))  # held, and the only idle connection
        newcomer = type(victim)(config=victim.config, server_state=victim.server_state, app_state={})
        newcomer.connection_made(Recording())
        closed_then = transport.closed
        await next_turn()
        return closed_then, transport

    closed_then, transport = asyncio.run(run())
    assert closed_then, "the idle connection was evicted"
    assert keys_answered(transport) == ["C0000002"]


def test_a_connection_lost_while_its_answer_is_held_gets_no_write(features):
    async def run():
        (first, _), (protocol, transport) = connections(features.app, 2)
        first.data_received(lookup("C0000001"))
        protocol.data_received(lookup("C0000002"))
        protocol.connection_lost(ConnectionResetError(104, "Connection reset by peer"))  # uvicorn closes nothing then
        await next_turn()
        return transport.writes

    assert asyncio.run(run()) == []


def test_a_held_answer_whose_write_fails_closes_its_connection_and_the_others_still_leave(features):
    class Refusing(Recording):
        def write(self, data: bytes) -> None:
            raise RuntimeError("the transport refuses the write")

    async def run():
        (first, _), (last, transport) = connections(features.app, 2)
        broken = type(first)(config=first.config, server_state=first.server_state, app_state={})
        refusing = Refusing()
        broken.connection_made(refusing)  # the same server's connection, on a transport failing its writes
        first.data_received(lookup("C0000001"))
        broken.data_received(lookup("C0000002"))
        last.data_received(lookup("C0000003"))
        await next_turn()
        return refusing.closed, transport

    closed, transport = asyncio.run(run())
    assert closed and keys_answered(transport) == ["C0000003"]
