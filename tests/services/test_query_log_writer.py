"""The query log writer on its own: a stuck destination never holds up the caller (the event loop),
what does not fit is dropped and counted, and what was accepted is written at shut-down."""

from __future__ import annotations

import json
import threading

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


def test_a_whole_request_failure_leaves_one_record_with_the_fields_as_sent_redacted():
    query = Query("predict", "high-spender", QueryLogSpec(redact=frozenset({"birthdate"})), 1_780_000_000.0)
    query.body = {"features": {"customer_id": "C0000001", "birthdate": "1990-01-01"}, "context": {"t": 1}}
    (record,) = records(query, "customer-scoring", 404, "RecordNotFound", 0.002)
    assert record["features"] == {"customer_id": "C0000001"} and list(record["redacted"]) == ["birthdate"]
    assert (record["status"], record["errorType"], record["context"]) == (404, "RecordNotFound", {"t": 1})
    assert record["time"] == "2026-05-28T20:26:40.000Z"
