"""The profile answer crosses a socket: its per-table not-found list is read, and a malformed one is
the enrichment service misbehaving (503), never a crash or a silent mis-enrichment."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from apinode.definition import RemoteSpec
from apinode.errors import SourceUnavailable
from apinode.loader import load_definition
from apinode.remote import RemoteService, expected_tables
from tests.apinode_proc import SCORING_DIR

# The tables customer-scoring declares for what customer-features answers: rows are checked
# against them (issue 15), so the fake's rows carry every declared column.
DEFINITION = load_definition(SCORING_DIR, {"APINODE_FEATURES_API_KEY": "k"})
DEMOGRAPHICS = {c.name: None for c in DEFINITION.tables["demographics"].columns}
BEHAVIOR = {c.name: None for c in DEFINITION.tables["behavior"].columns}


async def _serve(answer: dict):
    body = orjson.dumps(answer)

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        writer.write(head % len(body))
        writer.write(body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _ask(answer: dict, tables):
    server = await _serve(answer)
    port = server.sockets[0].getsockname()[1]
    remote = RemoteService(
        RemoteSpec("customer-features", f"http://127.0.0.1:{port}", "k", 2.0, 2),
        expected_tables(DEFINITION, "customer-features"),
    )
    try:
        return await remote.rows_many("profile", [{"customer_id": "C0000001"}], tables)
    finally:
        await remote.close()
        server.close()
        await server.wait_closed()


def test_profile_rows_are_split_by_the_tables_it_found():
    data = {**BEHAVIOR, **DEMOGRAPHICS, "customer_id": "C0000001", "gender": "F"}
    answer = {"results": [{"data": data, "notFound": False, "notFoundIn": ["behavior"]}]}
    (rows,) = asyncio.run(_ask(answer, ["demographics", "behavior"]))
    assert rows == {"demographics": [{**DEMOGRAPHICS, "customer_id": "C0000001", "gender": "F"}], "behavior": []}


@pytest.mark.parametrize(
    "result",
    [
        {"data": {"customer_id": "C0000001"}, "notFound": False, "notFoundIn": "behavior"},
        {"data": ["C0000001"], "notFound": False, "notFoundIn": []},
    ],
    ids=["notFoundIn not a list", "data not an object"],
)
def test_a_malformed_profile_answer_is_the_peer_unavailable(result):
    with pytest.raises(SourceUnavailable) as error:
        asyncio.run(_ask({"results": [result]}, ["demographics", "behavior"]))
    assert error.value.status == 503 and "answered" in error.value.detail
