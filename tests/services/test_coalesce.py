"""Lookups asked of customer-features in the same event-loop turn share one call (apinode/coalesce.py),
and sharing the transport shares nothing else: each caller its own rows, its own trace on its
items, its own copy of a failure; a caller that goes away leaves the others their answer. While a
call is out, the keys asked meanwhile wait and go together in the next one, within the timeout.

A fake customer-features on 127.0.0.1 answers every key it is asked with a row of that key (or
not found for ``C9999999``), and records each request it gets: path, traceparent header, body.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from apinode import tracing
from apinode.coalesce import MAX_KEYS
from apinode.definition import RemoteSpec
from apinode.errors import SourceUnavailable
from apinode.loader import load_definition
from apinode.remote import RemoteService, expected_tables
from tests.apinode_proc import SCORING_DIR

DEFINITION = load_definition(SCORING_DIR, {"APINODE_FEATURES_API_KEY": "k"})
COLUMNS = {c.name: None for t in ("demographics", "behavior") for c in DEFINITION.tables[t].columns}
TABLES = ["demographics", "behavior"]
MISSING = "C9999999"


class FakeFeatures:
    """customer-features' profile endpoint, answering per key; ``swap`` answers two results in the
    wrong order, ``status`` other than 200 refuses every call."""

    def __init__(self, status: int = 200, swap: bool = False, timeout: float = 5.0, batches_in_flight: int = 1,
                 held: int = 0, batch_wait: float = 5.0) -> None:
        self.status, self.swap, self.timeout, self.batches_in_flight = status, swap, timeout, batches_in_flight
        self.batch_wait = batch_wait  # long by default: a held call holds the next batch until released
        self.requests: list[tuple[str, bytes | None, dict]] = []
        self.held = held  # the first ``held`` requests are answered only once ``release`` is set
        self.release: asyncio.Event | None = None
        self.arrived: asyncio.Event | None = None  # set at each request

    async def __aenter__(self) -> RemoteService:
        self.release, self.arrived = asyncio.Event(), asyncio.Event()
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        spec = RemoteSpec("customer-features", f"http://127.0.0.1:{port}", "k", self.timeout, 8,
                          batches_in_flight=self.batches_in_flight, batch_wait_seconds=self.batch_wait)
        self.remote = RemoteService(spec, expected_tables(DEFINITION, "customer-features"))
        return self.remote

    async def __aexit__(self, *exc) -> None:
        await self.remote.close()
        self.server.close()
        await self.server.wait_closed()

    def _result(self, key: dict) -> dict:
        if key["customer_id"] == MISSING:
            return {"data": {"customer_id": MISSING}, "notFound": True, "notFoundIn": TABLES}
        return {"data": {**COLUMNS, "customer_id": key["customer_id"], "region": "wales"}, "notFound": False,
                "notFoundIn": []}

    async def _handle(self, reader, writer) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
                body = orjson.loads(await reader.readexactly(int(headers["content-length"])))
                path = lines[0].split()[1].rsplit("/", 2)
                self.requests.append(("/".join(path[-2:]), headers.get("traceparent"), body))
                self.arrived.set()
                if len(self.requests) <= self.held:
                    await self.release.wait()
                items = [body["data"]] if "data" in body else [item["data"] for item in body["items"]]
                results = [self._result(key) for key in items]
                if self.swap and len(results) > 1:
                    results[0], results[1] = results[1], results[0]
                answer = orjson.dumps({"results": results})
                reason = b"OK" if self.status == 200 else b"Oops"
                writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (self.status, reason, len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def _asked_by(remote: RemoteService, customer: str, trace_header: bytes | None) -> tuple:
    """One score's lookup, in its own task and trace, as the scoring route makes it."""
    if trace_header is not None:
        tracing.current.set(tracing.from_header(trace_header))
    trace = tracing.current.get()
    (rows,) = await remote.rows_many("profile", [{"customer_id": customer}], TABLES)
    return rows, trace


def _header(n: int) -> bytes:
    return b"00-%032x-%016x-01" % (0xABC000 + n, 0xDEF000 + n)


def test_scores_asked_in_one_loop_turn_share_one_call_each_item_under_its_callers_trace():
    fake = FakeFeatures()
    customers = [f"C{n:07d}" for n in range(1, 8)] + [MISSING]

    async def run():
        async with fake as remote:
            return await asyncio.gather(*(_asked_by(remote, c, _header(n)) for n, c in enumerate(customers)))

    answers = asyncio.run(run())
    assert len(fake.requests) == 1, "eight scores of one turn: one call"
    path, header, body = fake.requests[0]
    assert path == "profile/lookup-multi"
    assert [item["data"] for item in body["items"]] == [{"customer_id": c} for c in customers]
    assert [item["context"] for item in body["items"]] == [
        {"traceparent": trace.traceparent()} for _, trace in answers]
    assert header == answers[0][1].traceparent(), "the request itself goes under the first caller's trace"
    for customer, (rows, _) in zip(customers, answers):
        if customer == MISSING:
            assert rows == {"demographics": [], "behavior": []}
        else:
            assert rows["demographics"][0]["customer_id"] == customer and rows["behavior"][0]["customer_id"] == customer


def test_a_caller_alone_sends_what_it_sent_before():
    fake = FakeFeatures()

    async def run():
        async with fake as remote:
            _, trace = await _asked_by(remote, "C0000001", _header(1))
            await remote.rows_many("profile", [{"customer_id": "C0000002"}, {"customer_id": "C0000003"}], TABLES)
            return trace

    trace = asyncio.run(run())
    (single_path, single_header, single), (batch_path, _, batch) = fake.requests
    assert (single_path, single, single_header) == ("profile/lookup", {"data": {"customer_id": "C0000001"}},
                                                    trace.traceparent())
    assert batch_path == "profile/lookup-multi" and all(set(item) == {"data"} for item in batch["items"])


@pytest.mark.parametrize("fake", [FakeFeatures(status=500), FakeFeatures(swap=True)], ids=["refused", "rows swapped"])
def test_a_shared_call_that_fails_fails_every_caller_with_its_own_503(fake):
    """Also when the peer answers the callers' rows in the wrong order: one caller must never be
    given another's customer (remote.py checks each row's key against the key asked)."""

    async def run():
        async with fake as remote:
            return await asyncio.gather(*(_asked_by(remote, f"C{n:07d}", _header(n)) for n in range(1, 5)),
                                        return_exceptions=True)

    errors = asyncio.run(run())
    assert len(fake.requests) == 1
    assert all(isinstance(error, SourceUnavailable) and error.status == 503 for error in errors), errors
    assert len({id(error) for error in errors}) == len(errors), "each caller raises its own exception"


@pytest.mark.parametrize("gone", [0, 1], ids=["the first caller, who makes the call", "another"])
def test_a_caller_that_goes_away_leaves_the_others_their_rows(gone):
    fake = FakeFeatures()

    async def run():
        async with fake as remote:
            tasks = [asyncio.create_task(_asked_by(remote, f"C{n:07d}", _header(n))) for n in range(1, 5)]
            await asyncio.sleep(0)  # every caller has asked; the call is not made yet
            tasks[gone].cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

    answers = asyncio.run(run())
    assert isinstance(answers.pop(gone), asyncio.CancelledError)
    expected = [f"C{n:07d}" for n in range(1, 5) if n != gone + 1]
    assert [rows["demographics"][0]["customer_id"] for rows, _ in answers] == expected
    assert len(fake.requests) == 1


def test_a_shared_call_holds_at_most_max_keys():
    fake = FakeFeatures()
    callers = MAX_KEYS + 36

    async def run():
        async with fake as remote:
            return await asyncio.gather(*(_asked_by(remote, f"C{n:07d}", _header(n)) for n in range(1, callers + 1)))

    answers = asyncio.run(run())
    assert [len(body["items"]) for _, _, body in fake.requests] == [MAX_KEYS, 36]
    assert [rows["behavior"][0]["customer_id"] for rows, _ in answers] == [f"C{n:07d}" for n in range(1, callers + 1)]


async def _one_key_call_out(fake: FakeFeatures, remote: RemoteService) -> asyncio.Task:
    """A first score whose call customer-features holds (``held``), once it has arrived."""
    first = asyncio.create_task(_asked_by(remote, "C0000001", _header(1)))
    await fake.arrived.wait()
    return first


def test_keys_asked_while_a_call_is_out_wait_and_go_together_in_the_next():
    """Under load a call went every loop turn with the few keys of that turn, and each call costs
    customer-features a wake-up, a read and a write whatever it holds; now the keys of every turn
    while a call is out go in one call when it is back (two-hop scores per CPU-second +7-10 % side
    by side; bench/optimizations.md, eleventh round)."""
    fake = FakeFeatures(held=1)

    async def run():
        async with fake as remote:
            first = await _one_key_call_out(fake, remote)
            later = []
            for n in range(2, 8):  # one score a loop turn, as they arrive under load
                later.append(asyncio.create_task(_asked_by(remote, f"C{n:07d}", _header(n))))
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            assert len(fake.requests) == 1, "nothing more is sent while the first call is out"
            fake.release.set()
            return await asyncio.gather(first, *later)

    answers = asyncio.run(run())
    assert [len(body.get("items", [body])) for _, _, body in fake.requests] == [1, 6]
    assert [rows["behavior"][0]["customer_id"] for rows, _ in answers] == [f"C{n:07d}" for n in range(1, 8)]
    assert [item["context"] for item in fake.requests[1][2]["items"]] == [
        {"traceparent": trace.traceparent()} for _, trace in answers[1:]]


def test_batches_in_flight_lets_that_many_calls_out_at_once():
    fake = FakeFeatures(held=2, batches_in_flight=2)

    async def run():
        async with fake as remote:
            first = await _one_key_call_out(fake, remote)
            second = asyncio.create_task(_asked_by(remote, "C0000002", _header(2)))
            for _ in range(20):
                if len(fake.requests) == 2:
                    break
                await asyncio.sleep(0.01)
            third = asyncio.create_task(_asked_by(remote, "C0000003", _header(3)))
            await asyncio.sleep(0.05)
            sent_while_two_out = len(fake.requests)
            fake.release.set()
            await asyncio.gather(first, second, third)
            return sent_while_two_out

    assert asyncio.run(run()) == 2, "a second call goes at once; a third waits for one of them"
    assert len(fake.requests) == 3


def test_a_key_waiting_for_a_hung_call_is_still_answered_503_within_the_timeout():
    """customer-features hangs: the second score's wait for the first call counts in its own
    deadline, so it gets its 503 within ``timeout_seconds`` of asking, not after two timeouts."""
    timeout = 0.4
    fake = FakeFeatures(held=10, timeout=timeout)

    async def second_score(remote):
        started = asyncio.get_running_loop().time()
        try:
            await _asked_by(remote, "C0000002", _header(2))
        except SourceUnavailable as error:
            return error, asyncio.get_running_loop().time() - started
        raise AssertionError("answered by a hung customer-features")

    async def run():
        async with fake as remote:
            first = await _one_key_call_out(fake, remote)
            await asyncio.sleep(timeout / 2)
            waited = await second_score(remote)
            await asyncio.gather(first, return_exceptions=True)
            fake.release.set()
            return waited

    error, elapsed = asyncio.run(run())
    assert error.status == 503 and "unavailable" in error.message
    assert elapsed < timeout * 1.3, f"answered after {elapsed:.2f}s, the timeout is {timeout}s"
    assert elapsed > timeout * 0.5, "it waited for the first call (batch_wait is longer than the timeout here)"
    assert len(fake.requests) == 2, "its own call went when the first was cut, with the time it had left"


def test_a_waiting_batch_whose_first_caller_goes_away_still_goes_and_frees_its_turn():
    fake = FakeFeatures(held=1)

    async def run():
        async with fake as remote:
            first = await _one_key_call_out(fake, remote)
            waiting = [asyncio.create_task(_asked_by(remote, f"C{n:07d}", _header(n))) for n in range(2, 5)]
            await asyncio.sleep(0.02)  # the batch of three waits for the first call
            waiting[0].cancel()  # the one who would make its call
            fake.release.set()
            answers = await asyncio.gather(first, *waiting, return_exceptions=True)
            later = await _asked_by(remote, "C0000005", _header(5))
            return answers, later

    answers, later = asyncio.run(run())
    assert isinstance(answers[1], asyncio.CancelledError)
    assert [rows["demographics"][0]["customer_id"] for rows, _ in answers[2:]] == ["C0000003", "C0000004"]
    assert later[0]["demographics"][0]["customer_id"] == "C0000005", "a later call still goes"


def test_a_slow_call_holds_the_next_batch_back_only_batch_wait_seconds():
    """One customer-features pod in a long pause (a garbage collection, a node under pressure) while
    the others answer at once: the scores asked behind its call go after ``batch_wait_seconds``
    (here 50 ms), not after the slow call, and get their rows; the slow call's own caller still
    gets its rows when it comes back."""
    fake = FakeFeatures(held=1, batch_wait=0.05)

    async def run():
        async with fake as remote:
            first = await _one_key_call_out(fake, remote)
            loop = asyncio.get_running_loop()
            started = loop.time()
            behind = await asyncio.gather(*(_asked_by(remote, f"C{n:07d}", _header(n)) for n in range(2, 5)))
            waited = loop.time() - started
            fake.release.set()
            return await first, behind, waited

    (first_rows, _), behind, waited = asyncio.run(run())
    assert 0.04 <= waited < 2.0, f"the batch behind a slow call waited {waited:.3f}s, batch_wait is 0.05s"
    assert [rows["behavior"][0]["customer_id"] for rows, _ in behind] == ["C0000002", "C0000003", "C0000004"]
    assert first_rows["behavior"][0]["customer_id"] == "C0000001"
    assert [len(body.get("items", [body])) for _, _, body in fake.requests] == [1, 3], "the three still went together"
