"""W3C trace context (https://www.w3.org/TR/trace-context/): accept ``traceparent``, start one when
absent, hand it on to the services this one calls, and put the trace id in log lines.

No span is exported: the trace id ties a caller's request to this service's query records and
to the lookups customer-features served for it, which is what an audit needs. See
docs/operations.md for why OTLP export is left out of the image.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import re
from collections.abc import Iterator

# version 00 is exactly this; a later version may append fields after a dash (spec, section 3.2.4).
_TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[ -~]*)?$")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


class Trace:
    """This request's place in a trace: the trace id, the caller's span (if any) and our own span.

    Ids this service makes (a new trace's, our span's) are drawn when first read, not per
    request: a lookup that writes no record, logs nothing and calls no one never needs them, and
    drawing and formatting them cost 5-6 % of a served lookup (side by side, bench/side.py;
    bench/optimizations.md, eighth round). ``None`` for ``trace_id`` or ``span_id`` means "draw
    on first read"; once read, an id stays the same."""

    __slots__ = ("_trace_id", "parent_id", "_span_id", "flags")

    def __init__(self, trace_id: str | None, parent_id: str | None, span_id: str | None, flags: str) -> None:
        self._trace_id, self.parent_id, self._span_id, self.flags = trace_id, parent_id, span_id, flags

    def _draw(self) -> None:
        self._trace_id, self._span_id = _new_ids()  # a new trace's id and our span's

    @property
    def trace_id(self) -> str:
        if self._trace_id is None:
            self._draw()
        return self._trace_id

    @property
    def span_id(self) -> str:
        if self._span_id is None:
            if self._trace_id is None:
                self._draw()
            else:  # the caller's trace, continued: only our span is ours to draw
                self._span_id = _new_ids()[1]
        return self._span_id

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    def traceparent(self) -> str:
        """The header a call made on behalf of this request carries: same trace, our span as parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


_BLOCK = 256  # pairs of ids drawn at once
_drawn: Iterator[tuple[str, str]] = iter(())


def _new_ids() -> tuple[str, str]:
    """A trace id and a span id (32 and 16 lower-case hex digits), random as the spec asks (section
    3.2.2.3), not secret: the Mersenne Twister, which costs a third of a getrandom system call.

    Drawn and formatted 256 pairs at a time, each handed out once: drawing and formatting a
    record's ids per request cost 2.3 µs inside a serving process (p50), taking them from the block
    0.9 µs (0.4 in a warm loop, the block's refill included; bench/optimizations.md, eleventh round). ``next`` on a list
    iterator is one step under the GIL, so two threads never get the same pair; a forked child
    starts a block of its own (random reseeds it too)."""
    global _drawn
    try:
        return next(_drawn)
    except StopIteration:
        block = random.randbytes(24 * _BLOCK).hex()
        _drawn = iter([(block[at : at + 32], block[at + 32 : at + 48]) for at in range(0, len(block), 48)])
        return next(_drawn)


def _forget_drawn() -> None:
    global _drawn
    _drawn = iter(())


os.register_at_fork(after_in_child=_forget_drawn)


def from_header(value: bytes | None) -> Trace:
    """The caller's trace continued, or a new one when the header is absent or invalid.

    An invalid header is not an error for the caller (the spec says to restart the trace):
    version ff, an all-zero trace or parent id, upper-case hex, or a version-00 header with
    extra fields are all ignored.
    """
    if value:
        match = _TRACEPARENT.match(value.strip())
        if match is not None:
            version, trace_id, parent_id, flags, extra = match.groups()
            if (
                version != b"ff"
                and trace_id != _ZERO_TRACE
                and parent_id != _ZERO_SPAN
                and not (version == b"00" and extra)
            ):
                return Trace(trace_id.decode(), parent_id.decode(), None, flags.decode())
    return Trace(None, None, None, "01")  # a new trace, its ids drawn when first read


current: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("apinode_trace", default=None)


def outgoing_headers() -> bytes:
    """Header lines for a call made while serving the current request (empty outside a request)."""
    trace = current.get()
    if trace is None:
        return b""
    return f"traceparent: {trace.traceparent()}\r\n".encode("ascii")


class TraceLogFilter(logging.Filter):
    """Gives every log record ``trace_id`` (``-`` outside a request), for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = current.get()
        record.trace_id = trace.trace_id if trace is not None else "-"
        return True
