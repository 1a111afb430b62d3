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
