"""The query log writer on its own: a stuck destination never holds up the caller (the event loop),
what does not fit is dropped and counted, and what was accepted is written at shut-down."""

from __future__ import annotations

import json
import threading
import weakref

from apinode import tracing
from apinode.audit import Query, QueryLog, QueryLogSpec, records


class _StuckStream:
    """A destination that blocks every write until released, like a full pipe nobody reads."""

    def __init__(self) -> None:
        self.release, self.entered = threading.Event(), threading.Event()
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.entered.set()
        self.release.wait()
        self.chunks.append(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _StuckLog(QueryLog):
    def __init__(self, stream: _StuckStream) -> None:
        super().__init__("/unused", "customer-features")
        self._stuck = stream

    def _open(self):
        return self._stuck


def _query(n: int) -> Query:
    query = Query("lookup", "demographics", QueryLogSpec(), 1_780_000_000.0 + n)
    query.trace = tracing.from_header(None)
    query.add({"customer_id": f"C{n:07d}"}, None, {"data": {}, "notFound": False}, {"n": n})
    return query


def test_a_stuck_destination_never_blocks_the_caller_and_overflow_is_counted():
    stream = _StuckStream()
    log = _StuckLog(stream)
    log.max_pending = 5
    log.start()
    log.submit(_query(0), 200, None, 0.001)
    assert stream.entered.wait(30), "the writer never wrote"
    done = threading.Event()

    def submit_all() -> None:
        for n in range(1, 50):
            log.submit(_query(n), 200, None, 0.001)
        done.set()

    caller = threading.Thread(target=submit_all)
    caller.start()
    # A hang detector, not a speed check: submit must return while the writer is stuck.
    assert done.wait(30), "submit blocked on a stuck destination"
    assert log.dropped == 49 - 5  # the writer holds record 0; five wait; the rest are counted
    stream.release.set()
    log.close()
    lines = b"".join(stream.chunks).splitlines()
    assert len(lines) == log.written == 50 - log.dropped
    assert json.loads(lines[0])["context"] == {"n": 0}


class _Tracked(dict):
    """A dict a weak reference can follow: one of a request's objects, to see who keeps it."""


def test_the_writer_holds_each_records_bytes_not_the_requests_objects():
    """A record is rendered as its query ends and the writer's queue holds bytes: the request's
    body and answer are freed at once, instead of surviving the writer's batch (50 ms, thousands
    of requests) into the collector's older generations (30,000 lookups with records on: 287, 26
    and 2 collections of generations 0, 1 and 2, 1.7 µs per lookup; rendered at once: 31, 2, 0,
    0.1 µs)."""
    stream = _StuckStream()
    log = _StuckLog(stream)
    log.start()
    log.submit(_query(0), 200, None, 0.001)
    assert stream.entered.wait(30), "the writer never wrote"  # now stuck: whatever is queued stays
    query = Query("lookup", "demographics", QueryLogSpec(), 1_780_000_000.0)
    query.trace = tracing.from_header(None)
    body, answer = _Tracked(data={"customer_id": "C0000009"}), _Tracked(data={}, notFound=False)
    query.body = body
    query.add(body["data"], None, answer, None)
    kept = [weakref.ref(body), weakref.ref(answer)]
    log.submit(query, 200, None, 0.001)
    del query, body, answer
    assert [ref() for ref in kept] == [None, None], "the queued record keeps the request's objects"
    stream.release.set()
    log.close()
    lines = b"".join(stream.chunks).splitlines()
    assert json.loads(lines[-1])["data"] == {"customer_id": "C0000009"}


def test_a_record_that_cannot_be_rendered_is_counted_and_the_next_ones_written():
    stream = _StuckStream()
    stream.release.set()
    log = _StuckLog(stream)
    log.start()
    broken = _query(1)
    broken.items[0] = (broken.items[0][0], None, None, None)  # an answer that is not an object
    log.submit(broken, 200, None, 0.001)  # must not raise into the request that ends
    log.submit(_query(2), 200, None, 0.001)
    log.close()
    assert log.failed == 1
    assert [json.loads(line)["context"] for line in b"".join(stream.chunks).splitlines()] == [{"n": 2}]


def test_a_whole_request_failure_leaves_one_record_with_the_fields_as_sent_redacted():
    query = Query("predict", "high-spender", QueryLogSpec(redact=frozenset({"birthdate"})), 1_780_000_000.0)
    query.body = {"features": {"customer_id": "C0000001", "birthdate": "1990-01-01"}, "context": {"t": 1}}
    (record,) = records(query, "customer-scoring", 404, "RecordNotFound", 0.002)
    assert record["features"] == {"customer_id": "C0000001"} and list(record["redacted"]) == ["birthdate"]
    assert (record["status"], record["errorType"], record["context"]) == (404, "RecordNotFound", {"t": 1})
    assert record["time"] == "2026-05-28T20:26:40.000Z"


def test_encoded_lines_keep_each_records_own_fields_in_the_documented_order():
    """The writer encodes the fields an endpoint's records share once and reuses them: a record
    must still carry its own endpoint, kind, generation and key id (not the previous record's),
    every field in the documented order, one JSON object per line."""
    from apinode.audit import encoded

    order = ["time", "service", "endpoint", "kind", "generation", "apiKeyId", "status", "errorType",
             "durationMs", "traceId", "spanId", "parentSpanId"]
    wall = 1_780_000_000.25
    queries = []
    for kind, endpoint, generation, key in [("predict", "high-spender", "2", "k-aa"),
                                            ("predict", "high-spender", "1", "k-aa"),
                                            ("predict-multi", "high-spender", "2", "k-bb"),
                                            ("lookup", "demographics", None, None)]:
        query = Query(kind, endpoint, QueryLogSpec(), wall)
        query.generation, query.key_id = generation, key
        query.trace = tracing.from_header(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        queries.append(query)
    sent, full = {"customer_id": "C0000001"}, {"customer_id": "C0000001", "age": 41, "region": "wales"}
    answer = {"prediction": "1", "probas": {"0": 0.25, "1": 0.75}}
    queries[0].add(sent, full, answer, {"n": 0})
    queries[1].add(sent, full, answer, None)
    queries[2].add(sent, full, answer, {"n": 2})
    queries[2].add(sent, None, {"ignored": True, "errorType": "RecordNotFound", "ignoreReason": "x"}, None)
    queries[3].add(sent, None, {"data": {}, "notFound": True}, None)
    out = [encoded(query, "svc", 200, None, 0.0012345) for query in queries]
    assert [len(lines) for lines in out] == [1, 1, 2, 1]
    lines = [line for group in out for line in group]
    assert all(line.endswith(b"}\n") and line.count(b"\n") == 1 for line in lines)
    records_ = [json.loads(line) for line in lines]
    assert [(r["endpoint"], r["kind"], r["generation"], r["apiKeyId"]) for r in records_] == [
        ("high-spender", "predict", "2", "k-aa"), ("high-spender", "predict", "1", "k-aa"),
        ("high-spender", "predict-multi", "2", "k-bb"), ("high-spender", "predict-multi", "2", "k-bb"),
        ("demographics", "lookup", None, None)]
    for record in records_:
        assert list(record)[: len(order)] == order, record
        assert (record["time"], record["service"], record["durationMs"]) == ("2026-05-28T20:26:40.250Z", "svc", 1.234)
        assert record["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736" and record["parentSpanId"] == "00f067aa0ba902b7"
    first = records_[0]
    assert list(first)[len(order):] == ["features", "enriched", "result", "context"]
    assert (first["enriched"], first["result"], first["context"]) == (["age", "region"], answer, {"n": 0})
    assert [records_[2]["item"], records_[3]["item"]] == [0, 1]
    assert records_[3]["result"] == {"ignored": True, "errorType": "RecordNotFound", "ignoreReason": "x"}
    assert records_[4]["data"] == sent and records_[4]["result"] == {"found": False}


def test_items_of_a_shared_lookup_are_recorded_and_sampled_under_their_own_callers_trace():
    """customer-scoring sends the lookups of scores that arrive together as one lookup-multi, each
    item with its caller's traceparent (apinode/coalesce.py): each record names the trace of the
    score it was made for, and is kept or dropped with that trace, not with the request's."""
    from apinode.audit import encoded, kept

    carrier = tracing.from_header(b"00-0000000100000000000000000000000a-00000000000000aa-01")
    own = [b"00-%08x000000000000000000000001-%016x-01" % (first, n) for n, first in
           enumerate([0x10000000, 0xF0000000, 0x20000000], start=1)]
    for sample in (1.0, 0.5):
        query = Query("lookup-multi", "profile", QueryLogSpec(sample=sample), 1_780_000_000.0)
        query.trace = carrier
        for n, header in enumerate(own):
            query.add({"customer_id": f"C{n}"}, None, {"notFound": False}, {"traceparent": header.decode()})
        query.add({"customer_id": "C9"}, None, {"notFound": False}, {"traceparent": "not a traceparent"})
        written = [json.loads(line) for line in encoded(query, "customer-features", 200, None, 0.001)]
        expected = [(f"C{n}", header.decode()[3:35], header.decode()[36:52]) for n, header in enumerate(own)
                    if sample == 1.0 or kept(sample, header.decode()[3:35])]
        expected.append(("C9", carrier.trace_id, carrier.parent_id))  # no valid trace of its own: the request's
        assert [(r["data"]["customer_id"], r["traceId"], r["parentSpanId"]) for r in written] == expected, sample
        assert {r["spanId"] for r in written} == {carrier.span_id}, "the span is customer-features' own"
        if sample == 0.5:
            assert [r["data"]["customer_id"] for r in written] == ["C0", "C2", "C9"], "0xF0... is not kept at 0.5"


def test_a_traceparent_in_a_prediction_items_context_is_only_context():
    """Only lookups are shared calls (coalesce.py): a predict-multi item whose caller-supplied
    context happens to hold a traceparent keeps the request's trace."""
    from apinode.audit import encoded

    query = Query("predict-multi", "high-spender", QueryLogSpec(), 1_780_000_000.0)
    query.trace = tracing.from_header(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    other = "00-0000000100000000000000000000000a-00000000000000aa-01"
    query.add({"customer_id": "C1"}, None, {"prediction": "1", "probas": {"0": 0.4, "1": 0.6}}, {"traceparent": other})
    (line,) = encoded(query, "customer-scoring", 200, None, 0.001)
    record = json.loads(line)
    assert record["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736" and record["context"] == {"traceparent": other}


def test_a_single_query_and_the_same_item_in_a_batch_record_the_same_fields():
    """A lookup or predict of one item is rendered by its own short path: its record must say what a
    batch's record of the same item says (but the item's index), redaction and enrichment included."""
    from apinode.audit import encoded

    spec = QueryLogSpec(redact=frozenset({"birthdate"}))
    sent = {"customer_id": "C0000001", "birthdate": "1990-01-01"}
    full = {**sent, "age": 41}
    trace = tracing.from_header(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    for kind, result in [("predict", {"prediction": "1", "probas": {"0": 0.2, "1": 0.8}, "probaPercentile": 91}),
                         ("predict", {"ignored": True, "errorType": "RecordNotFound", "ignoreReason": "x"}),
                         ("lookup", {"data": {}, "notFound": False, "notFoundIn": ["behavior"]})]:
        rendered = []
        for this_kind in (kind, kind + "-multi"):
            query = Query(this_kind, "e", spec, 1_780_000_000.5)
            query.trace = trace
            query.generation, query.key_id = "2", "k-aa"
            query.add(sent, full, result, {"n": 1})
            (line,) = encoded(query, "svc", 200, None, 0.001)
            rendered.append(json.loads(line))
        single, batch = rendered
        assert batch.pop("item") == 0 and batch.pop("kind") == kind + "-multi" and single.pop("kind") == kind
        assert list(single.items()) == list(batch.items()), (single, batch)
        assert "1990-01-01" not in json.dumps(single) and single["redacted"] == ["birthdate"]


def test_record_times_are_right_to_the_millisecond_as_the_clock_moves_on_and_back():
    """A record's time is formatted once per millisecond: each must still be its own."""
    from apinode.audit import _time

    base = 1_780_000_000  # 2026-05-28T20:26:40Z
    walls = [base + 0.0004, base + 0.0009, base + 0.0011, base + 0.9995, base + 1.0, base + 0.5, base + 86_400.25]
    assert [_time(wall) for wall in walls] == [
        "2026-05-28T20:26:40.000Z", "2026-05-28T20:26:40.000Z", "2026-05-28T20:26:40.001Z",
        "2026-05-28T20:26:40.999Z", "2026-05-28T20:26:41.000Z", "2026-05-28T20:26:40.500Z",
        "2026-05-29T20:26:40.250Z"]


def test_sampling_keeps_exactly_the_traces_whose_first_eight_hex_digits_are_below_the_share():
    """The decision is made by comparing text (no parse per request): it must keep exactly the
    traces the definition keeps, int(first 8 hex digits) < sample × 2^32, so every service of a
    trace still decides alike: at the threshold, one below and above it, the ends of the range,
    shares next to 0 and 1, and random ids."""
    import random

    from apinode.audit import kept

    rng = random.Random(18)
    samples = (0.0, 1e-12, 2**-32, 0.1, 0.25, 1 / 3, 0.5, 0.999, 1 - 2**-33, 1 - 2**-40, 1.0)
    for sample in samples:
        limit = int(sample * 2**32)
        prefixes = {0, 1, 0xFFFFFFFF, 0xFFFFFFFE} | {p for p in (limit - 1, limit, limit + 1) if 0 <= p < 2**32}
        prefixes |= {rng.getrandbits(32) for _ in range(2000)}
        for prefix in prefixes:
            for rest in ("0" * 24, "f" * 24, f"{rng.getrandbits(96):024x}"):
                trace_id = f"{prefix:08x}{rest}"
                assert kept(sample, trace_id) == (prefix < sample * 0x1_0000_0000), (sample, trace_id)
