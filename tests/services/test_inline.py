"""Requests answered inline by the protocol (apinode/inline.py) answer exactly as through ASGI.

The protocol answers a plain request to an in-memory route as its last byte arrives, with no
ASGI task. These drive the real protocol class with the real, started apps on a transport that
records its writes, once with the inline routes and once without, and fail if an answer differs
(status, headers, body; only ``timing`` may), if a request that should be inline starts a task,
if one that must wait (explanations worth a worker thread, predict-multi) does not get its ASGI
cycle, or if the protocol's guarantees (pipelined order, the body deadline's 408, ``Connection:
close``, HTTP/1.0, ``Expect: 100-continue``, a body over the limit, a graceful shutdown mid-body)
are lost on the inline path.

Where the traps come from: uvicorn 0.54's ``httptools_impl.py`` (pinned): a connection's
``cycle`` is the last request's until the next ASGI request replaces it, ``shutdown()`` closes a
connection whose cycle is complete, ``connection_lost`` marks the current cycle only; and
asyncio runs protocol callbacks in the loop's own context, while each task runs in a copy
(docs.python.org/3/library/asyncio-task.html#asyncio.create_task, "context"), so a context
variable set inline outlives the request unless it is reset.
"""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from apinode import tracing
from apinode.definition import Limits
from apinode.protocol import guarded_protocol
from tests.apinode_proc import API_KEY, REPO
from tests.services.inprocess import InProcessService
from tests.services.test_one_write import Recording

AUTH = b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"


class CountingSet(set):
    """uvicorn's set of running request tasks, counting the tasks ever added."""

    started = 0

    def add(self, item) -> None:
        self.started += 1
        super().add(item)


def http_request(path: str, body: bytes | dict, headers: bytes = AUTH + b"Content-Type: application/json\r\n",
            version: bytes = b"1.1") -> bytes:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return b"POST %s HTTP/%s\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n%s" % (
        path.encode(), version, headers, len(data), data)


def drive(app, pieces: list[bytes], inline: bool = True, limits: Limits | None = None, pause: float = 0.0,
          shutdown_after: int | None = None) -> tuple[bytes, bool, int]:
    """Feed ``pieces`` on one connection (the app running between them); all bytes written,
    whether the connection closed, how many ASGI tasks were started."""

    async def run():
        protocol_class = guarded_protocol(limits or app.settings.definition.limits, app.inline if inline else {})
        config = Config(app, http=protocol_class, lifespan="off", access_log=False, log_level="critical")
        config.load()
        state = ServerState()
        state.tasks = CountingSet()
        protocol = protocol_class(config=config, server_state=state, app_state={})
        transport = Recording()
        protocol.connection_made(transport)
        for n, piece in enumerate(pieces):
            protocol.data_received(piece)
            if shutdown_after == n:
                protocol.shutdown()
            for _ in range(20):
                await asyncio.sleep(0)
            await asyncio.sleep(pause)
        for _ in range(200):  # a worker thread's answer (explanations)
            if not state.tasks:
                break
            await asyncio.sleep(0.01)
        closed = transport.closed
        protocol.connection_lost(None)
        return b"".join(transport.writes), closed, state.tasks.started

    return asyncio.run(run())


def answers(raw: bytes) -> list[tuple[bytes, list[bytes], object]]:
    """The answers in ``raw``: status line, header lines (sorted; no date, no length), the JSON body without timing."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = sorted(line.lower() for line in lines[1:] if not line.lower().startswith(b"date:"))
        length = next(int(line.split(b":")[1]) for line in headers if line.startswith(b"content-length:"))
        headers = [line for line in headers if not line.startswith(b"content-length:")]  # timing's digits
        body, raw = rest[:length], rest[length:]
        parsed = json.loads(body) if body else None
        if isinstance(parsed, dict):
            parsed.pop("timing", None)
        out.append((lines[0], headers, parsed))
    return out


FEATURES = [
    ("demographics/lookup", {"data": {"customer_id": "C0000001"}}),
    ("demographics/lookup", {"data": {"customer_id": "C9999999"}}),  # not found
    ("profile/lookup", {"data": {"customer_id": "C0000002"}}),
    ("behavior/lookup-multi", {"items": [{"data": {"customer_id": "C0000003"}}, {"data": {"customer_id": "C0000004"}}]}),
    # Several tables, one row each, merged over the first table's row inline (handlers._result): as the
    # general path merges them, found or not, an item repeated.
    ("profile/lookup-multi", {"items": [{"data": {"customer_id": c}} for c in ("C0000005", "C9999999", "C0000005")]}),
    ("demographics/lookup", {"data": {}}),  # no key
    ("demographics/lookup", {"data": {"customer_id": 7}}),  # a number
    ("demographics/lookup", {"data": {"customer_id": "C0000001"}, "context": "x"}),
    ("demographics/lookup", b'{"data": {'),  # not JSON
    ("demographics/lookup", b"[]"),
]

SCORING = [
    ("high-spender/predict", {"features": {"customer_id": "C0000001"}}),
    ("high-spender/predict", {"features": {"customer_id": "C9999999"}}),
    ("high-spender/predict", {"features": {"customer_id": "C0000001", "shoe_size": 3}}),
    ("high-spender/predict", {"features": {"customer_id": "C0000001"}, "dispatch": {"forcedGeneration": "2"}}),
    ("high-spender/predict", {"features": {}}),
]


@pytest.mark.parametrize("service, path, body", [("features", *case) for case in FEATURES]
                         + [("scoring", *case) for case in SCORING])
def test_an_answer_inline_is_the_asgi_answer_and_starts_no_task(request, service, path, body):
    app = request.getfixturevalue(service).app
    raw = http_request(f"/public/api/v1/customer-{service}/{path}", body)
    inline, closed, tasks = drive(app, [raw])
    through_asgi, asgi_closed, asgi_tasks = drive(app, [raw], inline=False)
    assert answers(inline) == answers(through_asgi)
    assert (closed, tasks, asgi_tasks) == (asgi_closed, 0, 1)


def test_profile_answers_keep_the_columns_in_the_tables_order_inline(features):
    """The inline merge starts from the first table's row: its columns and then the second table's,
    in their declared order, as through ASGI (a JSON object compared as a dict would not see it)."""
    for path, body in (("profile/lookup", {"data": {"customer_id": "C0000002"}}),
                       ("profile/lookup-multi", {"items": [{"data": {"customer_id": "C0000002"}}]})):
        raw = http_request(f"/public/api/v1/customer-features/{path}", body)
        inline, asgi = (drive(features.app, [raw], inline=flag)[0] for flag in (True, False))
        (_, _, inline_answer), (_, _, asgi_answer) = answers(inline) + answers(asgi)
        assert [list(r["data"]) for r in inline_answer["results"]] == [list(r["data"]) for r in asgi_answer["results"]]
        declared = [c.name for t in ("demographics", "behavior") for c in features.app.settings.definition.tables[t].columns]
        assert list(inline_answer["results"][0]["data"]) == list(dict.fromkeys(declared))


def test_refusals_before_the_body_answer_inline_as_through_asgi(features):
    path = "/public/api/v1/customer-features/demographics/lookup"
    body = {"data": {"customer_id": "C0000001"}}
    for headers in (b"Content-Type: application/json\r\n",  # no API key
                    AUTH + b"Content-Type: text/csv\r\n",
                    b"Authorization: Bearer wrong\r\n"):
        raw = http_request(path, body, headers)
        inline, _, tasks = drive(features.app, [raw])
        assert answers(inline) == answers(drive(features.app, [raw], inline=False)[0])
        assert tasks == 0
        assert answers(inline)[0][0] in (b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 403 Forbidden",
                                         b"HTTP/1.1 415 Unsupported Media Type")


def test_explanations_worth_a_worker_thread_are_answered_by_a_task(scoring):
    body = {"features": {"customer_id": "C0000001"},
            "explanations": {"enabled": True, "method": "SHAPLEY", "nMonteCarloSteps": 100}}
    raw = http_request("/public/api/v1/customer-scoring/high-spender/predict", body)
    inline, _, tasks = drive(scoring.app, [raw])
    (status, _, answer), = answers(inline)
    assert status == b"HTTP/1.1 200 OK" and answer["result"]["explanations"]
    assert answers(inline) == answers(drive(scoring.app, [raw], inline=False)[0])
    assert tasks == 1  # the route's task, which ran the explanation on a worker thread


def test_predict_multi_is_answered_by_a_task_as_through_asgi(scoring):
    raw = http_request("/public/api/v1/customer-scoring/high-spender/predict-multi",
                  {"items": [{"features": {"customer_id": "C0000001"}}, {"features": {"customer_id": "C0000002"}}]})
    inline, _, tasks = drive(scoring.app, [raw])
    assert answers(inline) == answers(drive(scoring.app, [raw], inline=False)[0])
    assert answers(inline)[0][0] == b"HTTP/1.1 200 OK" and tasks == 1


def test_a_request_pipelined_behind_a_task_waits_for_its_answer(scoring):
    """The task's stand-in cycle (inline.Waiting) holds the next request back: answers keep their order."""
    multi = http_request("/public/api/v1/customer-scoring/high-spender/predict-multi",
                    {"items": [{"features": {"customer_id": "C0000001"}}]})
    one = http_request("/public/api/v1/customer-scoring/high-spender/predict", {"features": {"customer_id": "C0000002"}})
    written, closed, _ = drive(scoring.app, [multi + one + multi])
    got = [sorted(answer) for _, _, answer in answers(written)]
    assert got == [["apiContext", "results"], ["apiContext", "result"], ["apiContext", "results"]] and not closed


def test_a_connection_lost_while_a_task_answers_gets_no_write(scoring):
    body = {"features": {"customer_id": "C0000001"},
            "explanations": {"enabled": True, "method": "SHAPLEY", "nMonteCarloSteps": 100}}
    raw = http_request("/public/api/v1/customer-scoring/high-spender/predict", body)

    async def run() -> tuple[list, bool]:
        app = scoring.app
        protocol_class = guarded_protocol(app.settings.definition.limits, app.inline)
        config = Config(app, http=protocol_class, lifespan="off", access_log=False, log_level="critical")
        config.load()
        state = ServerState()
        protocol = protocol_class(config=config, server_state=state, app_state={})
        transport = Recording()
        protocol.connection_made(transport)
        protocol.data_received(raw)
        protocol.connection_lost(None)  # the caller gave up while the explanation runs
        tasks = list(state.tasks)
        await asyncio.gather(*tasks)
        return transport.writes, bool(tasks)

    writes, had_task = asyncio.run(run())
    assert had_task and writes == []


def test_pipelined_inline_requests_are_answered_in_order(features):
    keys = [f"C000000{n}" for n in range(1, 6)]
    raws = b"".join(http_request("/public/api/v1/customer-features/demographics/lookup", {"data": {"customer_id": key}})
                    for key in keys)
    raw, closed, tasks = drive(features.app, [raws])
    got = [answer["results"][0]["data"]["customer_id"] for _, _, answer in answers(raw)]
    assert (got, closed, tasks) == (keys, False, 0)


def test_a_body_that_stops_coming_gets_the_408_and_a_close_after_an_asgi_answer_too(features):
    """The late answer is written only while no answer of the connection's cycle has started; an
    inline request has no cycle of its own, so the previous request's (answered) must not count."""
    limits = Limits(body_timeout_seconds=0.2)
    raw = http_request("/public/api/v1/customer-features/demographics/lookup", {"data": {"customer_id": "C0000001"}})
    for before in ([], [b"GET /isAlive HTTP/1.1\r\nHost: t\r\n\r\n"]):
        written, closed, _ = drive(features.app, [*before, raw[:-5]], limits=limits, pause=0.6)
        assert b"HTTP/1.1 408 " in written and b"body not received in time" in written
        assert closed


def test_connection_close_and_http_1_0_close_after_the_answer(features):
    body = {"data": {"customer_id": "C0000001"}}
    path = "/public/api/v1/customer-features/demographics/lookup"
    for raw in (http_request(path, body, AUTH + b"Connection: close\r\n"), http_request(path, body, AUTH, version=b"1.0")):
        written, closed, tasks = drive(features.app, [raw])
        assert answers(written)[0][0].endswith(b" 200 OK") and b"connection: close" in written.lower()
        assert closed and tasks == 0


def test_expect_100_continue_and_a_body_over_the_limit_go_through_asgi(features):
    path = "/public/api/v1/customer-features/demographics/lookup"
    raw = http_request(path, {"data": {"customer_id": "C0000001"}}, AUTH + b"Expect: 100-continue\r\n")
    written, _, tasks = drive(features.app, [raw])
    assert written.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK") and tasks == 1
    big = http_request(path, b'{"data": {"customer_id": "C0000001"}, "x": "' + b"y" * 2_000_000 + b'"}')
    written, closed, tasks = drive(features.app, [big])
    assert written.startswith(b"HTTP/1.1 413 ") and closed and tasks == 1


def test_a_graceful_shutdown_mid_body_answers_then_closes(features):
    raw = http_request("/public/api/v1/customer-features/demographics/lookup", {"data": {"customer_id": "C0000001"}})
    written, closed, _ = drive(features.app, [raw[:-5], raw[-5:]], shutdown_after=0)
    assert answers(written)[0][0] == b"HTTP/1.1 200 OK" and b"connection: close" in written and closed


def test_an_inline_answer_leaves_no_trace_id_behind_in_the_event_loops_context(features):
    """Inline code runs in the protocol's context, not a task's copy: a trace left set there would
    tag every later log line of the loop (the sweep, a refresh) with an old request's trace id."""
    raw = http_request("/public/api/v1/customer-features/demographics/lookup", {"data": {"customer_id": "C0000001"}},
                  AUTH + b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n")

    async def run() -> object:
        protocol_class = guarded_protocol(features.app.settings.definition.limits, features.app.inline)
        config = Config(features.app, http=protocol_class, lifespan="off", access_log=False, log_level="critical")
        config.load()
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = Recording()
        protocol.connection_made(transport)
        protocol.data_received(raw)
        assert b" 200 OK" in transport.writes[0]
        protocol.connection_lost(None)
        return tracing.current.get()

    assert asyncio.run(run()) is None


def test_a_tree_ice_explanation_is_inline_and_remote_enrichment_never_is():
    """The committed model's ICE is one model run (treeice.py): inline. Enrichment over HTTP waits
    for customer-features, so with it the predict route is not inline at all."""
    bundled = InProcessService(REPO / "services" / "customer-scoring", {"APINODE_ENRICHMENT": "bundled"})
    body = {"features": {"customer_id": "C0000001"}, "explanations": {"enabled": True, "method": "ICE"}}
    raw = http_request("/public/api/v1/customer-scoring/high-spender/predict", body)
    inline, _, tasks = drive(bundled.app, [raw])
    assert answers(inline) == answers(drive(bundled.app, [raw], inline=False)[0])
    assert answers(inline)[0][2]["result"]["explanations"] and tasks == 0
    remote = InProcessService(REPO / "services" / "customer-scoring", {
        "APINODE_ENRICHMENT": "remote", "APINODE_FEATURES_URL": "http://127.0.0.1:9", "APINODE_FEATURES_API_KEY": "k"})
    body = {"features": {"customer_id": "C0000001"}}
    raw = http_request("/public/api/v1/customer-scoring/high-spender/predict", body)
    later, _, tasks = drive(remote.app, [raw])
    assert answers(later) == answers(drive(remote.app, [raw], inline=False)[0])
    assert answers(later)[0][0] == b"HTTP/1.1 503 Service Unavailable" and tasks == 1  # nobody on port 9
