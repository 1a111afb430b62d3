"""uvicorn's httptools protocol, hardened for callers we cannot trust.

On top of uvicorn it adds, per connection:
- deadlines on reading each request: its head, then its body (uvicorn bounds idle keep-alive
  connections but not a request that arrives a byte at a time);
- bounded heads, enforced while reading: a request line over ``max_request_line_bytes`` is a
  414, more than ``max_header_count`` headers or a header section over ``max_header_bytes`` a
  431, each a JSON answer and a close. Bytes are counted *before* they reach the parser, which
  otherwise buffers a header of any size (2.9 GB went in within the 5 s head deadline);
- ambiguity refused: a second ``Authorization``, ``Content-Length``, ``Host`` or
  ``Transfer-Encoding`` is a 400 (with two keys "the last one wins" lets a wrong one pass);
- fair connection limits: at most ``max_connections_per_client`` connections per client
  address, and near ``max_connections`` the oldest idle connections (keep-alive between
  requests, or silent since they connected) are closed to make room, so a crowd of idle
  sockets cannot lock real callers out.

Kept here rather than in the app because it costs far less in the protocol (a few C-level
calls per request) than in the app, and because the app never sees a request head that was
refused.
"""

from __future__ import annotations

import asyncio
import logging

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HIGH_WATER_LIMIT, HttpToolsProtocol

from .deadlines import Deadlines
from .definition import Limits
from .answers import HeadTooLarge, OneWrite, Refused, UriTooLong, answer, refusal
from .errors import ApiError, MalformedRequest, RequestTimeout, ServerBusy
from .inline import Waiting, answer_bytes

log = logging.getLogger("apinode")

# Headers whose repetition makes a request ambiguous (RFC 9110 5.3: only list-valued fields
# may repeat; RFC 9112 6.3: several Content-Length values are an error).
_SINGLE = frozenset((b"authorization", b"content-length", b"host", b"transfer-encoding"))
_SINGLE_BITS = {name: 1 << bit for bit, name in enumerate(sorted(_SINGLE))}  # seen so far: a bit each
_CHUNKED = _SINGLE_BITS[b"transfer-encoding"]


def guarded_protocol(limits: Limits, inline: dict | None = None) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` setting, enforcing these limits.

    ``inline``: raw request path -> the app's inline route (inline.py), read on each request head.
    """
    inline = {} if inline is None else inline
    max_body = limits.max_body_bytes
    head_timeout, body_timeout = limits.header_timeout_seconds, limits.body_timeout_seconds
    max_connections = limits.max_connections
    per_client = limits.max_connections_per_client
    max_line, max_headers = limits.max_request_line_bytes, limits.max_header_count
    max_header_bytes = limits.max_header_bytes
    head_budget = limits.max_request_line_bytes + limits.max_header_bytes
    keep_alive = limits.keep_alive_seconds
    # Idle connections are evicted once this many are open, so a newcomer always finds room.
    evict_at = max(1, max_connections - max(1, max_connections // 10))
    refuse = refusal(max_connections)
    head_answer = answer(
        RequestTimeout(
            "request headers not received in time",
            f"the request line and headers must arrive within {head_timeout:g}s",
        )
    )
    body_answer = answer(
        RequestTimeout(
            "body not received in time", f"the body must arrive within {body_timeout:g}s after the headers"
        )
    )
    line_answer = answer(
        UriTooLong("request line too long", f"the request line may be at most {max_line} bytes")
    )
    count_answer = answer(
        HeadTooLarge("too many request headers", f"a request may carry at most {max_headers} headers")
    )
    size_answer = answer(
        HeadTooLarge(
            "request headers too large",
            f"the header section may be at most {limits.max_header_bytes} bytes",
        )
    )
    client_answer = answer(
        ServerBusy(
            "too many connections from this address",
            f"a client address may hold at most {per_client} connections; reuse them or retry",
        ),
        b"retry-after: 1\r\n",
    )
    parse_answer = answer(MalformedRequest("malformed HTTP request", "the request is not valid HTTP/1.1"))
    duplicate_answers = {
        name: answer(
            MalformedRequest(
                f"duplicate {name.decode()} header",
                f"send the {name.decode()} header once; several are ambiguous",
            )
        )
        for name in _SINGLE
    }
    # Shared by every connection of this server (one event loop, so no locking).
    by_client: dict[str | None, int] = {}
    idle: dict[HttpToolsProtocol, None] = {}  # insertion order: the longest idle first

    def evict(newcomer: HttpToolsProtocol, only_peer: bool = False) -> bool:
        """Close the longest-idle connection (of the newcomer's address only, if asked)."""
        for victim in idle:
            if victim is not newcomer and (not only_peer or victim._peer == newcomer._peer):
                del idle[victim]
                victim._release()  # an answer held for the end of this turn leaves first
                victim.transport.close()
                return True
        return False

    # Inline answers leave together at the end of the event loop's turn, but the turn's first,
    # which leaves at once (no added latency when requests come one at a time). A write wakes a
    # caller waiting to read; answers written one by one between the handling of the next
    # requests wake it once per answer, a handful written back to back about once for all. On
    # loopback, as a mesh's sidecar proxy or the bench's load generator calls us, the writer pays
    # for that wake-up in the write system call: side by side at c=8, answering each at once
    # woke the caller 0.96 times per answer against 0.48 for the bare reference (uvicorn's cycle),
    # and cost 15 µs of system time per lookup against 8 (bench/optimizations.md, ninth round).
    holding: list[HttpToolsProtocol] = []  # connections holding answers for the end of this turn
    turn = [False]  # an answer has left in this turn: the next ones are held

    def end_turn() -> None:
        turn[0] = False
        connections = holding[:]
        holding.clear()
        for connection in connections:  # each on its own: one failing write leaves the others' to go
            try:
                connection._release()
            except Exception:  # a transport that refuses the write: its connection is of no more use
                log.exception("writing a held answer failed; closing the connection")
                connection.transport.close()

    # Read deadlines and the keep-alive timeout, stamped and swept (deadlines.py) rather than a
    # timer per request; uvicorn's own keep-alive timer per answer is never armed.
    period = min(max(min(head_timeout, body_timeout) / 8, 0.05), 1.0)
    deadlines = Deadlines(period, lambda connection: connection._timed_out())

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """Bounded, unambiguous request heads, read deadlines and fair connection limits."""

        _one: OneWrite | None = None
        _late_answer: bytes | None = None
        _peer: str | None = None
        _counted = False
        _in_head = True  # reading a request line and headers (or waiting for them)
        _line_open = True  # the request line's end not seen yet
        _head_bytes = 0
        _header_count = 0
        _header_bytes = 0
        _singles = 0  # the _SINGLE headers this request has sent, as _SINGLE_BITS
        _length: bytes | None = None  # its Content-Length
        _now = None  # the inline route answering this request once its body is in (inline.py)
        _now_body = b""
        _now_keep = True
        _waiting: Waiting | None = None  # an inline answer its task has yet to write
        _held: bytes | None = None  # answers of this turn, written at its end (end_turn)

        def _release(self) -> None:
            """Write what this connection holds for the end of the turn: before anything else is
            written to it or it is closed, so answers keep their order and none is lost."""
            held = self._held
            if held is not None:
                self._held = None
                if not self.transport.is_closing():
                    self.transport.write(held)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._one = OneWrite(transport)
            self._arm(head_timeout, None)
            self._peer = peer = self.client[0] if self.client else None
            by_client[peer] = by_client.get(peer, 0) + 1
            self._counted = True
            if by_client[peer] > per_client and not evict(self, only_peer=True):
                transport.write(client_answer)
                transport.close()
                return
            idle[self] = None
            if len(self.connections) > evict_at:
                evict(self)

        def data_received(self, data: bytes) -> None:
            idle.pop(self, None)
            while data:
                if not self._in_head:
                    self._feed(data)
                    return
                budget = head_budget - self._head_bytes
                piece, data = (data, b"") if len(data) <= budget else (data[:budget], data[budget:])
                self._head_bytes += len(piece)
                if self._line_open and b"\n" in piece:
                    self._line_open = False
                if not self._feed(piece):
                    return
                # The budget is spent and this head has not ended (a head that began inside the
                # piece, after a pipelined request, starts from 0 and gets its own budget).
                if data and self._in_head and self._head_bytes >= head_budget:
                    self._refuse(line_answer if self._line_open else size_answer)
                    return

        def _feed(self, data: bytes) -> bool:
            """Parse ``data``; False when the connection was answered and closed."""
            # No keep-alive timer to cancel first (uvicorn's data_received does): see on_response_complete.
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._unsupported_upgrade_warning()
            except httptools.HttpParserError as error:
                refused = error.__context__ if isinstance(error.__context__, Refused) else None
                if refused is None and error.__context__ is not None and not isinstance(
                    error.__context__, httptools.HttpParserError
                ):
                    log.error("request parsing failed", exc_info=error.__context__)
                self._refuse(refused.answer if refused else parse_answer)
                return False
            return not self.transport.is_closing()

        def _refuse(self, answer: bytes) -> None:
            deadlines.disarm(self)
            self._release()
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            self._refuse(parse_answer)

        # The parser callbacks below are uvicorn's (0.54, pinned) with ours folded in rather than
        # calling them through super(): a Python call less per callback, on every request.

        def on_message_begin(self) -> None:
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            self._header_count = self._header_bytes = self._singles = 0
            self._length = None
            idle.pop(self, None)  # a pipelined request after an inline answer
            self._arm(head_timeout, head_answer)

        def on_url(self, url: bytes) -> None:
            url = self.url = self.url + url
            if len(url) > max_line:
                raise Refused(line_answer)

        def on_header(self, name: bytes, value: bytes) -> None:
            count = self._header_count = self._header_count + 1
            size = self._header_bytes = self._header_bytes + len(name) + len(value) + 4  # ": ", CRLF
            if count > max_headers:
                raise Refused(count_answer)
            if size > max_header_bytes:
                raise Refused(size_answer)
            name = name.lower()
            bit = _SINGLE_BITS.get(name)
            if bit is not None:  # checked as it arrives: no second pass over the headers
                if self._singles & bit:
                    raise Refused(duplicate_answers[name])
                self._singles |= bit
                if name == b"content-length":
                    self._length = value
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            self.headers.append((name, value))

        def _new_scope(self) -> None:
            """The ASGI scope, only for a request that goes through ASGI (uvicorn builds it at message begin)."""
            self.scope = {  # type: ignore[typeddict-item]
                "type": "http",
                "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
                "http_version": "1.1",
                "server": self.server,
                "client": self.client,
                "scheme": self.scheme,
                "root_path": self.root_path,
                "headers": self.headers,
                "state": self.app_state.copy(),
            }

        def on_headers_complete(self) -> None:
            self._in_head = False
            route = inline.get(self.url)
            if route is not None and self._plain():
                self._now, self._now_body = route, b""
                self._now_keep = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
                self._arm(body_timeout, body_answer)
                return
            self._new_scope()
            if len(self.connections) > max_connections or len(self.tasks) >= max_connections:
                app, self.app = self.app, refuse
                try:
                    super().on_headers_complete()
                finally:
                    self.app = app
            else:
                super().on_headers_complete()
            if self.cycle is not None:
                self.cycle.transport = self._one  # the task that answers has not started yet
            self._arm(body_timeout, body_answer)

        def _plain(self) -> bool:
            """A request an inline route may answer (inline.py); any other goes through ASGI."""
            cycle, length = self.cycle, self._length
            return (
                (cycle is None or cycle.response_complete)
                and not self.pipeline
                and not self.expect_100_continue
                and not self.flow.write_paused
                and length is not None
                and not self._singles & _CHUNKED
                and length.isdigit()
                and len(length) < 12
                and int(length) <= max_body
                and self.parser.get_method() == b"POST"
                and not self.parser.should_upgrade()
                and len(self.connections) <= max_connections
                and len(self.tasks) < max_connections
            )

        def on_body(self, body: bytes) -> None:
            if self._now is not None:
                self._now_body += body  # within max_body: its Content-Length was checked
                return
            # uvicorn's, folded in (see above)
            cycle = self.cycle
            if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
                return
            cycle.body += body
            if len(cycle.body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            cycle.message_event.set()

        def _write_now(self, status: int, headers: list, body: bytes) -> None:
            """How an inline route answers: the whole answer in one write."""
            waiting = self._waiting
            if waiting is not None:  # answered by its task
                self._waiting = None
                waiting.response_started = waiting.response_complete = True
                if waiting.disconnected or self.transport.is_closing():
                    return
                keep = waiting.keep_alive
            else:
                keep = self._now_keep
            keep = keep and (b"connection", b"close") not in headers
            transport = self.transport
            data = answer_bytes(status, self.server_state.default_headers, headers, body, keep)
            if not keep:
                self._release()
                transport.write(data)
                transport.close()
            elif turn[0]:  # held for the end of the turn, after this connection's earlier ones
                if self._held is None:
                    self._held = data
                    holding.append(self)
                else:
                    self._held += data
            else:  # the turn's first answer (no answer is held: the last turn's end wrote them)
                turn[0] = True
                self.loop.call_soon(end_turn)
                transport.write(data)
            self.on_response_complete()

        def _answer_now(self) -> None:
            route, body = self._now, self._now_body
            self._now, self._now_body = None, b""
            later = route(self.headers, body, self._write_now)
            if later is not None:  # it has to wait: a task of its own, the connection's cycle meanwhile
                self.cycle = self._waiting = Waiting(self._now_keep)
                task = self.loop.create_task(later)
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)

        def on_message_complete(self) -> None:
            deadlines.disarm(self)
            self._in_head, self._line_open, self._head_bytes = True, True, 0
            if self._now is not None:
                self._answer_now()
                return
            cycle = self.cycle
            if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
                return
            cycle.more_body = False
            cycle.message_event.set()

        def on_response_complete(self) -> None:
            self._one.flush()
            self.server_state.total_requests += 1
            transport = self.transport
            if transport.is_closing():
                return
            self.flow.resume_reading()
            if self.pipeline:  # pipelined requests wait for the answer before them
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
                return
            if self._in_head and self._head_bytes == 0:
                # Between requests with nothing of the next one received: evictable, and closed
                # silently once idle for the keep-alive timeout (uvicorn's timer, as a deadline).
                idle[self] = None
                self._arm(keep_alive, None)

        def shutdown(self) -> None:
            if self._now is not None:  # its body is still coming: answer it, then close
                self._now_keep = False
            else:
                self._release()
                super().shutdown()

        def connection_lost(self, exc: Exception | None) -> None:
            self._now = self._held = None
            if self._one is not None:
                self._one.held = None
            deadlines.disarm(self)
            idle.pop(self, None)
            if self._counted:
                self._counted = False
                left = by_client[self._peer] - 1
                if left:
                    by_client[self._peer] = left
                else:
                    del by_client[self._peer]
            super().connection_lost(exc)

        def _arm(self, seconds: float, answer: bytes | None) -> None:
            self._late_answer = answer
            deadlines.arm(self, self.loop.time() + seconds, self.loop)

        def _timed_out(self) -> None:  # called by the sweep, which has disarmed it
            if self.transport.is_closing():
                return
            self._release()
            cycle = self.cycle
            # Answer only if the app has not started its own answer (it may have refused early, e.g. 413).
            # A late head has no cycle of its own yet: `cycle` is then the previous request's.
            late = self._late_answer
            if late is not None and (
                late is head_answer or self._now is not None or cycle is None or not cycle.response_started
            ):
                self.transport.write(late)
            self.transport.close()

    return GuardedHttpToolsProtocol
