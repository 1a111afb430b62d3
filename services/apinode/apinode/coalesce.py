"""Enrichment lookups asked of one remote endpoint in the same event-loop turn go as one call.

Scores that arrive together (a burst from one client, or many clients under load) each need the
profile of their own customer. Asked one by one, every score costs customer-features a request
and a response, and each side an event-loop wake: two thirds of a two-hop score's CPU. So the
keys asked of the same endpoint and tables while the loop runs the current turn are gathered and
sent, at the start of the next turn, as one ``lookup-multi`` (DataLoader's batching, for HTTP).
A caller that is alone (a quiet service, ``c=1``) sends what it sent before (``lookup`` with one
key, ``lookup-multi`` for a batch of its own): it waits one loop turn, not a timer.

Under load, at most ``batches_in_flight`` calls per (endpoint, tables) are out at once (one by
default): keys asked while they are wait, and go together in the next call as soon as one comes
back, as a producer with a bounded number of requests in flight batches (Kafka's
``max.in.flight.requests``). Each call costs customer-features and the scoring side a wake-up, a
read and a write whatever it holds: a profile ``lookup-multi`` of 4 items cost customer-features
221 µs of CPU and one of 8 items 302 µs (c=1). Scoring alone at c=32, calls per score went from
0.12 to 0.09; with a second system on the same cores (the benchmark's side by side), two-hop
scores per CPU-second rose 7-10 % (bench/optimizations.md, eleventh round). A quiet service
(c=1) sends what it sent before. The wait counts against the call's timeout: a key waits at most
for a call that started before it, and its own call is cut at the deadline set when its batch
opened, so a hanging customer-features still answers every caller within ``timeout_seconds``. A
batch waits at most ``batch_wait_seconds`` (5 ms) for a call out, then goes anyway: a slow call (one
customer-features pod in a long pause, such as a CPU limit's throttling, while its peers answer in a
millisecond) holds the scores behind it back by that much, not by its own duration. Side by side
in the benchmark, 5 ms cost 1 % of two-hop scores per CPU-second and 2 ms 2.6 % (on a loaded
machine a call can take over 2 ms there, and the batches behind it then go smaller). In the
cluster, one connection out does not tie a scoring pod to one customer-features pod: the
namespace's waypoint (infra/authz.py; tests/infra/test_istio.py checks the label) balances each
request over its pods.

Each item of a shared call carries its caller's trace (``{"context": {"traceparent": ...}}``),
so customer-features records every item under the trace of the score it was asked for (the
audit link from a caller's trace to the lookups made for it holds); the request's own
``traceparent`` header is the first caller's.

What is shared is only the transport: every caller gets its own rows (the answer is split by
position after the remote service's checks, remote.py), its own copy of a failure, and a caller
that goes away does not disturb the others. A call holds at most ``MAX_KEYS`` keys.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Awaitable, Callable

from . import tracing

MAX_KEYS = 64  # keys in one shared call; a caller's own batch larger than this goes alone

# (endpoint, keys, tables, per-key contexts or None, loop time the batch opened) -> per key, the rows
Call = Callable[[str, list[dict], "list[str] | None", "list[dict] | None", float], Awaitable[list]]


class _Batch:
    __slots__ = ("keys", "contexts", "waiters", "traces", "opened")

    def __init__(self, opened: float) -> None:
        self.opened = opened  # the call's deadline counts from here (the wait for a free slot included)
        self.keys: list[dict] = []
        self.contexts: list[dict | None] = []
        # (first key, key count, the caller's future: None for the first caller, who makes the call)
        self.waiters: list[tuple[int, int, asyncio.Future | None]] = []
        self.traces: set[str] = set()


class Coalescer:
    """Gathers one remote service's lookups per (endpoint, tables) for the next loop turn."""

    def __init__(self, call: Call, *, batches_in_flight: int, batch_wait: float, max_keys: int = MAX_KEYS) -> None:
        self._call, self._max, self._max_out, self._batch_wait = call, max_keys, batches_in_flight, batch_wait
        self._open: dict[tuple, _Batch] = {}
        self._running: set[asyncio.Task] = set()  # calls handed over (a task must be referenced)
        self._out: dict[tuple, int] = {}  # calls out per (endpoint, tables)
        self._slots: dict[tuple, deque[asyncio.Future]] = {}  # batches waiting for one to come back

    async def rows_many(self, endpoint: str, keys: list[dict], tables: list[str] | None) -> list:
        shared = (endpoint, None if tables is None else tuple(tables))
        batch = self._open.get(shared)
        if batch is not None and len(batch.keys) + len(keys) <= self._max:
            future = asyncio.get_running_loop().create_future()
            self._join(batch, keys, future)
            return await future  # the first caller's call answers it
        # The first caller of this turn: wait one loop turn for the others (and for a call out to
        # come back, when the most are out), then make the call.
        batch = self._open[shared] = _Batch(asyncio.get_running_loop().time())
        self._join(batch, keys, None)
        try:
            await asyncio.sleep(0)
            rows = await self._dispatch(shared, batch)
        except asyncio.CancelledError:  # this caller went away: the others still need the call
            if self._open.get(shared) is batch:
                del self._open[shared]
            if any(not future.done() for _, _, future in batch.waiters[1:]):
                task = asyncio.get_running_loop().create_task(self._handed_over(shared, batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            raise
        return rows[:len(keys)]

    async def _handed_over(self, shared: tuple, batch: _Batch) -> None:
        """The call of a batch whose first caller went away, for the others."""
        try:
            await self._dispatch(shared, batch)
        except asyncio.CancelledError:  # shutting down: nobody will answer them
            for _, _, future in batch.waiters:
                if future is not None:
                    future.cancel()
            raise
        except Exception:  # each caller has its copy
            pass

    async def _dispatch(self, shared: tuple, batch: _Batch) -> list:
        """The batch's call: at once when fewer than ``batches_in_flight`` of its kind are out, else
        when one of them comes back or after ``batch_wait`` seconds (keys may join it until then)."""
        if self._out.get(shared, 0) >= self._max_out:
            loop = asyncio.get_running_loop()
            slot = loop.create_future()
            self._slots.setdefault(shared, deque()).append(slot)
            # A slow call (a customer-features pod in a long pause) holds the others back at most this long.
            patience = loop.call_later(self._batch_wait, _go, slot)
            try:
                await slot
            except asyncio.CancelledError:
                if slot.done() and not slot.cancelled():  # woken, then cancelled: wake the next
                    self._wake(shared)
                raise
            finally:
                patience.cancel()
        if self._open.get(shared) is batch:
            del self._open[shared]
        self._out[shared] = self._out.get(shared, 0) + 1
        try:
            return await self._send(shared, batch)
        finally:
            self._out[shared] -= 1
            self._wake(shared)

    def _wake(self, shared: tuple) -> None:
        """The longest-waiting batch of this kind may go."""
        waiting = self._slots.get(shared)
        while waiting:
            slot = waiting.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    @staticmethod
    def _join(batch: _Batch, keys: list[dict], future: asyncio.Future | None) -> None:
        trace = tracing.current.get()
        context = None if trace is None else {"traceparent": trace.traceparent()}
        batch.traces.add(context["traceparent"] if context else "")
        start = len(batch.keys)
        batch.waiters.append((start, len(keys), future))
        batch.keys.extend(keys)
        batch.contexts.extend([context] * len(keys))

    async def _send(self, shared: tuple, batch: _Batch) -> list:
        """The batch's call; the callers who joined it get their share of the answer, or of a failure."""
        endpoint, tables = shared
        # One caller's trace (or none): the call is what that caller would have sent alone.
        contexts = batch.contexts if len(batch.traces) > 1 else None
        try:
            rows = await self._call(endpoint, batch.keys, None if tables is None else list(tables), contexts,
                                    batch.opened)
        except Exception as error:  # every caller gets its own copy
            for _, _, future in batch.waiters:
                if future is not None and not future.done():
                    future.set_exception(copy.copy(error))
            raise
        for start, count, future in batch.waiters:
            if future is not None and not future.done():
                future.set_result(rows[start : start + count])
        return rows


def _go(slot: asyncio.Future) -> None:
    """A batch waited long enough for a call out: it goes anyway."""
    if not slot.done():
        slot.set_result(None)
