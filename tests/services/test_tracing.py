"""W3C trace context parsing (https://www.w3.org/TR/trace-context/ section 3.2) and the trace id in
log lines; the header's journey between services is in test_query_log.py."""

from __future__ import annotations

import io
import logging

import pytest

from apinode import tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_a_valid_traceparent_is_continued_with_a_span_of_our_own():
    trace = tracing.from_header(f"00-{TRACE}-{PARENT}-01".encode())
    assert (trace.trace_id, trace.parent_id, trace.flags) == (TRACE, PARENT, "01")
    assert len(trace.span_id) == 16 and trace.span_id != PARENT
    assert trace.traceparent() == f"00-{TRACE}-{trace.span_id}-01"


def test_a_later_version_with_more_fields_is_read_as_version_00():
    trace = tracing.from_header(f"01-{TRACE}-{PARENT}-00-future".encode())
    assert trace.trace_id == TRACE and trace.sampled is False


@pytest.mark.parametrize("header", [
    None, b"", b"garbage",
    f"ff-{TRACE}-{PARENT}-01".encode(),                # version ff is invalid
    f"00-{'0' * 32}-{PARENT}-01".encode(),             # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01".encode(),              # all-zero parent id
    f"00-{TRACE.upper()}-{PARENT}-01".encode(),        # upper-case hex
    f"00-{TRACE}-{PARENT}-01-extra".encode(),          # version 00 has exactly four fields
])
def test_an_absent_or_invalid_traceparent_starts_a_new_trace(header):
    trace = tracing.from_header(header)
    assert trace.trace_id != TRACE and len(trace.trace_id) == 32 and trace.parent_id is None
    assert trace.flags == "01"


def test_log_lines_carry_the_trace_id_of_the_request_being_served():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s trace=%(trace_id)s: %(message)s"))
    handler.addFilter(tracing.TraceLogFilter())
    logger = logging.getLogger("apinode-test-tracing")
    logger.addHandler(handler)
    try:
        logger.warning("outside a request")
        token = tracing.current.set(tracing.from_header(f"00-{TRACE}-{PARENT}-01".encode()))
        logger.warning("while serving")
        tracing.current.reset(token)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["WARNING trace=-: outside a request", f"WARNING trace={TRACE}: while serving"]
    assert tracing.outgoing_headers() == b""


def test_ids_this_service_makes_are_drawn_once_when_first_read_and_then_kept():
    """A new trace's id and our span's are drawn when first read (not per request): whichever is
    read first, both come from one draw and never change; a continued trace keeps the caller's
    ids and draws only our span."""
    fresh = tracing.from_header(None)
    span = fresh.span_id
    assert len(span) == 16 and len(fresh.trace_id) == 32
    assert fresh.traceparent() == f"00-{fresh.trace_id}-{span}-01" and fresh.span_id == span
    other = tracing.from_header(None)
    assert other.trace_id != fresh.trace_id and other.span_id != span
    continued = tracing.from_header(f"00-{TRACE}-{PARENT}-01".encode())
    ours = continued.span_id
    assert (continued.trace_id, continued.parent_id) == (TRACE, PARENT) and ours not in (PARENT, span)
    assert continued.span_id == ours and continued.traceparent() == f"00-{TRACE}-{ours}-01"


@pytest.mark.parametrize("destination, draws", [("off", 0), ("file", 1)])
def test_a_lookup_draws_its_ids_only_when_something_reads_them(tmp_path, monkeypatch, destination, draws):
    """With records off a lookup that logs nothing and calls no one draws no id (drawing cost
    5-6 % of a served lookup); with records on its record reads them: one draw, and the record
    carries the ids the trace kept."""
    import asyncio
    import json
    from pathlib import Path

    from apinode.app import create_app
    from apinode.settings import load_settings

    features = Path(__file__).resolve().parents[2] / "services" / "customer-features"
    log_file = tmp_path / "queries.jsonl"
    env = {"APINODE_API_KEYS": "k", "APINODE_QUERY_LOG": "off" if destination == "off" else str(log_file)}
    app = create_app(load_settings(features, env))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(app.runtime.start())
    app.query_log.start()
    calls = []
    real = tracing._new_ids
    monkeypatch.setattr(tracing, "_new_ids", lambda: calls.append(1) or real())
    sent = []

    async def receive():
        return {"type": "http.request", "body": b'{"data":{"customer_id":"C0000042"}}', "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/public/api/v1/customer-features/demographics/lookup",
             "headers": [(b"authorization", b"Bearer k")], "query_string": b""}
    loop.run_until_complete(app(scope, receive, send))
    app.query_log.close()
    loop.close()
    assert sent[0]["status"] == 200, sent
    assert len(calls) == draws, calls
    if draws:
        (record,) = [json.loads(line) for line in log_file.read_text().splitlines()]
        assert len(record["traceId"]) == 32 and len(record["spanId"]) == 16 and record["parentSpanId"] is None


def test_ids_drawn_in_blocks_are_each_handed_out_once_across_blocks_threads_and_a_fork():
    """Ids are drawn 256 pairs at a time (tracing._new_ids): every pair goes to one trace only, in
    one thread or several, and a forked child does not hand out the pairs its parent still holds
    (the same trace id in two processes would join two callers' records)."""
    import os
    import threading

    from apinode.tracing import _BLOCK

    def draws(count: int) -> list[str]:
        return [tracing.from_header(None).traceparent() for _ in range(count)]

    single = draws(3 * _BLOCK + 7)
    drawn: list[list[str]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=lambda n=n: drawn[n].extend(draws(2 * _BLOCK))) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = single + [header for part in drawn for header in part]
    ids = [header.split("-")[1] for header in every] + [header.split("-")[2] for header in every]
    assert len(set(ids)) == len(ids), "an id handed out twice"
    assert all(len(i) in (32, 16) and i == i.lower() and int(i, 16) >= 0 for i in ids)

    tracing.from_header(None).trace_id  # a block is started: most of its pairs are still held
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next trace id, to the parent
        os.write(writer, tracing.from_header(None).trace_id.encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    childs = os.read(reader, 64).decode()
    os.close(reader)
    parents = tracing.from_header(None).trace_id
    assert len(childs) == 32 and childs != parents, "the child handed out the parent's next id"
