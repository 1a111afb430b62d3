"""A small async load generator shared by the reliability tests and the soak (bench/soak.py).

A workload is a list of ``Call`` factories; each worker picks one at random (seeded), sends it
over a shared keep-alive ``httpx.AsyncClient`` and records an ``Outcome``: when it started, how
long it took, the status (``None`` when no answer came back), and what was wrong with the
answer if anything. The tests decide which outcomes are acceptable in their situation (a
clear 503 during an outage, a refused connection after SIGTERM); ``Outcome.ok`` means a 200
whose body passed the call's check.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Call:
    """One request to send and how to judge a 200 answer (``check`` returns a reason or None)."""

    name: str
    path: str
    body: Any = None
    method: str = "POST"
    check: Check | None = None
    observe: Callable[[Any], Any] | None = None  # what to remember of a good answer (Outcome.observed)


@dataclass
class Outcome:
    """What happened to one request."""

    name: str
    started: float
    latency: float
    status: int | None
    problem: str | None = None
    transport: str | None = None
    error_type: str | None = None
    message: str | None = None
    stale: str | None = None  # the X-Apinode-Stale-Data header: tables answered from stale data
    observed: Any = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.problem is None


def transport_kind(error: BaseException) -> str:
    """Name a transport failure so tests can tell 'refused' from 'cut mid-answer' from 'hung'."""
    if isinstance(error, httpx.ConnectError):
        return "connect-refused"
    if isinstance(error, httpx.TimeoutException):
        return "client-timeout"
    text = str(error).lower()
    if isinstance(error, httpx.RemoteProtocolError) and "without sending a response" in text:
        return "closed-before-answer"
    if isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError)) and "body" in text:
        return "cut-mid-answer"
    if isinstance(error, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        return "closed-before-answer"
    return type(error).__name__


async def send(client: httpx.AsyncClient, call: Call, origin: float) -> Outcome:
    """Send one call and judge its answer; never raises for transport errors."""
    started = time.monotonic()
    try:
        response = await client.request(call.method, call.path, json=call.body)
        payload = response.json() if response.content else None
    except httpx.HTTPError as error:
        return Outcome(
            call.name,
            started - origin,
            time.monotonic() - started,
            None,
            problem=f"{type(error).__name__}: {error}",
            transport=transport_kind(error),
        )
    except ValueError as error:
        return Outcome(
            call.name,
            started - origin,
            time.monotonic() - started,
            response.status_code,
            problem=f"answer is not JSON: {error}: {response.text[:200]!r}",
        )
    outcome = Outcome(
        call.name,
        started - origin,
        time.monotonic() - started,
        response.status_code,
        stale=response.headers.get("x-apinode-stale-data"),
    )
    if response.status_code == 200:
        outcome.problem = call.check(payload) if call.check else None
        if outcome.problem is None and call.observe is not None:
            outcome.observed = call.observe(payload)
    else:
        outcome.problem = f"HTTP {response.status_code}"
        if isinstance(payload, dict):
            outcome.error_type = payload.get("errorType")
            outcome.message = payload.get("message")
    return outcome


@dataclass
class Load:
    """Workers sending a mixed workload until stopped, a deadline, or a request budget."""

    base_url: str
    calls: Sequence[Callable[[random.Random], Call]]
    workers: int = 8
    api_key: str | None = None
    timeout: float = 10.0
    seed: int = 8
    max_requests: int = 1_000_000
    pause: float = 0.0
    on_outcome: Callable[[Outcome], None] | None = None  # e.g. a running summary, for long runs
    keep: bool = True  # keep every outcome in ``outcomes`` (turn off for long runs)
    sent: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    origin: float = field(default_factory=time.monotonic)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, seconds: float) -> list[Outcome]:
        """Run for at most ``seconds`` (or until ``stop()``); returns every outcome recorded."""
        deadline = time.monotonic() + seconds
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.workers, max_keepalive_connections=self.workers)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, limits=limits, timeout=self.timeout
        ) as client:
            await asyncio.gather(
                *(
                    self._worker(client, random.Random(self.seed * 1000 + i), deadline)
                    for i in range(self.workers)
                )
            )
        return self.outcomes

    async def _worker(self, client: httpx.AsyncClient, rng: random.Random, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline and self.sent < self.max_requests:
            self.sent += 1
            outcome = await send(client, rng.choice(self.calls)(rng), self.origin)
            if self.on_outcome is not None:
                self.on_outcome(outcome)
            if self.keep:
                self.outcomes.append(outcome)
            if self.pause:
                await asyncio.sleep(self.pause)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Window:
    """Counts and latency percentiles (milliseconds) of the outcomes started in one time window."""

    start: float
    requests: int
    errors: int
    p50: float
    p95: float
    p99: float
    max: float


class Summary:
    """A running summary by time window: counts, failures by kind, latencies (kept as floats only)."""

    def __init__(self, seconds: float, keep_failures: int = 200) -> None:
        self.seconds = seconds
        self.latencies: dict[int, list[float]] = {}
        self.errors: dict[int, int] = {}
        self.kinds: dict[str, int] = {}
        self.failures: list[Outcome] = []
        self._keep_failures = keep_failures

    def add(self, outcome: Outcome) -> None:
        index = int(outcome.started // self.seconds)
        self.latencies.setdefault(index, []).append(outcome.latency * 1000)
        if not outcome.ok:
            self.errors[index] = self.errors.get(index, 0) + 1
            kind = outcome.transport or (
                f"HTTP {outcome.status} {outcome.error_type or ''}".strip()
                if outcome.status != 200
                else "wrong answer"
            )
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if len(self.failures) < self._keep_failures:
                self.failures.append(outcome)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def all_latencies(self) -> list[float]:
        return [x for values in self.latencies.values() for x in values]

    def windows(self) -> list[Window]:
        result = []
        for index in sorted(self.latencies):
            values = self.latencies[index]
            result.append(
                Window(
                    start=index * self.seconds,
                    requests=len(values),
                    errors=self.errors.get(index, 0),
                    p50=percentile(values, 50),
                    p95=percentile(values, 95),
                    p99=percentile(values, 99),
                    max=max(values),
                )
            )
        return result


def windows(outcomes: Sequence[Outcome], seconds: float) -> list[Window]:
    """Group outcomes by start time into windows of ``seconds``."""
    summary = Summary(seconds)
    for outcome in outcomes:
        summary.add(outcome)
    return summary.windows()


def describe(outcomes: Sequence[Outcome], limit: int = 8) -> str:
    """A short human summary of the failed outcomes, for assertion messages."""
    failed = [o for o in outcomes if not o.ok]
    kinds: dict[str, int] = {}
    for o in failed:
        key = o.transport or (f"{o.status} {o.error_type}" if o.status != 200 else f"200 wrong: {o.problem}")
        kinds[key] = kinds.get(key, 0) + 1
    lines = [f"{len(failed)} of {len(outcomes)} requests failed: {kinds}"]
    lines += [
        f"  t={o.started:.2f}s {o.name} status={o.status} {o.problem} {o.message or ''}"
        for o in failed[:limit]
    ]
    return "\n".join(lines)


def outage_problems(outcomes, start: float, end: float, bound: float) -> list[str]:
    """Outcomes started in [start, end) that break the outage contract: a correct 200 or a clear 503,
    always within ``bound`` seconds."""
    problems = []
    for o in outcomes:
        if not start <= o.started < end:
            continue
        if o.latency > bound:
            problems.append(f"answered after {o.latency:.1f}s (> {bound:.1f}s): {o.name} {o.status}")
        if o.status == 200 and o.problem:
            problems.append(f"wrong answer during the outage: {o.problem}")
        elif o.status is None:
            problems.append(f"no answer during the outage: {o.transport} {o.problem}")
        elif o.status not in (200, 503):
            problems.append(f"HTTP {o.status} {o.error_type} during the outage (expected 503): {o.message}")
        elif o.status == 503 and not (o.error_type and o.message):
            problems.append(f"503 without errorType/message: {o}")
    return problems


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS from /proc), in KiB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
