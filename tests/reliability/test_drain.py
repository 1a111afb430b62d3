"""Graceful drain: SIGTERM under steady load loses no accepted request and exits cleanly.

A request is certainly "accepted" when the server has read its headers and is waiting for the
rest of its body: we hold a few such requests open on raw sockets, send SIGTERM, then finish
them. They must get complete, correct answers. Meanwhile a steady keep-alive load runs: once
the signal is sent, a caller may be refused or get a 503 with a clear body, but never a cut or
wrong answer, and never a hang. The process must exit with code 0 within its grace period.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time

import httpx
import pytest

from tests.reliability import rawhttp
from tests.reliability.loadgen import Load, describe
from tests.reliability.servers import API_KEY, FEATURES_DIR, SCORING_DIR, Service, remote_env, server_env

# The grace the test gives the server on top of its own drain; generous so a loaded CI box passes.
EXIT_BOUND_SECONDS = 30.0
HELD_REQUESTS = 3
ALLOWED_AFTER_SIGNAL = {"connect-refused", "closed-before-answer"}


def judge_after_signal(outcomes, signalled_at: float) -> list[str]:
    """Problems a caller would notice: wrong/cut answers, unclear errors, failures before the signal."""
    problems = []
    for o in outcomes:
        if o.ok:
            continue
        before = o.started + o.latency < signalled_at - 0.05
        if before:
            problems.append(f"failed before the signal: {o}")
        elif o.status == 200:
            problems.append(f"wrong answer while draining: {o.problem}")
        elif o.status is not None and (o.status != 503 or not o.error_type or not o.message):
            problems.append(f"unclear answer while draining: HTTP {o.status} {o.error_type} {o.message}")
        elif o.status is None and o.transport not in ALLOWED_AFTER_SIGNAL:
            problems.append(f"{o.transport} while draining: {o.problem}")
    return problems


async def drain_under_load(service: Service, calls, held_call) -> None:
    load = Load(service.url, calls, workers=8, api_key=API_KEY, timeout=20)
    running = asyncio.create_task(load.run(60))
    await asyncio.sleep(2.0)

    held = []
    for _ in range(HELD_REQUESTS):
        head, body = rawhttp.request_bytes(held_call.path, json.dumps(held_call.body).encode(), API_KEY)
        sock = rawhttp.connect(service.port)
        sock.sendall(head + body[: len(body) // 2])
        held.append((sock, body[len(body) // 2 :]))
    await asyncio.sleep(1.0)  # let the server read the heads, even on a busy box

    signalled_at = time.monotonic() - load.origin
    service.signal(signal.SIGTERM)
    await asyncio.sleep(0.5)

    # A new caller after the signal: refused, or a 503 that says why.
    try:
        async with httpx.AsyncClient(timeout=10) as fresh:
            late = await fresh.post(service.url + held_call.path, json=held_call.body, auth=(API_KEY, ""))
        assert late.status_code == 503, (
            f"new request while draining: HTTP {late.status_code} {late.text[:200]}"
        )
        assert late.json().get("errorType") and late.json().get("message"), late.text
    except httpx.ConnectError:
        pass

    answers = []
    for sock, rest in held:
        sock.sendall(rest)
    for sock, _ in held:
        answers.append(await asyncio.to_thread(rawhttp.read_response, sock, 15.0))
        sock.close()
    await asyncio.sleep(1.0)
    load.stop()
    outcomes = await running
    code = await asyncio.to_thread(service.wait_exit, EXIT_BOUND_SECONDS)

    for answer in answers:
        assert answer.status == 200, (
            f"a request accepted before SIGTERM was not answered: {answer}\n{service.log_tail()}"
        )
        assert held_call.check(answer.json()) is None, held_call.check(answer.json())
    before = [o for o in outcomes if o.started + o.latency < signalled_at]
    assert len(before) > 50, f"the load hardly ran before the signal ({len(before)} requests)"
    problems = judge_after_signal(outcomes, signalled_at)
    assert not problems, "\n".join(problems[:10]) + "\n" + describe(outcomes)
    assert code is not None, f"still running {EXIT_BOUND_SECONDS}s after SIGTERM:\n{service.log_tail()}"
    assert code == 0, f"exit code {code} after SIGTERM:\n{service.log_tail()}"


@pytest.mark.timeout(180)
def test_features_drains_on_sigterm_under_load(features, golden):
    held_call = golden.lookup_multi("demographics", size=100)(random.Random(1))
    asyncio.run(drain_under_load(features, golden.features_calls(), held_call))


@pytest.mark.timeout(180)
def test_scoring_with_remote_enrichment_drains_on_sigterm_under_load(features, golden, log_dir):
    """The in-flight predictions still reach customer-features while scoring shuts down."""
    with Service(
        SCORING_DIR, server_env(**remote_env(features.url)), log_dir=log_dir, name="drain-scoring"
    ).start() as scoring:
        held_call = golden.predict_multi(size=100)(random.Random(2))
        asyncio.run(drain_under_load(scoring, golden.scoring_calls(), held_call))


@pytest.mark.timeout(120)
def test_drain_delay_keeps_serving_while_readiness_says_go_away(golden, log_dir):
    """With APINODE_DRAIN_DELAY_SECONDS, SIGTERM first turns /readyz to 503 and keeps answering
    (so a load balancer can take the pod out), then refuses new connections and exits 0."""
    delay = 3.0
    env = server_env(APINODE_DRAIN_DELAY_SECONDS=str(delay))
    with Service(FEATURES_DIR, env, log_dir=log_dir, name="drain-delay-features").start() as service:

        async def scenario():
            load = Load(service.url, golden.features_calls(), workers=4, api_key=API_KEY, timeout=20)
            running = asyncio.create_task(load.run(60))
            await asyncio.sleep(1.0)
            signalled_at = time.monotonic() - load.origin
            service.signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(timeout=10) as fresh:
                ready = await fresh.get(service.url + "/readyz")
            await asyncio.sleep(delay)
            load.stop()
            return await running, signalled_at, ready

        outcomes, signalled_at, ready = asyncio.run(scenario())
        code = service.wait_exit(EXIT_BOUND_SECONDS)
    assert ready.status_code == 503 and "drain" in ready.text, (
        f"/readyz while draining: {ready.status_code} {ready.text}"
    )
    during = [o for o in outcomes if signalled_at + 0.2 < o.started < signalled_at + delay - 0.5]
    assert len(during) > 10 and all(o.ok for o in during), "during the drain delay:\n" + describe(during)
    problems = judge_after_signal(outcomes, signalled_at)
    assert not problems, "\n".join(problems[:10])
    assert code == 0, f"exit code {code} after SIGTERM with a drain delay:\n{service.log_tail()}"
