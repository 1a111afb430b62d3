"""Query audit records: one JSON line per answered query (each item of a batch), written off the
event loop by one thread, so a slow or broken destination never slows or fails a query.

A record is rendered on the event loop as its query ends, after the answer was sent (2-2.5 µs
for a query of one item in a warm loop, 5-6 µs inside a serving process, where the whole lookup is
as much slower; bench/optimizations.md, eighth round): the writer's queue then holds bytes, and
the request's body and answer are freed at once. Held until the writer's next batch, they
outlived thousands of requests into the collector's older generations: over 30,000 lookups, 287,
26 and 2 collections of generations 0, 1 and 2 (1.7 µs a lookup), against 31, 2 and 0 (0.1 µs)
rendered at once, and 1, 0, 0 with records off.

Destination ``APINODE_QUERY_LOG``: ``stdout`` (the default, for the cluster's log pipeline),
a file path (appended to), or ``off``. Per endpoint, service.yaml may sample and redact::

    query_log: {sample: 0.1, redact: [birthdate]}

Sampling is decided from the trace id, so the services of one trace keep or drop its records
together. An item of a ``lookup-multi`` that carries its own ``traceparent`` in its context (the
lookups of several scores sent as one call, coalesce.py) is recorded, and sampled, under that
trace: the record of each lookup names the score it was made for. The API key is recorded as a
one-way id (``apiKeyId``), never the key.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import tracing
from .definition import DefinitionError, _Reader

log = logging.getLogger("apinode")
QUERY_LOG_ENV = "APINODE_QUERY_LOG"
MAX_PENDING = 20_000  # records waiting for the writer; beyond this they are dropped and counted
BATCH_SECONDS = 0.05  # how long the writer gathers records before writing them out
_KEY_SALT = b"apinode-query-log-key-id"
_KEY_ROUNDS = 50_000  # once per key at start-up; makes guessing a weak key from its id costly


@dataclass(frozen=True)
class QueryLogSpec:
    """Sampling and redaction of one endpoint's records."""

    sample: float = 1.0
    redact: frozenset[str] = frozenset()
    redacted: tuple[str, ...] = field(init=False)  # what records list as left out, sorted once

    def __post_init__(self) -> None:
        object.__setattr__(self, "redacted", tuple(sorted(self.redact)))


def read_query_log(reader: _Reader, fields: set[str]) -> QueryLogSpec:
    """The endpoint's ``query_log`` block; a redacted name must be one of its fields (typos stop here)."""
    block = reader.child("query_log")
    for key in block.raw:
        if key not in ("sample", "redact"):
            block.fail(f"{block.path}.{key}", "unknown query_log setting; use sample or redact")
    sample = block.raw.get("sample", 1.0)
    if isinstance(sample, bool) or not isinstance(sample, (int, float)) or not 0 <= sample <= 1:
        block.fail(f"{block.path}.sample", f"expected a share between 0 and 1, got {sample!r}")
    redact = block.raw.get("redact", [])
    if not isinstance(redact, list) or not all(isinstance(name, str) for name in redact):
        block.fail(f"{block.path}.redact", f"expected a list of field names, got {redact!r}")
    for name in redact:
        if name not in fields:
            block.fail(f"{block.path}.redact", f"{name!r} is not a field of this endpoint")
    return QueryLogSpec(sample=float(sample), redact=frozenset(redact))


def key_id(key: str) -> str:
    """A stable, one-way id of an API key (``python -m apinode key-id`` prints it for a key)."""
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), _KEY_SALT, _KEY_ROUNDS, dklen=8)
    return "k-" + digest.hex()


def check_destination(env: Mapping[str, str]) -> str:
    """The destination, or a DefinitionError naming the variable when a path cannot be written."""
    destination = env.get(QUERY_LOG_ENV) or "stdout"
    if destination in ("stdout", "off"):
        return destination
    path = Path(destination)
    if not path.is_absolute():
        raise DefinitionError(f"environment: {QUERY_LOG_ENV}: expected stdout, off or an absolute path")
    if path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise DefinitionError(
            f"environment: {QUERY_LOG_ENV}: cannot write {destination} "
            "(a file in an existing, writable folder)"
        )
    return destination


class Query:
    """What one request leaves for its records, filled by the app and the handler."""

    __slots__ = ("kind", "endpoint", "spec", "wall", "trace", "key_id", "generation", "items", "body", "recording")

    def __init__(self, kind: str, endpoint: str, spec: QueryLogSpec, wall: float) -> None:
        self.kind, self.endpoint, self.spec, self.wall = kind, endpoint, spec, wall
        # False once the app knows no record will be written (log off, or not sampled): handlers
        # then skip the copies they keep for it.
        self.recording = True
        self.trace = self.key_id = self.generation = self.body = None
        self.items: list[tuple] = []

    def add(self, sent: Any, full: dict | None, result: dict, context: Any) -> None:
        """One answered item: the fields as sent, after enrichment (or None), the answer, its context."""
        self.items.append((sent, full, result, context))


class _NoQuery:
    """Stands in when nobody records (a handler called directly)."""

    recording = False
    generation = None

    def add(self, sent, full, result, context) -> None:
        pass


NO_QUERY = _NoQuery()


def _redacted(values: Any, redact: frozenset[str]) -> Any:
    if not redact or type(values) is not dict:
        return values
    return {k: v for k, v in values.items() if k not in redact}


_milli = [-1, ""]  # the last millisecond formatted: records arrive many to a millisecond under load
_second = [-1, ""]  # the last second's date and time


def _time(wall: float) -> str:
    """ISO 8601 UTC with milliseconds (truncated); formatted once per millisecond, the date and time
    part once per second (0.2 µs a record instead of 0.75)."""
    milli = int(wall * 1000)
    if milli != _milli[0]:
        second = milli // 1000
        if second != _second[0]:
            _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            _second[0] = second
        _milli[1] = f"{_second[1]}.{milli % 1000:03d}Z"
        _milli[0] = milli
    return _milli[1]


_HEADS: dict[tuple, bytes] = {}  # the encoded fields a record shares with its endpoint's others


def _head(service: str, query: Query) -> bytes:
    """``"service":..,"endpoint":..,"kind":..,"generation":..,"apiKeyId":..,`` encoded once per combination."""
    key = (service, query.endpoint, query.kind, query.generation, query.key_id)
    head = _HEADS.get(key)
    if head is None:
        if len(_HEADS) > 4096:  # api keys times endpoints times generations: bounded anyway
            _HEADS.clear()
        fields = dict(zip(("service", "endpoint", "kind", "generation", "apiKeyId"), key))
        head = _HEADS[key] = orjson.dumps(fields, default=str)[1:-1] + b","
    return head


def records(query: Query, service: str, status: int, error_type: str | None, seconds: float) -> list[dict]:
    """The JSON records of one finished query (one per item of a batch), as objects."""
    return [orjson.loads(line) for line in encoded(query, service, status, error_type, seconds)]


def encoded(query: Query, service: str, status: int, error_type: str | None, seconds: float) -> list[bytes]:
    """The records of one finished query as JSON lines (one per item of a batch), in this order:
    time, service, endpoint, kind, generation, apiKeyId, status, errorType, durationMs, traceId,
    spanId, parentSpanId, then the item's fields, enrichment, result, context and redaction.

    A query of one item (a lookup, a predict) is one object and one ``orjson.dumps``. A batch's
    items share the fields of their endpoint, encoded once (``_head``), and the time."""
    trace = query.trace
    spec = query.spec
    kind = query.kind
    multi = kind.endswith("-multi")
    section = "data" if kind.startswith("lookup") else "features"
    option = orjson.OPT_APPEND_NEWLINE
    # Sampled by trace: the request's, or an item's own when it carries one (a shared call, below).
    sample = spec.sample
    request_kept = sample >= 1.0 or trace is None or kept(sample, trace.trace_id)
    items = query.items
    if len(items) == 1 and not multi:  # the common case, in about 1.5 µs
        if not request_kept:
            return []
        record = {"time": _time(query.wall), "service": service, "endpoint": query.endpoint, "kind": kind,
                  "generation": query.generation, "apiKeyId": query.key_id, "status": status,
                  "errorType": error_type, "durationMs": int(seconds * 1_000_000) / 1000,
                  "traceId": trace.trace_id if trace else None, "spanId": trace.span_id if trace else None,
                  "parentSpanId": trace.parent_id if trace else None}
        _item_fields(record, section, spec, *items[0])
        return [orjson.dumps(record, default=str, option=option)]
    prefix = b'{"time":"' + _time(query.wall).encode() + b'",' + _head(service, query)
    base = {
        "status": status,
        "errorType": error_type,
        "durationMs": int(seconds * 1_000_000) / 1000,
        "traceId": trace.trace_id if trace else None,
        "spanId": trace.span_id if trace else None,
        "parentSpanId": trace.parent_id if trace else None,
    }
    if not items:  # the request failed as a whole
        if not request_kept:
            return []
        body = query.body if type(query.body) is dict else {}
        record = base
        record["context"] = body.get("context")
        if multi:
            sent = body.get("items")
            record["items"] = len(sent) if type(sent) is list else None
        else:
            record[section] = _redacted(body.get(section), spec.redact)
        if spec.redacted:
            record["redacted"] = spec.redacted
        return [prefix + orjson.dumps(record, default=str, option=option)[1:]]
    out = []
    for index, item in enumerate(items):
        record = base.copy()
        if multi:
            record["item"] = index
        # A lookup batch's item may have been asked for another request than this (coalesce.py).
        own = _item_trace(item[3]) if kind == "lookup-multi" else None
        if own is not None:
            if sample < 1.0 and not kept(sample, own.trace_id):
                continue
            record["traceId"], record["parentSpanId"] = own.trace_id, own.parent_id
        elif not request_kept:
            continue
        _item_fields(record, section, spec, *item)
        out.append(prefix + orjson.dumps(record, default=str, option=option)[1:])
    return out


def _item_fields(record: dict, section: str, spec: QueryLogSpec, sent: Any, full: dict | None, result: dict,
                 context: Any) -> None:
    """An answered item's part of its record: its fields as sent (redacted), what enrichment added,
    the result, the context."""
    record[section] = _redacted(sent, spec.redact) if spec.redact else sent
    if full is not None:  # in the order enrichment filled them
        record["enriched"] = [name for name in full if name not in sent]
    if section == "data":
        found = record["result"] = {"found": not result.get("notFound", False)}
        if "notFoundIn" in result:  # a lookup over several tables (profile)
            found["notFoundIn"] = result["notFoundIn"]
    elif result.get("ignored"):
        record["result"] = {"ignored": True, "errorType": result.get("errorType"),
                            "ignoreReason": result.get("ignoreReason")}
    else:
        answer = record["result"] = {"prediction": result["prediction"], "probas": result["probas"]}
        for extra in ("probaPercentile", "explanations"):
            if extra in result:
                answer[extra] = result[extra]
    record["context"] = context
    if spec.redacted:
        record["redacted"] = spec.redacted


@functools.lru_cache(maxsize=64)  # one per endpoint's share
def _threshold(sample: float) -> str:
    """The trace ids below which records are kept at ``sample``."""
    limit = math.ceil(sample * 0x1_0000_0000)  # an 8-digit prefix x is kept when x < sample × 2^32
    return "g" if limit >= 0x1_0000_0000 else f"{limit:08x}"  # "g" sorts after every hex digit


def kept(sample: float, trace_id: str) -> bool:
    """Whether the records of this trace are kept at ``sample``: decided from the trace id alone, so
    every service of the trace decides alike: kept when its first 8 hex digits, as a number, are
    below ``sample`` × 2^32.

    Compared as text, with no slice and no parse: lower-case hex digits of one width sort as their
    values, and an id whose first 8 digits equal the threshold sorts after it, as it should (x < x
    is false). Trace ids are lower-case hex (tracing.py makes them and checks the caller's). In a
    serving process the parse cost 3 % of a lookup with the log on and nothing kept (side by side,
    0.96 against 0.99 without it; bench/optimizations.md, eighth round)."""
    return trace_id < _threshold(sample)


def _item_trace(context: Any):
    """The trace an item of a shared ``lookup-multi`` was asked for: its context's ``traceparent``
    (coalesce.py), checked as the header is; None when it has none or an invalid one."""
    if type(context) is not dict:
        return None
    value = context.get("traceparent")
    if type(value) is not str or len(value) > 256 or not value.isascii():
        return None
    trace = tracing.from_header(value.encode("ascii"))
    return trace if trace.parent_id is not None else None  # an invalid one would start a new trace


_STOP = object()


class QueryLog:
    """The writer: a queue of rendered records the event loop appends to, and one thread that
    writes them out in batches."""

    def __init__(self, destination: str, service: str) -> None:
        self.destination = destination
        self.enabled = destination != "off"
        self._service = service
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.written = self.dropped = self.failed = 0
        self.max_pending = MAX_PENDING
        self._thread: threading.Thread | None = None
        self._stream = None

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._stream = self._open()
        self._thread = threading.Thread(target=self._run, name="apinode-query-log", daemon=True)
        self._thread.start()

    def _open(self):
        if self.destination == "stdout":
            return os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=1 << 16)
        return open(self.destination, "ab", buffering=1 << 16)  # noqa: SIM115 (the writer thread owns it)

    def sampled(self, spec: QueryLogSpec, trace, kind: str = "") -> bool:
        """Whether this request may leave records; the items of a lookup batch may carry their own
        traces (coalesce.py), so a lookup batch's are decided per item (``encoded``)."""
        if not self.enabled:
            return False
        if spec.sample >= 1.0 or kind == "lookup-multi":
            return True
        return kept(spec.sample, trace.trace_id)

    def submit(self, query: Query, status: int, error_type: str | None, seconds: float) -> None:
        """Render a finished query's records and hand them to the writer; never blocks, never raises."""
        if self._thread is None:
            return
        if self._queue.qsize() >= self.max_pending:
            self.dropped += 1
            return
        try:
            lines = encoded(query, self._service, status, error_type, seconds)
        except Exception:  # a record we cannot render must not fail the query
            self.failed += 1
            log.exception("query log: cannot render a record")
            return
        if lines:  # bytes, which the collector does not track, rather than a list it would
            self._queue.put(lines[0] if len(lines) == 1 else b"".join(lines))

    def _run(self) -> None:
        stream, get = self._stream, self._queue.get
        stopping = False
        while not stopping:
            batch = [get()]
            # Gather for a moment, then write them together: one write and one wake-up per batch
            # instead of per record (each costs more CPU than rendering the record).
            time.sleep(BATCH_SECONDS)
            while len(batch) < 4096:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [entry for entry in batch if entry is not _STOP]
            data = b"".join(batch)
            count = data.count(b"\n")  # one per record: JSON strings carry their newlines escaped
            try:
                stream.write(data)
                stream.flush()
                self.written += count
            except (OSError, ValueError) as error:
                self.failed += count
                if self.failed == count or self.failed % 10_000 < count:
                    log.error("query log: cannot write to %s: %s", self.destination, error)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread (at shut-down)."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None
        try:
            self._stream.close()
        except OSError:
            pass


class QueryLogCollector:
    """Prometheus view of the writer: records written, dropped (queue full), failed, and pending."""

    def __init__(self, service: str, query_log: QueryLog) -> None:
        self._service, self._log = service, query_log

    def collect(self):
        records_ = CounterMetricFamily(
            "apinode_query_log_records", "Query audit records by outcome", labels=["service", "outcome"]
        )
        for outcome in ("written", "dropped", "failed"):
            records_.add_metric([self._service, outcome], getattr(self._log, outcome))
        pending = GaugeMetricFamily(
            "apinode_query_log_pending", "Records waiting for the writer", labels=["service"]
        )
        pending.add_metric([self._service], self._log._queue.qsize())
        return [records_, pending]
