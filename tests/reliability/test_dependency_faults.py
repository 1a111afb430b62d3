"""customer-scoring enriching through customer-features, under load, while features fails.

Killed (connections refused) or frozen (connections accepted, never answered): during the
outage every request gets a 503 with a clear body within the configured timeout, never a
prediction made with missing features; when features is back, scoring recovers by itself.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import yaml

from tests.reliability.loadgen import Load, describe, outage_problems
from tests.reliability.servers import API_KEY, SCORING_DIR, Service, remote_env, server_env

REQUEST_TIMEOUT = 3.0  # APINODE_REQUEST_TIMEOUT_SECONDS given to scoring in these tests
MARGIN = 4.0  # on top of the timeout: a loaded 2-core box, not a performance bound
RECOVERY_BOUND = 30.0


def remote_timeout() -> float:
    raw = yaml.safe_load((SCORING_DIR / "service.yaml").read_text())
    return max(float(r.get("timeout_seconds", 1.0)) for r in raw["remotes"].values())


async def outage_under_load(
    features: Service, scoring: Service, calls, break_features, heal_features
) -> None:
    load = Load(scoring.url, calls, workers=8, api_key=API_KEY, timeout=REQUEST_TIMEOUT + 30)
    running = asyncio.create_task(load.run(120))
    clock = lambda: time.monotonic() - load.origin  # noqa: E731
    await asyncio.sleep(2.0)
    broken_at = clock()
    await asyncio.to_thread(break_features)
    await asyncio.sleep(4.0)
    healing_at = clock()
    await asyncio.to_thread(heal_features)
    healed_at = clock()

    # Recovery: scoring must start answering correctly again without being restarted.
    deadline = time.monotonic() + RECOVERY_BOUND
    recovered_at = None
    while time.monotonic() < deadline and recovered_at is None:
        await asyncio.sleep(0.25)
        recent = [o for o in load.outcomes if o.started > healed_at]
        if len(recent) >= 20 and all(o.ok for o in recent[-20:]):
            recovered_at = clock()
    await asyncio.sleep(3.0)
    load.stop()
    outcomes = await running

    healthy = [o for o in outcomes if o.started + o.latency < broken_at]
    assert healthy and all(o.ok for o in healthy), "before the fault:\n" + describe(healthy)
    bound = REQUEST_TIMEOUT + MARGIN
    problems = outage_problems(outcomes, broken_at, healing_at, bound)
    assert not problems, "\n".join(problems[:10]) + f"\n{describe(outcomes)}\n{scoring.log_tail(15)}"
    unavailable = [o for o in outcomes if broken_at <= o.started < healing_at and o.status == 503]
    assert unavailable, "no 503 during the outage: scoring never noticed customer-features was down"
    assert recovered_at is not None, (
        f"scoring did not recover within {RECOVERY_BOUND}s of customer-features coming back:\n"
        + describe([o for o in outcomes if o.started > healed_at])
        + "\n"
        + scoring.log_tail(15)
    )
    after = [o for o in outcomes if o.started > recovered_at]
    assert len(after) > 20 and all(o.ok for o in after), "after recovery:\n" + describe(after)
    # Between the heal and recovery, the same rules as during the outage still hold.
    problems = outage_problems(outcomes, healing_at, recovered_at, bound)
    assert not problems, "\n".join(problems[:10])


def killed(features: Service):
    return (lambda: features.signal(signal.SIGKILL) or features.wait_exit(10), lambda: features.start())


def frozen(features: Service):
    return (lambda: features.signal(signal.SIGSTOP), lambda: features.signal(signal.SIGCONT))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", [killed, frozen], ids=["killed-and-restarted", "frozen-and-resumed"])
def test_scoring_survives_customer_features_outage(fault, features, golden, log_dir):
    assert remote_timeout() < REQUEST_TIMEOUT, "the remote timeout must be below the request timeout"
    env = server_env(APINODE_REQUEST_TIMEOUT_SECONDS=str(REQUEST_TIMEOUT), **remote_env(features.url))
    with Service(SCORING_DIR, env, log_dir=log_dir, name="faults-scoring").start() as scoring:
        break_features, heal_features = fault(features)
        asyncio.run(
            outage_under_load(features, scoring, golden.scoring_calls(), break_features, heal_features)
        )
